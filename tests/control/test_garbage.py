"""Hostile and broken frames sent to a replica and to the coordinator: a frame whose header
parses gets an ERROR reply naming its request id; anything else is logged and dropped; the
process keeps serving."""

from __future__ import annotations

import os
import random

import msgpack
import zmq

from zactor import protocol as P
from zactor.net.sockets import make_socket


def _expect_error(sock, req_id, code=P.ERR_MALFORMED):
    assert sock.poll(5000), "no ERROR reply"
    msg = P.decode(sock.recv_multipart())
    assert msg.name == "ERROR" and msg.req_id == req_id and msg["code"] == code, msg.body


def _garbage(sock, rng):
    for _ in range(300):
        frames = [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(1, 4))]
        sock.send_multipart(frames)
    wrong_version = bytes([P.PROTOCOL_VERSION + 1, P.PING.code]) + bytes(8)
    sock.send_multipart([wrong_version, msgpack.packb({})])
    sock.send_multipart([P.encode(P.PING)[0][:5], b"x"])


def test_garbage_never_crashes_a_replica_or_the_coordinator(control_store, gcs_client):
    store = control_store(replicas=2)
    client = gcs_client(store.address)
    client.put("kv", "before", 1)
    ctx = zmq.Context()
    rng = random.Random(1234)
    sockets = []
    real_make_socket = make_socket

    def tracked(*args):
        sockets.append(real_make_socket(*args))
        return sockets[-1]

    try:
        cfg = store.config()
        targets = [m[1] for m in cfg[0][1]] + ["tcp://" + store.address]
        for addr in targets:
            sock = tracked(ctx, zmq.DEALER, b"attacker-" + os.urandom(4).hex().encode())
            sock.connect(addr)
            _garbage(sock, rng)
            header_ok = P.encode(P.WRITE, {"cid": b"", "ops": []}, req_id=77)[0]
            sock.send_multipart([header_ok, b"\xc1 not msgpack"])
            _expect_error(sock, 77)
            header = P.encode(P.READ, {"table": "kv", "key": b""}, 78)[0]
            sock.send_multipart([header, msgpack.packb({"table": "kv"})])  # lacks "key"
            _expect_error(sock, 78)
            sock.close(0)
        # Well-formed envelopes with hostile contents, at the head and at the tail.
        head, tail = (m[1] for m in cfg[0][1])
        sock = tracked(ctx, zmq.DEALER, b"attacker-2")
        sock.connect(head)
        bad_ops = [[1, 1, "no_such_table", b"k", b"v"], [1, 9, "kv", b"k", b"v"],
                   [1, 1, "kv", "str-key", b"v"], ["x", 1, "kv", b"k", b"v"], [1]]
        for i, op in enumerate(bad_ops):
            sock.send_multipart(P.encode(P.WRITE, {"cid": b"evil", "ops": [op]}, 100 + i))
            _expect_error(sock, 100 + i)
        sock.send_multipart(P.encode(P.WRITE, {"cid": "not-bytes", "ops": "nope"}, 120))
        _expect_error(sock, 120)
        sock.send_multipart(P.encode(P.FORWARD, {"epoch": "x", "entries": [[1, 2]]}, 121))
        sock.send_multipart(P.encode(P.SNAPSHOT, {"epoch": 10**6, "seq": 1, "rows": 5,
                                                  "dedup": 1, "tseqs": 1}, 122))
        sock.send_multipart(P.encode(P.NEED_FROM, {"epoch": 1, "last_seq": "x"}, 123))
        sock.send_multipart(P.encode(P.REGISTER, {"replica_id": "x", "addr": 1,
                                                  "pub_addr": 2}, 124))
        _expect_error(sock, 124, P.ERR_UNKNOWN_TYPE)
        sock.close(0)
        sock = tracked(ctx, zmq.DEALER, b"attacker-3")
        sock.connect(tail)
        for i, body in enumerate([{"table": "kv", "key": 5}, {"table": "zz", "key": b""}]):
            sock.send_multipart(P.encode(P.READ, body, 130 + i))
            _expect_error(sock, 130 + i)
        sock.send_multipart(P.encode(P.SCAN, {"table": "kv", "prefix": 3}, 140))
        _expect_error(sock, 140)
        sock.send_multipart(P.encode(P.LOG_READ, {"table": "kv", "after": "x"}, 141))
        _expect_error(sock, 141)
        sock.close(0)
        sock = tracked(ctx, zmq.DEALER, b"attacker-4")
        sock.connect("tcp://" + store.address)
        sock.send_multipart(P.encode(P.REGISTER, {"replica_id": "spoof", "addr": "a",
                                                  "pub_addr": "b"}, 150))
        _expect_error(sock, 150)  # its identity is not the id it claims
        sock.close(0)
    finally:
        for sock in sockets:
            sock.close(0)
        ctx.term()
    assert all(child.alive() for child in store.replicas.values())
    assert store.coordinator.alive()
    client.put("kv", "after", 2)
    assert client.get("kv", "before") == 1 and client.get("kv", "after") == 2
    assert len(store.chain()) == 2
