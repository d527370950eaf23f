"""The store shared by several processes: concurrent puts and gets, a process SIGKILLed
inside the lock (test fault points in the C code), a process SIGKILLed holding pins."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.store.helpers import oid
from zactor.store import ObjectStore

JOIN_TIMEOUT_S = 60
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _spawn(name, *args, env=None):
    return subprocess.Popen([sys.executable, "-m", "tests.store.workers", name, json.dumps(args)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)


def _join(procs):
    try:
        for p in procs:
            p.wait(JOIN_TIMEOUT_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for p in procs:
            p.stdin.close()
            p.stdout.close()


def _wait_ready(p):
    line = p.stdout.readline()  # the child prints "ready" or dies (EOF)
    assert line.strip() == "ready", f"worker died before it was ready (exit {p.poll()})"


def test_concurrent_put_get(shm_path):
    store = ObjectStore.create(shm_path, 16 << 20)
    try:
        n = 4
        procs = [_spawn("put_get_worker", shm_path, w, 150, n, w) for w in range(n)]
        _join(procs)
        assert [p.returncode for p in procs] == [0] * n
        st = store.stats()
        assert st["evictions"] > 0, "the store was small enough to need eviction"
        assert st["pinned_count"] == 0 and st["clients"] == 1
        assert store.check() == 0
    finally:
        store.destroy()


@pytest.mark.parametrize("fault", ["crash_in_lock", "crash_in_get", "crash_in_release",
                                   "crash_in_delete"])
def test_sigkill_inside_the_lock(shm_path, fault):
    store = ObjectStore.create(shm_path, 4 << 20)
    try:
        store.put(oid(1), b"survivor" * 1000)
        store.put(oid(2), b"target" * 1000)
        p = _spawn("crash_worker", shm_path, fault, 2)
        _join([p])
        assert p.returncode == -signal.SIGKILL, "the fault point killed the process"
        # The next locker finds the lock's owner dead and repairs the store.
        assert store.check() == 0
        st = store.stats()
        assert st["recoveries"] == 1
        assert st["pinned_count"] == 0, "a pin never committed or half-released is gone"
        assert store.get(oid(1)) == b"survivor" * 1000
        assert store.contains(oid(2)) == (fault != "crash_in_delete")
        assert not store.contains(oid(99)) and store.stats()["object_count"] == 1 + (
            fault != "crash_in_delete"), "the half-made object's block was reclaimed"
        dead = [c["client"] for c in store.clients() if c["pid"] == p.pid]
        assert dead
        store.release_client(dead[0])
        for i in range(10, 40):  # and it keeps working, evicting included
            store.put(oid(i), bytes(200_000))
        assert store.check() == 0
    finally:
        store.destroy()


def test_sigkill_while_hanging_in_the_lock(shm_path):
    """A process stopped inside the lock blocks others until it is killed; then the store is
    repaired and everyone proceeds."""
    import threading

    store = ObjectStore.create(shm_path, 4 << 20)
    try:
        store.put(oid(1), b"survivor")
        env = dict(os.environ, ZACTOR_STORE_FAULT="hang_in_lock")
        p = subprocess.Popen([sys.executable, "-m", "tests.store.workers", "crash_worker",
                              json.dumps([shm_path, "hang_in_lock", 2])], cwd=ROOT,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert "hanging in the lock" in p.stderr.readline()
            done = threading.Event()
            waiter = threading.Thread(target=lambda: (store.contains(oid(1)), done.set()))
            waiter.start()
            assert not done.wait(0.3), "the lock is held by the hung process"
            p.kill()
            assert done.wait(JOIN_TIMEOUT_S), "the waiter got the lock after the kill"
            waiter.join(JOIN_TIMEOUT_S)
        finally:
            p.kill()
            p.wait(JOIN_TIMEOUT_S)
            p.stderr.close()
        assert store.stats()["recoveries"] == 1 and store.check() == 0
        assert store.get(oid(1)) == b"survivor" and not store.contains(oid(99))
    finally:
        store.destroy()


def test_sigkill_holding_pins_then_release_client(shm_path):
    store = ObjectStore.create(shm_path, 4 << 20)
    try:
        keys = [oid(i) for i in range(3)]
        for k in keys:
            store.put(k, bytes(1_000_000))
        p = _spawn("hold_pins_worker", shm_path, [0, 1, 2], 9)
        _wait_ready(p)
        p.kill()
        _join([p])
        st = store.stats()
        assert st["pinned_count"] == 3 and st["object_count"] == 4
        (client,) = [c for c in store.clients() if c["pid"] == p.pid]
        assert client["pins"] == 3
        store.delete(keys[0])  # deferred: the dead client still pins it
        with pytest.raises(Exception, match="full"):
            store.put(oid(20), bytes(2_000_000))  # everything is pinned
        store.release_client(client["client"])
        st = store.stats()
        assert st["pinned_count"] == 0
        assert st["object_count"] == 2, "the deferred delete and the unsealed object are gone"
        store.put(oid(20), bytes(2_000_000))  # evicts now
        assert store.check() == 0
        assert p.pid not in [c["pid"] for c in store.clients()]
    finally:
        store.destroy()
