"""Starting and stopping the one-node cluster that ``zactor.init()`` makes by itself.

The driver starts a node manager as its child (``python -m zactor.runtime.node_manager``) in
a fresh session directory under ``$TMPDIR/zactor``; the node manager creates the store segment
and forks the worker factory. The node manager watches its parent, so a driver killed with
SIGKILL still takes its node down (within ``PARENT_CHECK_INTERVAL_S``), and the segment with it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from zactor.exceptions import RaySystemError

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
SHM_DIR = "/dev/shm"


def check_shm_room(store_bytes: int) -> None:
    """Refuse early, with advice, when /dev/shm cannot hold the store (small in containers)."""
    try:
        st = os.statvfs(SHM_DIR)
    except FileNotFoundError:
        raise ValueError(f"{SHM_DIR} does not exist: zactor's object store needs a tmpfs "
                         f"there") from None
    free = st.f_bavail * st.f_frsize
    if store_bytes > free:
        raise ValueError(
            f"object_store_memory={store_bytes:,} bytes does not fit in {SHM_DIR}, which has "
            f"{free:,} bytes free. Pass a smaller object_store_memory to zactor.init(), or "
            f"give the container a larger /dev/shm (docker run --shm-size=...).")


class LocalNode:
    def __init__(self, proc: subprocess.Popen, address: str, session_dir: str):
        self.proc = proc
        self.address = address
        self.session_dir = session_dir

    @classmethod
    def start(cls, *, resources: dict, store_bytes: int, config: dict,
              initial_workers: int) -> "LocalNode":
        check_shm_room(store_bytes)
        root = os.path.join(tempfile.gettempdir(), "zactor")
        os.makedirs(root, exist_ok=True)
        session_dir = tempfile.mkdtemp(prefix=f"session_{os.getpid()}_", dir=root)
        ready_r, ready_w = os.pipe()
        cmd = [sys.executable, "-m", "zactor.runtime.node_manager",
               "--session-dir", session_dir, "--store-bytes", str(store_bytes),
               "--resources", json.dumps(resources), "--config", json.dumps(config),
               "--workers", str(initial_workers), "--ready-fd", str(ready_w)]
        env = dict(os.environ)
        # workers find the driver's modules by reference, as Ray's do
        path = [os.getcwd()] + [p for p in sys.path if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, pass_fds=(ready_w,),
                                    env=env)
        finally:
            os.close(ready_w)
        try:
            line = _read_line(ready_r, START_TIMEOUT_S)
        finally:
            os.close(ready_r)
        if not line.startswith("READY "):
            _stop_process(proc, STOP_TIMEOUT_S)
            shutil.rmtree(session_dir, ignore_errors=True)
            raise RaySystemError(f"the node manager did not start (exit code "
                                 f"{proc.poll()}, said {line!r}); see its output above")
        return cls(proc, line.split(" ", 1)[1].strip(), session_dir)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        _stop_process(self.proc, timeout_s)
        shutil.rmtree(self.session_dir, ignore_errors=True)


def _read_line(fd: int, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()


def _stop_process(proc: subprocess.Popen, timeout_s: float) -> None:
    """Wait for a graceful exit, then SIGTERM, then SIGKILL; always reaps."""
    for sig, wait_s in ((None, timeout_s), (signal.SIGTERM, timeout_s), (signal.SIGKILL, None)):
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
