"""Recovery of an actor whose node is SIGKILLed: from the moment the cluster knows the node
died to the actor's next call answered by its new instance (restarted by its owner on another
node, zactor/cluster/actor_failover.py).

    python -m zactor.benchmarks.recovery_actor [--repeat 3]

Each run starts a 2-node loopback cluster (``zactor start``), a driver on the head creates an
actor (``max_restarts=1``, soft affinity to the other node) and calls it; the benchmark
SIGKILLs that node's manager; the driver polls ``zactor.nodes()`` until the node is gone (the
death is known), then times one call. Prints each run and the median.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import textwrap

from zactor.benchmarks.cluster import _Cluster

DRIVER_TIMEOUT_S = 180

_DRIVER = textwrap.dedent("""
    import sys, time, zactor
    from zactor.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
    zactor.init(address="auto")
    here = zactor.get_runtime_context().get_node_id()
    other = next(n["NodeID"] for n in zactor.nodes() if n["NodeID"] != here)

    @zactor.remote(max_restarts=1)
    class Calls:  # counts the calls its instance answered: 1 after a restart
        def __init__(self):
            self.answered = 0
        def inc(self):
            self.answered += 1
            return self.answered

    c = Calls.options(scheduling_strategy=On(other, soft=True)).remote()
    assert zactor.get([c.inc.remote() for _ in range(3)], timeout=60) == [1, 2, 3]
    print("READY", flush=True)
    sys.stdin.readline()
    deadline = time.monotonic() + 120
    while any(n["NodeID"] == other for n in zactor.nodes()):
        assert time.monotonic() < deadline, "the node's death was never noticed"
        time.sleep(0.002)  # polling the node list, 2 ms resolution
    t0 = time.perf_counter()
    value = zactor.get(c.inc.remote(), timeout=120)
    print("FAILOVER", time.perf_counter() - t0, value, flush=True)
""")


def actor_failover_s(death_timeout_s: float = 1.0) -> float:
    """One run: seconds from "the node's death is known" to the next call answered."""
    from zactor.cluster.supervisor import session_files

    cluster = _Cluster(2, 1, death_timeout=death_timeout_s)
    try:
        node = next(r for r in session_files() if r["address"] == cluster.address
                    and not r["head"])
        env = dict(os.environ, ZACTOR_ADDRESS=cluster.address)
        proc = subprocess.Popen([sys.executable, "-c", _DRIVER], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            line = proc.stdout.readline()
            if line.strip() != "READY":
                raise RuntimeError(f"driver failed: {line}{proc.stderr.read()}")
            os.kill(int(node["node_pid"]), signal.SIGKILL)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            out, err = proc.communicate(timeout=DRIVER_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        result = next((ln.split() for ln in out.splitlines() if ln.startswith("FAILOVER")),
                      None)
        if result is None or result[2] != "1":  # a fresh instance answers 1
            raise RuntimeError(f"no failover: {out}{err}")
        return float(result[1])
    finally:
        cluster.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1.0, help="--node-death-timeout")
    args = parser.parse_args(argv)
    times = []
    for _ in range(args.repeat):
        times.append(actor_failover_s(args.timeout))
        print(f"node death known -> next actor call answered: {times[-1]:.3f} s", flush=True)
    print(f"median {statistics.median(times):.3f} s over {len(times)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
