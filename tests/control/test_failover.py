"""Real processes: SIGKILL of the head, a middle replica and the tail during a write stream;
rejoin; coordinator restart. Every acknowledged write stays readable, none is applied twice,
and the stream goes on."""

from __future__ import annotations

import collections
import signal
import sqlite3

import pytest

from zactor.control.cluster import TRANSPORTS

N_WRITES = 10_000
ROUND = 500


def log_rows(data_dir):
    """(cid, cseq) of every log entry of a stopped replica."""
    conn = sqlite3.connect(f"file:{data_dir}/gcs.sqlite?mode=ro", uri=True)
    try:
        return conn.execute("SELECT cid, cseq FROM log").fetchall()
    finally:
        conn.close()


def stream(client, store, victim_index, n=N_WRITES, table="kv"):
    """n async writes in rounds; the chain member at victim_index dies mid-round."""
    victim = None
    for start in range(0, n, ROUND):
        futures = [client.put_async(table, f"k{i}", i) for i in range(start, start + ROUND)]
        if start == n // 2:
            victim = store.chain()[victim_index]
            store.kill_replica(victim)  # SIGKILL while the round is in flight
        for f in futures:
            f.result(30)
    return victim


@pytest.mark.parametrize("victim_index,transport",
                         [(0, "tcp"), (1, "tcp"), (2, "tcp"), (0, "ipc"), (2, "ipc")],
                         ids=["head", "middle", "tail", "head-ipc", "tail-ipc"])
def test_kill_during_write_stream(control_store, gcs_client, victim_index):
    store = control_store(replicas=3, keep_log_entries=10**7)
    client = gcs_client(store.address, timeout_s=30)
    victim = stream(client, store, victim_index)
    chain = store.chain()
    assert victim not in chain and len(chain) == 2
    rows = dict(client.scan("kv", "k"))
    assert len(rows) == N_WRITES
    assert all(rows[f"k{i}".encode()] == i for i in range(N_WRITES))
    client.put("kv", "after", 1)  # the stream continues on the shortened chain
    assert client.get("kv", "after") == 1
    client.close()
    survivors = [store.replicas[r].data_dir for r in chain]
    store.stop()
    for data_dir in survivors:
        seen = collections.Counter(log_rows(data_dir))
        assert max(seen.values()) == 1, "a write was applied twice"
        assert len(seen) == N_WRITES + 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rejoin_copies_state_then_serves_as_tail(control_store, gcs_client):
    store = control_store(replicas=2, keep_log_entries=1000)
    client = gcs_client(store.address, timeout_s=30)
    for i in range(3000):  # enough for compaction: the joiner needs a snapshot
        client.put_async("kv", f"k{i}", i)
    client.flush(30)
    head, tail = store.chain()
    store.kill_replica(tail)
    newcomer = store.start_replica()
    cfg = store.wait_for(lambda c: [m[0] for m in c[0][1]] == [head, newcomer]
                         and all(m[3] for m in c[0][1]), 20)
    assert cfg[0][1][-1][0] == newcomer
    assert client.get("kv", "k2999") == 2999  # served by the newcomer, now the tail
    store.kill_replica(head)  # the newcomer alone holds everything
    store.wait_for(lambda c: [m[0] for m in c[0][1]] == [newcomer], 20)
    rows = dict(client.scan("kv"))
    assert len(rows) == 3000 and rows[b"k1234"] == 1234
    client.put("kv", "more", 1)
    assert client.get("kv", "more") == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_restarted_replica_rejoins_at_the_tail(control_store, gcs_client):
    store = control_store(replicas=2)
    client = gcs_client(store.address, timeout_s=30)
    client.put("kv", "x", 1)
    head, tail = store.chain()
    rid = store.restart_replica(head)  # same data dir, same id: it comes back as the tail
    assert rid == head
    store.wait_for(lambda c: [m[0] for m in c[0][1]] == [tail, head] and c[0][1][1][3], 20)
    assert client.get("kv", "x") == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_coordinator_restart_recovers_the_configuration(control_store, gcs_client):
    store = control_store(replicas=3)
    client = gcs_client(store.address, timeout_s=30)
    client.put("kv", "a", 1)
    chain = store.chain()
    store.coordinator.kill(signal.SIGKILL)
    client.put("kv", "b", 2)  # the chain works without its coordinator
    store.start_coordinator()
    assert store.chain() == chain
    store.kill_replica(chain[1])  # the restarted coordinator still detects deaths
    store.wait_for(lambda c: [m[0] for m in c[0][1]] == [chain[0], chain[2]], 20)
    client.put("kv", "c", 3)
    assert [client.get("kv", k) for k in "abc"] == [1, 2, 3]


def test_two_shards_of_three(control_store, gcs_client):
    store = control_store(shards=2, replicas=3)
    client = gcs_client(store.address, timeout_s=30)
    for i in range(2000):
        client.put_async("objects", f"o{i}", {"size": i})
    client.flush(30)
    store.kill_replica(store.chain(1)[0])
    for i in range(2000, 3000):
        client.put_async("objects", f"o{i}", {"size": i})
    client.flush(30)
    rows = dict(client.scan("objects"))
    assert len(rows) == 3000 and rows[b"o2500"] == {"size": 2500}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_lone_replica_restart_keeps_its_data(control_store, gcs_client):
    store = control_store()  # the local-cluster default: 1 shard x 1 replica
    client = gcs_client(store.address, timeout_s=30)
    for i in range(100):
        client.put_async("kv", f"k{i}", i)
    client.flush()
    (rid,) = store.chain()
    store.kill_replica(rid)
    store.wait_for(lambda c: c[0][1] == [], 10)
    child = store.replicas.pop(rid)
    assert store.start_replica(data_dir=child.data_dir) == rid
    store.wait_for(lambda c: [m[0] for m in c[0][1]] == [rid], 10)
    assert client.get("kv", "k99") == 99 and len(client.scan("kv")) == 100


def test_hung_replica_is_removed_and_rejoins_when_it_wakes(control_store, gcs_client):
    store = control_store(replicas=3)
    client = gcs_client(store.address, timeout_s=30)
    head, middle, tail = store.chain()
    store.kill_replica(middle, signal.SIGSTOP)  # hung: its connections stay open
    try:
        client.put("kv", "during", 1)  # waits for the heartbeat timeout, then goes on
        store.wait_for(lambda c: [m[0] for m in c[0][1]] == [head, tail], 10)
    finally:
        store.kill_replica(middle, signal.SIGCONT)
    # Awake, it learns it was removed, registers again and copies the state as the tail.
    store.wait_for(lambda c: [m[0] for m in c[0][1]] == [head, tail, middle]
                   and c[0][1][2][3], 20)
    client.put("kv", "after", 2)
    assert client.get("kv", "during") == 1 and client.get("kv", "after") == 2


DRIVER = """
import json, sys, time
from zactor.control import start_control_store
store = start_control_store(sys.argv[1], replicas=2)
pids = [store.coordinator.pid] + [c.pid for c in store.replicas.values()]
print(json.dumps(pids), flush=True)
time.sleep(600)
"""


def test_children_exit_when_their_driver_is_killed(tmp_path):
    import json
    import subprocess
    import sys
    import time

    import psutil

    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path)],
                              stdout=subprocess.PIPE)
    try:
        pids = json.loads(driver.stdout.readline())
        assert len(pids) == 3 and all(psutil.pid_exists(p) for p in pids)
    finally:
        driver.kill()
        driver.wait()
        driver.stdout.close()
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.02)
    assert not alive, f"orphaned control-store processes {alive}"
