"""Bounded growth: over a long write stream the log is compacted and the database files stop
growing; finished tasks' lineage moves to the disk-only archive and stays readable."""

from __future__ import annotations

import os

import pytest

from zactor.control.log_store import SqliteLogStore


def _db_bytes(data_dir):
    return sum(os.path.getsize(os.path.join(data_dir, f)) for f in os.listdir(data_dir)
               if f.startswith("gcs.sqlite"))


def _stream(client, rounds, per_round=2000, keys=500):
    for r in range(rounds):
        for i in range(per_round):
            client.put_async("kv", f"k{i % keys}", b"x" * 100 + bytes([r % 256]))
        client.flush(60)


@pytest.mark.parametrize("rounds", [40])
def test_database_size_is_bounded_over_a_long_stream(control_store, gcs_client, rounds):
    keep = 2000
    store = control_store(replicas=1, keep_log_entries=keep)
    client = gcs_client(store.address, timeout_s=60)
    data_dir = next(iter(store.replicas.values())).data_dir
    _stream(client, 10)
    early = _db_bytes(data_dir)
    _stream(client, rounds - 10)
    late = _db_bytes(data_dir)
    client.close()
    store.stop()
    # 80,000 writes of 100 bytes would be > 10 MB of log; compaction keeps it near the
    # size reached after the first 20,000 (freed pages are reused, the WAL is truncated).
    assert late < 2 * early + 512 * 1024, (early, late)
    s = SqliteLogStore(data_dir)
    try:
        assert s.last_seq == rounds * 2000
        assert s.last_seq - s.first_seq + 1 <= 3 * keep
    finally:
        s.close()


def test_archived_lineage_is_readable_and_out_of_the_live_table(control_store, gcs_client):
    store = control_store(replicas=2)
    client = gcs_client(store.address)
    for i in range(10):
        client.put_async("tasks", f"t{i}", {"spec": i})
    client.flush()
    for i in range(5):
        client.archive_task_async(f"t{i}")
    client.flush()
    assert [k for k, _v in client.scan("tasks")] == [f"t{i}".encode() for i in range(5, 10)]
    assert client.get("tasks", "t3") == {"spec": 3}
