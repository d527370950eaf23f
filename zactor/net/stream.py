"""Message streams over Unix sockets: the transport of the direct paths on one node.

Runs in every process that makes direct calls (drivers, workers calling actors) and in every
worker (which takes them). Everything else between processes is ZeroMQ; the direct paths
(runtime/direct.py: a caller's actor calls and leased tasks straight to a worker, and the
results straight back) are the latency of a synchronous call, and a ZeroMQ message crosses an
I/O thread on each side: ``python -m zactor.benchmarks.transport`` (a two-process ping-pong
of a small message, 5 runs alternated) measured a median round trip of 139 us over ZeroMQ
ipc and 56 us over this module's stream, both polled through a zmq.Poller.

A message is the same list of frames protocol.encode makes, framed on the stream as

    total length (u32, bytes after this field) | frame count (u32) | frame lengths (u32 each)
    | the frames

little-endian. Invariants:
- a connection carries whole messages in the order they were sent, one writer per end (the
  process's client lock serialises writers);
- sends never block: what the socket does not take now waits in ``pending`` and goes out
  when the owner polls the socket writable and calls ``write_pending``, so
  two processes that each send a lot and read later never deadlock (ZeroMQ's unbounded queues
  gave the same);
- a peer that goes away (EOF, reset, a broken pipe) marks the connection ``closed``: later
  sends are dropped, as ZeroMQ drops messages to a vanished peer. The callers' node manager
  learns of the dead worker and re-runs or fails its calls (runtime/direct.py);
- garbage (a length over MAX_MESSAGE_BYTES, frame lengths that do not add up, or a message
  its handler cannot decode: ``abort``) closes the connection with ``error`` saying what was
  wrong, printed once by StreamSet; it never raises into the reader's loop.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

_POLLIN, _POLLOUT, _POLLERR = 1, 2, 4  # zmq.POLLIN / POLLOUT / POLLERR, as zmq.Poller has them
_U32_PAIR = struct.Struct("<II")
_U32_QUAD = struct.Struct("<IIII")
MAX_MESSAGE_BYTES = 1 << 30  # larger than any message the direct paths build
MAX_FRAMES = 1 << 16
# recv(n) allocates n bytes before it reads: 256 KB is above malloc's mmap threshold, so
# each read mapped and unmapped its buffer
READ_CHUNK = 1 << 16
LISTEN_BACKLOG = 1024  # connects complete without the worker accepting: it may be busy


def encode_message(frames) -> bytes:
    if len(frames) == 2:  # (the usual message: header and body)
        head, body = frames
        return b"".join((_U32_QUAD.pack(12 + len(head) + len(body), 2, len(head), len(body)),
                         head, body))
    lengths = [len(f) for f in frames]
    head = struct.pack(f"<II{len(frames)}I", 4 + 4 * len(frames) + sum(lengths),
                       len(frames), *lengths)
    return b"".join((head, *frames))


def _one_plain_message(chunk: bytes):
    """``[[frame, frame]]`` when ``chunk`` (16 bytes or more) is exactly one message of two
    frames, the usual form of a direct call or result; None for anything else, which
    ``StreamConn.read``'s general parser takes (garbage included)."""
    total, count, first, second = _U32_QUAD.unpack_from(chunk)
    if count != 2 or total + 4 != len(chunk) or first + second + 12 != total:
        return None
    return [[chunk[16:16 + first], chunk[16 + first:]]]


class StreamConn:
    """One end of a connection (see the module's invariants)."""

    __slots__ = ("sock", "fd", "pending", "closed", "error", "_in")

    def __init__(self, sock: socket.socket):
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.pending: list = []  # memoryviews not yet taken by the socket, in order
        self.closed = False
        self.error = ""
        self._in = bytearray()

    @classmethod
    def connect(cls, path: str) -> StreamConn:
        """Connect to a listening worker; raises OSError (no such socket, refused). A Unix
        socket connects at once when the listener's backlog has room, accepted or not."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return cls(sock)

    def send(self, frames) -> None:
        if self.closed:
            return
        data = encode_message(frames)
        if self.pending:
            self.pending.append(memoryview(data))
            return
        sent = self._send_some(data)
        if sent < len(data) and not self.closed:
            self.pending.append(memoryview(data)[sent:])

    def write_pending(self) -> None:
        """Send what waits, as far as the socket takes it now."""
        pending = self.pending
        while pending and not self.closed:
            chunk = pending[0]
            sent = self._send_some(chunk)
            if sent < len(chunk):
                if sent and not self.closed:
                    pending[0] = chunk[sent:]
                return
            pending.pop(0)

    def _send_some(self, data) -> int:
        """Bytes the socket took now (0 if none); a failure closes the connection."""
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._close(f"send failed: {exc}")
            return 0

    def read(self) -> list:
        """Every whole message readable now, as lists of frames (bytes); [] if none. On EOF
        or garbage the connection is closed (``closed``, ``error``)."""
        buf = self._in
        data = None  # one read that holds whole messages: parsed without the buffer
        while not self.closed:
            try:
                chunk = self.sock.recv(READ_CHUNK)
            except BlockingIOError:
                break
            except OSError as exc:
                self._close(f"read failed: {exc}")
                break
            if not chunk:  # the whole messages before the EOF are still read below
                self._close("closed by the peer", keep_input=True)
                break
            if not buf and len(chunk) < READ_CHUNK:
                data = chunk  # (the usual case: one small message, read at once)
                if len(chunk) >= 16:
                    whole = _one_plain_message(chunk)
                    if whole is not None:
                        return whole
                break
            buf += chunk
            if len(chunk) < READ_CHUNK:
                break
        src = buf if data is None else data
        messages = []
        view = memoryview(src)
        at, end = 0, len(src)
        try:
            while end - at >= 8:
                total, count = _U32_PAIR.unpack_from(view, at)
                if total > MAX_MESSAGE_BYTES or count == 0 or count > MAX_FRAMES \
                        or total < 4 + 4 * count:
                    self._close(f"garbage on the stream: message of {total} bytes "
                                f"with {count} frames", keep_input=True)
                    break
                if end - at - 4 < total:
                    break
                lengths = struct.unpack_from(f"<{count}I", view, at + 8)
                pos = at + 8 + 4 * count
                if sum(lengths) != total - 4 - 4 * count:
                    self._close("garbage on the stream: frame lengths do not add up",
                                keep_input=True)
                    break
                frames = []
                for n in lengths:
                    frames.append(bytes(view[pos:pos + n]))
                    pos += n
                messages.append(frames)
                at = pos
        finally:
            view.release()
        if self.closed:  # (cleared here: the view above had to be released first)
            buf.clear()
        elif data is not None:
            if at < end:
                buf += data[at:]  # the start of a message whose rest has not come yet
        elif at:
            del buf[:at]
        return messages

    def _close(self, why: str, keep_input: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self.error = why
            self.pending.clear()
            if not keep_input:
                self._in.clear()

    def abort(self, why: str) -> None:
        """Stop using the connection: a handler got a message it cannot decode (its
        StreamSet reports ``why`` and drops the connection once the handler returns)."""
        self._close(f"garbage message: {why}")

    def close(self) -> None:
        self._close("closed here")
        self.sock.close()


class StreamListener:
    """A worker's listening socket for direct calls (a path in the session directory, mode
    0600 under the session directory's 0700)."""

    def __init__(self, path: str):
        try:
            os.unlink(path)  # bind fails on an existing path (worker ids are unique)
        except FileNotFoundError:
            pass
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.listen(LISTEN_BACKLOG)
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()

    def accept_all(self) -> list:
        conns = []
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return conns
            except OSError:  # e.g. out of descriptors: the caller's connect stays queued
                return conns
            conns.append(StreamConn(sock))

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class StreamSet:
    """The connections (and a worker's listener) one process polls in its zmq.Poller, by
    file descriptor, each with the handler its messages go to: ``handler(conn, frames)``."""

    def __init__(self, poller):
        self.poller = poller
        self.conns: dict = {}  # fd -> (StreamConn, handler)
        self.unsent: set = set()  # connections with bytes the socket has not taken yet
        self.listener = None
        self.on_accept = None  # handler for the connections the listener accepts

    def listen(self, path: str, handler) -> None:
        self.listener = StreamListener(path)
        self.on_accept = handler
        self.poller.register(self.listener.fd, _POLLIN)

    def add(self, conn: StreamConn, handler) -> None:
        self.conns[conn.fd] = (conn, handler)
        self.poller.register(conn.fd, _POLLIN)

    def send(self, conn: StreamConn, frames) -> None:
        had_pending = bool(conn.pending)
        conn.send(frames)
        if conn.pending and not had_pending:
            self.unsent.add(conn)
            self.poller.register(conn.fd, _POLLIN | _POLLOUT)

    def write_pending(self) -> None:
        """Send what waits on every connection (the flusher's turn: nobody may be polling)."""
        for conn in list(self.unsent):
            self._write(conn)

    def _write(self, conn: StreamConn) -> None:
        conn.write_pending()
        if not conn.pending:
            self.unsent.discard(conn)
            if not conn.closed:
                self.poller.register(conn.fd, _POLLIN)

    def service(self, fd: int, events: int) -> bool:
        """Handle poll events of one descriptor; False if it is not one of these."""
        if self.listener is not None and fd == self.listener.fd:
            for conn in self.listener.accept_all():
                self.add(conn, self.on_accept)
            return True
        entry = self.conns.get(fd)
        if entry is None:
            return False
        conn, handler = entry
        if events & _POLLOUT:
            self._write(conn)
        if events & (_POLLIN | _POLLERR):  # a hang-up alone is POLLERR: read() sees the EOF
            for frames in conn.read():
                handler(conn, frames)
        if conn.closed and self.conns.get(fd) is entry:
            if conn.error.startswith("garbage"):  # a peer's bug, or not our peer at all
                print(f"zactor (pid {os.getpid()}): dropped a direct-path connection: "
                      f"{conn.error}", file=sys.stderr, flush=True)
            self.drop(conn)
        return True

    def drop(self, conn: StreamConn) -> None:
        """Stop polling ``conn`` and close it. A connection dropped here before (its peer
        went away) may be dropped again by its owner: by then its descriptor's number can
        belong to a newer connection, which must stay (it did not: that connection's
        answers were never read, and its caller waited for them for good)."""
        self.unsent.discard(conn)
        entry = self.conns.get(conn.fd)
        if entry is not None and entry[0] is conn:
            del self.conns[conn.fd]
            try:
                self.poller.unregister(conn.fd)
            except KeyError:
                pass
        conn.close()

    def close(self) -> None:
        for conn, _ in list(self.conns.values()):
            self.drop(conn)
        if self.listener is not None:
            self.poller.unregister(self.listener.fd)
            self.listener.close()
            self.listener = None
