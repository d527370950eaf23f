"""Threaded and async actors: running several calls of one actor at once, in its worker.

Runs in the worker that hosts the actor. Ray's rules:
- an actor with ``async def`` methods is an *async actor*: its coroutines run on one event loop
  (a thread of the worker), at most ``max_concurrency`` at a time (default 1000);
- an actor with plain methods and ``max_concurrency > 1`` is a *threaded actor*: calls run on
  a pool of that many threads, so its methods must be thread-safe;
- otherwise calls run one at a time, in order, on the worker's main thread (no object here).

Calls are handed out in the order they arrive but may finish in any order; each reports its
own result as it finishes. Async and threaded actors are not replayed after a restart (see the
actors issue: they restart from their constructor or checkpoint).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

DEFAULT_ASYNC_MAX_CONCURRENCY = 1000


def _is_async_class(cls) -> bool:
    return any(inspect.iscoroutinefunction(member)
               for name, member in inspect.getmembers(cls)
               if not (name.startswith("__") and name.endswith("__")))


class ActorConcurrency:
    """Where the calls of a threaded or async actor run (threads; an event loop)."""

    def __init__(self, max_concurrency: int, async_actor: bool):
        self.max_concurrency = max_concurrency
        self.loop = None
        if async_actor:
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, daemon=True,
                             name="zactor-actor-loop").start()
        self._limit = None
        # async calls handed to the loop in batches: one wake-up of the loop per batch
        # (run_coroutine_threadsafe per call cost a future and a self-pipe write each)
        self._incoming: deque = deque()
        self._running: set = set()  # the loop's tasks (asyncio keeps only weak references)
        # threaded actors: one thread per call in flight (created only when needed)
        self.pool = ThreadPoolExecutor(max_workers=max_concurrency,
                                       thread_name_prefix="zactor-actor-call")

    @classmethod
    def for_actor(cls, instance, max_concurrency):
        async_actor = _is_async_class(type(instance))
        if async_actor:
            return cls(max_concurrency or DEFAULT_ASYNC_MAX_CONCURRENCY, True)
        if max_concurrency and max_concurrency > 1:
            return cls(max_concurrency, False)
        return None

    def submit(self, worker, entry) -> None:
        """Start one call: a coroutine on the loop (async method), else on a pool thread."""
        spec, resolved = entry[0], entry[1]
        method = getattr(worker.actor_instance, spec["actor"]["method"], None)
        if self.loop is not None and inspect.iscoroutinefunction(method):
            reply_to = entry[4] if len(entry) > 4 else None
            self._incoming.append((worker, spec, resolved, reply_to))
            if len(self._incoming) == 1:  # later ones are taken by the same drain
                self.loop.call_soon_threadsafe(self._start_incoming)
        else:
            self.pool.submit(worker._execute, *entry)

    def _start_incoming(self) -> None:
        """On the loop: start every call handed over so far, in arrival order (it takes
        until the deque is empty, so a call added meanwhile is either taken here or finds
        the deque empty and schedules another drain)."""
        while True:
            try:
                worker, spec, resolved, reply_to = self._incoming.popleft()
            except IndexError:
                return
            task = self.loop.create_task(
                self._limited(worker.execute_async(spec, resolved, reply_to)))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _limited(self, coroutine):
        if self._limit is None:
            self._limit = asyncio.Semaphore(self.max_concurrency)  # made on the loop
        async with self._limit:
            await coroutine

    def adapt(self, method):
        """The callable a pool thread runs for ``method`` (plain methods run as they are;
        an async method reached through a pool thread is run on the loop and waited for)."""
        if self.loop is None or not inspect.iscoroutinefunction(method):
            return method
        loop = self.loop

        @functools.wraps(method)
        def run_on_loop(*args, **kwargs):
            return asyncio.run_coroutine_threadsafe(method(*args, **kwargs), loop).result()

        return run_on_loop
