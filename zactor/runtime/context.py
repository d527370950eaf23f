"""Per-process runtime state: the process's core client and what it is running now.

A driver gets its client from ``zactor.init``; a worker process from its main loop. Everything
that needs "the current client" (ObjectRef construction, nested ``.remote()`` calls inside a
task) reads it here, so there is exactly one per process.
"""

from __future__ import annotations

import threading

_state = threading.local()
_global = {"client": None, "mode": None}
_lock = threading.Lock()


def set_client(client, mode: str) -> None:
    with _lock:
        _global["client"] = client
        _global["mode"] = mode


def clear_client() -> None:
    with _lock:
        _global["client"] = None
        _global["mode"] = None


def client_or_none():
    return _global["client"]


def mode():
    """"driver", "worker", or None when zactor is not initialised in this process."""
    return _global["mode"]


def client():
    c = _global["client"]
    if c is None:
        from zactor.exceptions import RaySystemError

        raise RaySystemError("zactor is not initialized: call zactor.init() first")
    return c


def set_current_task(task_id: bytes | None, name: str | None = None) -> None:
    _state.task_id = task_id
    _state.task_name = name


def current_task_id():
    return getattr(_state, "task_id", None)


def current_task_name():
    return getattr(_state, "task_name", None)
