"""Faults: a server killed mid-transfer, garbage sent to a server."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import zmq

from tests.transfer.conftest import _segment, oid, put_bytes, read_bytes
from zactor import protocol as P
from zactor.transfer import TransferClient
from zactor.transfer import messages as M


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_server_killed_mid_transfer_leaves_no_partial_object(two_stores, closing):
    _, local = two_stores
    path = _segment("child")
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "tests.transfer.serve_child", path,
                             str(32 << 20), "0.05"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert select.select([proc.stdout], [], [], 60)[0], "the server child did not start"
        port = int(proc.stdout.readline())
        client = closing(TransferClient(local, chunk_bytes=1 << 20, window=2))
        handle = client.pull(oid(1), f"127.0.0.1:{port}")
        _wait_for(lambda: handle.bytes_received > 0, 60, "the first chunk")
        os.kill(proc.pid, signal.SIGKILL)
        err = handle.exception(60)
        assert err is not None and err.reason in ("peer_lost", "timeout")
        assert oid(1).hex() in str(err) and str(port) in str(err)
        assert handle.bytes_received < 32 << 20
        assert not local.contains(oid(1))
        local.create_buffer(oid(1), 10).release()  # the id is free again: nothing was left
        local.abort(oid(1))
    finally:
        proc.kill()
        proc.wait(30)
        proc.stdout.close()
        if os.path.exists(path):
            os.unlink(path)


def _send_oversized(ctx, address: str) -> None:
    """A message over the server's MAXMSGSIZE: libzmq drops that connection. Closed only once
    the drop is seen, so the socket is not torn down while its peer tears the link down."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    sock.connect(address)
    try:
        sock.send_multipart([b"x" * 200_000, b"over MAXMSGSIZE: the connection is dropped"])
        assert monitor.poll(30_000), "the server did not drop an oversized message's connection"
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)


def test_garbage_does_not_stop_the_server(pair):
    remote, local, server, client = pair()
    put_bytes(remote, oid(2), b"still served")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(server.address)
    try:
        garbage = [
            [b"one frame"],
            [b"\x00" * 10, b"bad version"],
            [bytes([P.PROTOCOL_VERSION, 0xBF]) + b"\0" * 8, b"\x80"],  # unknown code
        ]
        for frames in garbage:
            sock.send_multipart(frames)
        answered = [
            P.encode(M.XFER_META_REQ, {"oid": 5}, req_id=11),
            P.encode(M.XFER_CHUNK_REQ, {"oid": oid(2), "offset": -1, "length": 4}, req_id=12),
            P.encode(M.XFER_CHUNK_REQ, {"oid": oid(2), "offset": 0, "length": 1 << 40},
                     req_id=13),
            P.encode(M.XFER_CHUNK_REQ, {"oid": oid(2), "offset": "x", "length": 4}, req_id=14),
            [P.encode(M.XFER_META_REQ, {"oid": oid(2)}, req_id=15)[0], b"\xc1not msgpack"],
            P.encode(P.PING, {}, req_id=16),
        ]
        for frames in answered:
            sock.send_multipart(frames)
        replies = {}
        for _ in answered:
            frames = sock.recv_multipart()
            mtype, req_id = P.decode_header(frames[0])
            replies[req_id] = mtype
        assert replies == {i: P.ERROR for i in range(11, 17)}
    finally:
        sock.close(0)
    _send_oversized(ctx, server.address)
    ctx.term()
    assert client.fetch(oid(2), server.address, timeout=30) == 12
    assert read_bytes(local, oid(2)) == b"still served"
    assert server.stats["dropped"] >= 3


def test_garbage_replies_do_not_stop_the_client(pair):
    """A 'server' that answers every request with nonsense: the pulls fail, the client lives."""
    from zactor.transfer import TransferError

    remote, local, server, client = pair()
    ctx = zmq.Context()
    fake = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    port = fake.bind_to_random_port("tcp://127.0.0.1")
    try:
        replies = [
            lambda rid: [b"lonely"],
            lambda rid: P.encode(M.XFER_META, {"oid": oid(3), "size": 10, "metadata": 7}, rid),
            lambda rid: P.encode(M.XFER_CHUNK, {"oid": oid(3), "offset": 0, "length": 1}, rid),
            lambda rid: P.encode(M.XFER_META, {"oid": oid(3), "size": -5}, rid),
        ]
        for n, make in enumerate(replies):
            handle = client.pull(oid(30 + n), f"127.0.0.1:{port}", timeout=2.0)
            assert fake.poll(30_000)
            ident, header, _body = fake.recv_multipart()
            _, rid = P.decode_header(header)
            fake.send_multipart([ident, *make(rid)])
            assert isinstance(handle.exception(30), TransferError)
            assert not local.contains(oid(30 + n))
    finally:
        fake.close(0)
        ctx.term()
    put_bytes(remote, oid(4), b"fine")
    assert client.fetch(oid(4), server.address, timeout=30) == 4
