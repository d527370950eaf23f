"""zactor: tasks, actors and futures across the cores of a machine or the nodes of a cluster.

A drop-in for Ray Core (``import zactor as ray``). The public API is re-exported here; the
pieces live in subpackages named after what they do:

    store/      the node's shared-memory object store (C in csrc/, wrapped with cffi)
    control/    the control store (GCS): chain-replicated tables over SQLite, with pub-sub
    exceptions  every error zactor raises, with Ray's names
    ids         binary ids (jobs, actors, tasks, objects)
"""

__version__ = "0.1.0"

from zactor import exceptions  # noqa: E402,F401
