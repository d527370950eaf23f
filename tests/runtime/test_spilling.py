"""Spilling primary copies to local disk when the store is full (runtime/spilling.py): every
value comes back exactly, as a get or a task's argument; files go with their objects and with
the session; a worker SIGKILLed while its object is restored wedges nothing; a spill that
cannot write says why instead of hanging."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import zactor
from tests.conftest import assert_no_cluster_left
from zactor.runtime import context
from zactor.runtime.spilling import RESTORE_DELAY_ENV

STORE = 64 << 20
N = (20 << 20) // 8  # float64 elements of a 20 MB array


def value(i: int) -> np.ndarray:
    """20 MB each; even ones compress (lz4 is used), odd ones are random (written raw)."""
    if i % 2 == 0:
        return np.arange(N, dtype=np.float64) + i
    return np.random.default_rng(i).random(N)


def spill_dir() -> str:
    return os.path.join(context.client().session_dir, "spill")


def spill_stats() -> dict:
    return zactor.nodes()[0]["ObjectSpilling"]


def wait_for(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def small_store():
    zactor.init(num_cpus=1, object_store_memory=STORE)
    session_dir = context.client().session_dir
    try:
        yield session_dir
    finally:
        zactor.shutdown()
        assert_no_cluster_left()
    assert not os.path.exists(session_dir)  # the spill files went with the session


@pytest.mark.timeout(180)
def test_puts_beyond_the_store_spill_and_every_value_comes_back(small_store):
    refs = [zactor.put(value(i)) for i in range(10)]  # 200 MB, all referenced, 64 MB store
    files = os.listdir(spill_dir())
    assert len(files) >= 7, files
    for i in reversed(range(10)):  # the oldest were evicted from the store: restored
        got = zactor.get(refs[i])
        assert np.array_equal(got, value(i)), i
        del got

    @zactor.remote
    def checksum(x):
        return float(x.sum()), x.shape

    # a spilled object as a task's argument (restored by the worker that runs the task)
    assert zactor.get(checksum.remote(refs[1])) == (float(value(1).sum()), (N,))
    stats = spill_stats()
    assert stats["spilled_objects"] >= 7 and stats["restored_objects"] >= 1, stats
    assert stats["spill_file_bytes"] < stats["spilled_bytes"]  # the even ones compressed

    # a freed object's file is deleted
    victim = os.path.join(spill_dir(), refs[0].binary().hex())
    assert os.path.exists(victim)
    del refs[0]
    assert wait_for(lambda: not os.path.exists(victim)), "the freed object's file stayed"


@pytest.mark.timeout(180)
def test_worker_sigkilled_while_its_object_is_restored_wedges_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(RESTORE_DELAY_ENV, "2")  # the node's I/O thread waits before restoring
    zactor.init(num_cpus=1, object_store_memory=STORE)
    session_dir = context.client().session_dir
    try:
        refs = [zactor.put(value(i)) for i in range(6)]  # refs[0] is spilled and evicted
        pid_file = tmp_path / "pid"

        @zactor.remote(max_retries=0)
        def read(box, pid_file):
            with open(pid_file, "w") as f:
                f.write(str(os.getpid()))
            return float(zactor.get(box[0]).sum())  # asks the node for a restore, waits

        doomed = read.remote([refs[0]], str(pid_file))
        assert wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60)
        time.sleep(0.5)  # the restore is under way (it waits 2 s before reading)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        with pytest.raises(zactor.exceptions.WorkerCrashedError):
            zactor.get(doomed, timeout=60)
        assert np.array_equal(zactor.get(refs[0], timeout=60), value(0))
        assert zactor.get(read.remote([refs[1]], str(pid_file)), timeout=60) == \
            float(value(1).sum())
    finally:
        zactor.shutdown()
        assert_no_cluster_left()
    assert not os.path.exists(session_dir)


@pytest.mark.timeout(120)
def test_a_spill_that_cannot_write_names_the_cause_and_does_not_hang(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    zactor.init(num_cpus=1, object_store_memory=STORE,
                _system_config={"object_spilling_directory": str(not_a_dir)})
    try:
        refs = [zactor.put(value(i)) for i in range(2)]
        with pytest.raises(zactor.exceptions.ObjectStoreFullError,
                           match="spilling to disk could not make room: writing .*file"):
            for i in range(2, 5):
                refs.append(zactor.put(value(i)))
        assert np.array_equal(zactor.get(refs[1]), value(1))  # what was there still is
    finally:
        zactor.shutdown()
        assert_no_cluster_left()


@pytest.mark.timeout(120)
def test_spilling_directory_setting_and_stale_sessions(tmp_path):
    """Files go under object_spilling_directory/<session>, removed at shutdown; those of a
    session whose starter died are removed at the next start."""
    from zactor.runtime.local_cluster import remove_stale_segments, runtime_root

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_custom = tmp_path / f"session_{dead.pid}_old"
    stale_default = os.path.join(runtime_root(), f"session_{dead.pid}_old", "spill")
    for d in (stale_custom, stale_default):
        os.makedirs(d)
        open(os.path.join(d, "obj"), "wb").close()
    zactor.init(num_cpus=1, object_store_memory=STORE,
                _system_config={"object_spilling_directory": str(tmp_path)})
    try:
        assert not stale_custom.exists() and not os.path.exists(stale_default)
        mine = tmp_path / os.path.basename(context.client().session_dir)
        refs = [zactor.put(value(i)) for i in range(5)]
        assert mine.is_dir() and len(os.listdir(mine)) >= 2
        assert np.array_equal(zactor.get(refs[0]), value(0))
        assert str(mine) not in remove_stale_segments([str(tmp_path)])  # alive: kept
    finally:
        zactor.shutdown()
        assert_no_cluster_left()
        os.rmdir(os.path.dirname(stale_default))
    assert not mine.exists()
