"""Turn the driver's events and the injected faults into the JSON report and a table."""

from __future__ import annotations

import collections
import json

REQUIRED_KEYS = ("faults_injected", "wrong_results", "hangs", "failures", "tasks_run",
                 "rounds", "actor_restarts", "recovery", "schedule", "seed", "duration_s")


def build(*, seed, duration_s, args, schedule, faults, events, node_restarts, done,
          leaked, errors) -> dict:
    rounds = collections.Counter()
    tasks = 0
    wrong, hangs = [], []
    failures = collections.defaultdict(lambda: {"count": 0, "examples": []})
    for e in events:
        if e["ev"] == "round":
            rounds[e["w"]] += 1
            tasks += int(e.get("tasks", 0))
        elif e["ev"] == "wrong":
            wrong.append({k: e.get(k) for k in ("w", "r", "msg", "t1")})
        elif e["ev"] == "hang":
            hangs.append({k: e.get(k) for k in ("w", "r", "msg", "t1")})
        elif e["ev"] == "failure":
            f = failures[e["type"]]
            f["count"] += 1
            if len(f["examples"]) < 3:
                f["examples"].append({"workload": e["w"], "round": e["r"], "msg": e["msg"]})
    workloads = sorted({e["w"] for e in events if "w" in e})
    injected = [f for f in faults if not f["skipped"]]
    recovery = []
    for f in injected:
        per = {}
        for w in workloads:
            nxt = [e["t1"] for e in events if e["ev"] == "round" and e["w"] == w
                   and e["t0"] >= f["time"]]
            per[w] = round(min(nxt) - f["time"], 2) if nxt else None
        recovery.append({"kind": f["kind"], "node": f["node"], "at_s": f.get("at_s"),
                         "target": f["target"], "recover_s": per})
    counts = collections.Counter(f["kind"] for f in injected)
    skipped = collections.Counter(f"{f['kind']}: {f['skipped']}" for f in faults if f["skipped"])
    return {
        "seed": seed, "duration_s": duration_s, "options": args,
        "schedule": schedule,
        "faults_injected": dict(counts),
        "faults_skipped": dict(skipped),
        "faults": faults,
        "wrong_results": len(wrong), "wrong_examples": wrong[:10],
        "hangs": len(hangs), "hang_examples": hangs[:10],
        "wrong_by_workload": dict(collections.Counter(e["w"] for e in wrong)),
        "hangs_by_workload": dict(collections.Counter(e["w"] for e in hangs)),
        "failures": dict(failures),
        "failures_total": sum(f["count"] for f in failures.values()),
        "failures_by_workload": dict(collections.Counter(
            e["w"] for e in events if e["ev"] == "failure")),
        "tasks_run": tasks,
        "rounds": {w: rounds.get(w, 0) for w in workloads},
        "actor_restarts": sum(d.get("actor_restarts", 0) for d in done),
        "node_restarts": node_restarts,
        # nodes that went down with no fault aimed at them in the 30 s before
        "unplanned_node_losses": sum(1 for n in node_restarts if not n.get("after_fault")),
        "recovery": recovery,
        "drivers_done": len(done),
        "abandoned_rounds": {w: n for d in done for w, n in d.get("abandoned", {}).items()},
        "leaked_processes": leaked,
        "errors": errors,
        # every round's outcome, for timelines: [workload, round, event, start, end]
        "events": [[e.get("w"), e.get("r"), e["ev"], round(e.get("t0", 0), 2),
                    round(e.get("t1", 0), 2)] for e in events],
    }


def table(report: dict) -> str:
    lines = [f"chaos run: seed {report['seed']}, {report['duration_s']}s, "
             f"{report['options'].get('nodes')} nodes, "
             f"{'netns' if report['options'].get('netns') else 'loopback'}"]
    lines.append("")
    lines.append(f"{'workload':<12} {'rounds':>6} {'wrong':>5} {'hangs':>5} {'failed':>6}  "
                 f"recover s (median/max)")
    wrong = report["wrong_by_workload"]
    hangs = report["hangs_by_workload"]
    fails = report["failures_by_workload"]
    for w, n in report["rounds"].items():
        rec = sorted(r["recover_s"][w] for r in report["recovery"]
                     if r["recover_s"].get(w) is not None)
        lost = sum(1 for r in report["recovery"] if r["recover_s"].get(w) is None)
        rtxt = (f"{rec[len(rec) // 2]:.1f}/{rec[-1]:.1f}" if rec else "-") + \
            (f" ({lost} never)" if lost else "")
        lines.append(f"{w:<12} {n:>6} {wrong.get(w, 0):>5} {hangs.get(w, 0):>5} {fails.get(w, 0):>6}  {rtxt}")
    lines.append("")
    inj = ", ".join(f"{k} {v}" for k, v in sorted(report["faults_injected"].items())) or "none"
    lines.append(f"faults injected: {inj}")
    for why, n in sorted(report["faults_skipped"].items()):
        lines.append(f"faults skipped:  {n} x {why}")
    lines.append(f"tasks and actor calls: {report['tasks_run']}; actor restarts seen: "
                 f"{report['actor_restarts']}; nodes started again: "
                 f"{len(report['node_restarts'])} ({report['unplanned_node_losses']} lost "
                 f"without a fault aimed at them)")
    lines.append(f"wrong results: {report['wrong_results']}; hangs: {report['hangs']}; "
                 f"failures: {report['failures_total']}")
    for t, f in sorted(report["failures"].items(), key=lambda kv: -kv[1]["count"]):
        ex = f["examples"][0]
        lines.append(f"  {f['count']:>3} x {t} (e.g. {ex['workload']}: {ex['msg'][:110]})")
    if report.get("head_lost_at_s") is not None:
        lines.append(f"HEAD LOST at t={report['head_lost_at_s']}s: its node manager stopped "
                     f"(fenced or died); every round after it fails")
    if report["leaked_processes"]:
        lines.append(f"LEAKED PROCESSES: {report['leaked_processes']}")
    for e in report["errors"]:
        lines.append(f"harness error: {e}")
    return "\n".join(lines)


def write(report: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=2, default=str)
