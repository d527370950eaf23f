"""Object-transfer messages (codes 0x80-0xBF of zactor.protocol) and their request MACs.

Run by the transfer server and client threads of every node.

A pull (client DEALER -> server ROUTER, fileio "credit" pattern of the ZeroMQ guide: the
client asks for each chunk, so it alone decides how many bytes are in flight):

    XFER_META_REQ  {oid}                      -> XFER_META {oid, size, metadata, compress}
    XFER_CHUNK_REQ {oid, offset, length, compress}
                                              -> XFER_CHUNK {oid, offset, length, codec}
                                                 + one raw payload frame (the bytes)
    any request that fails                    -> ERROR {code: ERR_*, message}

``codec`` is CODEC_RAW (payload = the bytes) or CODEC_LZ4 (payload = lz4 block of them, sent
only when smaller). The server keeps no per-pull state: each chunk request pins the object
for as long as its reply is being sent, so a dead client leaves nothing behind.

Authenticated, unencrypted mode (cluster keys, ``encrypt=False``): the socket carries no
CURVE, so every request carries ``sid``, ``seq`` and ``mac`` = HMAC-SHA256 over the session
nonce, seq and the request's fields (``request_mac``), keyed by a key derived from the cluster
secret. XFER_HELLO opens a session: the server answers XFER_WELCOME {sid, nonce} with a fresh
random nonce; ``seq`` must grow within a session, so a captured request cannot be replayed.
See docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from zactor.protocol import define

XFER_HELLO = define(0x80, "XFER_HELLO")
XFER_WELCOME = define(0x81, "XFER_WELCOME", required=("sid", "nonce"))
XFER_META_REQ = define(0x82, "XFER_META_REQ", required=("oid",),
                       optional={"sid": 0, "seq": 0, "mac": b""})
XFER_META = define(0x83, "XFER_META", required=("oid", "size"),
                   optional={"metadata": b"", "compress": False})
XFER_CHUNK_REQ = define(0x84, "XFER_CHUNK_REQ", required=("oid", "offset", "length"),
                        optional={"compress": False, "sid": 0, "seq": 0, "mac": b""})
XFER_CHUNK = define(0x85, "XFER_CHUNK", required=("oid", "offset", "length"),
                    optional={"codec": 0})

CODEC_RAW = 0
CODEC_LZ4 = 1

# ERROR codes of the transfer server (zactor.protocol.ERROR ``code``)
ERR_MISSING = "missing"          # the object is not (or no longer) sealed in the peer's store
ERR_RANGE = "bad_range"          # offset/length outside the object
ERR_AUTH = "unauthenticated"     # bad / missing MAC, unknown session, replayed seq

MAC_PURPOSE = b"transfer-request"
_MAC_FIELDS = struct.Struct(">QBQQQ")


def request_mac(key: bytes, nonce: bytes, seq: int, code: int, req_id: int, oid: bytes,
                offset: int = 0, length: int = 0) -> bytes:
    """HMAC-SHA256 of one request: binds the session, the order and every field served."""
    msg = nonce + _MAC_FIELDS.pack(seq, code, req_id, offset, length) + oid
    return hmac.new(key, msg, hashlib.sha256).digest()


class TransferError(Exception):
    """A pull failed: ``oid`` (bytes), ``peer`` (address), ``reason`` (ERR_* or "timeout",
    "peer_lost", "refused", "store", "store_full" (no room here: the copy is fine where it
    is), "closed"), with a message naming both."""

    def __init__(self, oid: bytes, peer: str, reason: str, detail: str):
        self.oid = oid
        self.peer = peer
        self.reason = reason
        self.detail = detail
        super().__init__(f"pull of object {oid.hex()} from {peer} failed ({reason}): {detail}")

    def __reduce__(self):
        return (TransferError, (self.oid, self.peer, self.reason, self.detail))
