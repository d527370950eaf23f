"""``runtime_env`` as in Ray, for what a task needs on a node that is not the driver's:
``env_vars`` and ``working_dir``.

Driver side (``encode``): ``working_dir`` (a local directory) is zipped once per process
(again only when a file changes) and travels inside the task spec with its sha1, to whichever
node runs the task. That keeps it independent of object transfer, at the price of carrying
the archive with every task that names it: it is capped at MAX_WORKING_DIR_ZIP_BYTES (code
and small data; ship data as objects). An object-store path that ships it once per node is
the next step.

Worker side (``applied``): the archive is unpacked once per node into
``<runtime root>/working_dirs/<sha1>`` (unpacked to a temporary name, then renamed: two
workers racing both succeed, one rename wins), then for the task's duration the worker's
current directory is that folder, it is first on ``sys.path`` (so the driver's modules import
there as on the driver), and ``env_vars`` are set; all restored afterwards. Modules imported
from a working directory stay imported in that worker (as with Ray's cached workers, a
working directory's modules should not change within a job).

Not supported (refused with a clear error): ``pip``, ``conda``, ``container``, ``py_modules``
and remote URIs for ``working_dir``: they need package installation on the nodes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sys
import threading
import zipfile

SUPPORTED = ("env_vars", "working_dir")
MAX_WORKING_DIR_BYTES = 100 * 1024 * 1024  # Ray's limit for an uploaded working_dir
MAX_WORKING_DIR_ZIP_BYTES = 8 * 1024 * 1024  # carried in every task spec that names it
EXCLUDED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache",
                 ".ruff_cache", ".venv", "node_modules"}

_uploaded: dict = {}  # (abs path, mtime signature) -> [sha1, object id]
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


def encode(env: dict) -> dict | None:
    """The spec's ``env`` field for a validated runtime_env."""
    if not env:
        return None
    out = {}
    if env.get("env_vars"):
        out["env_vars"] = env["env_vars"]
    if env.get("working_dir"):
        path = env["working_dir"]
        key = (path, _signature(path))
        with _lock:
            entry = _uploaded.get(key)
            if entry is None:
                blob = _zip_dir(path)
                if len(blob) > MAX_WORKING_DIR_ZIP_BYTES:
                    raise ValueError(
                        f"runtime_env['working_dir'] {path!r} zips to {len(blob) >> 20} MB, "
                        f"over the {MAX_WORKING_DIR_ZIP_BYTES >> 20} MB it may carry in each "
                        f"task; keep code there and pass data as objects")
                entry = _uploaded[key] = [hashlib.sha1(blob).hexdigest(), blob]
        out["working_dir"] = entry
    return out or None


def _unpacked(sha: str, blob: bytes) -> str:
    from zactor.runtime.local_cluster import runtime_root

    base = os.path.join(runtime_root(), "working_dirs")
    target = os.path.join(base, sha)
    if os.path.isdir(target):
        return target
    os.makedirs(base, mode=0o700, exist_ok=True)
    tmp = f"{target}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(io.BytesIO(bytes(blob))) as zf:
        zf.extractall(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another worker unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def applied(env):
    """Run the body inside a task's runtime environment."""
    if not env:
        yield
        return
    saved_env = {}
    saved_cwd = saved_path = None
    try:
        if env.get("working_dir"):
            sha, blob = env["working_dir"]
            folder = _unpacked(sha, blob)
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
