"""The control store with cluster keys: members read and write; a client without the keys
(or with another cluster's) gets a clear refusal and the daemons keep serving."""

from __future__ import annotations

import pytest
import zmq

from zactor import protocol as P
from zactor.exceptions import ControlStoreUnavailableError
from zactor.net.security import generate_keys


@pytest.fixture
def keys(tmp_path):
    return generate_keys(str(tmp_path / "cluster.key"))


def test_keyed_store_serves_members_only(control_store, gcs_client, keys, tmp_path):
    store = control_store(shards=1, replicas=2, keys=keys)
    member = gcs_client(store.address, keys=keys.path, timeout_s=30)
    member.put("kv", b"k", b"v")
    assert member.get("kv", b"k") == b"v"
    sub = member.subscribe("kv")
    member.put("kv", b"k2", b"v2")
    assert sub.get(30).key == b"k2"  # PUB/SUB works over CURVE too

    with pytest.raises(ControlStoreUnavailableError, match="pass keys="):
        gcs_client(store.address, timeout_s=2)
    other = generate_keys(str(tmp_path / "other.key"))
    with pytest.raises(ControlStoreUnavailableError):
        gcs_client(store.address, keys=other, timeout_s=2)

    # an outsider that talks to a replica directly is not read either
    replica_addr = store.config()[0][1][-1][1]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(replica_addr)
    try:
        sock.send_multipart(P.encode(P.READ, {"table": "kv", "key": b"k"}, req_id=1))
        assert not sock.poll(1000), "a keyless client got an answer"
    finally:
        sock.close(0)
        ctx.term()

    assert member.get("kv", b"k") == b"v"  # still serving after the refusals
    assert all(child.alive() for child in store.replicas.values())
    assert store.coordinator.alive()
