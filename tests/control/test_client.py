"""GcsClient's API: values, deletes, scans, sharding, deadlines and clear errors."""

from __future__ import annotations

import threading
import time

import pytest

from zactor.control import GcsClient
from zactor.control.cluster import TRANSPORTS
from zactor.control.schema import TABLES, shard_of
from zactor.exceptions import ControlStoreError, ControlStoreUnavailableError
from zactor.ids import JobID
from zactor.net.sockets import free_port


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_put_get_delete_scan_values(control_store, gcs_client):
    store = control_store()
    c = gcs_client(store.address)
    c.put("kv", "s", "text")
    c.put("kv", b"b", b"\x00raw")
    c.put("nodes", "n1", {"addr": "127.0.0.1:1", "resources": {"CPU": 2.0}, "alive": True})
    c.put("jobs", JobID(b"\x00\x00\x00\x01"), [1, 2, 3])
    assert c.get("kv", "s") == "text" and c.get("kv", "b") == b"\x00raw"
    assert c.get("nodes", "n1")["resources"] == {"CPU": 2.0}
    assert c.get("jobs", b"\x00\x00\x00\x01") == [1, 2, 3]
    assert c.get("kv", "missing", default=7) == 7
    c.delete("kv", "s")
    assert c.get("kv", "s") is None
    for i in range(5):
        c.put_async("functions", f"f{i}", i)
    c.flush()
    assert c.scan("functions", "f", limit=3) == [(b"f0", 0), (b"f1", 1), (b"f2", 2)]
    with pytest.raises(ValueError):
        c.put("no_such_table", "k", 1)
    with pytest.raises(TypeError):
        c.put("kv", 3.5, 1)


def test_every_table_exists(control_store, gcs_client):
    store = control_store()
    c = gcs_client(store.address)
    for table in TABLES:
        c.put_async(table, "k", table)
    c.flush()
    assert [c.get(t, "k") for t in TABLES] == list(TABLES)


def test_keys_spread_over_shards_and_read_back(control_store, gcs_client):
    store = control_store(shards=2)
    c = gcs_client(store.address)
    keys = [f"actor-{i}".encode() for i in range(200)]
    assert {shard_of("actors", k, 2) for k in keys} == {0, 1}
    for k in keys:
        c.put_async("actors", k, k)
    c.flush()
    assert len(c.scan("actors")) == 200 and c.get("actors", keys[17]) == keys[17]
    many = keys * 6 + [b"absent"]  # more than one READ_MANY chunk per shard
    assert c.get_many("actors", many, default="-") == keys * 6 + ["-"]


def test_connect_to_nothing_fails_fast_and_clearly():
    t0 = time.monotonic()
    with pytest.raises(ControlStoreUnavailableError, match="no control-store coordinator"):
        GcsClient.connect(f"127.0.0.1:{free_port()}", timeout_s=0.3)
    assert time.monotonic() - t0 < 3


def test_calls_time_out_when_the_store_dies(control_store, gcs_client):
    store = control_store()
    c = gcs_client(store.address, timeout_s=0.5)
    c.put("kv", "a", 1)
    for rid in list(store.replicas):
        store.kill_replica(rid)
    t0 = time.monotonic()
    with pytest.raises(ControlStoreUnavailableError):
        c.get("kv", "a")
    with pytest.raises(ControlStoreUnavailableError):
        c.put("kv", "b", 2, timeout_s=0.3)
    with pytest.raises(ControlStoreUnavailableError):
        c.flush(timeout_s=0.3)
    assert time.monotonic() - t0 < 5


def test_close_fails_every_waiter(control_store):
    store = control_store()
    c = GcsClient.connect(store.address, timeout_s=30)
    for rid in list(store.replicas):
        store.kill_replica(rid)
    future = c.put_async("kv", "x", 1)
    c.close()
    with pytest.raises(ControlStoreError, match="closed"):
        future.result(5)
    with pytest.raises(ControlStoreError):
        c.put("kv", "y", 1)


def test_one_at_a_time_and_pipelined_writes_interleave_in_order(control_store, gcs_client):
    store = control_store(replicas=3)
    c = gcs_client(store.address)
    futures = [c.put_async("kv", "same", i) for i in range(3000)]
    c.put("kv", "same", "last")
    assert all(f.done() for f in futures)  # acknowledged in order: all before the last
    assert c.get("kv", "same") == "last"


def test_put_if_lets_exactly_one_of_racing_writers_win(control_store, gcs_client):
    """Compare-and-set (actor failover claims rows with it): of writers racing on the same
    expected row exactly one wins, pipelined writes in one batch included, and every replica
    of the chain holds the winner's row."""
    store = control_store(replicas=2)
    clients = [gcs_client(store.address) for _ in range(3)]
    assert clients[0].put_if("actors", b"a", None, {"inc": 0, "by": "first"})
    assert not clients[1].put_if("actors", b"a", None, {"inc": 0, "by": "second"})
    won = []

    def claim(i):
        row = {"inc": 1, "by": i}
        if clients[i % 3].put_if("actors", b"a", {"inc": 0}, row, timeout_s=30):
            won.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1, won
    assert clients[2].get("actors", b"a") == {"inc": 1, "by": won[0]}
    assert clients[1].put_if("actors", b"a", {"inc": 1, "by": won[0]}, {"inc": 2, "by": "x"})
    assert not clients[1].put_if("actors", b"a", {"inc": 1}, {"inc": 2, "by": "y"})
    assert not clients[0].put_if("actors", b"a", {"inc": 2}, None)  # no row given: no write
    assert clients[0].get("actors", b"a") == {"inc": 2, "by": "x"}
    # a writer that must not undo a newer row (a stale node's actor row)
    clients[2].put_not_above_async("actors", b"a", {"inc": 1}, {"inc": 1, "by": "old"}).result(30)
    assert clients[0].get("actors", b"a") == {"inc": 2, "by": "x"}
    clients[2].put_not_above_async("actors", b"a", {"inc": 2}, {"inc": 2, "by": "same"}).result(30)
    assert clients[0].get("actors", b"a") == {"inc": 2, "by": "same"}
    clients[2].put_not_above_async("actors", b"new", {"inc": 0}, {"inc": 0}).result(30)
    assert clients[0].get("actors", b"new") == {"inc": 0}
