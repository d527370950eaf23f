"""zactor.serialization: the format, out-of-band buffers, closures, error messages."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from zactor import serialization as ser


@pytest.mark.parametrize("value", [None, 1, 2.5, "text", b"bytes", [1, (2, 3)], {"a": {"b": 1}},
                                   {"k": [1.5] * 100}, set(range(5)), 10**30])
def test_round_trip(value):
    assert ser.loads(ser.dumps(value)) == value


def test_closures_and_lambdas():
    k = 7

    def add(x):
        return x + k

    fns = ser.loads(ser.dumps({"add": add, "sq": lambda x: x * x}))
    assert fns["add"](1) == 8 and fns["sq"](3) == 9


def test_arrays_out_of_band_and_aligned():
    arr = np.arange(10_000, dtype=np.float64)
    s = ser.serialize({"a": arr, "small": np.arange(3)})
    assert len(s.buffers) == 1 and s.buffers[0].nbytes == arr.nbytes  # small stays in band
    assert all(off % 64 == 0 for off in s.offsets)
    assert arr.tobytes() not in s.pickled
    out = bytearray(s.total_size)
    s.write_to(out)
    got = ser.deserialize(memoryview(out).toreadonly())
    assert np.array_equal(got["a"], arr) and not got["a"].flags.writeable
    assert np.shares_memory(got["a"], np.frombuffer(out, dtype=np.uint8))


def test_non_contiguous_array_goes_in_band():
    arr = np.arange(10_000).reshape(100, 100)[:, ::2]
    got = ser.loads(ser.dumps(arr))
    assert np.array_equal(got, arr)


def test_copy_callback_used_for_buffers():
    arr = np.ones(5000, dtype=np.uint8)
    s = ser.serialize(arr)
    out = bytearray(s.total_size)
    calls = []

    def copy(off, src):
        calls.append((off, src.nbytes))
        out[off:off + src.nbytes] = src

    s.write_to(out, copy=copy)
    assert calls == [(s.offsets[0], 5000)]
    assert np.array_equal(ser.loads(bytes(out)), arr)


def test_unpicklable_names_the_member():
    class Holder:
        def __init__(self):
            self.lock = threading.Lock()

    with pytest.raises(TypeError) as info:
        ser.serialize({"weights": [1, 2], "state": Holder()})
    msg = str(info.value)
    assert "value['state'].lock" in msg and "_thread.lock" in msg

    lock = threading.Lock()
    with pytest.raises(TypeError, match=r"<closure lock>"):
        ser.serialize(lambda: lock.locked())


def test_garbage_is_refused():
    with pytest.raises(ValueError, match="magic"):
        ser.loads(b"nope" + bytes(20))
    with pytest.raises(ValueError, match="too short"):
        ser.loads(b"ZS")
    data = bytearray(ser.dumps(np.ones(5000, dtype=np.uint8)))
    with pytest.raises(ValueError, match="truncated"):
        ser.loads(bytes(data[:100]))


def test_same_format_inline_and_in_store():
    value = {"x": 1, "y": "small"}
    assert ser.dumps(value) == ser.serialize(value).to_bytes()
    assert pickle.loads(ser.dumps(value)[16:]) == value


@pytest.mark.parametrize("dst_address", [0, 64, 4096 + 192, 8192 - 64])
def test_place_avoids_4k_aliasing(dst_address):
    arr = np.arange(ser.ALIAS_MIN_BYTES // 8 + 3, dtype=np.int64)
    s = ser.serialize([arr, arr[::-1].copy()])
    size = s.total_size
    srcs = [16, 4096 + 80]
    s.place(dst_address, srcs)
    assert s.total_size == size
    for off, src, buf in zip(s.offsets, srcs, s.buffers):
        assert off % 64 == 0 and off + buf.nbytes <= size
        assert 1024 <= (dst_address + off - src) % 4096 <= 3072
    assert s.offsets[0] + s.buffers[0].nbytes <= s.offsets[1]
    out = bytearray(size)
    s.write_to(out)
    got = ser.loads(bytes(out))
    assert np.array_equal(got[0], arr) and np.array_equal(got[1], arr[::-1])


def test_object_arrays_and_subclasses_still_use_cloudpickle():
    objs = np.empty(2, dtype=object)
    objs[0], objs[1] = (lambda x: x + 1), {"k": 2}
    got = ser.loads(ser.dumps(objs))
    assert got[0](1) == 2 and got[1] == {"k": 2}
    masked = np.ma.masked_array(np.arange(5000), mask=[False] * 4999 + [True])
    back = ser.loads(ser.dumps(masked))
    assert type(back) is np.ma.MaskedArray and back.mask[-1] and back[0] == 0
