"""Microbenchmark of the core API, like ``ray microbenchmark``: one set of cases that runs on
zactor, on Ray, and (where it makes sense) on multiprocessing.Pool, so ratios come from one run.

    zactor microbenchmark                      # zactor only
    python -m zactor.benchmarks.compare        # zactor, Ray 2.60 and Pool side by side

This file imports neither zactor nor Ray at module level: the comparison script runs it with
the reference interpreter (which has Ray, not zactor) as
``python microbenchmark.py --impl ray --json``. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

import numpy as np
import psutil

NUM_CPUS = 2


def _rate(n, seconds):
    return n / seconds if seconds > 0 else float("inf")


def _median_rate(fn, n, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return _rate(n, statistics.median(times))


def _cluster_pss_bytes() -> int:
    """PSS of every process of the cluster: this driver's descendants (Ray: raylet, GCS,
    workers...; zactor: node manager, zygote, workers), not the driver itself."""
    total = 0
    for p in psutil.Process().children(recursive=True):
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run(api, impl: str, quick: bool = False) -> dict:
    """Every case against ``api`` (the zactor or ray module). Returns {case: figure}."""
    out = {}
    repeat = 3 if quick else 5
    t0 = time.perf_counter()
    init_kwargs = {"num_cpus": NUM_CPUS, "object_store_memory": 2600 << 20}
    if impl == "ray":
        init_kwargs.update(include_dashboard=False, log_to_driver=False)
    api.init(**init_kwargs)

    @api.remote
    def tiny(x=None):
        return x

    api.get(tiny.remote())
    out["init + first task (s)"] = time.perf_counter() - t0
    try:
        for _ in range(20):  # let workers start
            api.get([tiny.remote() for _ in range(50)])

        n = 500 if quick else 2000
        out["tasks sync (/s)"] = _median_rate(
            lambda: [api.get(tiny.remote()) for _ in range(n // 4)], n // 4, repeat)
        out["tasks async (/s)"] = _median_rate(
            lambda: api.get([tiny.remote() for _ in range(n)]), n, repeat)

        kept = []
        out["put small (/s)"] = _median_rate(
            lambda: kept.extend(api.put(i) for i in range(n)), n, repeat)
        small = kept[:n]
        out["get small (/s)"] = _median_rate(lambda: [api.get(r) for r in small], n, repeat)
        kept.clear()
        small.clear()

        arr = np.ones(100 << 17)  # 100 MB of float64
        warm = np.empty_like(arr)
        np.copyto(warm, arr)
        copy_rate = _median_rate(lambda: np.copyto(warm, arr), arr.nbytes, repeat)
        # each put's ref is dropped at once, as `ray microbenchmark` does; the first puts
        # (into memory the store has not used yet) are reported on their own, then the
        # steady state is measured
        t = time.perf_counter()
        api.put(arr)
        out["first put 100 MB (GB/s)"] = arr.nbytes / (time.perf_counter() - t) / 1e9
        for _ in range(4):
            api.put(arr)
        put_rate = _median_rate(lambda: api.put(arr), arr.nbytes, 2 * repeat + 1)
        out["put 100 MB (GB/s)"] = put_rate / 1e9
        out["warm np.copyto 100 MB (GB/s)"] = copy_rate / 1e9
        out["put 100 MB / copyto"] = put_rate / copy_rate

        big = np.ones(1 << 27)  # 1 GB
        big_ref = api.put(big)
        del big
        gc.collect()
        api.get(big_ref)
        lat = []
        for _ in range(repeat * 4):
            t = time.perf_counter()
            v = api.get(big_ref)
            lat.append(time.perf_counter() - t)
            del v
        out["get 1 GB (us)"] = statistics.median(lat) * 1e6
        del big_ref
        gc.collect()

        refs = [tiny.remote(i) for i in range(1000)]
        api.get(refs)
        t = time.perf_counter()
        api.wait(refs, num_returns=len(refs))
        out["wait on 1,000 ready refs (ms)"] = (time.perf_counter() - t) * 1e3
        del refs

        @api.remote
        def sleep10ms():
            time.sleep(0.01)

        api.get([sleep10ms.remote() for _ in range(4)])
        t = time.perf_counter()
        api.get([sleep10ms.remote() for _ in range(200)])
        ideal = 200 * 0.01 / NUM_CPUS
        out["200 x 10 ms tasks efficiency (%)"] = 100 * ideal / (time.perf_counter() - t)

        @api.remote
        def hop(x):
            return x + 1

        hops = 100
        chain_times = []
        for _ in range(repeat):
            t = time.perf_counter()
            ref = hop.remote(0)
            for _ in range(hops - 1):
                ref = hop.remote(ref)
            assert api.get(ref) == hops
            chain_times.append(time.perf_counter() - t)
        out["chain of 100 tasks (ms/hop)"] = statistics.median(chain_times) / hops * 1e3

        out.update(_actor_cases(api, n, repeat))

        gc.collect()
        time.sleep(2.0)  # idle: let any background work settle
        out["idle cluster PSS (MB)"] = _cluster_pss_bytes() / 1e6
    finally:
        api.shutdown()
    return out


def _actor_cases(api, n: int, repeat: int) -> dict:
    """Ray's actor cases: 1:1 calls sync and async, an async actor, n:n calls."""
    out = {}

    @api.remote
    class Server:
        def ping(self, x=None):
            return x

    @api.remote
    class AsyncServer:
        async def ping(self, x=None):
            return x

    @api.remote
    class Client:
        def __init__(self, server):
            self.server = server

        def burst(self, count):
            return len(api.get([self.server.ping.remote() for _ in range(count)]))

    server = Server.remote()
    api.get(server.ping.remote())
    out["1:1 actor calls sync (/s)"] = _median_rate(
        lambda: [api.get(server.ping.remote()) for _ in range(n // 4)], n // 4, repeat)
    out["1:1 actor calls async (/s)"] = _median_rate(
        lambda: api.get([server.ping.remote() for _ in range(n)]), n, repeat)
    aserver = AsyncServer.remote()
    api.get(aserver.ping.remote())
    out["async-actor calls async (/s)"] = _median_rate(
        lambda: api.get([aserver.ping.remote() for _ in range(n)]), n, repeat)
    servers = [Server.remote() for _ in range(NUM_CPUS)]
    clients = [Client.remote(s) for s in servers]
    api.get([c.burst.remote(10) for c in clients])
    out["n:n actor calls async (/s)"] = _median_rate(
        lambda: api.get([c.burst.remote(n // NUM_CPUS) for c in clients]), n, repeat)
    return out


def _pool_tiny(x=None):
    return x


def run_pool(quick: bool = False) -> dict:
    """The cases that mean something for multiprocessing.Pool (tiny tasks, 10 ms tasks)."""
    import multiprocessing as mp

    out = {}
    repeat = 3 if quick else 5
    n = 500 if quick else 2000
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(NUM_CPUS) as pool:
        pool.apply(_pool_tiny)
        out["init + first task (s)"] = time.perf_counter() - t0
        out["tasks sync (/s)"] = _median_rate(
            lambda: [pool.apply(_pool_tiny) for _ in range(n // 4)], n // 4, repeat)
        out["tasks async (/s)"] = _median_rate(
            lambda: [r.get() for r in [pool.apply_async(_pool_tiny, (i,)) for i in range(n)]],
            n, repeat)
        t = time.perf_counter()
        pool.map(time.sleep, [0.01] * 200, chunksize=1)
        out["200 x 10 ms tasks efficiency (%)"] = 100 * (200 * 0.01 / NUM_CPUS) / (
            time.perf_counter() - t)
        time.sleep(1.0)
        out["idle cluster PSS (MB)"] = _cluster_pss_bytes() / 1e6
    return out


def print_table(columns: dict) -> None:
    """columns: {impl name: {case: figure}}; prints one row per case."""
    cases = []
    for figures in columns.values():
        for case in figures:
            if case not in cases:
                cases.append(case)
    names = list(columns)
    print(f"{'case':38s}" + "".join(f"{n:>14s}" for n in names))
    for case in cases:
        row = f"{case:38s}"
        for n in names:
            v = columns[n].get(case)
            row += f"{'-':>14s}" if v is None else f"{v:14,.2f}" if v < 100 else f"{v:14,.0f}"
        print(row)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--impl", choices=["zactor", "ray", "pool"], default="zactor")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_cli(args) -> int:
    if args.impl == "pool":
        figures = run_pool(args.quick)
    elif args.impl == "ray":
        import ray

        figures = run(ray, "ray", args.quick)
    else:
        import zactor

        figures = run(zactor, "zactor", args.quick)
    if args.json:
        print(json.dumps(figures))
    else:
        print_table({args.impl: figures})
    return 0




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.exit(main())
