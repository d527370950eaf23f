"""``ActorPool``: spread work over a fixed set of actors (Ray's ``ray.util.ActorPool``).

``fn(actor, value)`` must call a method of ``actor`` and return its ObjectRef. Work goes to
idle actors first and waits in a local queue when all are busy; results come back in
submission order (``get_next``, ``map``) or as they finish (``get_next_unordered``,
``map_unordered``). Runs in the caller's process only: the pool itself is not shared.
"""

from __future__ import annotations

from zactor import api
from zactor.exceptions import GetTimeoutError


class ActorPool:
    def __init__(self, actors):
        self._idle = list(actors)
        self._future_to_actor = {}   # ref -> (submission index, actor)
        self._index_to_future = {}   # submission index -> ref
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending = []           # (fn, value) waiting for an idle actor

    # ---- submitting ----------------------------------------------------------------------

    def submit(self, fn, value) -> None:
        """Run ``fn(actor, value)`` on an idle actor, or queue it until one is free."""
        if self._idle:
            actor = self._idle.pop()
            ref = fn(actor, value)
            self._future_to_actor[ref] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = ref
            self._next_task_index += 1
        else:
            self._pending.append((fn, value))

    def map(self, fn, values):
        """Results of ``fn`` over ``values``, in order (a generator)."""
        self._check_drained("map")
        for v in values:
            self.submit(fn, v)
        while self.has_next():
            yield self.get_next()

    def map_unordered(self, fn, values):
        """Results of ``fn`` over ``values``, as they finish (a generator)."""
        self._check_drained("map_unordered")
        for v in values:
            self.submit(fn, v)
        while self.has_next():
            yield self.get_next_unordered()

    # ---- collecting ----------------------------------------------------------------------

    def has_next(self) -> bool:
        return bool(self._future_to_actor)

    def get_next(self, timeout=None, ignore_if_timedout=False):
        """The next result in submission order."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after "
                             "get_next_unordered().")
        ref = self._index_to_future[self._next_return_index]
        if timeout is not None:
            ready, _ = api.wait([ref], timeout=timeout)
            if not ready:
                if ignore_if_timedout:
                    self._next_return_index += 1
                    del self._index_to_future[self._next_return_index - 1]
                    self._return_actor(ref)
                raise GetTimeoutError("Timed out waiting for result")
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        self._return_actor(ref)
        return api.get(ref)

    def get_next_unordered(self, timeout=None, ignore_if_timedout=False):
        """Any next result, the first to finish."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        ready, _ = api.wait(list(self._future_to_actor), num_returns=1, timeout=timeout)
        if not ready:
            raise GetTimeoutError("Timed out waiting for result")
        ref = ready[0]
        index, _ = self._future_to_actor[ref]
        self._index_to_future.pop(index, None)
        self._next_return_index = max(self._next_return_index, index + 1)
        self._return_actor(ref)
        return api.get(ref)

    # ---- the actors ----------------------------------------------------------------------

    def has_free(self) -> bool:
        return bool(self._idle) and not self._pending

    def pop_idle(self):
        """Take an idle actor out of the pool (None if none is idle)."""
        return self._idle.pop() if self.has_free() else None

    def push(self, actor) -> None:
        """Add an actor to the pool (it takes queued work at once)."""
        busy = {a for _, a in self._future_to_actor.values()}
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._idle.append(actor)
        self._drain_pending()

    def _return_actor(self, ref) -> None:
        _, actor = self._future_to_actor.pop(ref)
        self._idle.append(actor)
        self._drain_pending()

    def _drain_pending(self) -> None:
        while self._pending and self._idle:
            self.submit(*self._pending.pop(0))

    def _check_drained(self, what: str) -> None:
        if self.has_next():
            raise ValueError(f"{what}() needs the pool to have no results outstanding; "
                             f"collect them with get_next() first")
