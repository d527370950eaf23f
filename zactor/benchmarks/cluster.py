"""Cluster benchmarks: tasks/s with 1, 2, 4 nodes; how fast a dead node is known; object
transfer between two hosts in network namespaces against a raw TCP copy.

    python -m zactor.benchmarks.cluster scaling [--nodes 1,2,4] [--cpus-per-node 1]
                                                [--tasks 400] [--task-ms 20]
    python -m zactor.benchmarks.cluster death [--timeout 1.0] [--repeat 3]
    python -m zactor.benchmarks.cluster transfer [--size 256MB] [--repeat 3]

Every cluster is started with the real CLI (``zactor start``) on this machine (loopback for
``scaling`` and ``death``; two namespace hosts for ``transfer``) and stopped at the end.
Figures only; nothing is asserted. ``scaling`` runs sleep tasks (their efficiency shows how
well work spreads) and tiny tasks (the per-task overhead of the cluster path).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time

from zactor.net.sockets import free_port

CLI_TIMEOUT_S = 180


def _cli(*args) -> str:
    out = subprocess.run([sys.executable, "-m", "zactor.cli", *args], capture_output=True,
                         text=True, timeout=CLI_TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(f"zactor {' '.join(args)} failed: {out.stderr or out.stdout}")
    return out.stdout


class _Cluster:
    def __init__(self, nodes: int, cpus: int, death_timeout=None):
        self.address = f"127.0.0.1:{free_port()}"
        head = ["start", "--head", "--port", self.address.rsplit(":", 1)[1], "--num-cpus",
                str(cpus), "--object-store-memory", str(512 << 20)]
        if death_timeout is not None:
            head += ["--node-death-timeout", str(death_timeout)]
        _cli(*head)
        try:
            for _ in range(nodes - 1):
                _cli("start", "--address", self.address, "--num-cpus", str(cpus),
                     "--object-store-memory", str(512 << 20))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        _cli("stop", "--address", self.address)


_DRIVER = """
import json, time, zactor
zactor.init(address={address!r})

@zactor.remote
def sleeper(ms):
    time.sleep(ms / 1000)
    return zactor.get_runtime_context().get_node_id()

@zactor.remote
def tiny():
    return 1

zactor.get([tiny.remote() for _ in range(50)])  # warm the workers of every node
t = time.perf_counter()
nodes = zactor.get([sleeper.remote({task_ms}) for _ in range({tasks})], timeout=600)
sleep_s = time.perf_counter() - t
t = time.perf_counter()
zactor.get([tiny.remote() for _ in range({tasks} * 5)], timeout=600)
tiny_s = time.perf_counter() - t
print(json.dumps({{"sleep_s": sleep_s, "tiny_s": tiny_s, "used": len(set(nodes))}}))
"""


def scaling(args) -> list:
    rows = []
    for n in args.nodes:
        cluster = _Cluster(n, args.cpus_per_node)
        try:
            code = _DRIVER.format(address=cluster.address, tasks=args.tasks,
                                  task_ms=args.task_ms)
            out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                                 capture_output=True, text=True, timeout=900)
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            result = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            cluster.stop()
        cpus = n * args.cpus_per_node
        ideal = args.tasks * args.task_ms / 1000 / cpus
        rows.append({"nodes": n, "cpus": cpus, "nodes_used": result["used"],
                     "sleep_tasks_per_s": args.tasks / result["sleep_s"],
                     "efficiency": ideal / result["sleep_s"],
                     "tiny_tasks_per_s": args.tasks * 5 / result["tiny_s"]})
        print(f"{n} node(s), {cpus} CPU(s): {args.task_ms} ms tasks "
              f"{rows[-1]['sleep_tasks_per_s']:8.1f}/s ({rows[-1]['efficiency']:.0%} of "
              f"ideal, {result['used']} node(s) used); tiny tasks "
              f"{rows[-1]['tiny_tasks_per_s']:8.0f}/s", flush=True)
    return rows


def death(args) -> list:
    """SIGKILL a node's manager; time until its row says "dead" (what every node learns)."""
    from zactor.cluster.discovery import key_file_for
    from zactor.cluster.supervisor import session_files
    from zactor.control.client import GcsClient

    times = []
    for _ in range(args.repeat):
        cluster = _Cluster(2, 1, death_timeout=args.timeout)
        try:
            node = next(r for r in session_files()
                        if r["address"] == cluster.address and not r["head"])
            with GcsClient.connect(cluster.address, timeout_s=10,
                                   keys=key_file_for(cluster.address)) as gcs:
                t0 = time.monotonic()
                os.kill(int(node["node_pid"]), signal.SIGKILL)
                while time.monotonic() - t0 < 60:
                    rows = [r for _k, r in gcs.scan("nodes", timeout_s=10)]
                    if any(r.get("ipc_address") == node["node_address"] and
                           r.get("state") == "dead" for r in rows):
                        break
                    time.sleep(0.01)  # polling the table, 10 ms resolution
                times.append(time.monotonic() - t0)
        finally:
            cluster.stop()
        print(f"node killed -> declared dead: {times[-1]:.3f} s "
              f"(timeout {args.timeout} s)", flush=True)
    print(f"median {statistics.median(times):.3f} s, max {max(times):.3f} s")
    return times


def transfer(args) -> None:
    """The transfer benchmark with its server on one namespace host and its client on
    another: the bytes cross veth, bridge, veth, as between two machines."""
    from zactor.testing.netns import HostNetwork, available

    ok, why = available()
    if not ok:
        raise SystemExit(f"network namespaces unavailable: {why}")
    with HostNetwork(2) as net:
        server, client = net.hosts
        argv = [sys.executable, "-m", "zactor.benchmarks.transfer", "--netns", server.name,
                "--host", server.address, "--size", args.size, "--repeat", str(args.repeat)]
        out = client.run(argv, timeout=900)
        print(out.stdout + out.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zactor.benchmarks.cluster",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="case", required=True)
    p = sub.add_parser("scaling")
    p.add_argument("--nodes", default="1,2,4",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--cpus-per-node", type=int, default=1)
    p.add_argument("--tasks", type=int, default=400)
    p.add_argument("--task-ms", type=int, default=20)
    p = sub.add_parser("death")
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=3)
    p = sub.add_parser("transfer")
    p.add_argument("--size", default="256MB")
    p.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    {"scaling": scaling, "death": death, "transfer": transfer}[args.case](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
