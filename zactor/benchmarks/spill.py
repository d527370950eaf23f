"""Spilling speed: spill and restore of one store object against a plain file write and read
of the same bytes, in the same run, same directory; then a whole cluster putting 10 x 20 MB
into a 64 MB store and reading everything back.

    python -m zactor.benchmarks.spill [--mb 100] [--dir DIR] [--repeat 3]

The file figures go through the page cache (no fsync, for either): what is compared is the
cost of the spill format (lz4 where it pays, chunking) against the bare write/read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from zactor.store import ObjectStore
from zactor.store.spill_file import read_object, write_object


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        best = min(best, fn())
    return best


def file_figures(mb: int, directory: str, repeat: int) -> None:
    n = mb << 20
    shm = f"/dev/shm/zactor-bench-spill-{os.getpid()}"
    store = ObjectStore.create(shm, 3 * n + (64 << 20))
    try:
        for kind, data in (("random", np.random.default_rng(0).bytes(n)),
                           ("compressible", np.arange(n // 8, dtype=np.float64).tobytes())):
            _one_object(store, kind, data, directory, repeat)
    finally:
        store.destroy()


def _one_object(store, kind: str, data: bytes, directory: str, repeat: int) -> None:
    n = len(data)
    oid = kind.encode().ljust(28, b"\0")
    restored = kind.encode().ljust(27, b"\0") + b"r"
    buf = store.create_buffer(oid, n)
    buf[:] = data
    buf.release()
    store.seal(oid)
    src = store.get_buffer(oid)
    spill_path = os.path.join(directory, "spilled")
    plain_path = os.path.join(directory, "plain")

    def spill():
        _unlink(spill_path)
        t = time.perf_counter()
        write_object(spill_path, src.data)
        return time.perf_counter() - t

    def plain_write():
        _unlink(plain_path)
        t = time.perf_counter()
        with open(plain_path, "wb", buffering=0) as f:
            f.write(src.data)
        return time.perf_counter() - t

    def restore():
        try:
            store.delete(restored)
        except KeyError:
            pass
        t = time.perf_counter()
        read_object(spill_path, lambda size, meta: store.create_buffer(restored, size))
        store.seal(restored)
        return time.perf_counter() - t

    def plain_read():
        dst = bytearray(n)
        t = time.perf_counter()
        with open(plain_path, "rb", buffering=0) as f:
            f.readinto(dst)
        return time.perf_counter() - t

    ts, tw = _best(spill, repeat), _best(plain_write, repeat)
    tr, tp = _best(restore, repeat), _best(plain_read, repeat)
    ratio = os.path.getsize(spill_path) / n
    print(f"{n >> 20} MB {kind:12s}: spill {n / ts / 1e9:5.2f} GB/s vs plain write "
          f"{n / tw / 1e9:5.2f} GB/s; restore {n / tr / 1e9:5.2f} GB/s vs plain read "
          f"{n / tp / 1e9:5.2f} GB/s; file {ratio:.0%} of the object")
    src.release()


def cluster_figure() -> None:
    import zactor

    zactor.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        arrays = [np.random.default_rng(i).random((20 << 20) // 8) for i in range(10)]
        t = time.perf_counter()
        refs = [zactor.put(a) for a in arrays]
        put_s = time.perf_counter() - t
        t = time.perf_counter()
        for ref, a in zip(refs, arrays):
            assert np.array_equal(zactor.get(ref), a)
        get_s = time.perf_counter() - t
        print(f"cluster, 64 MB store: 10 x 20 MB random puts {put_s:.2f} s "
              f"({200 / put_s:.0f} MB/s, spilling), gets with restores {get_s:.2f} s "
              f"({200 / get_s:.0f} MB/s, equality checks included)")
    finally:
        zactor.shutdown()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zactor.benchmarks.spill")
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-cluster", action="store_true")
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix="zactor-spill-bench-", dir=args.dir)
    try:
        file_figures(args.mb, directory, args.repeat)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if not args.no_cluster:
        cluster_figure()


if __name__ == "__main__":
    main()
