"""PullHandle: what ``TransferClient.pull`` returns, a small future for one pull.

Used by any thread: the client's thread completes it; callers wait on it (``result``) or
register callbacks. ``_Pull`` is the client thread's own state of one transfer.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque


class PullHandle:
    """One pull (shared by every caller that pulled the same object meanwhile).

    ``oid``, ``address``; ``bytes_received`` grows as chunks land (progress, for display and
    tests); ``done()``; ``result(timeout)`` -> the object's size, or raises TransferError;
    ``exception(timeout)``; ``add_done_callback(fn)`` -> ``fn(handle)`` once done (at once,
    in the caller's thread, if it already is; else in the transfer client's thread).
    """

    def __init__(self, oid: bytes, address: str):
        self.oid = oid
        self.address = address
        self.bytes_received = 0
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list = []
        self._size = None
        self._error = None

    def done(self) -> bool:
        return self._event.is_set()

    def exception(self, timeout: float | None = None):
        if not self._event.wait(timeout):
            raise TimeoutError(f"pull of {self.oid.hex()} from {self.address} still running "
                               f"after {timeout}s")
        return self._error

    def result(self, timeout: float | None = None) -> int:
        error = self.exception(timeout)
        if error is not None:
            raise error
        return self._size

    def add_done_callback(self, fn) -> None:
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def _set(self, size, error) -> None:
        with self._lock:
            self._size, self._error = size, error
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn(self)
            except Exception:  # a caller's bug must not stop the transfer thread
                import logging

                logging.getLogger(__name__).exception("pull callback failed")

    def __repr__(self):
        state = "pending" if not self.done() else ("failed" if self._error else "done")
        return f"PullHandle({self.oid.hex()[:16]}.. from {self.address}, {state})"


class _Pull:
    """The client thread's state of one transfer (touched only by that thread, except
    ``deadline`` which ``pull`` may extend under the client's lock)."""

    def __init__(self, oid: bytes, address: str, deadline):
        self.oid = oid
        self.address = address
        self.deadline = deadline
        self.handle = PullHandle(oid, address)
        self.size = None
        self.buf = None          # the store's writable region once META arrived
        self.compress = False
        self.next_offset = 0     # first byte not yet requested
        self.received = 0
        self.outstanding = 0     # requests in flight (the credit used)
        self.done = False
        self.last_activity = time.monotonic()

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def extend_deadline(self, deadline) -> None:
        """A later caller with a longer timeout (or none: None) keeps the shared transfer
        going for it."""
        if self.deadline is not None and (deadline is None or deadline > self.deadline):
            self.deadline = deadline


class CompletionQueue:
    """Finished handles plus a pipe that is readable while there are any: a poll loop
    (zmq.Poller, select, selectors) watches ``fileno()`` and calls ``drain()``."""

    def __init__(self):
        self._items: deque = deque()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._r

    def put(self, handle) -> None:
        self._items.append(handle)
        try:
            os.write(self._w, b"d")
        except BlockingIOError:  # the pipe is full: it is readable anyway
            pass

    def drain(self) -> list:
        try:  # empty the pipe first: a put racing with us leaves it readable again
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        out = []
        while self._items:
            out.append(self._items.popleft())
        return out

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)
