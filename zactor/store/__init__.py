"""The node's shared-memory object store (C in csrc/, wrapped with cffi).

    from zactor.store import ObjectStore
    store = ObjectStore.create("/dev/shm/zactor-node", 256 << 20)   # the node manager
    other = ObjectStore.attach("/dev/shm/zactor-node")              # any process of the node
    other.put(oid, numpy_array); arr = store.get(oid)                # zero-copy, read-only
"""

from zactor.store.client import ObjectStore, StoreBuffer, default_store_size

__all__ = ["ObjectStore", "StoreBuffer", "default_store_size"]
