"""``zactor gcs-bench`` / ``python -m zactor.benchmarks.control``: control-store figures.

Starts real control stores (coordinator + replicas as child processes on 127.0.0.1, or on
ipc sockets with ``--transport ipc``) and prints:
acknowledged writes/s and reads/s for 1 and 3 replicas, batched (pipelined) and one at a time,
with p50/p99 latency; then, for each chain position, the write latency a client sees while
that member is SIGKILLed (time until the coordinator's new configuration, worst latency,
extra over the steady p99).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time

from zactor.control import GcsClient, start_control_store
from zactor.control.cluster import TRANSPORTS

WINDOW = 4000  # batched writes: outstanding at most, so latency is not just queueing


def add_arguments(parser) -> None:
    parser.add_argument("--writes", type=int, default=60_000, help="batched writes per run")
    parser.add_argument("--single", type=int, default=2_000, help="one-at-a-time ops per run")
    parser.add_argument("--value-bytes", type=int, default=64)
    parser.add_argument("--replicas", default="1,3", help="chain lengths to measure")
    parser.add_argument("--kill-runs", type=int, default=1, help="runs per killed position")
    parser.add_argument("--no-kill", action="store_true", help="skip the failure runs")
    parser.add_argument("--no-steady", action="store_true", help="skip the steady runs")
    parser.add_argument("--transport", choices=TRANSPORTS, default="tcp",
                        help="tcp (127.0.0.1, as a cluster) or ipc (as zactor.init())")


def _pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def _line(name, n, elapsed_s, lat_s):
    print(f"  {name:<26} {n / elapsed_s:>10,.0f} ops/s   p50 {_pct(lat_s, .5) * 1e3:7.2f} ms"
          f"   p99 {_pct(lat_s, .99) * 1e3:7.2f} ms", flush=True)


def bench_steady(replicas: int, args) -> None:
    value = b"v" * args.value_bytes
    data_dir = tempfile.mkdtemp(prefix="zactor-gcs-bench-")
    try:
        with start_control_store(data_dir, replicas=replicas, transport=args.transport) as store:
            client = GcsClient.connect(store.address, timeout_s=60)
            try:
                print(f"{replicas} replica(s):", flush=True)
                n = args.writes
                t0 = time.monotonic()
                starts, futures = [], []
                for i in range(n):
                    if i >= WINDOW:  # closed loop: at most WINDOW writes outstanding
                        futures[i - WINDOW].result(60)
                    starts.append(time.monotonic())
                    futures.append(client.put_async("kv", b"k%d" % i, value))
                client.flush(120)
                elapsed = time.monotonic() - t0
                _line("writes, batched", n, elapsed,
                      [f.done_at - s for f, s in zip(futures, starts)])
                m = args.single
                lat = []
                t0 = time.monotonic()
                for i in range(m):
                    s = time.monotonic()
                    client.put("kv", b"s%d" % i, value)
                    lat.append(time.monotonic() - s)
                _line("writes, one at a time", m, time.monotonic() - t0, lat)
                keys = [b"k%d" % i for i in range(0, n, max(1, n // 20_000))]
                t0 = time.monotonic()
                got = client.get_many("kv", keys)
                elapsed = time.monotonic() - t0
                assert all(v == value for v in got)
                print(f"  {'reads, pipelined':<26} {len(keys) / elapsed:>10,.0f} ops/s",
                      flush=True)
                lat = []
                t0 = time.monotonic()
                for i in range(m):
                    s = time.monotonic()
                    client.get("kv", keys[i % len(keys)])
                    lat.append(time.monotonic() - s)
                _line("reads, one at a time", m, time.monotonic() - t0, lat)
            finally:
                client.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def bench_kill(position: str, args) -> None:
    """One-at-a-time writes while the chain member at ``position`` is SIGKILLed.

    Reconfiguration time is from the kill to the coordinator answering with the new chain
    (polled every 20 ms, so up to 20 ms late); the affected writes are those in flight at the
    kill or started before the new configuration was out."""
    index = {"head": 0, "middle": 1, "tail": 2}[position]
    value = b"v" * args.value_bytes
    data_dir = tempfile.mkdtemp(prefix="zactor-gcs-bench-")
    try:
        with start_control_store(data_dir, replicas=3, transport=args.transport) as store:
            client = GcsClient.connect(store.address, timeout_s=60)
            try:
                for i in range(300):  # warm up
                    client.put("kv", b"w%d" % i, value)
                victim = store.chain()[index]
                stop = threading.Event()
                spans = []  # (start, end) of every write

                def writer():
                    i = 0
                    while not stop.is_set():
                        s = time.monotonic()
                        client.put("kv", b"x%d" % i, value)
                        spans.append((s, time.monotonic()))
                        i += 1

                t = threading.Thread(target=writer)
                t.start()
                time.sleep(0.5)  # a steady stream before the kill (a benchmark, not a test)
                t_kill = time.monotonic()
                store.kill_replica(victim)
                store.wait_for(lambda c: victim not in [m[0] for m in c[0][1]], 10)
                t_conf = time.monotonic()
                time.sleep(0.5)
                stop.set()
                t.join()
                # Writes in flight at the kill or issued before the new configuration was
                # out are the ones the failure can delay; the rest are the steady baseline.
                hit = [e - s for s, e in spans if e >= t_kill and s <= t_conf]
                steady = [e - s for s, e in spans if e < t_kill or s > t_conf]
                worst = max(hit)
                print(f"  kill {position:<6}: reconfigured in {(t_conf - t_kill) * 1e3:5.1f} ms,"
                      f" worst affected write {worst * 1e3:5.1f} ms ({len(hit)} affected),"
                      f" steady p50 {_pct(steady, .5) * 1e3:4.2f} / p99 "
                      f"{_pct(steady, .99) * 1e3:5.2f} / max {max(steady) * 1e3:5.1f} ms,"
                      f" extra {(worst - _pct(steady, .5)) * 1e3:5.1f} ms", flush=True)
            finally:
                client.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run(args) -> int:
    for replicas in [int(r) for r in args.replicas.split(",")] * (not args.no_steady):
        bench_steady(replicas, args)
    if not args.no_kill:
        print("3 replicas, one-at-a-time writes while a chain member is SIGKILLed:")
        for position in ("head", "middle", "tail"):
            for _ in range(args.kill_runs):
                bench_kill(position, args)
    return 0


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="zactor gcs-bench")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
