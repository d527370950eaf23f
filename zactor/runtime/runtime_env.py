"""``runtime_env`` as in Ray, for what a task needs on a node that is not the driver's:
``env_vars`` and ``working_dir``.

Driver side (``encode``): ``working_dir`` (a local directory) is zipped once per process
(again only when a file changes) and *published once* where the nodes can read it; the task
spec carries only its reference ``[sha256, size]``, so a 5 MB directory does not make every
task's spec 5 MB:

- a cluster driver (its node has a control store, ``config["gcs_address"]``) uploads the zip
  into the control store's ``kv`` table, in CHUNK_BYTES pieces under
  ``runtime_env:working_dir:<sha256>:<i>``, then a manifest ``{size, chunks}`` under
  ``runtime_env:working_dir:<sha256>`` (written last: a manifest means every chunk is there).
  The control store and not the object store: it is reachable from every node (the driver's
  node may hold no store the others can pull from once the driver leaves), it outlives the
  driver, and its replication makes the package survive a node's death; a working_dir is
  code, small next to what the store is for. A package already there (another driver, same
  files) is not uploaded again.
- a driver of a single local node unpacks it straight into the node's cache (same machine,
  no control store needed): the local path costs one unzip per directory version.

Worker side (``applied``): the package is unpacked once per node into
``<node session dir>/working_dirs/<sha256>`` (removed with the node). A worker that does not
find it takes the node-wide lock file ``<sha256>.lock`` (flock: released by the kernel if its
holder dies), looks again, and only then fetches the chunks, checks size and sha256, unpacks
to a temporary name and renames it: concurrent tasks on one node share one fetch. A package
that is missing, corrupt or cannot be fetched in FETCH_TIMEOUT_S fails the task with
``RuntimeEnvSetupError`` naming why. Then for the task's duration the worker's current
directory is that folder, it is first on ``sys.path`` (so the driver's modules import there
as on the driver), and ``env_vars`` are set; all restored afterwards. Modules imported from a
working directory stay imported in that worker (as with Ray's cached workers, a working
directory's modules should not change within a job).

Not supported (refused with a clear error): ``pip``, ``conda``, ``container``, ``py_modules``
and remote URIs for ``working_dir``: they need package installation on the nodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import sys
import threading
import time
import zipfile

from zactor.exceptions import RuntimeEnvSetupError

SUPPORTED = ("env_vars", "working_dir")
MAX_WORKING_DIR_BYTES = 100 * 1024 * 1024  # Ray's limit for an uploaded working_dir
CHUNK_BYTES = 1024 * 1024  # one control-store value per MB of package
KV_PREFIX = b"runtime_env:working_dir:"
FETCH_TIMEOUT_S = 60.0  # reading a package from the control store
UPLOAD_TIMEOUT_S = 60.0
LOCK_WAIT_S = 120.0  # waiting for another worker of the node fetching the same package
EXCLUDED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache",
                 ".ruff_cache", ".venv", "node_modules"}

_packages: dict = {}  # (abs path, mtime signature) -> (sha256 hex, zip bytes)
_published: set = set()  # (destination, sha256) done by this process
_lock = threading.Lock()


def validate(runtime_env) -> dict:
    """A checked copy of a ``runtime_env`` option (raises TypeError/ValueError naming the
    problem, NotImplementedError for the fields zactor does not support)."""
    if runtime_env is None:
        return {}
    if not isinstance(runtime_env, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(runtime_env).__name__}")
    unsupported = sorted(set(runtime_env) - set(SUPPORTED))
    if unsupported:
        raise NotImplementedError(
            f"runtime_env field(s) {unsupported} are not supported by zactor (supported: "
            f"{list(SUPPORTED)}); install packages on every node instead")
    out = {}
    env_vars = runtime_env.get("env_vars")
    if env_vars is not None:
        if not isinstance(env_vars, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
            raise TypeError("runtime_env['env_vars'] must be a dict of str to str, got "
                            f"{env_vars!r}")
        out["env_vars"] = dict(env_vars)
    working_dir = runtime_env.get("working_dir")
    if working_dir is not None:
        if not isinstance(working_dir, (str, os.PathLike)):
            raise TypeError(f"runtime_env['working_dir'] must be a local directory path, "
                            f"got {working_dir!r}")
        path = os.fspath(working_dir)
        if "://" in path:
            raise NotImplementedError(f"runtime_env['working_dir'] must be a local directory "
                                      f"(remote URIs are not supported): {path!r}")
        if not os.path.isdir(path):
            raise ValueError(f"runtime_env['working_dir'] {path!r} is not a directory")
        out["working_dir"] = os.path.abspath(path)
    return out


def merge(job_env: dict, task_env: dict) -> dict:
    """A task's environment over its job's (Ray: the task's fields win, env_vars merged)."""
    if not job_env:
        return task_env
    merged = dict(job_env)
    merged.update({k: v for k, v in task_env.items() if k != "env_vars"})
    if "env_vars" in job_env or "env_vars" in task_env:
        merged["env_vars"] = {**job_env.get("env_vars", {}), **task_env.get("env_vars", {})}
    return merged


def _zip_dir(path: str) -> bytes:
    buf = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS)
            for name in sorted(files):
                full = os.path.join(root, name)
                total += os.path.getsize(full)
                if total > MAX_WORKING_DIR_BYTES:
                    raise ValueError(f"runtime_env['working_dir'] {path!r} holds more than "
                                     f"{MAX_WORKING_DIR_BYTES >> 20} MB; ship data as objects")
                info = zipfile.ZipInfo(os.path.relpath(full, path), (1980, 1, 1, 0, 0, 0))
                info.external_attr = (os.stat(full).st_mode & 0o777) << 16
                with open(full, "rb") as f:
                    zf.writestr(info, f.read(), zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _signature(path: str):
    return tuple(sorted((os.path.relpath(os.path.join(r, f), path),
                         os.stat(os.path.join(r, f)).st_mtime_ns)
                        for r, ds, fs in os.walk(path)
                        for f in fs if not (set(r.split(os.sep)) & EXCLUDED_DIRS)))


def _signature(path: str):
    return tuple(sorted((os.path.relpath(os.path.join(r, f), path),
                         os.stat(os.path.join(r, f)).st_mtime_ns)
                        for r, ds, fs in os.walk(path)
                        for f in fs if not (set(r.split(os.sep)) & EXCLUDED_DIRS)))


def encode(env: dict, client) -> dict | None:
    """The spec's ``env`` field for a validated runtime_env; publishes the working_dir
    package (once per process and destination) for the nodes of ``client``'s cluster."""
    if not env:
        return None
    out = {}
    if env.get("env_vars"):
        out["env_vars"] = env["env_vars"]
    if env.get("working_dir"):
        path = env["working_dir"]
        key = (path, _signature(path))
        with _lock:
            package = _packages.get(key)
            if package is None:
                blob = _zip_dir(path)
                package = _packages[key] = (hashlib.sha256(blob).hexdigest(), blob)
            sha, blob = package
            _publish(client, sha, blob)
        out["working_dir"] = [sha, len(blob)]
    return out or None


def _publish(client, sha: str, blob: bytes) -> None:
    """Make the package readable by every node that may run the task. Caller holds _lock."""
    config = client.config
    cluster = config.get("cluster") and config.get("gcs_address")
    destination = config["gcs_address"] if cluster else client.session_dir
    if (destination, sha) in _published:
        return
    if cluster:
        _upload(config["gcs_address"], config.get("key_file"), sha, blob)
    else:
        _install(os.path.join(client.session_dir, "working_dirs"), sha, blob)
    _published.add((destination, sha))


def _upload(address: str, key_file, sha: str, blob: bytes) -> None:
    from zactor.control.client import GcsClient

    manifest_key = KV_PREFIX + sha.encode()
    try:
        with GcsClient.connect(address, timeout_s=UPLOAD_TIMEOUT_S, keys=key_file) as gcs:
            manifest = gcs.get("kv", manifest_key, timeout_s=UPLOAD_TIMEOUT_S)
            if isinstance(manifest, dict) and manifest.get("size") == len(blob):
                return  # uploaded before (by this driver's earlier run or another driver)
            chunks = [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)]
            for i, chunk in enumerate(chunks):
                gcs.put_async("kv", _chunk_key(sha, i), chunk)
            gcs.flush(timeout_s=UPLOAD_TIMEOUT_S)
            gcs.put("kv", manifest_key, {"size": len(blob), "chunks": len(chunks)},
                    timeout_s=UPLOAD_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - the submission fails with the reason
        raise RuntimeEnvSetupError(f"could not upload the working_dir package ({len(blob)} "
                                   f"bytes) to the control store at {address}: {exc}") from exc


def _chunk_key(sha: str, index: int) -> bytes:
    return KV_PREFIX + f"{sha}:{index}".encode()


def _fetch(sha: str, size: int, config: dict) -> bytes:
    """The package's bytes from the control store, checked against its size and sha256."""
    address = config.get("gcs_address")
    if not address:
        raise RuntimeEnvSetupError(
            f"the working_dir package {sha[:16]} is not on this node and the node has no "
            f"control store to fetch it from")
    from zactor.control.client import GcsClient

    try:
        with GcsClient.connect(address, timeout_s=FETCH_TIMEOUT_S,
                               keys=config.get("key_file")) as gcs:
            manifest = gcs.get("kv", KV_PREFIX + sha.encode(), timeout_s=FETCH_TIMEOUT_S)
            if not isinstance(manifest, dict):
                raise RuntimeEnvSetupError(
                    f"the working_dir package {sha[:16]} is not in the control store at "
                    f"{address} (its driver did not upload it, or it was removed)")
            chunks = gcs.get_many("kv", [_chunk_key(sha, i) for i in range(
                int(manifest.get("chunks", 0)))], timeout_s=FETCH_TIMEOUT_S)
    except RuntimeEnvSetupError:
        raise
    except Exception as exc:  # noqa: BLE001 - the task fails with the reason
        raise RuntimeEnvSetupError(f"could not fetch the working_dir package {sha[:16]} from "
                                   f"the control store at {address}: {exc}") from exc
    if not all(isinstance(c, bytes) for c in chunks):
        raise RuntimeEnvSetupError(f"the working_dir package {sha[:16]} is incomplete in the "
                                   f"control store (a chunk is missing)")
    blob = b"".join(chunks)
    if len(blob) != size or hashlib.sha256(blob).hexdigest() != sha:
        raise RuntimeEnvSetupError(
            f"the working_dir package {sha[:16]} is corrupt: {len(blob)} bytes with sha256 "
            f"{hashlib.sha256(blob).hexdigest()[:16]}, expected {size} bytes with {sha[:16]}")
    return blob


def _install(base: str, sha: str, blob: bytes) -> str:
    """Unpack a package into ``base/<sha>`` (to a temporary name, then renamed)."""
    target = os.path.join(base, sha)
    if os.path.isdir(target):
        return target
    os.makedirs(base, mode=0o700, exist_ok=True)
    tmp = f"{target}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(blob))) as zf:
            zf.extractall(tmp)
    except (zipfile.BadZipFile, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeEnvSetupError(f"could not unpack the working_dir package {sha[:16]} "
                                   f"into {base}: {exc}") from exc
    try:
        os.rename(tmp, target)
    except OSError:  # another process unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _node_lock(path: str, timeout_s: float = LOCK_WAIT_S):
    """An exclusive lock among the node's workers (flock: freed if the holder dies)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeEnvSetupError(
                        f"another worker of this node held {path} for over {timeout_s:.0f} s "
                        f"while fetching the working_dir package") from None
                time.sleep(0.02)  # polling a lock with a deadline
        yield
    finally:
        os.close(fd)


def working_dir_on_node(sha: str, size: int, session_dir: str, config: dict) -> str:
    """The folder holding package ``sha`` on this node: fetched and unpacked by the first
    worker that needs it, found by the others."""
    base = os.path.join(session_dir, "working_dirs")
    target = os.path.join(base, sha)
    if os.path.isdir(target):
        return target
    os.makedirs(base, mode=0o700, exist_ok=True)
    with _node_lock(os.path.join(base, f"{sha}.lock")):
        if not os.path.isdir(target):
            _install(base, sha, _fetch(sha, size, config))
    return target


@contextlib.contextmanager
def applied(env, session_dir: str, config: dict):
    """Run the body inside a task's runtime environment, on the node whose session
    directory and config (its control store's address) are given."""
    if not env:
        yield
        return
    saved_env = {}
    saved_cwd = saved_path = None
    try:
        if env.get("working_dir"):
            sha, size = env["working_dir"]
            folder = working_dir_on_node(sha, size, session_dir, config)
            saved_cwd = os.getcwd()
            saved_path = list(sys.path)
            os.chdir(folder)
            sys.path.insert(0, folder)
        for name, value in (env.get("env_vars") or {}).items():
            saved_env[name] = os.environ.get(name)
            os.environ[name] = value
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if saved_cwd is not None:
            os.chdir(saved_cwd)
            sys.path[:] = saved_path
