"""The store against a Python model, driven by hypothesis.

Rules create, seal, abort, get (pin), release, delete, mark unevictable and release a dead
client's pins, on a store small enough that creates evict and fail. After every step the C
``check()`` must count no violated invariant, the table must match the model, the live
blocks must not overlap and must account for every byte, and an empty store must be one free
block (coalescing).
"""

from __future__ import annotations

import gc
import os
import time

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.store.helpers import oid
from zactor.exceptions import (
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectStateError,
    ObjectStoreFullError,
)
from zactor.store import ObjectStore

CAPACITY = 1 << 20
IDS = [oid(i) for i in range(10)]
SIZES = [0, 1, 65, 4096, 50_000, 200_000, 300_000, 400_000, 600_000, 900_000]


class Obj:
    def __init__(self, size, meta, evictable, tick):
        self.size, self.meta, self.evictable = size, meta, evictable
        self.sealed = False
        self.deleted = False
        self.tick = tick


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.path = f"/dev/shm/zactor-test-model-{os.getpid()}-{time.monotonic_ns()}"
        self.a = ObjectStore.create(self.path, CAPACITY, max_objects=8)
        self.b = ObjectStore.attach(self.path)
        self.objs = {}
        self.held = []  # (client letter, oid, StoreBuffer)
        self.tick = 0

    def teardown(self):
        self.held.clear()
        gc.collect()
        self.b.close()
        self.a.destroy()

    def pins(self, key):
        return sum(1 for _, k, _ in self.held if k == key)

    def lru(self):
        cands = [(o.tick, k) for k, o in self.objs.items()
                 if o.sealed and not o.deleted and o.evictable and not self.pins(k)]
        return [k for _, k in sorted(cands)]

    def touch(self, key):
        self.tick += 1
        self.objs[key].tick = self.tick

    @rule(key=st.sampled_from(IDS), size=st.sampled_from(SIZES), meta=st.sampled_from([b"", b"m"]),
          evictable=st.booleans(), seal_now=st.booleans())
    def create(self, key, size, meta, evictable, seal_now):
        if key in self.objs:
            with pytest.raises(ObjectExistsError):
                self.a.create_buffer(key, size, meta, evictable)
            return
        order = self.lru()
        if len(self.objs) >= 8:
            with pytest.raises(ObjectStoreFullError):
                self.a.create_buffer(key, size, meta, evictable)
            return
        try:
            buf = self.a.create_buffer(key, size, meta, evictable)
        except ObjectStoreFullError as e:
            assert "object store full" in str(e) and str(size + len(meta)) in str(e)
            buf = None
        gone = [k for k in order if not self.a.contains(k)]
        assert gone == order[:len(gone)], "evictions must follow LRU order"
        for k in gone:
            del self.objs[k]
        event(f"create: {'full' if buf is None else 'ok'}, evicted {min(len(gone), 2)}+")
        if buf is None:
            assert not gone or gone == order, "a failed create evicts nothing or everything"
            return
        assert len(buf) == size
        buf[:] = bytes([key[-4]]) * size
        self.tick += 1
        self.objs[key] = Obj(size, meta, evictable, self.tick)
        if seal_now:
            self.seal(key)

    @rule(key=st.sampled_from(IDS))
    def seal(self, key):
        o = self.objs.get(key)
        if o is None:
            with pytest.raises(ObjectNotFoundError):
                self.a.seal(key)
        elif o.sealed:
            with pytest.raises(ObjectStateError):
                self.a.seal(key)
        else:
            self.a.seal(key)
            o.sealed = True
            self.touch(key)

    @rule(key=st.sampled_from(IDS))
    def abort(self, key):
        o = self.objs.get(key)
        if o is None:
            with pytest.raises(ObjectNotFoundError):
                self.a.abort(key)
        elif o.sealed:
            with pytest.raises(ObjectStateError):
                self.a.abort(key)
        else:
            self.a.abort(key)
            del self.objs[key]

    @rule(key=st.sampled_from(IDS), client=st.sampled_from("ab"))
    def get(self, key, client):
        o = self.objs.get(key)
        buf = getattr(self, client).get_buffer(key)
        if o is None or not o.sealed or o.deleted:
            assert buf is None
            return
        assert buf is not None and len(buf) == o.size and buf.metadata == o.meta
        assert bytes(buf.data) == bytes([key[-4]]) * o.size
        assert buf.data.readonly
        self.held.append((client, key, buf))
        self.touch(key)

    @precondition(lambda self: self.held)
    @rule(i=st.integers(min_value=0, max_value=100), explicit=st.booleans())
    def release(self, i, explicit):
        client, key, buf = self.held.pop(i % len(self.held))
        if explicit:
            buf.release()
        del buf
        gc.collect()
        self._after_unpin(key)

    def _after_unpin(self, key):
        o = self.objs.get(key)
        if o is not None and not self.pins(key):
            if o.deleted:
                del self.objs[key]
            else:
                self.touch(key)

    @rule(key=st.sampled_from(IDS))
    def delete(self, key):
        o = self.objs.get(key)
        if o is None or o.deleted:
            with pytest.raises(ObjectNotFoundError):
                self.a.delete(key)
        elif not o.sealed:
            with pytest.raises(ObjectStateError):
                self.a.delete(key)
        else:
            self.a.delete(key)
            if self.pins(key):
                o.deleted = True
            else:
                del self.objs[key]

    @rule(key=st.sampled_from(IDS), evictable=st.booleans())
    def set_evictable(self, key, evictable):
        o = self.objs.get(key)
        if o is None or o.deleted:
            with pytest.raises(ObjectNotFoundError):
                self.a.set_evictable(key, evictable)
        else:
            self.a.set_evictable(key, evictable)
            o.evictable = evictable

    @rule()
    def b_dies(self):
        """Client b dies: the manager releases its pins; a new b attaches."""
        dead = self.b
        self.a.release_client(dead.client_id)
        dead._closed = True  # a dead process's buffers never release anything
        keys = [k for c, k, _ in self.held if c == "b"]
        self.held = [h for h in self.held if h[0] != "b"]
        gc.collect()
        for k in keys:
            self._after_unpin(k)
        self.b = ObjectStore.attach(self.path)

    @invariant()
    def consistent(self):
        assert self.a.check() == 0
        st_ = self.a.stats()
        assert st_["object_count"] == len(self.objs)
        assert st_["sealed_count"] == sum(o.sealed for o in self.objs.values())
        assert st_["pinned_count"] == sum(1 for k in self.objs if self.pins(k))
        for k, o in self.objs.items():
            assert self.a.contains(k) == (o.sealed and not o.deleted)
        blocks = self.a.blocks()
        pos = 0
        for off, size, _ in blocks:
            assert off == pos and size % 64 == 0
            pos += size
        assert pos == CAPACITY
        used = sum(size for _, size, free in blocks if not free)
        assert used == st_["used_bytes"] and used + st_["free_bytes"] == CAPACITY
        assert sum(1 for b in blocks if not b[2]) == len(self.objs)
        if not self.objs:
            assert blocks == [(0, CAPACITY, True)], "an empty store is one free block"


StoreMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestStoreModel = StoreMachine.TestCase
