"""The driver process: connects to the cluster, runs every workload in its own thread in
rounds until told to stop (a line or EOF on stdin), and writes one JSON event per line on
stdout for the harness:

    {"ev": "ready"}
    {"ev": "round", "w": NAME, "r": N, "t0": T, "t1": T, "tasks": N}
    {"ev": "wrong", "w": NAME, "r": N, "t1": T, "msg": S}
    {"ev": "failure", "w": NAME, "r": N, "t1": T, "type": S, "msg": S}
    {"ev": "hang", "w": NAME, "r": N, "t1": T, "msg": S}
    {"ev": "done", "actor_restarts": N, "abandoned": {NAME: N}}

A separate process, so that a wedged runtime (a hang inside zactor, not in our code) can
be killed without taking the harness and its cleanup with it. Each round runs in a thread
of its own: a round that overruns its deadline is abandoned (counted as a hang) and the
workload goes on with a new round, with new actors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

FAILURE_BACKOFF_S = 1.0
MAX_ABANDONED = 3  # rounds left running per workload before the workload gives up
_out_lock = threading.Lock()


def emit(**event) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(event, default=str) + "\n")
        sys.stdout.flush()


def run_workload(wl, round_timeout_s: float, stop: threading.Event, abandoned: dict) -> None:
    from chaos.workloads import WrongResult
    from zactor.exceptions import GetTimeoutError

    r = 0
    while not stop.is_set():
        result = {}
        t0 = time.time()
        deadline = time.monotonic() + round_timeout_s

        def one(wl=wl, r=r, result=result, deadline=deadline):
            try:
                result["tasks"] = wl.round(r, deadline)
            except BaseException as err:  # noqa: BLE001 - every outcome is reported
                result["exc"] = err

        th = threading.Thread(target=one, name=f"{wl.name}-{r}", daemon=True)
        th.start()
        th.join(round_timeout_s + 5.0)  # get() inside times out first; this is the backstop
        base = {"w": wl.name, "r": r, "t0": t0, "t1": time.time()}
        if th.is_alive():
            abandoned[wl.name] = abandoned.get(wl.name, 0) + 1
            if hasattr(wl, "actor"):
                wl.actor = None
            emit(ev="hang", msg=f"round still running {round_timeout_s + 5:.0f}s after it "
                                f"started; abandoned", **base)
            if abandoned[wl.name] >= MAX_ABANDONED:
                emit(ev="failure", type="GaveUp",
                     msg=f"{MAX_ABANDONED} rounds abandoned; workload stopped", **base)
                return
        elif "exc" in result:
            exc = result["exc"]
            if isinstance(exc, WrongResult):
                emit(ev="wrong", msg=str(exc), **base)
            elif isinstance(exc, GetTimeoutError):
                emit(ev="hang", msg=f"no result within the round's {round_timeout_s:.0f}s "
                                    f"deadline: {exc}", **base)
            else:
                emit(ev="failure", type=type(exc).__name__, msg=_summary(exc), **base)
                # a failed round can fail again at once (the node gone): without a pause a
                # workload would spin and bury the report in identical failures
                stop.wait(FAILURE_BACKOFF_S)
        else:
            emit(ev="round", tasks=result.get("tasks", 0), **base)
        r += 1


def _summary(exc) -> str:
    """First and last lines: a remote error's text holds the remote traceback between."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()] or [repr(exc)]
    if len(lines) == 1:
        return lines[0][:400]
    return f"{lines[0][:150]} ... {lines[-1].strip()[:300]}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos.driver")
    p.add_argument("--address", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workloads", default="tree,mapreduce,actor,paramserver,nested")
    p.add_argument("--round-timeout", type=float, default=60.0)
    args = p.parse_args(argv)

    import zactor
    from chaos.workloads import ALL

    zactor.init(address=args.address)
    workloads = [ALL[name](args.seed) for name in args.workloads.split(",") if name]
    stop = threading.Event()
    abandoned: dict = {}
    threads = [threading.Thread(target=run_workload, name=wl.name, daemon=True,
                                args=(wl, args.round_timeout, stop, abandoned))
               for wl in workloads]
    emit(ev="ready")
    for th in threads:
        th.start()
    sys.stdin.readline()  # a line, or EOF when the harness goes away
    stop.set()
    deadline = time.monotonic() + args.round_timeout + 10.0
    for th in threads:
        th.join(max(0.1, deadline - time.monotonic()))
    restarts = sum(getattr(wl, "restarts_seen", 0) for wl in workloads)
    emit(ev="done", actor_restarts=restarts, abandoned=abandoned,
         still_running=[th.name for th in threads if th.is_alive()])
    # shutdown may block on a wedged runtime; the harness kills us if it does, but a daemon
    # timer ends the process first so that the events above are all it needs
    threading.Timer(15.0, lambda: os._exit(3)).start()
    try:
        zactor.shutdown()
    finally:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
