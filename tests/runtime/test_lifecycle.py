"""Starting and stopping clusters: init/shutdown, a driver killed with SIGKILL, worker output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import zactor
from tests.conftest import assert_no_cluster_left

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_driver(code: str, timeout_s: float = 60, env=None, **kw) -> subprocess.CompletedProcess:
    env = dict(env or os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout_s, env=env, **kw)


def test_init_shutdown_and_reinit():
    zactor.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        with pytest.raises(RuntimeError, match="ignore_reinit_error"):
            zactor.init(num_cpus=1, object_store_memory=64 << 20)
        zactor.init(ignore_reinit_error=True)

        @zactor.remote
        def f():
            return os.getpid()

        assert zactor.get(f.remote()) != os.getpid()
    finally:
        zactor.shutdown()
    assert not zactor.is_initialized()
    assert_no_cluster_left()
    zactor.shutdown()  # a second shutdown is harmless


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay_s", [0.0, 0.45, 0.7, 1.0])
def test_shutdown_while_the_control_store_starts_is_quiet_and_leaves_nothing(delay_s):
    # the control store starts 0.5 s after the node: a program that ends around then used to
    # have its session directory removed under the starting store (sqlite "disk I/O error"
    # and ipc-directory tracebacks on stderr)
    result = run_driver(f"""
        import os, time, zactor
        zactor.init(num_cpus=1, object_store_memory=64 << 20)
        from zactor import api
        session = api._node.session_dir
        time.sleep({delay_s})
        zactor.shutdown()
        print("LEFT" if os.path.exists(session) else "GONE")
    """)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "zactor gcs" not in result.stderr, result.stderr
    assert "did not start" not in result.stderr, result.stderr
    assert result.stdout.strip().endswith("GONE"), result.stdout


def test_store_larger_than_dev_shm_is_refused_with_advice():
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    with pytest.raises(ValueError, match="does not fit in /dev/shm.*shm-size"):
        zactor.init(num_cpus=1, object_store_memory=free * 2)
    assert not zactor.is_initialized()


def test_worker_output_reaches_the_driver_with_a_prefix():
    out = run_driver("""
        import zactor
        zactor.init(num_cpus=1, object_store_memory=64 << 20)
        @zactor.remote
        def hello(x):
            print("hello from a task", x)
            return x
        assert zactor.get(hello.remote(7)) == 7
        zactor.shutdown()
        print("done")
    """)
    assert out.returncode == 0, out.stderr
    assert "(hello pid=" in out.stdout and "hello from a task 7" in out.stdout
    assert out.stdout.strip().endswith("done")


def test_driver_killed_with_sigkill_takes_its_cluster_down():
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import time, zactor
            zactor.init(num_cpus=2, object_store_memory=64 << 20)
            @zactor.remote
            def sleeper():
                time.sleep(60)
            refs = [sleeper.remote() for _ in range(2)]
            print("RUNNING", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    try:
        assert proc.stdout.readline().strip() == "RUNNING"
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 3  # node manager, zygote, workers
        segments = {n for n in os.listdir("/dev/shm")
                    if n.startswith(f"zactor-session_{proc.pid}_")}
        assert segments
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            left = segments & set(os.listdir("/dev/shm"))
            if not alive and not left:
                break
            time.sleep(0.05)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
        assert not left, f"segments left: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.mark.skipif(psutil.virtual_memory().available < 8 << 30,
                    reason="needs ~8 GB of free memory")
def test_one_gigabyte_array_to_a_task():
    out = run_driver("""
        import numpy as np, zactor
        zactor.init(num_cpus=1, object_store_memory=2600 << 20)
        @zactor.remote
        def check(a):
            return float(a[::4096].sum()), a.nbytes, a.flags.writeable
        arr = np.ones(1 << 27)  # 1 GiB of float64
        print(zactor.get(check.remote(arr)))
        zactor.shutdown()
    """, timeout_s=110)
    assert out.returncode == 0, out.stderr
    assert f"({float((1 << 27) // 4096)}, {1 << 30}, False)" in out.stdout


def test_dead_node_manager_fails_calls_instead_of_hanging():
    out = run_driver("""
        import os, signal, time, zactor
        from zactor import exceptions as zx
        zactor.init(num_cpus=1, object_store_memory=64 << 20)
        node = zactor.api._node
        @zactor.remote
        def slow():
            time.sleep(60)
        ref = slow.remote()
        os.kill(node.proc.pid, signal.SIGKILL)
        t = time.monotonic()
        try:
            zactor.get(ref, timeout=30)
        except zx.LocalRayletDiedError as e:
            print("GET", round(time.monotonic() - t, 1), e)
        try:
            zactor.put(1)
        except zx.LocalRayletDiedError:
            print("PUT refused")
        zactor.shutdown()
        print("SEGMENT LEFT", os.path.exists(node.store_path))
        print("SESSION LEFT", os.path.exists(node.session_dir))
    """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    get_line = next(line for line in lines if line.startswith("GET"))
    assert float(get_line.split()[1]) < 5 and "exit status -9" in get_line
    assert "PUT refused" in lines
    assert "SEGMENT LEFT False" in lines and "SESSION LEFT False" in lines


def test_only_the_starting_driver_can_stop_the_node():
    zactor.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        # another process says HELLO as a driver, then BYE: it did not start this node
        intruder = run_driver(f"""
            from zactor.runtime.core_client import CoreClient
            CoreClient({zactor.api._node.address!r}, "driver").close()
            print("BYE SENT")
        """)
        assert "BYE SENT" in intruder.stdout, intruder.stderr

        @zactor.remote
        def f():
            return 1

        assert zactor.get(f.remote(), timeout=30) == 1
    finally:
        zactor.shutdown()


def test_memory_requests_are_schedulable_and_output_can_stay_out_of_the_terminal():
    out = run_driver("""
        import zactor
        zactor.init(num_cpus=1, object_store_memory=64 << 20, log_to_driver=False)
        @zactor.remote(memory=100 << 20)
        def noisy():
            print("SHOULD NOT REACH THE DRIVER")
            return "ran"
        print(zactor.get(noisy.remote(), timeout=30))
        zactor.shutdown()
    """)
    assert out.returncode == 0, out.stderr
    assert "ran" in out.stdout and "SHOULD NOT" not in out.stdout + out.stderr


def test_put_waits_for_room_freed_by_dropped_refs():
    out = run_driver("""
        import numpy as np, zactor
        zactor.init(num_cpus=1, object_store_memory=96 << 20)
        for i in range(10):  # each 40 MB; the previous one is dropped before the next put
            ref = zactor.put(np.full(5 << 20, i, dtype=np.float64))
        assert zactor.get(ref)[0] == 9
        zactor.shutdown()
        print("OK")
    """)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


def test_gpus_custom_resources_and_driver_modules(tmp_path):
    (tmp_path / "mymodule.py").write_text("def triple(x):\n    return 3 * x\n")
    out = run_driver("""
        import os, zactor
        import mymodule  # a module of the driver's working directory
        zactor.init(num_cpus=2, num_gpus=2, resources={"disk": 1},
                    object_store_memory=64 << 20)
        @zactor.remote(num_gpus=1)
        def gpu_task():
            return os.environ.get("CUDA_VISIBLE_DEVICES")
        @zactor.remote(resources={"disk": 1})
        def disk_task(x):
            return mymodule.triple(x)
        @zactor.remote
        def env_task():
            return os.environ.get("ZACTOR_TEST_MARKER")
        seen = sorted(zactor.get([gpu_task.remote() for _ in range(2)]))
        print("GPUS", seen)
        print("DISK", zactor.get(disk_task.remote(5)))
        print("ENV", zactor.get(env_task.remote()))
        print("REMOTE MODULE", zactor.get(zactor.remote(mymodule.triple).remote(2)))
        print("RES", zactor.cluster_resources()["GPU"], zactor.cluster_resources()["disk"])
        zactor.shutdown()
    """, cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=REPO, ZACTOR_TEST_MARKER="inherited"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    gpus = next(line for line in lines if line.startswith("GPUS"))
    assert gpus in ("GPUS ['0', '1']", "GPUS ['0', '0']", "GPUS ['1', '1']")
    assert "DISK 15" in lines and "ENV inherited" in lines and "REMOTE MODULE 6" in lines
    assert "RES 2.0 1.0" in lines


def test_infeasible_task_warns_and_waits():
    out = run_driver("""
        import zactor
        from zactor import exceptions as zx
        zactor.init(num_cpus=1, object_store_memory=64 << 20)
        @zactor.remote(num_cpus=8)
        def huge():
            return 1
        try:
            zactor.get(huge.remote(), timeout=1)
        except zx.GetTimeoutError:
            print("WAITED")
        zactor.shutdown()
    """)
    assert out.returncode == 0, out.stderr
    assert "WAITED" in out.stdout and "infeasible" in out.stderr


def test_segments_of_dead_sessions_are_removed_at_the_next_start():
    import subprocess
    import sys

    from zactor.runtime.local_cluster import SHM_DIR, remove_stale_segments

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = os.path.join(SHM_DIR, f"zactor-session_{dead.pid}_leftover")
    live = os.path.join(SHM_DIR, f"zactor-session_{os.getpid()}_inuse")
    for path in (stale, live):
        with open(path, "wb") as f:
            f.write(b"x")
    try:
        removed = remove_stale_segments()
        assert os.path.basename(stale) in removed and not os.path.exists(stale)
        assert os.path.exists(live)  # its starter (this process) is alive
    finally:
        for path in (stale, live):
            if os.path.exists(path):
                os.unlink(path)
