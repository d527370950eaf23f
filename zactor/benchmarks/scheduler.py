"""``python -m zactor.benchmarks.scheduler``: global-scheduler decisions per second.

Two measurements with ``--nodes`` simulated nodes (default 100: 16 CPUs each, every fourth
with 4 GPUs, random queue lengths):

* the pure policy in-process (``GlobalPolicy.decide`` / ``place_bundles``): the ceiling;
* the daemon through its socket: a real control store and ``zactor scheduler`` process, the
  nodes' rows written to the store (optionally re-written every heartbeat interval, as live
  nodes do), one DEALER sending SPILL batches of 1, 10 and 100 tasks with a window of
  outstanding requests; decisions/s and the latency of one batch (send to PLACE).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import threading
import time

import zmq

from zactor import protocol as P
from zactor.cluster import messages as M
from zactor.control import GcsClient, start_control_store
from zactor.net.sockets import make_socket
from zactor.scheduling.global_policy import FAST_MIN_NODES, GlobalPolicy
from zactor.scheduling.scheduler_main import start_scheduler

MB = 1 << 20


def node_rows(n: int, rng: random.Random) -> list:
    rows = []
    for i in range(n):
        total = {"CPU": 16, **({"GPU": 4} if i % 4 == 0 else {})}
        avail = {k: rng.randint(0, v) for k, v in total.items()}
        rows.append({"node_id": f"node-{i:03d}", "incarnation": 1, "host": "127.0.0.1",
                     "node_port": 1, "resources_total": total, "resources_available": avail,
                     "queue_len": rng.randint(0, 50), "state": "alive"})
    return rows


def tasks(n: int, n_nodes: int, rng: random.Random, start: int = 0) -> list:
    out = []
    for k in range(start, start + n):
        r = rng.random()
        strategy = "SPREAD" if r < 0.1 else (["node", f"node-{rng.randrange(n_nodes):03d}",
                                               True] if r < 0.2 else None)
        deps = [[b"o%d" % j, rng.choice((1000, MB, 100 * MB)),
                 [f"node-{rng.randrange(n_nodes):03d}"]] for j in range(rng.randint(0, 3))]
        res = {"CPU": rng.choice((0.5, 1, 2))}
        if rng.random() < 0.1:
            res["GPU"] = 1
        out.append({"task_id": k, "resources": res, "strategy": strategy, "deps": deps,
                    "origin": "node-000"})
    return out


def _decide_rate(n_nodes: int, n_tasks: int, seed: int, fast: bool) -> GlobalPolicy:
    rng = random.Random(seed)
    rows = node_rows(n_nodes, rng)
    work = tasks(n_tasks, n_nodes, rng)
    policy = GlobalPolicy()
    policy.fast = fast
    for row in rows:
        policy.update_node(row)
    t0 = time.perf_counter()
    for i, t in enumerate(work):
        policy.decide(t)
        if i % 1000 == 999:  # a heartbeat round refreshes every view now and then
            for row in rows:
                policy.update_node(row)
    dt = time.perf_counter() - t0
    how = "numpy" if fast and n_nodes >= FAST_MIN_NODES else "python"
    print(f"  policy.decide, {n_nodes:>4} nodes ({how:<6})   {n_tasks / dt:>10,.0f} decisions/s"
          f"   ({dt / n_tasks * 1e6:.1f} us each)", flush=True)
    return policy


def bench_policy(n_nodes: int, n_tasks: int, seed: int) -> None:
    policy = _decide_rate(n_nodes, n_tasks, seed, fast=True)
    rows = node_rows(n_nodes, random.Random(seed))
    for big_fast in (False, True):  # where the two scoring paths part
        _decide_rate(1000, max(1, n_tasks // 4), seed, fast=big_fast)
    for strategy in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
        bundles = [{"CPU": 2}] * 8
        n = 500
        t0 = time.perf_counter()
        for _ in range(n):  # placing does not change the views (the daemon reserves after)
            policy.place_bundles(bundles, strategy)
        dt = time.perf_counter() - t0
        print(f"  place_bundles {strategy:<13} 8 x 2 CPU    {n / dt:>10,.0f} groups/s"
              f"      ({dt / n * 1e3:.2f} ms each)", flush=True)
    t0 = time.perf_counter()
    for row in rows:
        policy.update_node(row)
    dt = time.perf_counter() - t0
    print(f"  update_node (one heartbeat row)        {n_nodes / dt:>10,.0f} rows/s", flush=True)


def _heartbeats(gcs, rows, stop: threading.Event) -> None:
    while not stop.wait(M.HEARTBEAT_INTERVAL_S):
        for row in rows:
            gcs.put_async("nodes", row["node_id"], row)


def bench_daemon(n_nodes: int, n_tasks: int, seed: int, heartbeats: bool,
                 window: int) -> None:
    rng = random.Random(seed)
    rows = node_rows(n_nodes, rng)
    data_dir = tempfile.mkdtemp(prefix="zactor-sched-bench-")
    store = start_control_store(data_dir)
    gcs = GcsClient.connect(store.address)
    stop = threading.Event()
    sched = None
    ctx = zmq.Context()
    sock = make_socket(ctx, zmq.DEALER, b"bench-origin")
    try:
        for row in rows:
            gcs.put_async("nodes", row["node_id"], row)
        gcs.flush()
        sched = start_scheduler(store.address, node_death_timeout_s=3600.0)
        sock.connect(sched.info["addr"])
        beat = threading.Thread(target=_heartbeats, args=(gcs, rows, stop), daemon=True)
        if heartbeats:
            beat.start()
        # wait until the scheduler knows every node: a hard-affinity probe to the last one
        probe = {"task_id": -1, "resources": {"CPU": 1}, "strategy":
                 ["node", rows[-1]["node_id"], False]}
        deadline = time.monotonic() + 30
        while True:
            sock.send_multipart(P.encode(M.SPILL, {"tasks": [probe]}, 1))
            if sock.poll(5000) and P.decode(sock.recv_multipart())["decisions"][0][1]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the scheduler did not learn the nodes")
        label = "heartbeating" if heartbeats else "static rows"
        for batch in (1, 10, 100):
            n_batches = max(1, n_tasks // batch)
            work = tasks(n_batches * batch, n_nodes, rng)
            sent_at, lat = {}, []
            t0 = time.perf_counter()
            nxt = 0
            while nxt < n_batches or sent_at:
                while nxt < n_batches and len(sent_at) < window:
                    req = nxt + 2
                    sock.send_multipart(P.encode(M.SPILL, {
                        "tasks": work[nxt * batch:(nxt + 1) * batch]}, req))
                    sent_at[req] = time.perf_counter()
                    nxt += 1
                if not sock.poll(30_000):
                    raise RuntimeError("the scheduler stopped answering")
                msg = P.decode(sock.recv_multipart())
                if msg.req_id in sent_at:
                    lat.append(time.perf_counter() - sent_at.pop(msg.req_id))
            dt = time.perf_counter() - t0
            lat.sort()
            print(f"  daemon, {label}, SPILL of {batch:>3}  {n_batches * batch / dt:>10,.0f} "
                  f"decisions/s   batch p50 {lat[len(lat) // 2] * 1e3:6.2f} ms   p99 "
                  f"{lat[min(len(lat) - 1, int(len(lat) * .99))] * 1e3:6.2f} ms", flush=True)
    finally:
        stop.set()
        sock.close(0)
        ctx.term()
        if sched is not None:
            sched.stop()
        gcs.close()
        store.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def add_arguments(parser) -> None:
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per measurement")
    parser.add_argument("--window", type=int, default=8, help="SPILLs outstanding at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-daemon", action="store_true", help="the pure policy only")


def run(args) -> int:
    print(f"global scheduler, {args.nodes} simulated nodes", flush=True)
    bench_policy(args.nodes, args.tasks, args.seed)
    if not args.no_daemon:
        for heartbeats in (False, True):
            bench_daemon(args.nodes, args.tasks, args.seed, heartbeats, args.window)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zactor.benchmarks.scheduler",
                                     description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
