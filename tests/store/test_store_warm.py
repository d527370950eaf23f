"""Warm pages (csrc/zs_warm.c): a fresh store commits little, freed pages above the headroom go
back to the OS, attached clients pre-fault, and no trim ever touches a live object.

Allocated bytes are read from the tmpfs file (st_blocks), which counts every page of the
segment whichever process committed it. Timings are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from tests.store.helpers import oid, wait_for
from zactor.store import ObjectStore

MB = 1 << 20


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def settled(store) -> dict:
    """Stats once the creator's thread has reached its target (nothing left to warm or trim)."""
    def done():
        st = store.stats()
        target = min(st["capacity"], st["high_water"] + st["headroom"])
        return st if st["warm_end"] >= target - 4096 and st["commit_end"] <= target + (
            max(st["headroom"] // 4, 4 * MB)) else None
    return wait_for(done, what="warm thread to settle")


def test_fresh_store_commits_little(shm_path):
    s = ObjectStore.create(shm_path, 1 << 30)
    try:
        st = settled(s)
        time.sleep(0.2)  # the thread would have warmed more by now if it meant to
        got = allocated(shm_path)
        print(f"fresh 1 GB store: {got / MB:.1f} MB allocated, headroom {st['headroom'] / MB} MB")
        assert st["headroom"] == 16 * MB
        assert got < 40 * MB
        assert s.check() == 0
    finally:
        s.destroy()


def test_big_delete_gives_pages_back(shm_path):
    s = ObjectStore.create(shm_path, 1 << 30)
    try:
        s.put(oid(1), np.ones(300 * MB, dtype=np.uint8))
        assert allocated(shm_path) >= 300 * MB
        s.delete(oid(1))
        assert s.stats()["high_water"] == 0 and s.check() == 0
        wait_for(lambda: allocated(shm_path) < 64 * MB, what="pages of the freed object back")
        st = s.stats()
        print(f"after a 300 MB put+delete: {allocated(shm_path) / MB:.1f} MB allocated, "
              f"given back {st['given_back'] / MB:.0f} MB")
        assert st["given_back"] >= 200 * MB and s.check() == 0
    finally:
        s.destroy()


def test_trim_never_touches_live_objects(shm_path):
    s = ObjectStore.create(shm_path, 512 * MB)
    other = ObjectStore.attach(shm_path)  # its pre-fault thread races with the trims
    try:
        low = np.arange(3 * MB, dtype=np.uint8)
        s.put(oid(1), low)
        for round_ in range(3):
            s.put(oid(2), np.full(200 * MB, 7, dtype=np.uint8))
            s.put(oid(3), np.full(MB, round_, dtype=np.uint8))  # above the big one
            s.delete(oid(2))
            s.delete(oid(3))
            wait_for(lambda: s.stats()["high_water"] < 8 * MB and allocated(shm_path) < 100 * MB,
                     what="trim after the deletes")
            assert np.array_equal(s.get(oid(1)), low)
            assert np.array_equal(other.get(oid(1)), low)
            assert s.check() == 0
    finally:
        other.close()
        s.destroy()


def test_fixed_warm_bytes_are_kept(shm_path):
    s = ObjectStore.create(shm_path, 256 * MB, warm_bytes=64 * MB)
    try:
        s.put(oid(1), np.ones(100 * MB, dtype=np.uint8))
        s.delete(oid(1))
        st = settled(s)
        assert st["headroom"] == 64 * MB and st["warm_end"] >= 64 * MB - 4096
        wait_for(lambda: allocated(shm_path) < 96 * MB, what="trim down to the fixed headroom")
        assert allocated(shm_path) >= 60 * MB  # the fixed headroom stays populated
    finally:
        s.destroy()


def test_attach_is_fast_and_detach_stops_the_thread(shm_path):
    s = ObjectStore.create(shm_path, 256 * MB)
    try:
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            c = ObjectStore.attach(shm_path)
            times.append(time.perf_counter() - t0)
            c.close()
        print(f"attach: median {sorted(times)[10] * 1e6:.0f} us")
        assert s.stats()["clients"] == 1 and s.check() == 0
    finally:
        s.destroy()


def test_client_puts_of_100mb(shm_path):
    """An attached client's repeated 100 MB puts; figures printed, contents verified."""
    size, rounds = 100 * MB, 6
    s = ObjectStore.create(shm_path, 1 << 30)
    try:
        settled(s)
        out = subprocess.run([sys.executable, "-m", "tests.store.workers", "big_puts_worker",
                              json.dumps([shm_path, size, rounds, 10])],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        rates = json.loads(out.stdout.splitlines()[-1])
        print("client 100 MB puts, GB/s: " + ", ".join(f"{r:.2f}" for r in rates))
        got = s.get(oid(10 + rounds - 1))
        assert np.array_equal(got, np.arange(size, dtype=np.uint8))
        del got
        s.delete(oid(10 + rounds - 1))
        wait_for(lambda: allocated(shm_path) < 300 * MB, what="pages back after the puts")
        assert s.check() == 0
    finally:
        s.destroy()
