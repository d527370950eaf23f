"""TransferClient: pulls objects from other nodes' TransferServers into the local store.

Runs in the node manager's process (or any process with a store handle), in one thread of
its own with its own zmq context: one DEALER (plus its monitor) per peer address. Callers on
other threads hand it work through a queue and a wake pipe; results come back as PullHandles
(``result``/``add_done_callback``) and, with ``pollable=True``, through ``fileno()`` /
``completed()`` for a poll loop.

A pull writes straight into the local store: META gives the size, the client reserves the
object (``create_buffer``), keeps ``window`` chunk requests outstanding (the credit), copies
each reply into place, and seals after the last one; any failure aborts the object, so a
failed pull never leaves a partial object behind. Concurrent pulls of one object share one
transfer (one handle). A peer is declared lost as soon as its connection drops (socket
monitor), refused when the CURVE handshake fails, and silent after ``idle_timeout_s``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

import zmq

from zactor import protocol as P
from zactor.exceptions import ProtocolError
from zactor.net.security import keys_from
from zactor.net.sockets import tcp_address
from zactor.transfer import messages as M
from zactor.transfer._malloc import keep_chunk_buffers
from zactor.transfer._store_side import StoreWriter
from zactor.transfer.handle import CompletionQueue, PullHandle, _Pull
from zactor.transfer.peer import Peer

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 4 << 20
DEFAULT_WINDOW = 4            # chunk requests in flight per pull: 16 MB at the default size
DEFAULT_IDLE_TIMEOUT_S = 10.0
PEER_IDLE_CLOSE_S = 60.0      # a server's connection unused this long is closed
_TICK_MS = 50


class TransferClient(StoreWriter):
    """Pull objects into ``store`` (used from the client's thread only).

    ``keys``/``encrypt`` must match the servers' (see TransferServer). ``chunk_bytes`` and
    ``window`` set the chunk size and the chunks in flight per pull; ``compress`` lets a
    server lz4-compress when its samples say it pays (False: never ask). ``pollable``:
    also report finished pulls through ``fileno()``/``completed()``. ``tune_malloc``: fix
    glibc's malloc thresholds process-wide so chunk buffers are reused (see _malloc.py).
    """

    def __init__(self, store, *, keys=None, encrypt: bool = True,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, window: int = DEFAULT_WINDOW,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, compress: bool = True,
                 pollable: bool = False, tune_malloc: bool = True):
        if chunk_bytes <= 0 or window <= 0:
            raise ValueError("chunk_bytes and window must be positive")
        self.store = store
        self.keys = keys_from(keys)
        self.encrypt = encrypt
        self.chunk_bytes = chunk_bytes
        self.window = window
        self.idle_timeout_s = idle_timeout_s
        self.compress = compress
        if tune_malloc:
            keep_chunk_buffers(chunk_bytes, chunk_bytes * window)
        self._lock = threading.Lock()
        self._inbox: deque = deque()
        self._pulls: dict = {}  # oid -> _Pull (active)
        self._peers: dict = {}  # address -> Peer
        self._completed = CompletionQueue() if pollable else None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closed = False
        self._next_sweep = 0.0
        self._peers_gen = 0
        self._ctx = zmq.Context()
        self._thread = threading.Thread(target=self._run, name="zactor-transfer-client",
                                        daemon=True)
        self._thread.start()

    # ---- public API (any thread) --------------------------------------------------------

    def pull(self, oid: bytes, address: str, *, timeout: float | None = None,
             callback=None) -> PullHandle:
        """Start pulling ``oid`` from the server at ``address`` (``host:port`` or
        ``tcp://host:port``); returns at once. A pull of an object already being pulled
        joins that transfer (same handle). ``callback(handle)`` runs when it ends, in the
        client's thread (keep it short). ``timeout``: seconds for the whole pull; a shared
        pull ends at the latest deadline of its callers, and never if one gave none."""
        oid = bytes(oid)
        if len(oid) != 28:
            raise ValueError(f"object ids are 28 bytes, got {len(oid)}")
        address = tcp_address(address)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._closed:
                raise RuntimeError("TransferClient is closed")
            pull = self._pulls.get(oid)
            if pull is None:
                pull = _Pull(oid, address, deadline)
                self._pulls[oid] = pull
                self._inbox.append(pull)
            else:
                pull.extend_deadline(deadline)
            handle = pull.handle
            self._wake()  # under the lock: close() cannot have closed the pipe meanwhile
        if callback is not None:
            handle.add_done_callback(callback)
        return handle

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:  # the pipe is full: the thread has a wake-up pending anyway
            pass

    def fetch(self, oid: bytes, address: str, timeout: float = 60.0) -> int:
        """Pull and wait; returns the object's size or raises TransferError."""
        handle = self.pull(oid, address, timeout=timeout)
        try:
            return handle.result(timeout + 1.0)
        except TimeoutError:  # joined a pull with a later deadline: stop waiting for it
            raise M.TransferError(handle.oid, handle.address, "timeout",
                                  f"not done within {timeout:g}s") from None

    def fileno(self) -> int:
        """(pollable=True) A file descriptor readable while ``completed()`` has handles."""
        return self._queue().fileno()

    def completed(self) -> list:
        """(pollable=True) Handles of pulls finished since the last call (success or not)."""
        return self._queue().drain()

    def _queue(self):
        if self._completed is None:
            raise RuntimeError("create the TransferClient with pollable=True")
        return self._completed

    def close(self, timeout_s: float = 5.0) -> None:
        """Fail pulls in flight (aborting their objects), close sockets. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake()
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # stuck (a callback?): leak the fds rather than pull
            log.warning("transfer client thread did not stop within %ss", timeout_s)
            return                   # them from under it
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._completed is not None:
            self._completed.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- the client thread --------------------------------------------------------------

    def _poller(self) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        for peer in self._peers.values():
            poller.register(peer.sock, zmq.POLLIN)
            poller.register(peer.monitor, zmq.POLLIN)
        return poller

    def _run(self) -> None:
        poller, polled = None, -1
        try:
            while True:
                if polled != self._peers_gen:  # rebuilt only when peers come or go
                    poller, polled = self._poller(), self._peers_gen
                poller.poll(_TICK_MS)
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
                if self._closed:
                    break
                self._take_new()
                for peer in list(self._peers.values()):
                    self._drain(peer)
                self._check_timers(time.monotonic())
        except Exception:
            log.exception("transfer client thread failed")
        finally:
            for pull in list(self._pulls.values()):
                self._fail(pull, "closed", "the transfer client was closed")
            for peer in self._peers.values():
                peer.close()
            self._ctx.term()

    def _take_new(self) -> None:
        while True:
            with self._lock:
                if not self._inbox:
                    return
                pull = self._inbox.popleft()
            local = self.store.get_buffer(pull.oid)
            if local is not None:  # already here: nothing to move
                with local:
                    pull.size = local.data.nbytes
                self._finish(pull)
                continue
            peer = self._peers.get(pull.address)
            if peer is None:
                self._peers_gen += 1
                peer = self._peers[pull.address] = Peer(self._ctx, pull.address, self.keys,
                                                          self.encrypt)
            pull.touch()
            self._request(peer, pull, M.XFER_META_REQ, None, 0)

    def _request(self, peer: Peer, pull, mtype, offset, length) -> None:
        if peer.needs_session and peer.session is None:
            peer.waiting.append((pull, mtype, offset, length))
            if not peer.hello_sent:
                peer.hello_sent = True
                peer.hello_id = P.next_request_id()
                self._send(peer, P.encode(M.XFER_HELLO, {}, peer.hello_id))
            return
        req_id = P.next_request_id()
        body = {"oid": pull.oid}
        if offset is not None:
            body.update(offset=offset, length=length, compress=pull.compress)
        if peer.needs_session:
            peer.seq += 1
            sid, nonce = peer.session
            body.update(sid=sid, seq=peer.seq, mac=M.request_mac(
                self._mac_key, nonce, peer.seq, mtype.code, req_id, pull.oid, offset or 0,
                length))
        peer.requests[req_id] = (pull, offset)
        peer.last_used = time.monotonic()
        pull.outstanding += 1
        self._send(peer, P.encode(mtype, body, req_id))

    @property
    def _mac_key(self) -> bytes:
        return self.keys.hmac_key(M.MAC_PURPOSE)

    def _send(self, peer, frames) -> None:
        try:
            peer.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as e:  # over the high-water mark: the pull times out instead
            log.debug("transfer client: request to %s dropped: %s", peer.address, e)

    def _drain(self, peer: Peer) -> None:
        while True:
            try:
                frames = peer.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._on_event(peer, frames)
        for _ in range(256):
            try:
                frames = peer.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                if len(frames) < 2:
                    raise ProtocolError(f"a reply of {len(frames)} frame(s)")
                msg_type, req_id = P.decode_header(frames[0].bytes)
                self._on_reply(peer, msg_type, req_id, frames)
            except Exception as e:  # a broken server costs its pulls (timeout), not the thread
                log.warning("transfer client: bad reply from %s dropped: %s", peer.address, e)

    def _on_event(self, peer: Peer, frames) -> None:
        from zmq.utils.monitor import parse_monitor_message

        event = parse_monitor_message(frames)["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            peer.connected = True
        elif event == zmq.EVENT_DISCONNECTED and peer.connected:
            peer.connected = False
            self._peer_failed(peer, "peer_lost", "the connection to the peer was lost")
        else:  # a failed handshake, or a connection closed by the peer before it completed
            self._peer_failed(peer, "refused", "the peer refused the handshake (cluster keys "
                                               "or encrypt setting differ)")

    def _peer_failed(self, peer: Peer, reason: str, detail: str) -> None:
        """Fail every pull using ``peer``; its session is gone (a restarted server)."""
        for pull in {p for p, _ in peer.requests.values()} | {w[0] for w in peer.waiting}:
            self._fail(pull, reason, detail)
        peer.requests.clear()
        peer.waiting.clear()
        peer.session, peer.hello_sent = None, False

    def _on_reply(self, peer: Peer, mtype, req_id: int, frames) -> None:
        if mtype is M.XFER_WELCOME and peer.hello_sent and req_id == peer.hello_id:
            msg = P.decode([f.bytes for f in frames[:2]])
            peer.session = (msg["sid"], msg["nonce"])
            waiting, peer.waiting = peer.waiting, deque()
            for pull, mt, offset, length in waiting:
                if pull.oid in self._pulls:
                    self._request(peer, pull, mt, offset, length)
            return
        entry = peer.requests.pop(req_id, None)
        if entry is None:
            return  # a reply to a pull already failed or finished
        pull, offset = entry
        pull.outstanding -= 1
        if pull.done:
            return
        pull.touch()
        try:
            msg = P.decode([frames[0].bytes, frames[1].bytes])
        except ProtocolError as e:
            self._fail(pull, P.ERR_MALFORMED, f"bad reply: {e}")
            return
        if mtype is P.ERROR:
            self._fail(pull, msg["code"], msg["message"])
        elif mtype is M.XFER_META and offset is None:
            self._on_meta(peer, pull, msg)
        elif mtype is M.XFER_CHUNK and offset == msg["offset"] and len(frames) == 3:
            self._on_chunk(peer, pull, msg, frames[2])
        else:
            self._fail(pull, P.ERR_MALFORMED, f"unexpected reply {mtype.name}")

    def _check_timers(self, now: float) -> None:
        if now > self._next_sweep:  # close connections to servers not used for a while
            self._next_sweep = now + PEER_IDLE_CLOSE_S
            for address, peer in list(self._peers.items()):
                if peer.idle() and now - peer.last_used > PEER_IDLE_CLOSE_S:
                    self._peers.pop(address).close()
                    self._peers_gen += 1
        for pull in list(self._pulls.values()):
            if pull.deadline is not None and now > pull.deadline:
                self._fail(pull, "timeout", "the pull's timeout expired")
            elif now - pull.last_activity > self.idle_timeout_s:
                self._fail(pull, "timeout", f"no reply from the peer for "
                                            f"{self.idle_timeout_s:g}s (is it running?)")
