"""zactor: tasks, actors and futures across the cores of a machine or the nodes of a cluster.

A drop-in for Ray Core (``import zactor as ray``). The public API is re-exported here; the
pieces live in subpackages named after what they do:

    api.py      the public functions (init, remote, get, put, wait, ...)
    runtime/    from ``f.remote()`` to a result: core client, node manager, workers
    scheduling/ resource accounting and the local scheduler state machine
    store/      the node's shared-memory object store (C in csrc/, wrapped with cffi)
    control/    the control store (GCS): chain-replicated tables over SQLite, with pub-sub
    exceptions  every error zactor raises, with Ray's names
    ids         binary ids (jobs, actors, tasks, objects)

The API is loaded on first use (PEP 562): a control-store replica or a tool that imports
``zactor.control`` does not pay for the runtime, numpy and cloudpickle (about 25 MB of memory
and 0.1 s per process).
"""

__version__ = "0.1.0"

from zactor import exceptions  # noqa: E402  (light: no third-party imports)

_API = ("available_resources", "cancel", "cluster_resources", "get", "get_actor",
        "get_runtime_context", "init", "is_initialized", "kill", "method", "nodes", "put",
        "remote", "shutdown", "wait")

__all__ = ["ObjectRef", "exceptions", *_API]


def __getattr__(name):
    import importlib

    if name in _API:
        value = getattr(importlib.import_module("zactor.api"), name)
    elif name == "ObjectRef":
        value = importlib.import_module("zactor.object_ref").ObjectRef
    elif name == "api":
        value = importlib.import_module("zactor.api")
    else:
        raise AttributeError(f"module 'zactor' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
