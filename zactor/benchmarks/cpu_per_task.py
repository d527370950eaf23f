"""Where the CPU of a tiny task goes: CPU time per task of every process of a local cluster,
and the bare cost of a ZeroMQ round trip between two Python processes, for comparison.

    python -m zactor.benchmarks.cpu_per_task [--tasks 10000]

Reads each process's user+system CPU (psutil) before and after a burst of tiny tasks, after
the control store is up. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import psutil
import zmq


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _snapshot() -> dict:
    me = psutil.Process()
    out = {("driver", me.pid): _cpu(me)}
    for p in me.children(recursive=True):
        try:
            out[(" ".join(p.cmdline()[2:3]) or p.name(), p.pid)] = _cpu(p)
        except psutil.NoSuchProcess:
            pass
    return out


def zmq_round_trip_us(n: int = 2000) -> float:
    """Mean time of n DEALER -> ROUTER -> DEALER round trips between two processes."""
    where = tempfile.mkdtemp(prefix="zactor-pp-")
    addr = f"ipc://{where}/pp.sock"
    pid = os.fork()
    if pid == 0:
        ctx = zmq.Context()
        r = ctx.socket(zmq.ROUTER)
        r.bind(addr)
        while True:
            frames = r.recv_multipart()
            if frames[1] == b"stop":
                os._exit(0)
            r.send_multipart(frames)
    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(addr)
    for _ in range(100):
        d.send(b"x")
        d.recv()
    t = time.perf_counter()
    for _ in range(n):
        d.send(b"x")
        d.recv()
    elapsed = time.perf_counter() - t
    d.send(b"stop")
    os.waitpid(pid, 0)
    d.close(0)
    ctx.term()
    shutil.rmtree(where, ignore_errors=True)
    return elapsed / n * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args(argv)
    print(f"bare ZeroMQ round trip between two processes: {zmq_round_trip_us():.0f} us")
    import zactor

    zactor.init(num_cpus=2, object_store_memory=256 << 20)
    try:
        @zactor.remote
        def tiny(x):
            return x

        zactor.get([tiny.remote(i) for i in range(200)])
        zactor.api._node.control_plane.wait_ready(60)
        time.sleep(0.5)
        before = _snapshot()
        t = time.perf_counter()
        zactor.get([tiny.remote(i) for i in range(args.tasks)])
        elapsed = time.perf_counter() - t
        time.sleep(1.5)  # let the lineage decisions (1 s after each task) happen
        after = _snapshot()
    finally:
        zactor.shutdown()
    print(f"{args.tasks / elapsed:,.0f} tiny tasks/s; CPU per task by process:")
    for key, cpu in sorted(after.items()):
        if key in before:
            print(f"  {key[0][:60]:60s} pid {key[1]:>7}  {(cpu - before[key]) / args.tasks * 1e6:6.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
