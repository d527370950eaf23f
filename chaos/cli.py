"""``python -m chaos run`` / ``zactor chaos``: the chaos harness's command line and run.

    python -m chaos run --nodes 3 --duration 60 --seed 7 [--faults kill-node,...]
                        [--netns] [--report out.json]

Order of a run: print the schedule; start the cluster with the zactor CLI; start the driver
process (chaos/driver.py) and wait for it to connect; inject each fault at its time while a
keeper thread undoes timed faults and starts lost nodes again; tell the driver to stop;
stop the cluster, close the network, check no process is left; print the table and write
the report. Cleanup runs on every path out (exceptions, ^C, SIGTERM).
Exit status: 0 clean, 1 a wrong result or a hang, 2 the harness itself failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from chaos import FAULT_KINDS, NETNS_ONLY
from chaos import report as rep
from chaos.schedule import make_schedule

DRIVER_READY_TIMEOUT_S = 120.0


def add_arguments(parser) -> None:
    parser.add_argument("action", nargs="?", default="run", choices=("run",),
                        help="what to do (only `run`)")
    parser.add_argument("--nodes", type=int, default=3, help="nodes, the head included")
    parser.add_argument("--duration", type=float, default=60.0, metavar="S",
                        help="seconds of workloads under faults (cluster start not counted)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the schedule and the data")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help=f"comma-separated kinds (default all: {','.join(FAULT_KINDS)})")
    parser.add_argument("--workloads", default="tree,mapreduce,actor,paramserver,nested")
    parser.add_argument("--netns", action="store_true",
                        help="each node in its own network namespace (needs root and `ip`); "
                             "required by partition and link-down")
    parser.add_argument("--report", default=None, metavar="PATH", help="write the JSON report")
    parser.add_argument("--node-death-timeout", type=float, default=3.0, metavar="S",
                        help="the scheduler declares a node dead after S s without heartbeat")
    parser.add_argument("--round-timeout", type=float, default=60.0, metavar="S",
                        help="a workload round not done in S s is a hang")
    parser.add_argument("--fault-spacing", type=float, default=8.0, metavar="S",
                        help="about one fault every S seconds")
    parser.add_argument("--hold", type=float, default=3.0, metavar="S",
                        help="typical length of a pause or a partition")
    parser.add_argument("--shared-driver", action="store_true",
                        help="run every workload as a thread of one driver process (default: "
                             "one driver process per workload; see docs/fault-tolerance.md, "
                             "finding 3, for why threads sharing a driver were kept apart)")
    parser.add_argument("--cpus-per-node", type=float, default=1.0)
    parser.add_argument("--gcs-replicas", type=int, default=2)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args) -> int:
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        log(f"chaos: unknown fault kinds {unknown} (known: {', '.join(FAULT_KINDS)})")
        return 2
    if args.netns:
        from zactor.testing.netns import available

        ok, why = available()
        if not ok:
            log(f"chaos: --netns impossible here: {why}")
            return 2
    schedule = make_schedule(args.seed, args.duration, kinds, args.nodes,
                             spacing_s=args.fault_spacing, hold_s=args.hold)
    print(f"chaos: schedule for seed {args.seed} ({len(schedule)} faults over "
          f"{args.duration:.0f}s):", flush=True)
    for f in schedule:
        print("  " + f.describe(), flush=True)
    if not args.netns and any(k in NETNS_ONLY for k in kinds):
        print(f"chaos: without --netns the {'/'.join(sorted(NETNS_ONLY & set(kinds)))} faults "
              f"are skipped (they need each node in its own network namespace)", flush=True)
    state = {"faults": [], "events": [], "node_restarts": [], "done": [], "errors": [],
             "leaked": [], "interrupted": False, "cluster": {}}
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        _run(args, schedule, state)
    except KeyboardInterrupt:
        state["interrupted"] = True
        state["errors"].append("interrupted (^C or SIGTERM): stopped early")
    except Exception as exc:  # noqa: BLE001 - reported, and the cleanup has run
        state["errors"].append(f"{type(exc).__name__}: {exc}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    options = {k: v for k, v in vars(args).items() if k != "action"}
    report = rep.build(seed=args.seed, duration_s=args.duration, args=options,
                       schedule=[f.as_dict() for f in schedule], faults=state["faults"],
                       events=state["events"], node_restarts=state["node_restarts"],
                       done=state["done"], leaked=state["leaked"], errors=state["errors"])
    report["cluster"] = state["cluster"]
    report["head_lost_at_s"] = state.get("head_lost_at_s")
    print(rep.table(report), flush=True)
    if args.report:
        rep.write(report, args.report)
        print(f"chaos: report written to {args.report}", flush=True)
    if state["errors"] or state["leaked"]:
        return 2
    return 1 if report["wrong_results"] or report["hangs"] else 0


def _sigterm(*_):
    raise KeyboardInterrupt


def _run(args, schedule, state) -> None:
    from chaos.cluster import ChaosCluster
    from chaos.faults import Injector

    cluster = ChaosCluster(args.nodes, netns=args.netns, death_timeout_s=args.node_death_timeout,
                           cpus_per_node=args.cpus_per_node, gcs_replicas=args.gcs_replicas,
                           log=log)
    injector = Injector(cluster, log=log)
    # where its processes can be recognised (a leak check outside the harness uses it)
    state["cluster"] = {"tmpdir": cluster.tmpdir, "port": cluster.port}
    drivers = []
    keeper = None
    faults_start = []
    try:
        t = time.monotonic()
        try:
            cluster.start()
        finally:
            state["cluster"].update(address=cluster.address, netns=cluster.net.names()
                                    if cluster.net is not None else None)
        print(f"chaos: cluster of {args.nodes} nodes at {cluster.address} started in "
              f"{time.monotonic() - t:.1f}s", flush=True)
        groups = [args.workloads] if args.shared_driver else [
            w for w in args.workloads.split(",") if w]
        for group in groups:
            drivers.append(_start_driver(args, cluster, state, group))
        deadline = time.monotonic() + DRIVER_READY_TIMEOUT_S
        for driver in drivers:
            if not driver.ready.wait(max(0.1, deadline - time.monotonic())):
                raise RuntimeError(f"a driver did not connect in {DRIVER_READY_TIMEOUT_S:.0f}s"
                                   f" (exit {driver.poll()}; log {driver.log_path})")
        keeper = threading.Thread(target=injector.keep_nodes, args=(state["node_restarts"],),
                                  name="keeper", daemon=True)
        keeper.start()
        start = time.time()
        faults_start.append(start)
        for fault in schedule:
            _sleep_until(start + fault.at_s, drivers)
            rec = injector.inject(fault)
            rec["at_s"] = round(rec["time"] - start, 1)
            state["faults"].append(rec)
            what = f"skipped: {rec['skipped']}" if rec["skipped"] else rec["target"]
            print(f"chaos: t={rec['at_s']:6.1f}s {fault.kind:<15} node {rec['node']}: {what}",
                  flush=True)
        _sleep_until(start + args.duration, drivers)
    finally:
        # ^C from here on must not cut the cleanup short
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _stop_drivers(drivers, args, state)
            injector.stopping.set()
            if keeper is not None:
                keeper.join(180)  # a node start in progress finishes (bounded by its timeout)
            injector.undo_due(force=True)
            if getattr(injector, "head_lost", None) and faults_start:
                state["head_lost_at_s"] = round(injector.head_lost - faults_start[0], 1)
            state["leaked"] = cluster.stop()
            state["cluster"]["logs"] = cluster.logs_dir
            state["cluster"]["driver_logs"] = [d.log_path for d in drivers]
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


def _start_driver(args, cluster, state, workloads):
    log_fd, log_path = tempfile.mkstemp(prefix="chaos-driver-", suffix=".log")
    argv = [sys.executable, "-m", "chaos.driver", "--address", cluster.address, "--seed",
            str(args.seed), "--workloads", workloads, "--round-timeout",
            str(args.round_timeout)]
    # its own session: a ^C in the terminal reaches the harness, which stops it in order
    driver = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=log_fd, env=cluster.env, text=True,
                              start_new_session=True)
    os.close(log_fd)
    driver.log_path = log_path
    print(f"chaos: driver of {workloads}: pid {driver.pid}, log {log_path}", flush=True)
    driver.ready = ready = threading.Event()
    shown = {}

    def read():
        for line in driver.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a stray print, not an event
            if event["ev"] == "ready":
                ready.set()
            elif event["ev"] == "done":
                state["done"].append(event)
            else:
                state["events"].append(event)
                key = (event["ev"], event.get("w"), event.get("type"))
                shown[key] = shown.get(key, 0) + 1
                if event["ev"] != "round" and shown[key] <= 3:  # the report has them all
                    print(f"chaos: {event['ev'].upper():<7} {event['w']} round {event['r']}: "
                          f"{event.get('type', '')} {event.get('msg', '')[:160]}", flush=True)

    driver.reader = threading.Thread(target=read, name="driver-events", daemon=True)
    driver.reader.start()
    return driver


def _sleep_until(when: float, drivers) -> None:
    while time.time() < when:
        for driver in drivers:
            if driver.poll() is not None:
                raise RuntimeError(f"a driver exited early (exit {driver.returncode}; "
                                   f"log {driver.log_path})")
        time.sleep(min(0.2, max(0.0, when - time.time())))  # a clock, not synchronisation


def _stop_drivers(drivers, args, state) -> None:
    for driver in drivers:  # all told at once: they finish their rounds in parallel
        try:
            driver.stdin.write("stop\n")
            driver.stdin.flush()
            driver.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass
    deadline = time.monotonic() + args.round_timeout + 40.0
    for driver in drivers:
        try:
            driver.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            state["errors"].append(f"driver {driver.pid} did not exit after stop; killed")
            driver.kill()
            driver.wait(10)
        driver.reader.join(10)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos",
                                     description="run zactor under injected faults")
    add_arguments(parser)
    return run(parser.parse_args(argv))
