"""The client's lock wakes threads waiting in wait_ready when its holder lets it go."""

from __future__ import annotations

import threading

import pytest

from zactor.runtime.client_lock import ClientLock, Waiter


@pytest.mark.timeout(30)
def test_the_last_release_wakes_a_waiter_that_found_the_lock_taken():
    lock = ClientLock()
    waiter = Waiter()
    lock.waiters = (waiter,)
    taken, release = threading.Event(), threading.Event()

    def holder():
        with lock:
            with lock:  # re-entrant: only the outer release lets it go
                taken.set()
                release.wait(10)
            assert not waiter.event.is_set()  # inner release: still held
        # outer release: the waiter is woken

    t = threading.Thread(target=holder)
    t.start()
    assert taken.wait(10)
    waiter.event.clear()
    waiter.may_sleep = True
    assert not lock.acquire(blocking=False)
    release.set()
    # without the wake-up this waits the whole 10 s (a waiter used to sleep a poll slice
    # whenever the flusher held the lock without reading anything for it)
    assert waiter.event.wait(10)
    t.join(10)
    assert lock.acquire(blocking=False)
    lock.release()


@pytest.mark.timeout(30)
def test_a_sync_loop_of_gets_with_the_flusher_running():
    import zactor

    zactor.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        @zactor.remote
        def echo(x):
            return x

        assert [zactor.get(echo.remote(i), timeout=10) for i in range(300)] == list(range(300))
    finally:
        zactor.shutdown()
