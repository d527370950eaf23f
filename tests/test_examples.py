"""The examples run as a user runs them: a fresh interpreter, checked by exit code, last line
and what they leave behind (processes, /dev/shm segments, session directories).

Each run gets its own TMPDIR and a marker in its environment, which every process it starts
inherits (node manager, zygote, workers, control store). Processes orphaned by a driver are
re-parented away from the test, so they are found by that marker, not as our children.
"""

from __future__ import annotations

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


def test_quickstart_address_is_refused(tmp_path):
    code, out, err, _ = run_example(tmp_path, "examples/quickstart.py", "--address",
                                    "127.0.0.1:6379")
    assert code != 0
    assert "cluster issue" in err and "quickstart OK" not in out
