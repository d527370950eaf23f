"""Recovery benchmark: how long zactor takes to recover from each kind of fault, next to Ray
2.60 measured in the same run on the same machine.

    python -m zactor.benchmarks.recovery [--repeat 5] [--peers VENV] [--skip-ray] [--no-netns]

Cases (seconds, medians of ``--repeat`` runs; figures only, nothing is asserted):
1. crashed worker -> the retried task's result (recovery_cases.py, both implementations);
2. SIGKILLed actor with ``max_restarts=1`` -> its next call answered (same);
3. a node holding an object dies -> the object rebuilt by lineage and used: zactor on a
   ``zactor start`` cluster (recovery_lineage.py), Ray on ``ray.cluster_utils.Cluster``
   with health checks tuned to declare a silent node dead in about 1 s like zactor's
   default; both "after the kill" and "after the death is known";
4. an actor whose node dies -> its next call answered by a new instance on another node
   (zactor, recovery_actor.py);
5. a host cut off (link down in a network namespace: no socket is closed) -> declared dead
   by the cluster (zactor; needs root and ``ip netns``).
Each implementation runs in its own interpreter, one after the other, never at once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from zactor.benchmarks.compare import _find_peers

HERE = os.path.dirname(os.path.abspath(__file__))
CASES_FILE = os.path.join(HERE, "recovery_cases.py")
TARGETS = {"worker_crash_retry_s": 0.1, "actor_restart_s": 0.2,
           "lineage_rebuild_after_known_s": 0.5, "link_down_known_s": 1.0}


def _cases(python: str, impl: str, repeat: int, env: dict, lineage: bool) -> dict:
    cmd = [python, CASES_FILE, "--impl", impl, "--repeat", str(repeat), "--json"]
    if lineage:
        cmd.append("--lineage")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if proc.returncode != 0:
        print(f"{impl} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _optional(module: str, function: str, repeat: int) -> dict | None:
    """A case measured by another module (one run per call, seconds), when this checkout
    has it."""
    import importlib

    try:
        fn = getattr(importlib.import_module(f"zactor.benchmarks.{module}"), function)
    except (ImportError, AttributeError):
        return None
    times = [fn() for _ in range(repeat)]
    return {"median": statistics.median(times), "max": max(times), "runs": len(times)}


def link_down_known(repeat: int) -> dict | None:
    """Two namespace hosts; the node host's link is cut; time until its row says dead (the
    cluster's default ``--node-death-timeout``)."""
    from zactor.cluster.discovery import key_file_for
    from zactor.control.client import GcsClient
    from zactor.testing.netns import HostNetwork, available

    ok, why = available()
    if not ok:
        print(f"(link-down case skipped: {why})", file=sys.stderr)
        return None
    times = []
    for _ in range(repeat):
        with HostNetwork(2) as net:
            head, node = net.hosts
            address = f"{head.address}:6391"
            base = [sys.executable, "-m", "zactor.cli", "start", "--num-cpus", "1",
                    "--object-store-memory", str(128 << 20)]
            started = []
            try:
                for host, extra in ((head, ["--head", "--port", "6391"]),
                                    (node, ["--address", address])):
                    out = host.run(base + ["--host", host.address] + extra, timeout=180)
                    if out.returncode != 0:
                        raise RuntimeError(out.stdout + out.stderr)
                    started.append(host)
                with GcsClient.connect(address, timeout_s=10,
                                       keys=key_file_for(address)) as gcs:
                    def state():
                        return {r.get("host"): r.get("state")
                                for _k, r in gcs.scan("nodes", timeout_s=10)}

                    deadline = time.monotonic() + 60
                    while state().get(node.address) != "alive":
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"node never alive: {state()}")
                        time.sleep(0.05)
                    t0 = time.monotonic()
                    node.link_down()
                    while state().get(node.address) != "dead":
                        if time.monotonic() - t0 > 60:
                            raise RuntimeError("never declared dead")
                        time.sleep(0.01)  # polling the table: 10 ms resolution
                    times.append(time.monotonic() - t0)
                    node.link_up()
            finally:
                for host in started:
                    host.run([sys.executable, "-m", "zactor.cli", "stop", "--address",
                              address], timeout=120)
    return {"median": statistics.median(times), "max": max(times), "runs": len(times)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zactor.benchmarks.recovery",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--peers", help="a venv with ray installed (default: reference-venv)")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--no-netns", action="store_true")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(HERE))] + env.get("PYTHONPATH", "").split(os.pathsep))
    z = _cases(sys.executable, "zactor", args.repeat, env, lineage=False)
    r = {}
    if not args.skip_ray:
        peers = _find_peers(args.peers)
        if peers:
            ray_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            ray_env["RAY_USAGE_STATS_ENABLED"] = "0"
            r = _cases(os.path.join(peers, "bin", "python"), "ray", args.repeat, ray_env,
                       lineage=True)
        else:
            print("(no reference venv found: Ray column skipped)", file=sys.stderr)
    if "lineage_rebuild_s" in r and "node_death_known_s" in r:
        after = r["lineage_rebuild_s"]["median"] - r["node_death_known_s"]["median"]
        r["lineage_rebuild_after_known_s"] = {"median": after, "max": after, "runs": 0}
    lineage = _optional("recovery_lineage", "lineage_rebuild_s", args.repeat)
    if lineage is not None:
        z["lineage_rebuild_after_known_s"] = lineage
    failover = _optional("recovery_actor", "actor_failover_s", args.repeat)
    if failover is not None:
        z["actor_node_failover_s"] = failover
    if not args.no_netns:
        link = link_down_known(args.repeat)
        if link is not None:
            z["link_down_known_s"] = link
    cases = list(dict.fromkeys([*z, *r]))
    print(f"{'case (seconds)':34s} {'zactor':>16s} {'Ray 2.60':>16s} {'Ray/zactor':>10s} "
          f"{'target':>7s}")
    for case in cases:
        zf, rf = z.get(case), r.get(case)

        def cell(f):
            return f"{f['median']:.3f} (max {f['max']:.2f})" if f else "-"

        ratio = f"{rf['median'] / zf['median']:.1f}x" if zf and rf and zf["median"] else "-"
        target = f"<= {TARGETS[case]}" if case in TARGETS else ""
        print(f"{case:34s} {cell(zf):>16s} {cell(rf):>16s} {ratio:>10s} {target:>7s}")
    print(json.dumps({"zactor": z, "ray": r}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
