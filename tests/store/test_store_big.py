"""A 1 GB numpy array through the store: written once, read back without a copy."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from tests.store.helpers import oid, shm_free_bytes
from zactor.store import ObjectStore

GB = 1 << 30

pytestmark = pytest.mark.skipif(shm_free_bytes() < 2.5 * GB,
                                reason="needs 2.5 GB free in /dev/shm")


def test_1gb_round_trip_is_zero_copy(shm_path):
    store = ObjectStore.create(shm_path, GB + (64 << 20))
    try:
        arr = np.arange(GB // 8, dtype=np.int64)
        store.put(oid(1), arr)
        got = store.get(oid(1))
        segment = np.frombuffer(store.segment_view(), dtype=np.uint8)
        assert np.shares_memory(got, segment), "the array's memory is the segment"
        assert not got.flags.writeable
        with pytest.raises(ValueError):
            got[0] = 1
        assert got.shape == arr.shape and got.dtype == arr.dtype
        assert got[0] == 0 and got[-1] == arr[-1] and got[12345678] == 12345678
        assert int(got[::4096].sum()) == int(arr[::4096].sum())
        assert store.stats()["pinned_count"] == 1
        del got
        gc.collect()
        assert store.stats()["pinned_count"] == 0
        assert store.check() == 0
    finally:
        store.destroy()
