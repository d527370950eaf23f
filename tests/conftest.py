"""Shared fixtures. Every test is checked for leaks: processes it started and shared-memory
segments it created must be gone when it ends (a generous grace period, polled, no sleeps
standing in for synchronisation)."""

from __future__ import annotations

import os
import time

import psutil
import pytest

SHM_DIR = "/dev/shm"
LEAK_GRACE_S = 10.0


def _zactor_segments():
    try:
        return {n for n in os.listdir(SHM_DIR) if n.startswith("zactor")}
    except FileNotFoundError:
        return set()


def _children():
    return {p.pid for p in psutil.Process().children(recursive=True)}


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
