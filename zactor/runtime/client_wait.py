"""Waiting for objects in a CoreClient: ``get`` and ``wait_ready`` (what ``zactor.get`` and
``zactor.wait`` come down to), and the SUBSCRIBE for results made elsewhere. A mixin of
CoreClient (core_client.py), which owns the lock, the sockets and ``pump``.

Threads: the thread that holds the client's lock reads every message, for every waiting
thread; each waiting thread has a ``Waiter`` (client_lock.py) where the reader records the
objects that arrived and which it wakes. The first poll slice of a wait runs in the lock hold
that registered it, so a synchronous call's result, which usually comes in that slice, costs
one lock hold per ``get``; a driver's ``get`` of one result tries that slice without a Waiter
at all (``_get_one_in_a_slice``: while it holds the lock it reads its own arrival).
"""

from __future__ import annotations

import time

from zactor.exceptions import GetTimeoutError
from zactor.runtime import messages as m
from zactor.runtime.client_lock import Waiter

POLL_SLICE_MS = 50  # the longest a waiting thread keeps the lock, or sleeps, at a time


def _slice_ms(deadline) -> int:
    if deadline is None:
        return POLL_SLICE_MS
    return max(0, min(POLL_SLICE_MS, int((deadline - time.monotonic()) * 1000)))


def _past(deadline) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _count_arrivals(arrived: list, missing: set, have: int) -> int:
    """Take a waiter's recorded arrivals: ``have`` plus those it was missing."""
    batch = arrived[:]
    del arrived[:len(batch)]
    for oid in batch:
        if oid in missing:
            missing.discard(oid)
            have += 1
    return have


class ClientWaits:
    def _ask_for(self, oids) -> None:
        # in a cluster a result made on another node stays there until asked for
        # (node_manager._set_value), so a process asks for its own results too
        missing = [o for o in oids if o not in self._results and o not in self._subscribed
                   and (self._cluster or o not in self._expected)]
        if missing:
            self._subscribed.update(missing)
            self._raw_send(m.SUBSCRIBE, {"oids": missing})

    def wait_ready(self, oids, num_ready: int, timeout_s, taken=None) -> None:
        """Block until ``num_ready`` of ``oids`` have results here, or the deadline passes.
        ``taken``: a list to extend with each oid's (state, data), None for those not here
        (read in the lock hold that ends the wait: ``get`` needs no second one).
        Raises LocalRayletDiedError when the node manager dies meanwhile."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        results = self._results
        if num_ready <= 0 or all(o in results for o in oids):
            if taken is not None:  # the caller holds refs to them: they stay
                taken.extend([results.get(o) for o in oids])
            return  # all here already: no message needed
        # arrivals are recorded while we wait, so each batch costs O(its size), not O(oids);
        # registered under the lock before looking, so that no arrival is missed (another
        # thread, the flusher, may read messages whenever the lock is free)
        waiter = self._spare_waiters.pop() if self._spare_waiters else Waiter()
        arrived = waiter.arrived
        lock = self._lock
        blocked = False
        lock.acquire()
        held = True
        try:
            self._add_waiter(waiter)
            self.flush(lazy=True)
            if self._cluster:
                # results that came already need no SUBSCRIBE (below); on one node the
                # first poll reads them (they are expected: nothing is asked)
                self.pump(0)
            missing = {o for o in oids if o not in results}
            have = len(set(oids)) - len(missing)
            if have >= num_ready:
                return
            self._ask_for(missing)
            while True:
                if held:
                    # the first slice runs in the same hold as the set-up above (a
                    # synchronous call's result usually comes in it: one lock hold per get)
                    if not blocked and self.blocked_hook is not None:
                        blocked = True
                        self.blocked_hook(True)
                    got = self.pump(_slice_ms(deadline))
                    if self.direct.leases:
                        self.direct.rebalance()
                    have = _count_arrivals(arrived, missing, have)
                    if have >= num_ready or _past(deadline):
                        return
                    if not got:  # (a node manager that sends nothing may have died)
                        self._check_node()
                        self.check_alive()
                    held = False
                    lock.release()  # the other threads may use the client between slices
                # cleared before looking and before trying the lock: an arrival or a
                # release after this point sets it again, so the wait below misses neither
                waiter.event.clear()
                if arrived:  # recorded by whichever thread read them (list ops are atomic)
                    have = _count_arrivals(arrived, missing, have)
                    if have >= num_ready:
                        return
                if _past(deadline):
                    return
                waiter.may_sleep = True
                if lock.acquire(blocking=False):
                    held = True
                    waiter.may_sleep = False
                    self.flush(lazy=True)
                    continue
                # another thread holds the lock, most likely reading messages (those for us
                # too): wait for it to record ours, or to let the lock go, rather than
                # compete for the lock, which a thread looping in get() re-takes before a
                # waiting one wakes (that starved other threads' gets until their timeouts)
                waiter.event.wait(_slice_ms(deadline) / 1000)
        finally:
            if not held:
                lock.acquire()
            try:
                self._remove_waiter(waiter)
                if taken is not None:
                    taken.extend([results.get(o) for o in oids])
                if blocked:
                    self.blocked_hook(False)
            finally:
                lock.release()
            # kept for this process's next wait (an Event costs ~5 us to make); a holder of
            # the old tuple of waiters may still set its event: a spurious wake-up, re-checked
            del arrived[:]
            waiter.may_sleep = False
            self._spare_waiters.append(waiter)

    def _add_waiter(self, waiter: Waiter) -> None:  # under the lock
        self._arrivals[id(waiter)] = waiter
        self._lock.waiters = tuple(self._arrivals.values())

    def _remove_waiter(self, waiter: Waiter) -> None:  # under the lock
        del self._arrivals[id(waiter)]
        self._lock.waiters = tuple(self._arrivals.values())

    def _get_one_in_a_slice(self, oid: bytes, timeout_s):
        """A synchronous call's result, as ``wait_ready`` would wait for it in its first
        slice, for a thread that gets the lock at once and has no blocked hook to call (a
        driver's): one lock hold, and no Waiter (while it holds the lock, this thread reads
        every arrival itself). None if the result did not come in that slice (or the lock
        was taken): ``wait_ready`` goes on from there."""
        lock = self._lock
        if self.blocked_hook is not None or self._cluster or not lock.acquire(blocking=False):
            return None
        try:
            self.flush(lazy=True)
            self._ask_for((oid,))
            self.pump(_slice_ms(None if timeout_s is None else time.monotonic() + timeout_s))
            return self._results.get(oid)
        finally:
            lock.release()

    def get(self, oids, timeout_s=None) -> list:
        results = self._results
        # the caller holds refs to ``oids``: a result here stays here (no lock needed to look)
        found = [results.get(o) for o in oids]
        if None in found and len(oids) == 1:
            value = self._get_one_in_a_slice(oids[0], timeout_s)
            if value is not None:
                found = [value]
        if None in found:
            found = []
            self.wait_ready(oids, len(set(oids)), timeout_s, found)
            missing = [o for o, value in zip(oids, found) if value is None]
            if missing:
                raise GetTimeoutError(f"Get timed out: {len(missing)} of {len(oids)} objects "
                                      f"were not ready after {timeout_s} s (first: "
                                      f"{missing[0].hex()})")
        return [self.decode_value(o, state, data) for o, (state, data) in zip(oids, found)]

    def ready(self, oid: bytes) -> bool:
        return oid in self._results
