"""TransferServer: serves a node's sealed objects, by id, to other nodes' TransferClients.

Runs in the node manager's process, in a thread of its own with its own zmq context and
ROUTER socket, so the node manager's poll loop never waits on a transfer (nor the other way
round). It answers requests one at a time and keeps no per-pull state (see messages.py);
the client's credit (how many chunk requests it has outstanding) is the flow control.

A message that does not parse is answered with ERROR when its header names a request, else
dropped; nothing a peer sends can stop the thread (every handler error is caught and
counted). Inbound messages are capped at MAX_REQUEST_BYTES: requests are small, and a peer
sending a 1 GB frame is disconnected by libzmq before the frame is buffered.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict

import lz4.block
import zmq

from zactor import protocol as P
from zactor.exceptions import ProtocolError
from zactor.net.security import curve_server, keys_from, start_authenticator
from zactor.net.sockets import bind_free, make_socket
from zactor.transfer import messages as M

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 64 << 20      # a chunk request larger than this is refused (memory bound)
MAX_SESSIONS = 4096             # HMAC sessions kept (oldest dropped): HELLO spam is bounded
SAMPLE_BYTES = 64 * 1024        # per sample when deciding whether lz4 pays
COMPRESS_RATIO = 0.75           # lz4 is used when samples shrink below this fraction
_POLL_MS = 200
RESTORE_WAIT_S = 30.0           # for a spilled object to be read back into the store


def lz4_pays(data: memoryview) -> bool:
    """Compress three samples (start, middle, end) of ``data``; True if they shrink enough
    that lz4 saves more wire time than it costs (random floats, images, already-compressed
    data do not: they are sent raw)."""
    n = data.nbytes
    if n < 4096:
        return False
    starts = sorted({0, max(0, n // 2 - SAMPLE_BYTES // 2), max(0, n - SAMPLE_BYTES)})
    raw = packed = 0
    for s in starts:
        sample = data[s:s + SAMPLE_BYTES]
        raw += sample.nbytes
        packed += len(lz4.block.compress(sample, store_size=False))
    return packed < raw * COMPRESS_RATIO


class TransferServer:
    """Serve ``store``'s sealed objects on ``tcp://bind_host:port`` (0: a free port).

    ``keys``: ClusterKeys or key file path; None = no authentication (loopback tests only).
    With keys, ``encrypt=True`` runs the socket as a CURVE server (authenticated and
    encrypted); ``encrypt=False`` sends object bytes in the clear but serves only requests
    carrying a valid HMAC of a session opened with XFER_HELLO (authenticated, not secret).
    Clients must use the same ``encrypt`` setting (a cluster-wide choice).

    ``store`` is used from the server thread only; ``stats`` counts requests (for tests and
    diagnostics). ``restore(oid, timeout_s) -> error`` (the node manager's spilling), if
    given, is called for an object missing from the store and returns "" once it is back. ``port`` and ``address`` tell where it listens; ``close()`` stops it.
    """

    def __init__(self, store, bind_host: str = "127.0.0.1", port: int = 0, *, keys=None,
                 encrypt: bool = True, restore=None):
        self.store = store
        self.restore = restore
        self.keys = keys_from(keys)
        self.encrypt = encrypt
        self._mac_key = (self.keys.hmac_key(M.MAC_PURPOSE)
                         if self.keys is not None and not encrypt else None)
        self._sessions: OrderedDict = OrderedDict()  # sid -> [nonce, last seq]
        self.stats = {"meta_requests": 0, "chunk_requests": 0, "bytes_sent": 0,
                      "compressed_chunks": 0, "errors": 0, "dropped": 0}
        self._ctx = zmq.Context()
        self._auth = start_authenticator(self._ctx, self.keys) if encrypt else None
        self._sock = make_socket(self._ctx, zmq.ROUTER, hwm=1000)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        if encrypt:
            curve_server(self._sock, self.keys)
        try:
            self.address = bind_free(self._sock, bind_host, port)
        except zmq.ZMQError:
            self._teardown()
            raise
        self.port = int(self.address.rsplit(":", 1)[1])
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"zactor-transfer-server-"
                                        f"{self.port}", daemon=True)
        self._thread.start()

    # ---- life ---------------------------------------------------------------------------

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop serving and close the socket (replies in flight are dropped). Idempotent.
        Close it before destroying the store: replies being sent point into the segment."""
        if self._stopping:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # leak the fds rather than close them under the thread
            log.warning("transfer server thread did not stop within %ss", timeout_s)
            return
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _teardown(self) -> None:
        self._sock.close(0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._stopping:
                for _ in range(64):  # drain a burst, then look at the wake pipe again
                    try:
                        frames = self._sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._serve(frames)
                poller.poll(_POLL_MS)
        except zmq.ContextTerminated:
            pass
        finally:
            self._teardown()

    # ---- requests -----------------------------------------------------------------------

    def _serve(self, frames: list) -> None:
        if len(frames) < 3:
            self.stats["dropped"] += 1
            return
        ident, rest = frames[0], frames[1:]
        try:
            mtype, req_id = P.decode_header(rest[0])
        except ProtocolError:
            self.stats["dropped"] += 1  # no request id to answer: drop, as protocol.py says
            return
        try:
            msg = P.decode(rest)
            handler = self._handlers.get(mtype.code)
            if handler is None:
                raise ProtocolError(f"{mtype.name} is not a transfer request")
            handler(self, ident, msg)
        except ProtocolError as e:
            self._error(ident, req_id, P.ERR_MALFORMED, str(e))
        except Exception as e:  # a bug here must cost one request, not the node's server
            log.exception("transfer server: request %s failed", mtype.name)
            self._error(ident, req_id, P.ERR_MALFORMED, f"{type(e).__name__}: {e}")

    def _error(self, ident, req_id: int, code: str, text: str) -> None:
        self.stats["errors"] += 1
        self._send(ident, P.encode(P.ERROR, {"code": code, "message": text}, req_id))

    def _send(self, ident, frames, copy=True) -> None:
        try:
            self._sock.send_multipart([ident, *frames], copy=copy)
        except zmq.ZMQError as e:  # peer gone or over its high-water mark: it will time out
            log.debug("transfer server: reply dropped: %s", e)

    def _oid(self, msg) -> bytes:
        oid = msg["oid"]
        if not isinstance(oid, bytes) or len(oid) != 28:
            raise ProtocolError("oid must be 28 bytes")
        return oid

    def _authorized(self, ident, msg, oid: bytes, offset=0, length=0) -> bool:
        """HMAC mode: the request's MAC checks out and its seq is new in its session."""
        if self._mac_key is None:
            return True
        sid, seq, mac = msg["sid"], msg["seq"], msg["mac"]
        session = self._sessions.get(sid) if isinstance(sid, int) else None
        ok = (session is not None and isinstance(seq, int) and seq > session[1]
              and isinstance(mac, bytes) and 0 <= seq < 1 << 64
              and hmac.compare_digest(mac, M.request_mac(
                  self._mac_key, session[0], seq, msg.mtype.code, msg.req_id, oid, offset,
                  length)))
        if not ok:
            self._error(ident, msg.req_id, M.ERR_AUTH,
                        "request not authenticated (no session, bad MAC or replayed)")
            return False
        session[1] = seq
        self._sessions.move_to_end(sid)
        return True

    def _on_hello(self, ident, msg) -> None:
        if self._mac_key is None:  # nothing to open: CURVE or no keys authenticate already
            self._send(ident, P.encode(M.XFER_WELCOME, {"sid": 0, "nonce": b""}, msg.req_id))
            return
        sid = secrets.randbits(63)
        nonce = secrets.token_bytes(16)
        self._sessions[sid] = [nonce, -1]
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        self._send(ident, P.encode(M.XFER_WELCOME, {"sid": sid, "nonce": nonce}, msg.req_id))

    def _pin(self, oid: bytes):
        """The object pinned, restored from disk first if it was spilled (and evicted)."""
        buf = self.store.get_buffer(oid)
        if buf is None and self.restore is not None and not self.restore(oid, RESTORE_WAIT_S):
            buf = self.store.get_buffer(oid)
        return buf

    def _on_meta(self, ident, msg) -> None:
        oid = self._oid(msg)
        if not self._authorized(ident, msg, oid):
            return
        self.stats["meta_requests"] += 1
        buf = self._pin(oid)
        if buf is None:
            self._error(ident, msg.req_id, M.ERR_MISSING,
                        f"object {oid.hex()} is not in the store of {self.address}")
            return
        with buf:
            body = {"oid": oid, "size": buf.data.nbytes, "metadata": buf.metadata,
                    "compress": lz4_pays(buf.data)}
        self._send(ident, P.encode(M.XFER_META, body, msg.req_id))

    def _on_chunk(self, ident, msg) -> None:
        oid = self._oid(msg)
        offset, length = msg["offset"], msg["length"]
        if not (isinstance(offset, int) and isinstance(length, int)):
            raise ProtocolError("offset and length must be integers")
        if not self._authorized(ident, msg, oid, offset, length):
            return
        self.stats["chunk_requests"] += 1
        buf = self._pin(oid)
        if buf is None:
            self._error(ident, msg.req_id, M.ERR_MISSING,
                        f"object {oid.hex()} is no longer in the store of {self.address}")
            return
        size = buf.data.nbytes
        if offset < 0 or length <= 0 or length > MAX_CHUNK_BYTES or offset + length > size:
            buf.release()
            self._error(ident, msg.req_id, M.ERR_RANGE,
                        f"bytes {offset}+{length} outside object {oid.hex()} of {size} bytes")
            return
        # the slice keeps the pin alive until libzmq has sent it (zero-copy send)
        view = buf.data[offset:offset + length]
        payload, codec = view, M.CODEC_RAW
        if msg["compress"]:
            packed = lz4.block.compress(view, store_size=False)
            if len(packed) < length:
                payload, codec = packed, M.CODEC_LZ4
                self.stats["compressed_chunks"] += 1
        body = {"oid": oid, "offset": offset, "length": length, "codec": codec}
        self.stats["bytes_sent"] += len(payload)
        self._send(ident, [*P.encode(M.XFER_CHUNK, body, msg.req_id), payload], copy=False)

    _handlers = {M.XFER_HELLO.code: _on_hello, M.XFER_META_REQ.code: _on_meta,
                 M.XFER_CHUNK_REQ.code: _on_chunk}


def serve_forever(store, bind_host: str, port: int = 0, *, keys=None, encrypt=True,
                  ready=None) -> None:
    """Run a server until the process is killed (tests and benchmarks run it in a child
    process); ``ready(port)`` is called once it listens."""
    server = TransferServer(store, bind_host, port, keys=keys, encrypt=encrypt)
    if ready is not None:
        ready(server.port)
    while True:
        time.sleep(3600)
