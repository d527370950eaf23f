"""Recovery cases run against one implementation (zactor or Ray) in a fresh interpreter:

    python recovery_cases.py --impl zactor|ray [--repeat N] [--json]

Like microbenchmark.py, this file imports neither zactor nor Ray at module level, so that the
reference interpreter (which has Ray, not zactor) can run it. recovery.py runs it once per
implementation and prints the figures side by side. Times are wall-clock seconds from the
fault (the moment a process is SIGKILLed, written down by whoever kills it) to the answer
being back in the driver; medians of ``--repeat`` runs. Figures only; nothing is asserted.

Cases:
- ``worker_crash_retry_s``: a task SIGKILLs its own worker on its first attempt; time until
  the retried task's result is back (``max_retries`` set).
- ``actor_restart_s``: the driver SIGKILLs an actor's worker (``max_restarts=1``,
  ``max_task_retries=-1``); time until the next call is answered by the new instance.
- ``lineage_rebuild_s`` (Ray only here; zactor's is measured on a ``zactor start`` cluster by
  recovery_lineage.py): a 3-node cluster on this machine (``ray.cluster_utils.Cluster``), a
  task's 8 MB result stored only on node B, B's raylet SIGKILLed; time until ``get`` of the
  result returns it, rebuilt elsewhere by lineage, and separately until B is known dead
  (``ray.nodes()``), so that the rebuild after the death is known can be told apart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time

NUM_CPUS = 2


def _api(impl: str):
    if impl == "ray":
        import ray

        ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False)
        return ray
    import zactor

    zactor.init(num_cpus=NUM_CPUS)
    return zactor


def worker_crash_retry(api, repeat: int) -> list:
    @api.remote(max_retries=3)
    def crash_once(path):
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        return time.time()

    @api.remote
    def warm():
        return 1

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            api.get([warm.remote() for _ in range(20)], timeout=120)  # workers are up
            path = os.path.join(tmp, f"crash{i}")
            api.get(crash_once.remote(path), timeout=120)
            answered = time.time()
            with open(path) as f:
                times.append(answered - float(f.read()))
    return times


def actor_restart(api, repeat: int) -> list:
    @api.remote(max_restarts=1, max_task_retries=-1)
    class Pinger:
        def pid(self):
            return os.getpid()

    times = []
    for _ in range(repeat):
        actor = Pinger.remote()
        pid = api.get(actor.pid.remote(), timeout=120)
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while True:  # a call that reached the dying instance may fail: the next one counts
            try:
                new_pid = api.get(actor.pid.remote(), timeout=120)
                break
            except Exception:  # noqa: BLE001 - each implementation's actor-died error
                if time.monotonic() > deadline:
                    raise
        answered = time.time()
        if new_pid == pid:
            raise RuntimeError("the actor answered from the killed process")
        times.append(answered - killed)
        api.kill(actor)
    return times


def ray_lineage_rebuild(repeat: int) -> dict:
    """Kill -> known dead, and kill -> rebuilt value used, on a Ray multi-node cluster whose
    health checks declare a silent node dead after about 1 s (as zactor's default
    ``--node-death-timeout``, 0.9 s; Ray's own default takes 15 s)."""
    import threading

    import numpy as np
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    known, used = [], []
    config = {"health_check_period_ms": 200, "health_check_timeout_ms": 200,
              "health_check_failure_threshold": 5}
    for _ in range(repeat):
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "_system_config": config})
        try:
            victim = cluster.add_node(num_cpus=1)
            cluster.add_node(num_cpus=1)
            ray.init(address=cluster.address, log_to_driver=False)
            cluster.wait_for_nodes()

            @ray.remote(max_retries=3)
            def make(n):
                return np.full(n, 7, dtype=np.uint8)

            ref = make.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                victim.node_id, soft=True)).remote(8 << 20)
            ray.wait([ref], fetch_local=False, timeout=120)
            dead_at: list = []
            killed = time.time()
            cluster.remove_node(victim, allow_graceful=False)
            watcher = threading.Thread(target=_watch_death, daemon=True,
                                       args=(ray, victim.node_id, killed + 120, dead_at))
            watcher.start()
            value = ray.get(ref, timeout=120)
            used.append(time.time() - killed)
            assert value.sum() == 7 * (8 << 20)
            watcher.join(120)
            known.append(dead_at[0] - killed)
        finally:
            ray.shutdown()
            cluster.shutdown()
    return {"known_dead_s": known, "rebuilt_used_s": used}


def _watch_death(ray, node_id, until: float, dead_at: list) -> None:
    while time.time() < until:
        if not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
            dead_at.append(time.time())
            return
        time.sleep(0.01)  # polling ray.nodes(): 10 ms resolution


CASES = {"worker_crash_retry_s": worker_crash_retry, "actor_restart_s": actor_restart}


def _figures(times: list) -> dict:
    return {"median": statistics.median(times), "max": max(times), "runs": len(times)}


def run(impl: str, repeat: int, lineage: bool = False) -> dict:
    api = _api(impl)
    out = {}
    try:
        for name, case in CASES.items():
            out[name] = _figures(case(api, repeat))
    finally:
        api.shutdown()
    if lineage and impl == "ray":
        got = ray_lineage_rebuild(repeat)
        out["node_death_known_s"] = _figures(got["known_dead_s"])
        out["lineage_rebuild_s"] = _figures(got["rebuilt_used_s"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("zactor", "ray"), default="zactor")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--lineage", action="store_true",
                        help="also the multi-node lineage case (Ray only in this file)")
    args = parser.parse_args(argv)
    result = run(args.impl, args.repeat, args.lineage)
    if args.json:
        print(json.dumps(result))
    else:
        for name, fig in result.items():
            print(f"{name:24s} median {fig['median']:.3f} s  max {fig['max']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
