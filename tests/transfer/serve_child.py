"""A TransferServer in a child process, serving one object of random bytes, each chunk slowed
by DELAY seconds so that a test can kill it mid-transfer.

    python -m tests.transfer.serve_child SEGMENT_PATH SIZE DELAY     # prints its port
"""

from __future__ import annotations

import sys
import time

import numpy as np

from tests.transfer.conftest import oid, put_bytes
from zactor.store import ObjectStore
from zactor.transfer import messages as M
from zactor.transfer import server as S


def main() -> None:
    path, size, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    store = ObjectStore.create(path, size + (16 << 20))
    put_bytes(store, oid(1), np.random.default_rng(0).bytes(size))
    plain_chunk = S.TransferServer._handlers[M.XFER_CHUNK_REQ.code]

    def slow_chunk(self, ident, msg):
        time.sleep(delay)
        plain_chunk(self, ident, msg)

    S.TransferServer._handlers[M.XFER_CHUNK_REQ.code] = slow_chunk
    S.serve_forever(store, "127.0.0.1", ready=lambda port: print(port, flush=True))


if __name__ == "__main__":
    main()
