"""Running one task's function in a worker and turning the outcome into return values or a
``RayTaskError`` (the worker process's job; no I/O here, so it is tested in-process).

Ray's rules, kept here:
- ``num_returns=1``: the value is the one return; ``num_returns=0``: the function's result is
  dropped; ``num_returns=n > 1``: the function must return an iterable of exactly n values.
- An exception becomes a ``RayTaskError`` carrying the remote traceback (with zactor's own
  frames cut off, so the user sees their code) and the original exception as ``cause``;
  ``get`` raises it as an instance of the cause's class too.
- ``KeyboardInterrupt`` raised into a task by a non-forced ``cancel`` becomes
  ``TaskCancelledError``.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable

from zactor.exceptions import RayTaskError, TaskCancelledError


def function_name(fn: Callable) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', getattr(fn, '__name__', repr(fn)))}"


def split_returns(result: Any, num_returns: int, name: str) -> list:
    """The list of return values for ``num_returns`` (raises ValueError naming the task)."""
    if num_returns == 1:
        return [result]
    if num_returns == 0:
        return []
    try:
        values = list(result)
    except TypeError:
        raise ValueError(f"Task {name} has num_returns={num_returns} but returned a "
                         f"{type(result).__name__}, which is not iterable") from None
    if len(values) != num_returns:
        raise ValueError(f"Task {name} returned {len(values)} objects, but "
                         f"num_returns={num_returns}.")
    return values


def user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without the frames of zactor's own execution machinery."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def run_task(fn: Callable, args: tuple, kwargs: dict, num_returns: int,
             *, task_id: bytes = b"", actor_repr: str | None = None) -> list:
    """Call ``fn`` and return its list of return values.

    Raises ``RayTaskError`` (the user's exception wrapped, traceback attached) or
    ``TaskCancelledError``; any other exception escaping here is a bug in zactor.
    """
    try:
        result = fn(*args, **kwargs)
        if num_returns == 1:  # (the name is made only when it is needed: ~2 us a task)
            return [result]
        return split_returns(result, num_returns, function_name(fn))
    except BaseException as exc:  # noqa: BLE001 - sorted out by _task_failure
        failure = _task_failure(exc, function_name(fn), task_id.hex(), actor_repr)
        if failure is exc:
            raise
        raise failure from _cause(exc)


async def run_task_async(fn: Callable, args: tuple, kwargs: dict, num_returns: int,
                         *, task_id: bytes = b"", actor_repr: str | None = None) -> list:
    """``run_task`` for an ``async def`` method of an async actor (awaited on its loop)."""
    try:
        return split_returns(await fn(*args, **kwargs), num_returns, function_name(fn))
    except BaseException as exc:  # noqa: BLE001 - sorted out by _task_failure
        failure = _task_failure(exc, function_name(fn), task_id.hex(), actor_repr)
        if failure is exc:
            raise
        raise failure from _cause(exc)


def _task_failure(exc: BaseException, name: str, task_id_hex: str, actor_repr):
    """What a task's exception becomes for its caller.

    - KeyboardInterrupt (a non-forced ``cancel``) or a cancelled coroutine: TaskCancelledError;
    - a RayTaskError (the task failed because one it waited on failed): passed on as it is,
      as Ray does, rather than wrapped once per level;
    - any other Exception: RayTaskError with the user's traceback;
    - SystemExit and the like: re-raised unchanged (the worker is meant to stop).
    """
    if _cancelled(exc):
        return TaskCancelledError(task_id_hex, f"Task {name} ({task_id_hex}) was cancelled")
    if isinstance(exc, RayTaskError) or not isinstance(exc, Exception):
        return exc
    return RayTaskError(name, user_traceback(exc), exc, pid=os.getpid(), actor_repr=actor_repr)


def _cause(exc: BaseException):
    return None if _cancelled(exc) else exc


def _cancelled(exc: BaseException) -> bool:
    """KeyboardInterrupt (a non-forced cancel), or a cancelled coroutine of an async actor
    (asyncio is looked up, not imported: only async actors load it)."""
    asyncio = sys.modules.get("asyncio")
    return isinstance(exc, KeyboardInterrupt) or (
        asyncio is not None and isinstance(exc, asyncio.CancelledError))
