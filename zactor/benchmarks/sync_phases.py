"""The phases of this machine in synchronous round trips: segments of synchronous 1:1 actor
calls (the compare's "1:1 actor calls sync" case) alternated with segments of bare round
trips between two Python processes over the direct paths' Unix stream (transport.py), each
with the machine's CPU shares over it from /proc/stat.

    python -m zactor.benchmarks.sync_phases [--segments 12] [--calls 500]
                                            [--pause node-manager|control-store]

A segment much slower than the others with the CPUs mostly *idle* waited on wake-ups, not on
work; when the bare round trips slow down in the same way, the machine did it, not zactor.
``--pause`` stops (SIGSTOP) the node manager or the control store's processes during each
actor segment and lets them go on (SIGCONT) after it: direct actor calls do not need them on
their critical path, so this shows what their background work costs those calls. Figures
only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time

import psutil

from zactor.benchmarks.transport import stream_round_trip_us

_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _cpu_ticks() -> list:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def _shares(before: list, after: list) -> dict:
    d = [b - a for a, b in zip(before, after)]
    total = sum(d) or 1
    return {name: 100 * v / total for name, v in zip(_FIELDS, d)}


def _summary(kind: str, rows: list) -> None:
    rates = [r for r, _ in rows]
    best = max(rates)
    slow = [(r, s) for r, s in rows if r < 0.7 * best]
    fast = [(r, s) for r, s in rows if r >= 0.7 * best]
    print(f"{kind}: median {statistics.median(rates):,.0f}/s over {len(rows)} segments; "
          f"{len(slow)} below 70% of the best ({best:,.0f}/s)")
    for label, part in (("fast", fast), ("slow", slow)):
        if part:
            print(f"  {label}: median {statistics.median(r for r, _ in part):,.0f}/s, CPU idle "
                  f"{statistics.median(s['idle'] for _, s in part):.0f}%, user "
                  f"{statistics.median(s['user'] for _, s in part):.0f}%, steal "
                  f"{statistics.median(s['steal'] for _, s in part):.0f}%")


def _paused(which: str) -> list:
    """The processes ``--pause`` names, among this driver's children."""
    if which == "none":
        return []
    me = psutil.Process()
    if which == "node-manager":
        return [p for p in me.children() if "zactor.runtime.node_main" in p.cmdline()]
    return [p for p in me.children(recursive=True) if "zactor.control.replica_main" in
            p.cmdline()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=12)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--pause", choices=("none", "node-manager", "control-store"),
                        default="none")
    args = parser.parse_args(argv)
    import zactor

    zactor.init(num_cpus=2, object_store_memory=256 << 20)
    actor_rows, bare_rows = [], []
    try:
        @zactor.remote
        class Server:
            def ping(self, x=None):
                return x

        server = Server.remote()
        for _ in range(1000):  # warm up: the route, the connection
            zactor.get(server.ping.remote())
        zactor.api._node.control_plane.wait_ready(60)
        time.sleep(1.0)  # past the control store's start
        paused = _paused(args.pause)
        if args.pause != "none":
            print(f"pausing during the actor segments: pids {[p.pid for p in paused]}")
        for i in range(args.segments):
            for p in paused:
                p.send_signal(signal.SIGSTOP)
            try:
                before, t = _cpu_ticks(), time.perf_counter()
                for _ in range(args.calls):
                    zactor.get(server.ping.remote())
                rate = args.calls / (time.perf_counter() - t)
                actor_rows.append((rate, _shares(before, _cpu_ticks())))
            finally:
                for p in paused:
                    p.send_signal(signal.SIGCONT)
            before = _cpu_ticks()
            bare = 1e6 / stream_round_trip_us(args.calls)
            bare_rows.append((bare, _shares(before, _cpu_ticks())))
            a, b = actor_rows[-1][1], bare_rows[-1][1]
            print(f"segment {i + 1:2d}: actor calls {rate:6,.0f}/s (idle {a['idle']:3.0f}%)   "
                  f"bare stream round trips {bare:6,.0f}/s (idle {b['idle']:3.0f}%)",
                  flush=True)
    finally:
        zactor.shutdown()
    _summary("sync actor calls", actor_rows)
    _summary("bare stream round trips", bare_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
