"""Starting and stopping the one-node cluster that ``zactor.init()`` makes by itself.

The driver starts a node manager as its child (``python -m zactor.runtime.node_main``) in
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
import threading
import time

from zactor.exceptions import RaySystemError

START_TIMEOUT_S = 60.0
CONTROL_STORE_START_DELAY_S = 0.5
STOP_TIMEOUT_S = 10.0
SHM_DIR = "/dev/shm"
SPILL_SUBDIR = "spill"  # a session's spilled objects (runtime/spilling.py)


MAX_TMPDIR_CHARS = 40


def runtime_root() -> str:
    """This user's directory for session directories and sockets, mode 0700 (ipc sockets in
    it can be opened only by this user). Not ``/tmp/zactor``: a directory named like the
    package in a script's folder would shadow an editable install of it."""
    base = tempfile.gettempdir()
    if len(base) > MAX_TMPDIR_CHARS:
        # Unix socket paths are limited to 107 bytes and each worker binds one under the
        # session directory: a long $TMPDIR would make them fail to bind
        base = "/tmp"
    root = os.path.join(base, f"zactor-{os.getuid()}")
    os.makedirs(root, mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)
    return root


def remove_stale_segments(spill_dirs=()) -> list:
    """Remove store segments, and spilled objects, of sessions whose starter process is gone.

    A node manager removes its segment and its spill files when it stops; one SIGKILLed
    together with the process that started it (a driver and its node killed at once, a
    cluster node's supervisor tree killed) cannot, and its memory would stay in /dev/shm until
    reboot (its spill files on disk). The starter's pid is in the name
    (``zactor-session_<pid>_...``, ``session_<pid>_...`` for session and spill directories): no
    such process, nobody can use them any more. A pid reused by another process keeps a
    leftover (never a live session's) removed. ``spill_dirs``: ``object_spilling_directory``
    settings to look in, besides the session directories (runtime/spilling.py)."""
    removed = []
    for name in _listdir(SHM_DIR):
        if name.startswith("zactor-session_") and _starter_gone(name[len("zactor-"):]):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed.append(name)
            except OSError:
                pass
    root = runtime_root()
    stale = [os.path.join(root, name, SPILL_SUBDIR) for name in _listdir(root)]
    stale += [os.path.join(d, name) for d in spill_dirs if d for name in _listdir(d)]
    for path in stale:
        name = os.path.basename(os.path.dirname(path) if path.startswith(root) else path)
        if os.path.isdir(path) and _starter_gone(name):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _package_parent() -> str:
    """The directory zactor is imported from: an editable install maps the package by an
    import hook that a .pth file sets up, which ``python -S`` skips."""
    import zactor

    return os.path.dirname(os.path.dirname(os.path.abspath(zactor.__file__)))


def _listdir(path: str) -> list:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _starter_gone(session_name: str) -> bool:
    """True if ``session_<pid>_...`` names a process that no longer exists."""
    if not session_name.startswith("session_"):
        return False
    try:
        os.kill(int(session_name[len("session_"):].split("_", 1)[0]), 0)
    except ValueError:
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's process: alive
    return False


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


class LocalControlPlane:
    """The control store of a local cluster (1 shard x 1 replica, on ipc sockets in
    ``data_dir``), started in a background
    thread so that ``init`` does not wait for it: tasks run from the first moment, and the
    node manager starts writing to the store when ``on_ready(address)`` tells it where."""

    def __init__(self, data_dir: str, on_ready):
        self.data_dir = data_dir
        self.store = None
        self.error = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._start, args=(on_ready,), daemon=True,
                                        name="zactor-gcs-start")
        self._thread.start()

    def _start(self, on_ready) -> None:
        # Start a moment later: its two processes would otherwise take the CPUs from the
        # node's first workers and the program's first tasks (on 2 cores, ~0.1 s of init),
        # and a program that ends within the delay never pays for them at all.
        if self._stopping.wait(CONTROL_STORE_START_DELAY_S):
            return
        from zactor.control.cluster import LocalControlStore

        try:
            # ERROR: a local cluster's shutdown stops replicas first, which the
            # coordinator would otherwise report as failures. ipc: sockets in the session's
            # 0700 directory, no TCP port that any local user could connect to
            store = LocalControlStore(self.data_dir, log_level="ERROR", transport="ipc").start(
                timeout_s=START_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - reported; tasks still run without it
            self.error = exc
            if self._stopping.is_set():
                return  # shut down while it started (its directory went away): not a fault
            print(f"zactor: the control store did not start: {exc}", file=sys.stderr)
            return
        self.store = store
        if not self._stopping.is_set():
            try:
                pids = [store.coordinator.pid] + [c.pid for c in store.replicas.values()]
                on_ready(store.address, pids)
            except Exception as exc:  # noqa: BLE001 - e.g. the driver shut down meanwhile
                self.error = exc
        # This thread must outlive the control store: its processes die with the *thread*
        # that started them (PR_SET_PDEATHSIG follows the forking thread, not the process).
        self._stopping.wait()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> bool:
        """Wait until the control store is up (True) or failed / timed out (False)."""
        deadline = time.monotonic() + timeout_s
        while self.store is None and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.store is not None

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(START_TIMEOUT_S)
        if self.store is not None:
            self.store.stop()
            self.store = None


class LocalNode:
    def __init__(self, proc: subprocess.Popen, address: str, session_dir: str):
        self.proc = proc
        self.address = address
        self.session_dir = session_dir

    @classmethod
    def start(cls, *, resources: dict, store_bytes: int, config: dict,
              initial_workers: int) -> "LocalNode":
        """Launch a node manager and wait until it is ready."""
        return cls.launch(resources=resources, store_bytes=store_bytes, config=config,
                          initial_workers=initial_workers).wait_ready()

    @classmethod
    def launch(cls, *, resources: dict, store_bytes: int, config: dict,
               initial_workers: int) -> "_Launching":
        """Start the node manager's process and return at once: the caller can do its own
        start-up work (imports, ~0.1 s) while the node starts, then ``wait_ready()``."""
        remove_stale_segments([config.get("object_spilling_directory")])
        check_shm_room(store_bytes)
        root = runtime_root()
        session_dir = tempfile.mkdtemp(prefix=f"session_{os.getpid()}_", dir=root)
        ready_r, ready_w = os.pipe()
        # -S: no site set-up in the node manager (~60 ms of a ~0.3 s start here, .pth files
        # included); its imports come from PYTHONPATH below, and the zygote does the site
        # set-up for the workers (zygote.py)
        cmd = [sys.executable, "-S", "-m", "zactor.runtime.node_main",
               "--session-dir", session_dir, "--store-bytes", str(store_bytes),
               "--resources", json.dumps(resources), "--config", json.dumps(config),
               "--workers", str(initial_workers), "--ready-fd", str(ready_w)]
        env = dict(os.environ)
        # workers find the driver's modules by reference, as Ray's do
        path = [os.getcwd()] + [p for p in sys.path if p] + [_package_parent()]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, pass_fds=(ready_w,),
                                    env=env)
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)
        return _Launching(cls, proc, ready_r, session_dir)

    @property
    def store_path(self) -> str:
        return os.path.join(SHM_DIR, f"zactor-{os.path.basename(self.session_dir)}")

    def exit_status(self):
        """None while the node manager runs, else its exit code."""
        return self.proc.poll()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Wait for the node manager to exit (it was sent BYE), then make it."""
        _stop_process(self.proc, timeout_s)

    def cleanup(self) -> None:
        """Remove what a node manager that died too hard to clean up left behind."""
        try:
            os.unlink(self.store_path)
        except FileNotFoundError:
            pass
        shutil.rmtree(self.session_dir, ignore_errors=True)


class _Launching:
    """A node manager that was started and has not said READY yet."""

    def __init__(self, node_cls, proc, ready_fd: int, session_dir: str):
        self._node_cls = node_cls
        self.proc = proc
        self._ready_fd = ready_fd
        self.session_dir = session_dir

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> "LocalNode":
        try:
            line = _read_line(self._ready_fd, timeout_s)
        finally:
            os.close(self._ready_fd)
            self._ready_fd = None
        if not line.startswith("READY "):
            _stop_process(self.proc, STOP_TIMEOUT_S)
            shutil.rmtree(self.session_dir, ignore_errors=True)
            raise RaySystemError(f"the node manager did not start (exit code "
                                 f"{self.proc.poll()}, said {line!r}); see its output above")
        return self._node_cls(self.proc, line.split(" ", 1)[1].strip(), self.session_dir)

    def abandon(self) -> None:
        """The caller failed before (or while) waiting: stop the process, remove what it
        made. Safe to call after a failed ``wait_ready``."""
        if self._ready_fd is not None:
            os.close(self._ready_fd)
            self._ready_fd = None
        _stop_process(self.proc, STOP_TIMEOUT_S)
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
