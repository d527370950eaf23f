"""The direct paths' transport (zactor/net/stream.py): framing, partial writes, garbage, EOF,
and a worker that keeps serving after a garbage connection."""

from __future__ import annotations

import glob
import os
import socket
import struct

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

import zactor
from tests.conftest import assert_no_cluster_left
from zactor.net.stream import StreamConn, StreamSet, encode_message

frames_lists = st.lists(st.binary(max_size=300), min_size=1, max_size=6)


def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return StreamConn(a), StreamConn(b)


def raw_to_conn():
    """(a plain socket to write arbitrary bytes with, the StreamConn reading them)"""
    raw_w, raw_r = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return raw_w, StreamConn(raw_r)


def drain(reader, writer=None, rounds=10_000):
    """Read until nothing more comes (moving the writer's pending bytes along)."""
    got = []
    for _ in range(rounds):
        if writer is not None:
            writer.write_pending()
        batch = reader.read()
        got += batch
        if not batch and (writer is None or not writer.pending):
            break
    return got


@settings(max_examples=60, deadline=None)
@given(st.lists(frames_lists, min_size=1, max_size=8), st.data())
def test_messages_arrive_whole_and_in_order_however_the_bytes_are_split(messages, data):
    raw_w, reader = raw_to_conn()
    try:
        stream = b"".join(encode_message(f) for f in messages)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
        got, start = [], 0
        for cut in [*cuts, len(stream)]:
            raw_w.sendall(stream[start:cut])
            start = cut
            got += reader.read()  # a partial message stays buffered until its rest comes
        assert got == [list(f) for f in messages]
        assert not reader.closed
    finally:
        raw_w.close()
        reader.close()


def test_a_message_larger_than_the_socket_buffer_waits_in_pending_and_arrives():
    a, b = pair()
    try:
        big = os.urandom(5 << 20)
        a.send([b"head", big])
        a.send([b"after"])  # queued behind the pending one, never interleaved
        assert a.pending and not a.closed
        got = drain(b, a)
        assert got == [[b"head", big], [b"after"]]
        assert not a.pending
    finally:
        a.close()
        b.close()


def test_messages_sent_before_the_peer_closed_are_still_read():
    a, b = pair()
    a.send([b"one"])
    a.send([b"two", b"2"])
    a.close()
    got = b.read()
    got += b.read()  # (a read stops at a short chunk; the next one sees the EOF)
    assert got == [[b"one"], [b"two", b"2"]]
    assert b.closed and "closed by the peer" in b.error
    b.close()


def test_sending_to_a_vanished_peer_drops_the_message_and_raises_nothing():
    a, b = pair()
    b.close()
    a.send([b"x"])
    a.send([b"y" * (1 << 20)])
    assert a.closed and "send failed" in a.error and not a.pending
    a.close()


@pytest.mark.parametrize("garbage, why", [
    (struct.pack("<II", 1 << 31, 1), "message of"),
    (struct.pack("<II", 12, 0), "message of"),
    (struct.pack("<II", 8, 1) + struct.pack("<I", 99) + b"abcd", "do not add up"),
])
def test_garbage_closes_the_connection_with_the_reason(garbage, why):
    raw_w, reader = raw_to_conn()
    raw_w.sendall(encode_message([b"fine"]) + garbage)
    assert reader.read() == [[b"fine"]]  # what came before the garbage is kept
    assert reader.closed and why in reader.error
    raw_w.close()
    reader.close()


def test_a_stream_set_serves_a_listener_and_its_connections_through_a_zmq_poller(tmp_path):
    poller = zmq.Poller()
    server, client = StreamSet(poller), StreamSet(zmq.Poller())
    seen = []

    def echo(conn, frames):
        seen.append(frames)
        server.send(conn, [b"re:" + frames[0]])

    server.listen(str(tmp_path / "w.sock"), echo)
    answers = []
    conn = StreamConn.connect(str(tmp_path / "w.sock"))
    client.add(conn, lambda c, frames: answers.append(frames))
    try:
        for i in range(3):
            client.send(conn, [b"%d" % i])
        for _ in range(100):
            for fd, flags in poller.poll(100):
                assert server.service(fd, flags)
            for fd, flags in client.poller.poll(10):
                client.service(fd, flags)
            if len(answers) == 3:
                break
        assert seen == [[b"0"], [b"1"], [b"2"]]
        assert answers == [[b"re:0"], [b"re:1"], [b"re:2"]]
        assert len(server.conns) == 1
        big = os.urandom(4 << 20)  # more than the socket takes at once: waits in `unsent`
        client.send(conn, [big])
        assert client.unsent == {conn}
        for _ in range(1000):
            client.write_pending()  # (the flusher's turn does this when nobody polls)
            for fd, flags in poller.poll(10):
                server.service(fd, flags)
            if not client.unsent and len(seen) == 4:
                break
        assert seen[3] == [big] and not client.unsent
        client.drop(conn)  # the server sees the hang-up and forgets the connection
        for _ in range(50):
            for fd, flags in poller.poll(100):
                server.service(fd, flags)
            if not server.conns:
                break
        assert server.conns == {}
    finally:
        server.close()
        client.close()
    assert not os.path.exists(tmp_path / "w.sock")


@pytest.mark.timeout(120)
def test_a_worker_survives_garbage_on_its_direct_socket():
    zactor.init(num_cpus=2, object_store_memory=64 << 20)
    try:
        @zactor.remote
        class Counter:
            def __init__(self):
                self.n = 0

            def add(self):
                self.n += 1
                return self.n

        c = Counter.remote()
        assert zactor.get(c.add.remote(), timeout=60) == 1
        paths = glob.glob(os.path.join(zactor.api._node.session_dir, "**", "w-*.sock"),
                          recursive=True)
        assert paths
        for path in paths:  # every worker's socket, the actor's among them
            for garbage in (b"\xff" * 64, encode_message([b"not a header", b"x"])):
                raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                raw.connect(path)
                raw.sendall(garbage)
                raw.close()
        assert zactor.get([c.add.remote() for _ in range(5)], timeout=60) == [2, 3, 4, 5, 6]
    finally:
        zactor.shutdown()
    assert_no_cluster_left()
