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
"""

__version__ = "0.1.0"

from zactor import exceptions  # noqa: E402
from zactor.api import (  # noqa: E402
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_runtime_context,
    init,
    is_initialized,
    nodes,
    put,
    remote,
    shutdown,
    wait,
)
from zactor.object_ref import ObjectRef  # noqa: E402

__all__ = [
    "ObjectRef", "available_resources", "cancel", "cluster_resources", "exceptions", "get",
    "get_runtime_context", "init", "is_initialized", "nodes", "put", "remote", "shutdown",
    "wait",
]
