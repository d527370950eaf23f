"""The public API (re-exported by ``zactor/__init__.py``): Ray Core's functions and semantics.

Where a task goes from here: ``remote`` wraps a function in a RemoteFunction
(runtime/remote_function.py), whose ``.remote()`` builds a task spec and hands it to this
process's CoreClient (runtime/core_client.py), which sends it to the node manager
(runtime/node_manager.py); the LocalScheduler (scheduling/local_scheduler.py) picks a worker
(runtime/worker.py) that runs it and stores its result (store/); ``get`` reads it back.
"""

from __future__ import annotations

import atexit
import inspect
import os
import threading

from zactor.exceptions import RaySystemError
from zactor.object_ref import ObjectRef
from zactor.runtime import context
from zactor.runtime import messages as m
from zactor.runtime.local_cluster import LocalControlPlane, LocalNode

# The runtime's heavier modules (ZeroMQ, the store's C library, cloudpickle) are imported
# inside init() while the node manager starts, and by remote() on first use: `import zactor`
# and `init` then cost the longer of the two start-ups, not their sum.

_init_lock = threading.RLock()
_node: LocalNode | None = None
DEFAULT_STORE_FRACTION = 0.3


def is_initialized() -> bool:
    return context.client_or_none() is not None


def init(address=None, *, num_cpus=None, num_gpus=None, resources=None,
         object_store_memory=None, namespace=None, ignore_reinit_error=False,
         log_to_driver=True, include_dashboard=None, configure_logging=True,
         logging_level=None, runtime_env=None, _system_config=None, **unsupported):
    """Start a local cluster (no ``address``) and connect this process to it as the driver."""
    global _node
    if unsupported:
        name = sorted(unsupported)[0]
        raise TypeError(f"init() got an unexpected keyword argument {name!r}")
    with _init_lock:
        if is_initialized():
            if ignore_reinit_error:
                return _context_info()
            raise RuntimeError("Maybe you called zactor.init twice by accident? This error "
                               "can be suppressed by passing in 'ignore_reinit_error=True'.")
        if address is None and os.environ.get("ZACTOR_ADDRESS"):
            address = "auto"  # as Ray's RAY_ADDRESS: a driver started inside a cluster
        if address not in (None, "local"):
            if not isinstance(address, str):
                raise TypeError(f"init(address=...) takes 'auto', 'local' or 'HOST:PORT', "
                                f"not {type(address).__name__}")
            if num_cpus is not None or num_gpus is not None or resources or \
                    object_store_memory is not None:
                raise ValueError("when connecting to an existing cluster, num_cpus, "
                                 "num_gpus, resources and object_store_memory cannot be "
                                 "given: they are the nodes' (zactor start --num-cpus ...)")
            from zactor.cluster.discovery import join

            client = join(address)
            client.config["namespace"] = namespace or ""
            client.config["log_to_driver"] = bool(log_to_driver)
            client.config["runtime_env"] = _job_runtime_env(runtime_env)
            context.set_client(client, "driver")
            return _context_info()
        res, store_bytes = node_resources(num_cpus, num_gpus, resources, object_store_memory)
        cpus = res["CPU"]
        config = {"log_to_driver": bool(log_to_driver),
                  "inline_threshold": m.DEFAULT_INLINE_THRESHOLD_BYTES,
                  "namespace": namespace or "", **(_system_config or {})}
        launching = LocalNode.launch(resources=res, store_bytes=store_bytes, config=config,
                                     initial_workers=max(1, int(cpus)))
        try:
            from zactor.runtime.core_client import CoreClient  # meanwhile: the node starts

            _node = node = launching.wait_ready()
        except BaseException:
            if _node is None:
                launching.abandon()
            raise
        try:
            client = CoreClient(node.address, "driver", liveness=node.exit_status)
        except BaseException:
            node.stop()
            node.cleanup()
            _node = None
            raise
        client.config["runtime_env"] = _job_runtime_env(runtime_env)
        context.set_client(client, "driver")
        node.control_plane = LocalControlPlane(
            os.path.join(node.session_dir, "gcs"),
            on_ready=lambda address, pids: client.send(m.SET_GCS, {"address": address,
                                                                   "pids": pids}))
        return _context_info()


def node_resources(num_cpus=None, num_gpus=None, resources=None, object_store_memory=None):
    """A node's resources ({"CPU", "GPU", "memory", custom...}) and store size in bytes, from
    Ray's arguments (defaults: every core, the GPUs visible, 30% of memory for the store)."""
    res = dict(resources or {})
    for reserved in ("CPU", "GPU"):
        if reserved in res:
            raise ValueError(f"use num_cpus/num_gpus instead of resources[{reserved!r}]")
    res["CPU"] = (os.cpu_count() or 1) if num_cpus is None else num_cpus
    res["GPU"] = num_gpus if num_gpus is not None else _detect_gpus()
    total_memory, available_memory = _memory()
    store_bytes = int(object_store_memory or total_memory * DEFAULT_STORE_FRACTION)
    # as Ray: the memory tasks may reserve (memory=) is what is free beside the store
    res.setdefault("memory", max(0, available_memory - store_bytes))
    return res, store_bytes


def _job_runtime_env(runtime_env) -> dict:
    from zactor.runtime.runtime_env import validate

    return validate(runtime_env)


def _cluster_request(mtype, body: dict, timeout_s: float):
    """Send one request to the cluster's global scheduler (placement groups); its answer."""
    client = context.client()
    coordinator = client.config.get("gcs_address")
    if not client.config.get("cluster") or not coordinator:
        raise RuntimeError("placement groups need a cluster with a global scheduler: start "
                           "one with `zactor start --head` and connect with "
                           "zactor.init(address='auto'); the local cluster of a bare "
                           "zactor.init() has none")
    from zactor.cluster.scheduler_client import cluster_request

    return cluster_request(coordinator, mtype, body, timeout_s,
                           keys=client.config.get("key_file"))


def _memory() -> tuple:
    """(total, available) bytes of memory. Read from /proc on Linux: importing psutil would
    cost init ~20 ms before the node manager can be started."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemTotal"], info["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        import psutil

        vm = psutil.virtual_memory()
        return vm.total, vm.available


def _detect_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        return len([d for d in os.listdir("/dev") if d.startswith("nvidia") and
                    d[6:].isdigit()])
    except OSError:
        return 0


def _context_info() -> dict:
    client = context.client()
    return {"node_id": client.node_id.hex(), "session_dir": client.session_dir,
            "job_id": client.job_id.hex()}


def shutdown() -> None:
    """Disconnect and stop the local cluster this driver started (no-op if none)."""
    global _node
    with _init_lock:
        client = context.client_or_none()
        if client is not None and context.mode() == "driver":
            context.clear_client()
            client.close()
            from zactor.cluster import scheduler_client

            scheduler_client.close_all()
        if _node is not None:
            _node.stop()  # the node first: it flushes its last writes to the control store
            plane = getattr(_node, "control_plane", None)
            if plane is not None:
                plane.stop()
            _node.cleanup()
            _node = None


atexit.register(shutdown)


def remote(*args, **options):
    """``@remote`` or ``@remote(num_cpus=..., ...)`` on a function (classes: the actors issue)."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("The @zactor.remote decorator must be applied either with no "
                        "arguments and no parentheses, or with keyword arguments only")
    return lambda fn: _make_remote(fn, options)


def _make_remote(target, options):
    if inspect.isclass(target):
        from zactor.runtime.actors import ActorClass

        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@zactor.remote needs a function or a class, got "
                        f"{type(target).__name__}")
    from zactor.runtime.remote_function import RemoteFunction

    return RemoteFunction(target, options)


def get_actor(name: str, namespace: str | None = None):
    """The handle of the named actor; ValueError if there is none (see runtime/actors.py)."""
    from zactor.runtime.actors import get_actor as lookup

    return lookup(name, namespace)


def kill(actor, *, no_restart: bool = True) -> None:
    """End an actor now: its queued, running and later calls raise ActorDiedError."""
    from zactor.runtime.actors import kill as kill_actor

    kill_actor(actor, no_restart=no_restart)


def method(*args, **options):
    """``@zactor.method(num_returns=n)`` on an actor method."""
    from zactor.runtime.actors import method as decorate

    return decorate(*args, **options)


def _check_refs(refs, what: str):
    if isinstance(refs, ObjectRef):
        return [refs], True
    if not isinstance(refs, (list, tuple)):
        raise ValueError(f"'{what}' must either be an ObjectRef or a list of ObjectRefs, "
                         f"got {type(refs).__name__}")
    for r in refs:
        if not isinstance(r, ObjectRef):
            raise ValueError(f"'{what}' must either be an ObjectRef or a list of ObjectRefs, "
                             f"got a list containing {type(r).__name__}")
    return list(refs), False


def _check_timeout(timeout):
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"'timeout' must be None or a number >= 0, got {timeout!r}")


def get(object_refs, *, timeout=None):
    """The value(s) of ``object_refs``; raises the task's error, or GetTimeoutError."""
    refs, single = _check_refs(object_refs, "object_refs")
    _check_timeout(timeout)
    values = context.client().get([r.binary() for r in refs], timeout)
    return values[0] if single else values


def put(value, *, _owner=None) -> ObjectRef:
    client = context.client()
    return client.put(value, context.current_task_id() or client.driver_task_id)


def wait(object_refs, *, num_returns=1, timeout=None, fetch_local=True):
    """(ready, not_ready): the first ``num_returns`` refs to finish, in the given order."""
    if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() expected a list of ObjectRef, got {type(object_refs).__name__}")
    refs, _ = _check_refs(object_refs, "object_refs")
    if len(set(refs)) != len(refs):
        raise ValueError("Wait requires a list of unique object refs.")
    if not isinstance(num_returns, int) or num_returns < 0:
        raise ValueError(f"Invalid number of objects to return {num_returns!r}.")
    if num_returns > len(refs):
        raise ValueError("num_returns cannot be greater than the number of objects provided "
                         f"to zactor.wait ({num_returns} > {len(refs)})")
    _check_timeout(timeout)
    client = context.client()
    oids = [r.binary() for r in refs]
    client.wait_ready(oids, num_returns, timeout)
    ready, not_ready = [], []
    for r in refs:
        (ready if client.ready(r.binary()) and len(ready) < num_returns else
         not_ready).append(r)
    return ready, not_ready


def cancel(object_ref, *, force=False, recursive=True) -> None:
    """Cancel the task that produces ``object_ref`` (see Ray's semantics)."""
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expected an ObjectRef, got {type(object_ref).__name__}")
    context.client().cancel(object_ref.binary()[:24], bool(force), bool(recursive))


def _info(what):
    return context.client().request(m.INFO, {"what": what}, m.INFO_REPLY)["value"]


def nodes() -> list:
    return _info("nodes")


def cluster_resources() -> dict:
    return _info("total")


def available_resources() -> dict:
    return _info("available")


class RuntimeContext:
    """What ``get_runtime_context()`` returns: ids of the job, node, task and worker."""

    def __init__(self, client):
        self._client = client

    def get_job_id(self) -> str:
        return self._client.job_id.hex()

    def get_node_id(self) -> str:
        return self._client.node_id.hex()

    def get_task_id(self):
        tid = context.current_task_id()
        return tid.hex() if tid else None

    def get_worker_id(self) -> str:
        return (self._client.worker_id or self._client.driver_task_id[:28]).hex()

    def get_actor_id(self):
        return None

    @property
    def namespace(self) -> str:
        return self._client.config.get("namespace", "")

    @property
    def was_current_actor_reconstructed(self) -> bool:
        return False

    def get(self) -> dict:
        return {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
                "task_id": self.get_task_id(), "worker_id": self.get_worker_id()}


def get_runtime_context() -> RuntimeContext:
    client = context.client_or_none()
    if client is None:
        raise RaySystemError("zactor is not initialized: call zactor.init() first")
    return RuntimeContext(client)
