"""The lock a CoreClient's threads share, and the threads that wait for its results.

A client is used by several threads at once: the program's (a driver's threads, a threaded or
async actor's), and its flusher (core_client.py). Whichever thread holds the lock reads the
node manager's messages for all of them and records each waiting thread's arrivals; a thread
that finds the lock taken sleeps on its own event instead of competing for the lock (a plain
lock is re-taken by a thread looping in get() before a waiting one wakes, which starved other
threads' gets until their timeouts).
"""

from __future__ import annotations

import threading


class Waiter:
    """A thread waiting in ``wait_ready``: the objects that arrived since it last looked
    (appended by whichever thread reads the node manager's messages), and an event set then."""

    __slots__ = ("arrived", "event", "may_sleep")

    def __init__(self):
        self.arrived: list = []
        self.event = threading.Event()
        #: set before it tries the lock, so that a holder letting the lock go after the
        #: attempt sees it; the lock's release wakes only such waiters (an Event.set per
        #: release cost ~25 us per synchronous call otherwise)
        self.may_sleep = False


class ClientLock:
    """The client's re-entrant lock. Its last release wakes the threads waiting in
    ``wait_ready`` for it: a waiter whose non-blocking acquire failed sleeps on its event
    (so that a thread looping in get() cannot starve it by re-taking a plain lock first),
    and the holder may release without having read anything for it (the flusher sending
    a batch): without this wake-up that waiter slept a whole poll slice (50 ms)."""

    __slots__ = ("_lock", "_depth", "waiters")

    def __init__(self):
        self._lock = threading.RLock()
        self._depth = 0  # of the owning thread's holds (only the owner changes it)
        self.waiters: tuple = ()  # Waiters, replaced whole under the lock (read unlocked)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking, timeout):
            self._depth += 1
            return True
        return False

    def release(self) -> None:
        self._depth -= 1
        last = self._depth == 0
        self._lock.release()
        if last:
            for waiter in self.waiters:
                if waiter.may_sleep:
                    waiter.event.set()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *_exc) -> None:
        self.release()
