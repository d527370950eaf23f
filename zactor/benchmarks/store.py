"""Object store benchmark: put and get of 100 B .. 1 GB values against a warm np.copyto.

    python -m zactor.benchmarks.store            # or: zactor store-bench
    python -m zactor.benchmarks.store --max-size 100MB --repeat 5

For each size it prints the median put throughput (GB/s; each put serializes an array and
copies it once into the segment), the first put (into blocks never used before), the median
get latency (zero copy: independent of size), the median ``np.copyto`` of the same size into
an already-touched buffer in the same run, and put / copyto. Then the rate of small put+get
pairs from one Python process; then 100 MB puts from an attached client process (not the
segment's creator: its first put into a block new to it, and the median of the following
put+delete rounds), and the segment's allocated bytes (tmpfs st_blocks) when idle and after
a big delete. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import struct
import subprocess
import sys
import time

import numpy as np

from zactor.store import ObjectStore

SIZES = [100, 1 << 10, 100 << 10, 10 << 20, 100 << 20, 1 << 30]


def _parse_size(text: str) -> int:
    units = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    text = text.strip().upper()
    for unit in ("KB", "MB", "GB", "B"):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * units[unit])
    return int(text)


def _fmt_size(n: int) -> str:
    for unit, f in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= f:
            return f"{n / f:g} {unit}"
    return f"{n} B"


def _oid(n: int) -> bytes:
    return b"\x42" * 24 + struct.pack("<I", n)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-size", default="1GB", help="largest value (default 1GB)")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per size")
    parser.add_argument("--small-seconds", type=float, default=2.0,
                        help="duration of the small put+get loop")
    parser.add_argument("--path", default=f"/dev/shm/zactor-bench-{os.getpid()}")
    parser.add_argument("--client-of", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--client-size", type=int, default=0, help=argparse.SUPPRESS)


def _median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _copyto_s(value, repeat: int) -> float:
    """Median np.copyto of ``value`` into a buffer whose pages are already touched."""
    dst = np.empty_like(value)
    np.copyto(dst, value)
    return _median_s(lambda: np.copyto(dst, value), repeat)


def _bench_size(store, size: int, repeat: int) -> dict:
    value = np.frombuffer(os.urandom(min(size, 1 << 20)) * (size // (1 << 20) or 1),
                          dtype=np.uint8)[:size].copy()
    if value.nbytes < size:
        value = np.resize(value, size)
    key = _oid(size)
    t0 = time.perf_counter()
    store.put(key, value)
    first_s = time.perf_counter() - t0
    store.delete(key)
    puts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        store.put(key, value)
        puts.append(time.perf_counter() - t0)
        store.delete(key)
    # get latency of a stored object (the copy above no longer thrashing the caches)
    store.put(key, value)
    gets = []
    for _ in range(3 * repeat):
        t0 = time.perf_counter()
        got = store.get(key)
        gets.append(time.perf_counter() - t0)
        assert got.nbytes == size
        del got
    store.delete(key)
    copy_s = _copyto_s(value, repeat)
    del value
    gc.collect()
    put_s = statistics.median(puts)
    return {"size": size, "put_gbs": size / put_s / 1e9, "first_put_gbs": size / first_s / 1e9,
            "put_us": put_s * 1e6, "get_us": statistics.median(gets) * 1e6,
            "copy_gbs": size / copy_s / 1e9}


def _bench_small(store, seconds: float) -> tuple:
    value = {"x": 1, "y": "small"}
    n = 0
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()
    put, get = store.put, store.get
    while True:
        for _ in range(1000):
            key = _oid(0x1000_0000 + n)
            put(key, value)
            get(key)
            n += 1
        if time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - t0
    return n, elapsed


def _allocated(path: str) -> int:
    """Bytes of the segment's file that tmpfs has pages for, whoever committed them."""
    return os.stat(path).st_blocks * 512


def _settle(store, timeout_s: float = 15.0, trimmed: bool = True) -> dict:
    """Stats once the warm-pages thread has populated its target (and, if `trimmed`, given
    back everything above it, which waits for the headroom of recent puts to decay)."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = store.stats()
        target = min(st["capacity"], st["high_water"] + st["headroom"])
        if (st["warm_end"] >= target - 4096 and (not trimmed or st["commit_end"] <= target
                + max(st["headroom"] // 4, 4 << 20))) or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def _client_main(path: str, size: int, repeat: int) -> None:
    """In a child process: attach, put+delete `size` bytes repeat + 1 times, print JSON."""
    store = ObjectStore.attach(path)
    value = np.frombuffer(os.urandom(1 << 20) * (size >> 20), dtype=np.uint8)
    times = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        store.put(_oid(0x2000_0000 + i), value)
        times.append(time.perf_counter() - t0)
        store.delete(_oid(0x2000_0000 + i))
    store.close()
    print(json.dumps({"first_gbs": size / times[0] / 1e9,
                      "put_gbs": size / statistics.median(times[1:]) / 1e9,
                      "copy_gbs": size / _copyto_s(value, repeat) / 1e9}), flush=True)


def _bench_client(store, path: str, size: int, repeat: int) -> dict:
    """Puts from an attached client. The creator first puts and deletes one value of the same
    size (as a previous task would), so the headroom has grown and is warm, but every page is
    new to the client's mapping."""
    store.put(_oid(0x3000_0000), np.zeros(size, dtype=np.uint8))
    store.delete(_oid(0x3000_0000))
    _settle(store, trimmed=False)
    out = subprocess.run([sys.executable, "-m", "zactor.benchmarks.store", "--client-of", path,
                          "--client-size", str(size), "--repeat", str(repeat)],
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def _bench_memory(path: str, capacity: int) -> dict:
    """Allocated bytes of a fresh store at idle, and after a 1/4-capacity put and delete."""
    store = ObjectStore.create(path, capacity)
    try:
        _settle(store)
        idle = _allocated(path)
        big = capacity // 4 // (1 << 20) << 20
        store.put(_oid(1), np.ones(big, dtype=np.uint8))
        peak = _allocated(path)
        store.delete(_oid(1))
        st = _settle(store, timeout_s=0.5)
        soon = _allocated(path)
        t0 = time.monotonic()
        while store.stats()["headroom"] > (16 << 20) and time.monotonic() - t0 < 30:
            time.sleep(0.1)
        _settle(store)
        return {"idle": idle, "big": big, "peak": peak, "soon": soon,
                "after": _allocated(path), "decay_s": time.monotonic() - t0,
                "headroom_soon": st["headroom"]}
    finally:
        store.destroy()


def run(args) -> int:
    if args.client_of:
        _client_main(args.client_of, args.client_size, args.repeat)
        return 0
    max_size = _parse_size(args.max_size)
    sizes = [s for s in SIZES if s <= max_size]
    capacity = max(512 << 20, int(max_size * 1.25) + (256 << 20))
    store = ObjectStore.create(args.path, capacity, max_objects=1 << 20)
    try:
        print(f"store: {_fmt_size(capacity)} at {args.path}; {args.repeat} runs per size, "
              f"medians", flush=True)
        print(f"{'size':>8} | {'put GB/s':>8} | {'1st put':>8} | {'put us':>9} | "
              f"{'get us':>7} | {'copyto GB/s':>11} | {'put/copy':>8}")
        for size in sizes:
            r = _bench_size(store, size, args.repeat)
            print(f"{_fmt_size(size):>8} | {r['put_gbs']:8.2f} | {r['first_put_gbs']:8.2f} | "
                  f"{r['put_us']:9.1f} | {r['get_us']:7.1f} | {r['copy_gbs']:11.2f} | "
                  f"{r['put_gbs'] / r['copy_gbs']:8.2f}", flush=True)
        n, elapsed = _bench_small(store, args.small_seconds)
        print(f"small values ({{'x': 1, 'y': 'small'}}): {n / elapsed:,.0f} put+get pairs/s "
              f"({2 * n / elapsed:,.0f} ops/s, {elapsed / n * 1e6:.1f} us per pair)")
        st = store.stats()
        print(f"store after: {st['object_count']} objects, used {_fmt_size(st['used_bytes'])}, "
              f"warm to {_fmt_size(st['warm_end'])}, high water {_fmt_size(st['high_water'])}")
        csize = min(100 << 20, max_size) >> 20 << 20
        if csize:
            c = _bench_client(store, args.path, csize, args.repeat)
            print(f"attached client, {_fmt_size(csize)} puts: first {c['first_gbs']:.2f} GB/s, "
                  f"then {c['put_gbs']:.2f} GB/s; its np.copyto {c['copy_gbs']:.2f} GB/s "
                  f"(put/copy {c['put_gbs'] / c['copy_gbs']:.2f})", flush=True)
    finally:
        store.destroy()
    m = _bench_memory(args.path, capacity)
    print(f"segment allocated ({_fmt_size(capacity)} store): idle {m['idle'] / 2**20:.1f} MB; "
          f"{_fmt_size(m['big'])} put: {m['peak'] / 2**20:.0f} MB; deleted: "
          f"{m['soon'] / 2**20:.0f} MB at once (headroom {_fmt_size(m['headroom_soon'])}), "
          f"{m['after'] / 2**20:.1f} MB after the headroom decays ({m['decay_s']:.1f} s)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zactor.benchmarks.store",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
