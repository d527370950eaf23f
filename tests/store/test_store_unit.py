"""Unit tests of the store binding: object life, errors and their texts, eviction, segments."""

from __future__ import annotations

import gc
import struct

import numpy as np
import pytest

from tests.store.helpers import oid
from zactor.exceptions import (
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectStateError,
    ObjectStoreError,
    ObjectStoreFullError,
    StoreSegmentError,
)
from zactor.store import ObjectStore, default_store_size


def test_create_seal_get_release(store):
    buf = store.create_buffer(oid(1), 5, metadata=b"meta")
    buf[:] = b"hello"
    assert not store.contains(oid(1))
    assert store.get_buffer(oid(1)) is None  # not sealed yet
    store.seal(oid(1))
    assert store.contains(oid(1))
    got = store.get_buffer(oid(1))
    assert bytes(got.data) == b"hello" and got.metadata == b"meta" and got.data.readonly
    assert store.stats()["pinned_count"] == 1
    got.release()
    assert store.stats()["pinned_count"] == 0
    got.release()  # idempotent
    assert store.check() == 0


def test_pin_released_when_last_reference_dies(store):
    store.put(oid(1), np.arange(10_000))
    arr = store.get(oid(1))
    assert store.stats()["pinned_count"] == 1
    view = arr[10:20]
    del arr
    gc.collect()
    assert store.stats()["pinned_count"] == 1, "a view still uses the memory"
    del view
    gc.collect()
    assert store.stats()["pinned_count"] == 0


def test_release_waits_for_arrays_using_the_memory(store):
    store.put(oid(1), np.arange(10_000))
    buf = store.get_buffer(oid(1))
    arr = np.frombuffer(buf.data, dtype=np.uint8)
    buf.release()
    assert store.stats()["pinned_count"] == 1, "arr still uses the memory"
    assert arr[0] == 0x5a  # the value's header, still readable
    del arr
    gc.collect()
    assert store.stats()["pinned_count"] == 0


def test_state_errors(store):
    with pytest.raises(ObjectNotFoundError):
        store.seal(oid(1))
    with pytest.raises(ObjectNotFoundError):
        store.delete(oid(1))
    store.create_buffer(oid(1), 10)
    with pytest.raises(ObjectExistsError):
        store.create_buffer(oid(1), 10)
    with pytest.raises(ObjectStateError):
        store.delete(oid(1))  # unsealed: abort it instead
    store.seal(oid(1))
    with pytest.raises(ObjectStateError):
        store.seal(oid(1))
    with pytest.raises(ObjectStateError):
        store.abort(oid(1))
    with pytest.raises(ValueError):
        store.create_buffer(b"short", 10)
    with pytest.raises(ValueError):
        store.create_buffer(oid(2), -1)
    with pytest.raises(ObjectNotFoundError):
        store.get(oid(3))
    assert store.check() == 0


def test_abort_frees(store):
    store.create_buffer(oid(1), 1000)
    store.abort(oid(1))
    assert store.stats()["object_count"] == 0
    assert store.blocks() == [(0, store.stats()["capacity"], True)]


def test_delete_of_pinned_object_is_deferred(store):
    store.put(oid(1), b"x" * 5000)
    buf = store.get_buffer(oid(1))
    store.delete(oid(1))
    assert not store.contains(oid(1)) and store.get_buffer(oid(1)) is None
    with pytest.raises(ObjectExistsError):
        store.create_buffer(oid(1), 10)  # the id is busy until the readers let go
    assert store.stats()["object_count"] == 1
    buf.release()
    assert store.stats()["object_count"] == 0
    store.put(oid(1), b"again")
    assert store.get(oid(1)) == b"again"


def test_lru_eviction_order(shm_path):
    s = ObjectStore.create(shm_path, 1 << 20)
    try:
        for i in range(4):
            s.put(oid(i), b"x" * 200_000)
        s.get(oid(0))  # oid(0) becomes the most recently used (pin dropped at once)
        gc.collect()
        s.put(oid(9), b"y" * 300_000)  # needs room: evicts 1 then 2
        assert [s.contains(oid(i)) for i in range(4)] == [True, False, False, True]
        assert s.stats()["evictions"] == 2 and s.check() == 0
    finally:
        s.destroy()


def test_unevictable_and_pinned_objects_stay(shm_path):
    s = ObjectStore.create(shm_path, 1 << 20)
    try:
        s.put(oid(1), b"x" * 300_000, evictable=False)
        s.put(oid(2), b"x" * 300_000)
        keep = s.get_buffer(oid(2))
        s.put(oid(3), b"x" * 300_000)
        s.set_evictable(oid(1), False)
        with pytest.raises(ObjectStoreFullError) as info:
            s.put(oid(4), b"x" * 600_000)
        text = str(info.value)
        assert "object store full" in text and "capacity 1048576" in text
        assert "pinned" in text and "evictable" in text
        assert s.contains(oid(3)), "a create that cannot fit evicts nothing"
        s.put(oid(5), b"x" * 200_000)  # fits after evicting oid(3)
        assert not s.contains(oid(3)) and s.contains(oid(1)) and s.contains(oid(2))
        keep.release()
    finally:
        s.destroy()


def test_larger_than_store(shm_path):
    s = ObjectStore.create(shm_path, 1 << 20)
    try:
        with pytest.raises(ObjectStoreFullError, match="2000000 bytes"):
            s.create_buffer(oid(1), 2_000_000)
    finally:
        s.destroy()


def test_table_full(shm_path):
    s = ObjectStore.create(shm_path, 1 << 20, max_objects=4)
    try:
        for i in range(4):
            s.create_buffer(oid(i), 10)
        with pytest.raises(ObjectStoreFullError, match="table full"):
            s.create_buffer(oid(5), 10)
    finally:
        s.destroy()


def test_clients_and_release_client(store):
    other = ObjectStore.attach(store.path)
    try:
        assert other.client_id == 1
        store.put(oid(1), b"v" * 3000)
        held = other.get_buffer(oid(1))
        other.create_buffer(oid(2), 100)  # unsealed, owned by client 1
        clients = {c["client"]: c for c in store.clients()}
        assert clients[1]["pins"] == 1 and set(clients) == {0, 1}
        store.release_client(1)
        assert store.stats()["pinned_count"] == 0
        assert store.stats()["object_count"] == 1, "its unsealed object was aborted"
        assert [c["client"] for c in store.clients()] == [0]
        del held
    finally:
        other.close()
    assert store.check() == 0


def test_close_releases_pins(store):
    other = ObjectStore.attach(store.path)
    store.put(oid(1), b"v" * 3000)
    held = other.get(oid(1))
    other.close()
    assert store.stats()["pinned_count"] == 0
    assert len(held) == 3000  # the mapping outlives close while values use it


def test_too_many_clients(store):
    handles = []
    try:
        with pytest.raises(ObjectStoreError, match="too many clients"):
            for _ in range(300):
                handles.append(ObjectStore.attach(store.path))
        assert len(handles) == 255
    finally:
        for h in handles:
            h.close()


def test_refuses_wrong_version_and_corrupt_segments(shm_path):
    s = ObjectStore.create(shm_path, 1 << 20)
    s.close()
    del s
    gc.collect()
    with open(shm_path, "r+b") as f:
        header = f.read(64)
        f.seek(8)
        f.write(struct.pack("<I", 99))
    with pytest.raises(StoreSegmentError, match="layout version"):
        ObjectStore.attach(shm_path)
    with open(shm_path, "r+b") as f:
        f.write(header)
        f.seek(24)
        f.write(struct.pack("<Q", 12345))  # capacity disagrees with the file size
    with pytest.raises(StoreSegmentError, match="corrupt"):
        ObjectStore.attach(shm_path)
    with open(shm_path, "r+b") as f:
        f.write(b"garbage!")
    with pytest.raises(StoreSegmentError, match="bad magic"):
        ObjectStore.attach(shm_path)
    with open(shm_path, "wb") as f:
        f.write(b"tiny")
    with pytest.raises(StoreSegmentError, match="bad magic"):
        ObjectStore.attach(shm_path)


def test_missing_segment_and_existing_path(shm_path):
    with pytest.raises(StoreSegmentError, match="no object store"):
        ObjectStore.attach(shm_path)
    s = ObjectStore.create(shm_path, 1 << 20)
    try:
        with pytest.raises(ObjectExistsError):
            ObjectStore.create(shm_path, 1 << 20)
    finally:
        s.destroy()


def test_shm_too_small_names_sizes(shm_path):
    with pytest.raises(StoreSegmentError, match=r"bytes free .*shm-size"):
        ObjectStore.create(shm_path, 40 << 40)


def test_default_size_is_30_percent():
    import os
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert abs(default_store_size() - 0.3 * total) < 1 << 20


def test_put_get_values(store):
    store.put(oid(1), {"a": [1, 2.5, "x"], "f": lambda x: x * 3})
    v = store.get(oid(1))
    assert v["a"] == [1, 2.5, "x"] and v["f"](2) == 6
    arr = np.arange(100_000, dtype=np.int32).reshape(100, 1000)
    store.put(oid(2), {"arr": arr, "n": 1})
    got = store.get(oid(2))["arr"]
    assert np.array_equal(got, arr) and not got.flags.writeable
    seg = np.frombuffer(store.segment_view(), dtype=np.uint8)
    assert np.shares_memory(got, seg)
    assert got.ctypes.data % 64 == 0


def test_failed_put_aborts(store):
    import threading
    with pytest.raises(TypeError, match="lock"):
        store.put(oid(1), {"lock": threading.Lock()})
    assert not store.contains(oid(1)) and store.stats()["object_count"] == 0


def test_warm_thread_stays_ahead(shm_path):
    from tests.store.helpers import wait_for
    s = ObjectStore.create(shm_path, 256 << 20, warm_bytes=64 << 20)
    try:
        assert s.stats()["warm_end"] >= 16 << 20  # populated before create returned
        wait_for(lambda: s.stats()["warm_end"] >= 64 << 20, what="warming to the headroom")
        s.put(oid(1), np.zeros(100 << 20, dtype=np.uint8))
        need = s.stats()["high_water"] + (64 << 20)
        wait_for(lambda: s.stats()["warm_end"] >= need, what="warming past the high water")
    finally:
        s.destroy()


def test_forked_child_does_not_release_its_parents_pins(store):
    import os
    store.put(oid(1), b"x" * 3000)
    held = store.get_buffer(oid(1))
    pid = os.fork()
    if pid == 0:  # the child inherits the handle, not the client number
        store.close()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    st = store.stats()
    assert st["pinned_count"] == 1 and st["clients"] == 1 and store.check() == 0
    held.release()


def test_put_serialized(store):
    from zactor import serialization
    arr = np.arange(300_000, dtype=np.int64)
    s = serialization.serialize({"a": arr})
    assert store.put_serialized(oid(1), s, evictable=False) == s.total_size
    assert np.array_equal(store.get(oid(1))["a"], arr)
    assert store.stats()["evictable_bytes"] == 0
