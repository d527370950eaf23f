"""Object transfer between nodes' shared-memory stores (issue 6, items 4-5).

    server = TransferServer(store, "0.0.0.0", port, keys=keys)      # in the node manager
    client = TransferClient(store, keys=keys, pollable=True)
    handle = client.pull(oid, "tcp://10.0.0.2:7001")                # returns at once
    ...  poll client.fileno(); for h in client.completed(): h.result() / h.exception()
    client.fetch(oid, address, timeout=30)                          # blocking convenience

See messages.py for the wire protocol and docs/security.md for keys and encryption.
"""

from zactor.transfer.client import TransferClient
from zactor.transfer.handle import PullHandle
from zactor.transfer.messages import TransferError
from zactor.transfer.server import TransferServer, lz4_pays

__all__ = ["TransferClient", "TransferServer", "TransferError", "PullHandle", "lz4_pays"]
