"""Object transfer between nodes' shared-memory stores (issue 6, items 4-5).

In a node manager (both run threads of their own; nothing here blocks the caller):

    server = TransferServer(store, "0.0.0.0", transfer_port, keys=keys)   # .port, .close()
    client = TransferClient(store, keys=keys, pollable=True)
    handle = client.pull(oid, "10.0.0.2:7001")             # returns a PullHandle at once
    poller.register(client.fileno(), zmq.POLLIN)            # in the node manager's loop:
    for h in client.completed():                            #   readable -> drain
        err = h.exception(0)                                #   None: sealed in the store
    client.fetch(oid, address, timeout=30)                  # blocking, for scripts/tests

or ``client.pull(oid, address, callback=fn)`` (``fn(handle)`` runs in the client's thread).
A failure raises / returns ``TransferError`` (``.oid``, ``.peer``, ``.reason``: "missing",
"timeout", "peer_lost", "refused", "unauthenticated", "store", "closed", "malformed") and never
leaves a partial object: the region is aborted. Pulls of one object share one transfer.

The store handle: each side calls the store from its own thread; every store call takes the
segment's lock, so the node manager may pass the handle it uses itself (the tests do), or a
handle of its own (``ObjectStore.attach(path)``). Pulled copies are created evictable (they
are secondary copies); ``store.set_evictable`` changes that after the pull if needed.

``keys`` (ClusterKeys or key file path) and ``encrypt`` must match on both ends: no keys
(loopback tests), keys + CURVE (default), or keys with ``encrypt=False`` (HMAC-authenticated
requests, object bytes in the clear). See messages.py for the wire protocol,
docs/security.md for the design and docs/performance.md for figures.
"""

from zactor.transfer.client import TransferClient
from zactor.transfer.handle import PullHandle
from zactor.transfer.messages import TransferError
from zactor.transfer.server import TransferServer, lz4_pays

__all__ = ["TransferClient", "TransferServer", "TransferError", "PullHandle", "lz4_pays"]
