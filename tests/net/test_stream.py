"""The direct paths' transport (zactor/net/stream.py): framing, partial writes, garbage, EOF,
and a worker that keeps serving after a garbage connection."""

from __future__ import annotations

import glob
import os
import socket
import struct
import time

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

import zactor
from tests.conftest import assert_no_cluster_left
from zactor.net.fd_poller import FdPoller
from zactor.net.frames import has_input, recv_frames, send_frames
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


@pytest.mark.parametrize("poller_class", [zmq.Poller, FdPoller])
def test_a_stream_set_serves_a_listener_and_its_connections(tmp_path, poller_class):
    poller = poller_class()
    server, client = StreamSet(poller), StreamSet(poller_class())
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


@pytest.mark.parametrize("poller_class", [zmq.Poller, FdPoller])
def test_dropping_a_dead_connection_again_keeps_the_newer_one_on_its_descriptor(poller_class):
    """A connection whose peer went away is dropped by the set when it reads the EOF; its
    owner drops it again later (DirectCalls._close). The descriptor's number may belong to
    a newer connection by then, which must stay polled (its answers were never read)."""
    streams = StreamSet(poller_class())
    got = []
    old, old_peer = pair()
    streams.add(old, lambda c, frames: got.append(("old", frames)))
    old_peer.close()
    for _ in range(50):
        for fd, flags in streams.poller.poll(100):
            streams.service(fd, flags)
        if not streams.conns:
            break
    assert streams.conns == {} and old.closed
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if a.fileno() != old.fd:  # the newer connection on the old one's descriptor number
        os.dup2(a.fileno(), old.fd)
        a.close()
        a = socket.socket(fileno=old.fd)
    new, new_peer = StreamConn(a), StreamConn(b)
    streams.add(new, lambda c, frames: got.append(("new", frames)))
    streams.drop(old)
    assert set(streams.conns) == {new.fd}
    new_peer.send([b"answer"])
    for _ in range(50):
        for fd, flags in streams.poller.poll(100):
            streams.service(fd, flags)
        if got:
            break
    assert got == [("new", [b"answer"])]
    streams.close()
    new_peer.close()


def test_fd_poller_reports_a_zmq_socket_whose_messages_wait_after_a_send():
    """ZMQ_FD's contract (net/fd_poller.py): a poll reports the socket when its state may
    have changed; after any operation on it the owner checks its events before sleeping."""
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.setsockopt(zmq.IDENTITY, b"d")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        poller = FdPoller()
        poller.register(dealer, zmq.POLLIN)
        send_frames(dealer, [b"hello"])
        assert router.poll(5000)
        ident, hello = router.recv_multipart()
        assert hello == b"hello"
        assert not has_input(dealer)  # the check the owner makes before it sleeps
        router.send_multipart([ident, b"one"])
        reported = []
        for _ in range(50):
            reported = [k for k, _ in poller.poll(100)]
            if reported:
                break
        assert reported == [dealer]
        # a send before the read may take the signal: the events check still finds it
        router.send_multipart([ident, b"two"])
        time.sleep(0.2)
        send_frames(dealer, [b"again"])
        got = []
        while has_input(dealer):
            got.append(recv_frames(dealer))
        assert got == [[b"one"], [b"two"]]
        assert poller.poll(0) == [] or not has_input(dealer)
        poller.unregister(dealer)
        with pytest.raises(KeyError):
            poller.unregister(dealer)
    finally:
        router.close(0)
        dealer.close(0)
        ctx.term()


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
