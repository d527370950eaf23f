"""The examples run as a user runs them: a fresh interpreter, checked by exit code, last line
and what they leave behind (processes, /dev/shm segments, session directories).

Each run gets its own TMPDIR and a marker in its environment, which every process it starts
inherits (node manager, zygote, workers, control store). Processes orphaned by a driver are
re-parented away from the test, so they are found by that marker, not as our children.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_TIMEOUT_S = 120
LEFTOVER_GRACE_S = 10.0
SHM_DIR = "/dev/shm"


def _marked(marker: str) -> list:
    """Live processes whose environment carries ``marker`` (root or same user can read it)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get("ZACTOR_EXAMPLE_RUN") == marker and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:100]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _segments_of(pid: int) -> list:
    """A local cluster's segment is /dev/shm/zactor-session_<driver pid>_<random>."""
    prefix = f"zactor-session_{pid}_"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))


def _wait_until(condition, timeout_s: float):
    """Poll ``condition`` (returns a falsy value when satisfied) until it holds or time is up;
    returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = condition()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def run_example(tmp_path, *args: str):
    """Run ``python *args`` from the repository root; (exit code, stdout, stderr, its TMPDIR).
    Fails if it leaves processes or its store segment behind."""
    marker = uuid.uuid4().hex
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, ZACTOR_EXAMPLE_RUN=marker, TMPDIR=str(tmpdir),
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=EXAMPLE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{args} ran past {EXAMPLE_TIMEOUT_S} s\n{out}\n{err}") from None
    finally:
        leftover = _wait_until(lambda: _marked(marker), LEFTOVER_GRACE_S)
        for line in leftover:  # do not let one failing run spoil the next tests
            try:
                psutil.Process(int(line.split()[0])).kill()
            except psutil.NoSuchProcess:
                pass
    assert not leftover, f"processes left behind by {args}: {leftover}"
    segments = _wait_until(lambda: _segments_of(proc.pid), LEFTOVER_GRACE_S)
    for name in segments:
        os.unlink(os.path.join(SHM_DIR, name))
    assert not segments, f"shared-memory segments left behind by {args}: {segments}"
    return proc.returncode, out, err, tmpdir


@pytest.fixture(scope="module")
def quickstart_small(tmp_path_factory):
    return run_example(tmp_path_factory.mktemp("quickstart"), "examples/quickstart.py",
                       "--small")


def test_quickstart_small(quickstart_small):
    code, out, err, _ = quickstart_small
    assert code == 0, f"exit code {code}\n{out}\n{err}"
    last = out.strip().splitlines()[-1]
    assert last.startswith("quickstart OK: "), out
    fields = dict(kv.split("=", 1) for kv in last.split(": ", 1)[1].split())
    assert fields == {"tasks": "20", "sum_squares": str(sum(i * i for i in range(20))),
                      "chained": "25", "nested": str(sum(range(64))),
                      "error": "ZeroDivisionError", "zero_copy": "True", "actor": "100"}, last


def test_quickstart_leaves_no_session_directory(quickstart_small):
    root = quickstart_small[3] / "zactor"
    # shutdown() has returned before the driver exits: nothing should come back after it
    sessions = os.listdir(root) if root.exists() else []
    assert not sessions, f"session directories left behind: {sessions}"


def test_quickstart_address_is_passed_to_init(tmp_path):
    # nothing listens there: today init(address=...) raises NotImplementedError, and once
    # clusters exist it fails to connect; either way the example must not report success
    code, out, err, _ = run_example(tmp_path, "examples/quickstart.py", "--address",
                                    "127.0.0.1:1")
    assert code != 0
    assert "quickstart OK" not in out and err.strip()


def result_of(out: str, name: str) -> dict:
    """The fields of the example's last line, ``RESULT <name> key=value ...``."""
    last = out.strip().splitlines()[-1]
    words = last.split()
    assert words[:2] == ["RESULT", name], f"last line is not a RESULT line: {last!r}\n{out}"
    return dict(word.split("=", 1) for word in words[2:])


def run_small(tmp_path, name: str, *extra: str) -> dict:
    code, out, err, _ = run_example(tmp_path, f"examples/{name}.py", "--small", *extra)
    assert code == 0, f"{name} exited with {code}\n{out}\n{err}"
    return result_of(out, name)


def test_pi_small(tmp_path):
    result = run_small(tmp_path, "pi")
    assert result["tasks"] == "1000" and result["samples"] == str(1000 * 10_000)
    assert abs(float(result["estimate"]) - math.pi) < 0.01  # the error is ~5e-4 (one standard deviation)
    assert float(result["tasks_per_s"]) > 0


def test_mapreduce_small(tmp_path):
    result = run_small(tmp_path, "mapreduce")
    assert result["match"] == "True"  # the same counts as collections.Counter
    assert result["words"] == str(200 * 500)
    assert int(result["distinct"]) > 100


def test_allreduce_small_with_plot(tmp_path):
    plot = tmp_path / "allreduce.png"
    result = run_small(tmp_path, "allreduce", "--workers", "3", "--repeat", "1",
                       "--plot", str(plot))
    assert result == {"workers": "3", "sizes_mb": "1,4", "exact": "True"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parameter_server_small(tmp_path):
    result = run_small(tmp_path, "parameter_server")
    # the classes overlap: about 0.85 is the best a linear model gets on this data
    assert float(result["sync_accuracy"]) >= 0.8
    assert float(result["async_accuracy"]) >= 0.8


def test_hyperparameter_search_small(tmp_path):
    result = run_small(tmp_path, "hyperparameter_search")
    # how many are stopped early depends on timing; every trial ends one way or the other
    assert result["trials"] == "12"
    assert int(result["finished"]) + int(result["stopped"]) == 12
    assert int(result["finished"]) >= 1
    assert float(result["best_accuracy"]) >= 0.6  # chance is 0.2
    assert result["best"].startswith("lr=")


def test_evolution_strategies_small(tmp_path):
    result = run_small(tmp_path, "evolution_strategies")
    assert result["iterations"] == "6"
    assert result["same"] == "True"  # 1 worker and all CPUs learn exactly the same policy
    assert float(result["score"]) >= 50  # a random linear policy scores about 20
    assert float(result["speedup"]) > 0
    # placement groups are used where zactor has them (and the cluster can reserve one)
    if importlib.util.find_spec("zactor.util.placement_group") is None:
        assert result["placement_group"] == "False"
    assert result["placement_group"] in ("True", "False")
