"""Keys on the transfer socket: CURVE (encrypted) and HMAC sessions (encrypt=False)."""

from __future__ import annotations

import pytest
import zmq

from tests.transfer.conftest import oid, put_bytes, read_bytes
from zactor import protocol as P
from zactor.net.security import generate_keys
from zactor.transfer import TransferClient, TransferError
from zactor.transfer import messages as M

DATA = b"secret object bytes" * 1000


@pytest.mark.parametrize("encrypt", [True, False])
def test_keyed_pull(pair, keys, encrypt):
    kw = {"keys": keys, "encrypt": encrypt}
    remote, local, server, client = pair(kw, dict(kw, chunk_bytes=4096))
    put_bytes(remote, oid(1), DATA)
    assert client.fetch(oid(1), server.address, timeout=30) == len(DATA)
    assert read_bytes(local, oid(1)) == DATA


def test_keys_accepts_a_key_file_path(pair, keys):
    remote, local, server, client = pair({"keys": keys.path}, {"keys": keys.path})
    put_bytes(remote, oid(1), DATA)
    client.fetch(oid(1), server.address, timeout=30)


@pytest.mark.parametrize("who", ["keyless", "other cluster"])
def test_curve_refuses_outsiders_before_reading_them(pair, keys, closing, tmp_path, who):
    remote, local, server, _ = pair({"keys": keys})
    put_bytes(remote, oid(1), DATA)
    other = None if who == "keyless" else generate_keys(str(tmp_path / "other.key"))
    outsider = closing(TransferClient(local, keys=other, idle_timeout_s=3.0))
    with pytest.raises(TransferError) as info:
        outsider.fetch(oid(1), server.address, timeout=30)
    assert info.value.reason in ("refused", "timeout")
    assert server.stats["meta_requests"] == 0 and server.stats["dropped"] == 0
    assert not local.contains(oid(1))
    insider = closing(TransferClient(local, keys=keys))
    assert insider.fetch(oid(1), server.address, timeout=30) == len(DATA)


@pytest.mark.parametrize("who", ["keyless", "other cluster"])
def test_hmac_mode_refuses_outsiders(pair, keys, closing, tmp_path, who):
    remote, local, server, _ = pair({"keys": keys, "encrypt": False})
    put_bytes(remote, oid(1), DATA)
    other = None if who == "keyless" else generate_keys(str(tmp_path / "other.key"))
    outsider = closing(TransferClient(local, keys=other, encrypt=False))
    with pytest.raises(TransferError) as info:
        outsider.fetch(oid(1), server.address, timeout=30)
    assert info.value.reason == M.ERR_AUTH
    assert server.stats["meta_requests"] == 0 and server.stats["bytes_sent"] == 0
    assert not local.contains(oid(1))


def test_hmac_request_cannot_be_replayed(pair, keys):
    remote, _, server, _ = pair({"keys": keys, "encrypt": False})
    put_bytes(remote, oid(1), DATA)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(server.address)
    try:
        sock.send_multipart(P.encode(M.XFER_HELLO, {}, req_id=1))
        welcome = P.decode(sock.recv_multipart())
        sid, nonce = welcome["sid"], welcome["nonce"]
        mac = M.request_mac(keys.hmac_key(M.MAC_PURPOSE), nonce, 1, M.XFER_CHUNK_REQ.code, 2,
                            oid(1), 0, 10)
        request = P.encode(M.XFER_CHUNK_REQ, {"oid": oid(1), "offset": 0, "length": 10,
                                              "sid": sid, "seq": 1, "mac": mac}, req_id=2)
        sock.send_multipart(request)
        first = P.decode(sock.recv_multipart())
        assert first.mtype is M.XFER_CHUNK and first.payload == [DATA[:10]]
        sock.send_multipart(request)  # the same bytes again: a replay
        second = P.decode(sock.recv_multipart())
        assert second.mtype is P.ERROR and second["code"] == M.ERR_AUTH
        tampered = P.encode(M.XFER_CHUNK_REQ, {"oid": oid(1), "offset": 0, "length": 100,
                                               "sid": sid, "seq": 2, "mac": mac}, req_id=2)
        sock.send_multipart(tampered)
        assert P.decode(sock.recv_multipart())["code"] == M.ERR_AUTH
    finally:
        sock.close(0)
        ctx.term()
