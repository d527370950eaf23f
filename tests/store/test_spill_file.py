"""The spill file format (zactor/store/spill_file.py): exact round trips, lz4 only where it
pays, and clear errors for files that are not spill files or are cut short."""

from __future__ import annotations

import os

import numpy as np
import pytest

from zactor.store.spill_file import CHUNK_BYTES, SpillFileError, read_object, write_object


def roundtrip(tmp_path, data: bytes, metadata: bytes = b""):
    path = str(tmp_path / "obj")
    size = write_object(path, memoryview(data), metadata)
    assert size == os.path.getsize(path)
    box = {}

    def create(n, meta):
        box["meta"] = meta
        box["buf"] = bytearray(n)
        return memoryview(box["buf"])

    assert read_object(path, create) == len(data)
    assert bytes(box["buf"]) == data and box["meta"] == metadata
    return size


@pytest.mark.parametrize("n", [0, 1, 4096, CHUNK_BYTES, CHUNK_BYTES * 2 + 17])
def test_round_trip_of_compressible_and_random_data(tmp_path, n):
    zeros = bytes(n)
    noise = np.random.default_rng(n).bytes(n)
    zeros_size = roundtrip(tmp_path, zeros, b"meta")
    os.unlink(tmp_path / "obj")
    noise_size = roundtrip(tmp_path, noise)
    if n >= CHUNK_BYTES:
        assert zeros_size < n // 10  # lz4 pays: used
        assert n <= noise_size < n + 64  # it does not: written raw, a few header bytes


def test_bad_and_truncated_files_raise_and_a_failed_write_leaves_no_file(tmp_path):
    path = str(tmp_path / "obj")
    write_object(path, memoryview(np.random.default_rng(1).bytes(100_000)))
    with open(path, "r+b") as f:
        f.truncate(50_000)
    with pytest.raises(SpillFileError, match="cut short"):
        read_object(path, lambda n, meta: memoryview(bytearray(n)))
    with open(path, "wb") as f:
        f.write(b"not a spill file at all, no")
    with pytest.raises(SpillFileError, match="not a zactor spill file"):
        read_object(path, lambda n, meta: memoryview(bytearray(n)))
    with pytest.raises(FileExistsError):  # never overwrites
        write_object(path, memoryview(b"x"))
    assert os.path.getsize(path) > 1  # and leaves the existing file alone
    missing_dir = str(tmp_path / "no" / "obj")
    with pytest.raises(FileNotFoundError):
        write_object(missing_dir, memoryview(b"x"))
    assert not os.path.exists(missing_dir)
