"""Functions the multi-process store tests run in child processes.

Run as ``python -m tests.store.workers NAME JSON_ARGS``. A worker that must tell the test it
reached a point prints ``ready`` on stdout; one that must wait blocks reading stdin.
"""

from __future__ import annotations

import json
import os
import random
import sys

import numpy as np

from tests.store.helpers import oid
from zactor.store import ObjectStore


def put_get_worker(path: str, worker: int, n_objects: int, n_workers: int, seed: int):
    """Put objects of random sizes; get others' objects and verify their contents."""
    rng = random.Random(seed)
    store = ObjectStore.attach(path)
    bad = 0
    try:
        for i in range(n_objects):
            key = worker * 100_000 + i
            size = rng.choice([1, 100, 5_000, 100_000, 400_000])
            store.put(oid(key), (key, np.full(size, key % 251, dtype=np.uint8)))
            other = rng.randrange(n_workers) * 100_000 + rng.randrange(i + 1)
            buf = store.get_buffer(oid(other))
            if buf is not None:  # may have been evicted, or not written yet
                from zactor.serialization import deserialize
                got_key, arr = deserialize(buf.data)
                if got_key != other or not (arr == other % 251).all():
                    bad += 1
                del arr, buf
    finally:
        store.close()
    if bad:
        raise SystemExit(f"worker {worker}: {bad} objects with wrong contents")


def _ready():
    print("ready", flush=True)


def crash_worker(path: str, fault: str, key: int):
    """Attach with a fault point armed and run the operation that hits it (never returns)."""
    os.environ["ZACTOR_STORE_FAULT"] = fault
    store = ObjectStore.attach(path)
    key = oid(key)
    if fault == "crash_in_lock":
        store.create_buffer(oid(99), 1000)  # a new object
    elif fault == "crash_in_get":
        store.get_buffer(key)
    elif fault == "crash_in_release":
        buf = store.get_buffer(key)
        buf.release()
    elif fault == "crash_in_delete":
        store.delete(key)
    elif fault == "hang_in_lock":
        store.create_buffer(oid(99), 1000)  # prints a line on stderr, waits to be killed
    raise SystemExit("the fault point did not fire")


def hold_pins_worker(path: str, keys, unsealed: int):
    """Pin `keys`, leave `unsealed` unsealed, report, then wait to be killed."""
    store = ObjectStore.attach(path)
    held = [store.get_buffer(oid(k)) for k in keys]
    store.create_buffer(oid(unsealed), 100)
    _ready()
    sys.stdin.read()  # until the test kills us (or closes stdin)
    del held


def big_puts_worker(path: str, size: int, rounds: int, first_key: int):
    """Attach, put and delete a `size`-byte array `rounds` times; print each put's GB/s as
    JSON. The last object is left in the store, sealed, for the test to verify."""
    import time
    store = ObjectStore.attach(path)
    value = np.arange(size, dtype=np.uint8)
    rates = []
    try:
        for i in range(rounds):
            t0 = time.perf_counter()
            store.put(oid(first_key + i), value)
            rates.append(size / (time.perf_counter() - t0) / 1e9)
            if i + 1 < rounds:
                store.delete(oid(first_key + i))
    finally:
        store.close()
    print(json.dumps(rates), flush=True)


if __name__ == "__main__":
    globals()[sys.argv[1]](*json.loads(sys.argv[2]))
