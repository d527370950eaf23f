"""Where the CPU of a tiny task goes: CPU time per task of every process of a local cluster,
and the bare cost of a ZeroMQ round trip between two Python processes, for comparison.

    python -m zactor.benchmarks.cpu_per_task [--tasks 10000] [--case burst|sync|actor-sync|
                                              actor-async|async-actor|chain|idle]

Reads each process's user and system CPU (psutil; printed as their sum, then each) before and after the case, after the control
store is up: ``burst`` one get of --tasks tiny tasks; ``sync`` a loop of task + get;
``actor-sync`` the same with actor calls; ``actor-async`` one get of --tasks calls to a plain
actor; ``async-actor`` the same to an async actor;
``chain`` chains of 100 dependent tasks (per hop); ``idle`` 5 s of an idle cluster (CPU per
second). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time

import psutil

from zactor.benchmarks.transport import zmq_round_trip_us


def _cpu(p: psutil.Process) -> tuple:
    t = p.cpu_times()
    return t.user, t.system


def _snapshot() -> dict:
    me = psutil.Process()
    out = {("driver", me.pid): _cpu(me)}
    for p in me.children(recursive=True):
        try:
            out[(" ".join(p.cmdline()[2:3]) or p.name(), p.pid)] = _cpu(p)
        except psutil.NoSuchProcess:
            pass
    return out


CASES = ("burst", "sync", "actor-sync", "actor-async", "async-actor", "chain", "idle")


def _case(zactor, case: str, n: int):
    """Run ``case`` once (warmed up); returns how many units (tasks, calls, hops, seconds)."""
    @zactor.remote
    def tiny(x):
        return x

    @zactor.remote
    class Server:
        def ping(self, x=None):
            return x

    @zactor.remote
    class AsyncServer:
        async def ping(self, x=None):
            return x

    def chain(hops=100):
        ref = tiny.remote(0)
        for _ in range(hops - 1):
            ref = tiny.remote(ref)
        return zactor.get(ref)

    if case == "burst":
        return lambda: zactor.get([tiny.remote(i) for i in range(n)]) and n
    if case == "sync":
        return lambda: [zactor.get(tiny.remote(i)) for i in range(n)] and n
    if case in ("actor-sync", "actor-async", "async-actor"):
        server = (AsyncServer if case == "async-actor" else Server).remote()
        zactor.get(server.ping.remote())
        if case == "actor-sync":
            return lambda: [zactor.get(server.ping.remote(i)) for i in range(n)] and n
        return lambda: zactor.get([server.ping.remote(i) for i in range(n)]) and n
    if case == "chain":
        return lambda: [chain() for _ in range(max(1, n // 100))] and max(1, n // 100) * 100
    return lambda: time.sleep(5) or 5


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--case", choices=CASES, default="burst")
    args = parser.parse_args(argv)
    print(f"bare ZeroMQ round trip between two processes: {zmq_round_trip_us():.0f} us")
    import zactor

    zactor.init(num_cpus=2, object_store_memory=256 << 20)
    try:
        run = _case(zactor, args.case, args.tasks)
        if args.case != "idle":
            _case(zactor, args.case, 200)()  # warm up: workers, leases, routes
        zactor.api._node.control_plane.wait_ready(60)
        time.sleep(0.5)
        before = _snapshot()
        t = time.perf_counter()
        units = run()
        elapsed = time.perf_counter() - t
        if args.case == "burst":
            time.sleep(1.5)  # let the lineage decisions (1 s after each task) happen
        after = _snapshot()
    finally:
        zactor.shutdown()
    unit = {"chain": "hop", "idle": "second"}.get(args.case, "task")
    print(f"{args.case}: {units / elapsed:,.0f} {unit}s/s; CPU per {unit} by process:")
    for key, (user, system) in sorted(after.items()):
        if key in before:
            user = (user - before[key][0]) / units * 1e6
            system = (system - before[key][1]) / units * 1e6
            print(f"  {key[0][:50]:50s} pid {key[1]:>7}  {user + system:8.1f} us "
                  f"(user {user:.1f}, system {system:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
