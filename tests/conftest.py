"""Shared fixtures. Every test is checked for leaks: processes it started and shared-memory
segments it created must be gone when it ends (a generous grace period, polled, no sleeps
standing in for synchronisation)."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from tests.netns_fixtures import host_network  # noqa: F401 - registers the fixture for every test

SHM_DIR = "/dev/shm"
LEAK_GRACE_S = 10.0


def _zactor_segments():
    """Segments this test process made: their names carry its pid (a local cluster's
    ``zactor-session_<pid>_...``, the ``shm_path`` fixture's ``zactor-test-<pid>-...``), so
    segments of unrelated processes on the machine never fail a test."""
    me = str(os.getpid())
    try:
        return {n for n in os.listdir(SHM_DIR) if n.startswith("zactor")
                and me in n.replace("-", "_").split("_")}
    except FileNotFoundError:
        return set()


def _children():
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _started_by_fixture(pid, before) -> bool:
    """True for a process under one that existed before the test (a module-scoped cluster's
    workers come and go as it needs them; the fixture that owns the cluster checks it)."""
    try:
        return any(parent.pid in before for parent in psutil.Process(pid).parents())
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves child processes or /dev/shm/zactor* segments behind."""
    children_before = _children()
    segments_before = _zactor_segments()
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        alive = []
        for pid in _children() - children_before:
            if _started_by_fixture(pid, children_before):
                continue
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(p.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                pass
        segments = _zactor_segments() - segments_before
        if not alive and not segments:
            return
        if time.monotonic() > deadline:
            for pid in _children() - children_before:
                if _started_by_fixture(pid, children_before):
                    continue
                try:
                    psutil.Process(pid).kill()
                except psutil.NoSuchProcess:
                    pass
            for name in segments:
                try:
                    os.unlink(os.path.join(SHM_DIR, name))
                except FileNotFoundError:
                    pass
            pytest.fail(f"test leaked processes {alive} / shm segments {sorted(segments)}")
        time.sleep(0.05)


@pytest.fixture
def shm_path(tmp_path):
    """A unique /dev/shm path for a store segment, removed after the test."""
    path = os.path.join(SHM_DIR, f"zactor-test-{os.getpid()}-{time.monotonic_ns()}")
    yield path
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def assert_no_cluster_left(timeout_s: float = LEAK_GRACE_S) -> None:
    """Wait (polling) until no child process and no zactor segment of ours remains."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in psutil.Process().children(recursive=True)
                 if p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"cluster processes still running: "
                                 f"{[' '.join(p.cmdline())[:100] for p in alive]}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU local cluster shared by a test module; checked to be gone afterwards."""
    import zactor

    zactor.init(num_cpus=2, object_store_memory=256 << 20)
    # the control store starts in the background: let it finish, so that its processes
    # belong to the fixture and not to whichever test is running when they appear
    assert zactor.api._node.control_plane.wait_ready(60)
    yield zactor
    zactor.shutdown()
    assert_no_cluster_left()
