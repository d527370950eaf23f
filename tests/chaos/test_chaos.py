"""The chaos harness (chaos/): its seeded schedule, its report, and real runs against a
cluster started with the CLI (in network namespaces where this machine can make them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from chaos import FAULT_KINDS, NETNS_ONLY
from chaos import report as rep
from chaos.schedule import make_schedule
from zactor.testing.netns import _netns_names, _root_links, available

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_schedule_is_deterministic_and_has_every_kind():
    a = make_schedule(11, 30, FAULT_KINDS, 3)
    assert a == make_schedule(11, 30, FAULT_KINDS, 3)
    assert a != make_schedule(12, 30, FAULT_KINDS, 3)
    assert {f.kind for f in a} == set(FAULT_KINDS)
    assert [f.at_s for f in a] == sorted(f.at_s for f in a)
    assert all(0 < f.at_s < 30 for f in a)
    for f in a:
        if f.kind in ("kill-node", "pause-node", "partition", "link-down"):
            assert 1 <= f.node < 3, f  # never the head
        if f.kind in ("kill-gcs", "kill-scheduler"):
            assert f.node == 0
        assert (f.hold_s > 0) == (f.kind in ("pause-node", "partition", "link-down"))
    some = make_schedule(5, 20, ["kill-worker", "partition"], 2)
    assert {f.kind for f in some} == {"kill-worker", "partition"}


def test_report_has_the_keys_and_measures_recovery():
    events = [
        {"ev": "round", "w": "tree", "r": 0, "t0": 100.0, "t1": 101.0, "tasks": 15},
        {"ev": "failure", "w": "tree", "r": 1, "t0": 101.0, "t1": 104.0,
         "type": "ObjectLostError", "msg": "gone"},
        {"ev": "round", "w": "tree", "r": 2, "t0": 104.0, "t1": 106.5, "tasks": 15},
        {"ev": "hang", "w": "actor", "r": 0, "t0": 100.0, "t1": 160.0, "msg": "late"},
        {"ev": "wrong", "w": "actor", "r": 1, "t0": 160.0, "t1": 161.0, "msg": "off by 1"},
    ]
    faults = [{"kind": "kill-worker", "node": 1, "time": 102.0, "at_s": 2.0, "skipped": None,
               "target": "worker 1"},
              {"kind": "partition", "node": 1, "time": 103.0, "at_s": 3.0,
               "skipped": "needs --netns", "target": None}]
    r = rep.build(seed=1, duration_s=30, args={"nodes": 3}, schedule=[], faults=faults,
                  events=events, node_restarts=[], done=[{"actor_restarts": 2}], leaked=[],
                  errors=[])
    assert set(rep.REQUIRED_KEYS) <= set(r)
    assert r["faults_injected"] == {"kill-worker": 1}
    assert r["faults_skipped"] == {"partition: needs --netns": 1}
    assert (r["wrong_results"], r["hangs"], r["tasks_run"]) == (1, 1, 30)
    assert r["failures"]["ObjectLostError"]["count"] == 1
    assert r["rounds"] == {"actor": 0, "tree": 2}
    assert r["recovery"][0]["recover_s"] == {"actor": None, "tree": 4.5}
    assert r["actor_restarts"] == 2
    text = rep.table(r)
    assert "tree" in text and "ObjectLostError" in text
    json.dumps(r)


def _cluster_processes(cluster: dict) -> list:
    """Processes still running that belong to the run's cluster: their command lines name
    its private directory or its address."""
    marks = [m for m in (cluster.get("tmpdir"), cluster.get("address")) if m]
    left = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(m in cmd for m in marks):
                left.append(f"{p.pid} {cmd[:100]}")
        except psutil.NoSuchProcess:
            pass
    return left


def _chaos(tmp_path, duration, seed, *extra, timeout, nodes=3):
    path = tmp_path / "report.json"
    netns = available()[0]
    argv = [sys.executable, "-m", "chaos", "run", "--nodes", str(nodes), "--duration",
            str(duration),
            "--seed", str(seed), "--report", str(path), *extra] + (["--netns"] if netns else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                         cwd=REPO)
    assert path.exists(), out.stdout + out.stderr
    report = json.loads(path.read_text())
    return out, report, netns


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out, report, netns = _chaos(tmp_path_factory.mktemp("chaos"), 60, 3, timeout=600)
    return out, report, netns


@pytest.mark.timeout(660)
def test_short_run_reports_and_cleans_up(short_run):
    out, report, netns = short_run
    text = out.stdout + out.stderr
    assert set(rep.REQUIRED_KEYS) <= set(report), text
    assert report["errors"] == [] and report["leaked_processes"] == [], text
    assert out.returncode in (0, 1), text  # 2: the harness itself failed
    assert "schedule for seed 3" in out.stdout and "workload" in out.stdout
    kinds = set(FAULT_KINDS) if netns else set(FAULT_KINDS) - NETNS_ONLY
    assert set(report["faults_injected"]) | {k.split(":")[0] for k in
                                              report["faults_skipped"]} >= kinds, text
    if not netns:
        assert all(k.split(":")[0] in NETNS_ONLY for k in report["faults_skipped"]), text
    assert all(n > 0 for n in report["rounds"].values()), report["rounds"]
    assert report["tasks_run"] > 0
    assert _cluster_processes(report["cluster"]) == []
    if report["cluster"].get("netns"):
        left = set(_netns_names()) | set(_root_links())
        names = report["cluster"]["netns"]
        assert not [n for n in names["netns"] + names["links"] if n in left]


@pytest.mark.timeout(660)
def test_short_run_has_no_wrong_result_and_no_hang(short_run):
    out, report, _ = short_run
    assert report["wrong_results"] == 0, report["wrong_examples"]
    assert report["hangs"] == 0, report["hang_examples"]
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.timeout(660)
@pytest.mark.xfail(strict=False, reason=(
    "zactor today: objects lost with a killed node are re-made by lineage, borrowed ones "
    "too, but a few cases can still end in ObjectLostError (a ref that reached a node "
    "inside a pulled value, an intermediate borrower's death, retries spent under repeated "
    "faults: docs/fault-tolerance.md, limits); no failure was seen in session 4's runs"))
def test_short_run_has_no_failures(short_run):
    _, report, _ = short_run
    assert report["failures_total"] == 0, report["failures"]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ZACTOR_SLOW"), reason="set ZACTOR_SLOW=1 to run")
@pytest.mark.timeout(1200)
def test_long_run(tmp_path):
    out, report, _ = _chaos(tmp_path, 600, 1234, "--fault-spacing", "15", timeout=1100,
                            nodes=4)
    assert report["errors"] == [] and report["leaked_processes"] == []
    assert _cluster_processes(report["cluster"]) == []
    assert report["wrong_results"] == 0, report["wrong_examples"]
    assert report["hangs"] == 0, report["hang_examples"]
