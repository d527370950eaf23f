"""The format of one spilled object on disk, and nothing else: write it, read it back.

A spilled object is one file (the node manager's spilling decides which objects and where;
see zactor/runtime/spilling.py):

    header   "ZSPILL1\\0" | data size u64 | metadata size u32 | chunk size u32   (little endian)
    metadata bytes
    chunks   each: codec u8 | stored length u32 | stored bytes; the data, chunk size at a time

lz4 is tried only when three samples of the object compress (``lz4_pays``, the test object
transfer uses too), and each chunk is kept compressed only if that made it smaller: random
floats are written raw at file speed instead of being compressed for nothing. The data is
written from, and read back into, store memory chunk by chunk, so no whole extra copy of the
object is ever held in the process.
"""

from __future__ import annotations

import os
import struct

import lz4.block

MAGIC = b"ZSPILL1\0"
CHUNK_BYTES = 4 << 20
_HEADER = struct.Struct("<8sQII")
_CHUNK = struct.Struct("<BI")
CODEC_RAW, CODEC_LZ4 = 0, 1


class SpillFileError(Exception):
    """A spill file that is not one, or is cut short."""


def write_object(path: str, data: memoryview, metadata: bytes = b"") -> int:
    """Write ``data`` (and ``metadata``) to a new file at ``path``; returns the file's size.
    On any error (a full disk: OSError ENOSPC) the partial file is removed and the error
    raised."""
    from zactor.transfer.server import lz4_pays  # (the transfer package: ~25 ms to import)

    compress = lz4_pays(data)
    n = data.nbytes
    f = open(path, "xb", buffering=0)  # never over another object's file
    try:
        with f:
            f.write(_HEADER.pack(MAGIC, n, len(metadata), CHUNK_BYTES))
            f.write(metadata)
            for off in range(0, n, CHUNK_BYTES):
                chunk = data[off:off + CHUNK_BYTES]
                stored, codec = chunk, CODEC_RAW
                if compress:
                    packed = lz4.block.compress(chunk, store_size=False)
                    if len(packed) < chunk.nbytes:
                        stored, codec = packed, CODEC_LZ4
                f.write(_CHUNK.pack(codec, len(stored)))
                _write_all(f, stored)
            return f.tell()
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def _write_all(f, buf) -> None:
    view = memoryview(buf)
    while view.nbytes:
        written = f.write(view)
        view = view[written:]


def read_object(path: str, create) -> int:
    """Read the object in ``path`` into the buffer ``create(data_size, metadata)`` returns
    (a writable memoryview of exactly data_size bytes); returns data_size. Raises OSError
    or SpillFileError; the caller aborts what it created."""
    with open(path, "rb", buffering=0) as f:
        head = f.read(_HEADER.size)
        if len(head) != _HEADER.size:
            raise SpillFileError(f"{path}: cut short in its header")
        magic, n, meta_size, chunk_bytes = _HEADER.unpack(head)
        if magic != MAGIC:
            raise SpillFileError(f"{path} is not a zactor spill file")
        metadata = _read_exact(f, meta_size, path)
        dst = create(n, metadata)
        for off in range(0, n, chunk_bytes):
            length = min(chunk_bytes, n - off)
            codec, stored = _CHUNK.unpack(_read_exact(f, _CHUNK.size, path))
            if codec == CODEC_RAW and stored == length:
                _readinto_all(f, dst[off:off + length], path)
            elif codec == CODEC_LZ4:
                dst[off:off + length] = lz4.block.decompress(_read_exact(f, stored, path),
                                                             uncompressed_size=length)
            else:
                raise SpillFileError(f"{path}: bad chunk at byte {off} (codec {codec}, "
                                     f"{stored} bytes for {length})")
        return n


def _readinto_all(f, view: memoryview, path: str) -> None:
    while view.nbytes:
        got = f.readinto(view)
        if not got:
            raise SpillFileError(f"{path}: cut short")
        view = view[got:]


def _read_exact(f, n: int, path: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise SpillFileError(f"{path}: cut short ({len(data)} of {n} bytes)")
    return data
