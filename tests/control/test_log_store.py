"""One conformance suite run against both log stores (SQLite and the in-memory reference)."""

from __future__ import annotations

import os

import pytest

from zactor.control.log_store import OP_ARCHIVE, LogTruncated, SqliteLogStore
from zactor.control.memstore import MemoryLogStore
from zactor.control.schema import OP_DELETE, OP_PUT


@pytest.fixture(params=["sqlite", "memory"])
def make_store(request, tmp_path):
    made = []

    def make(name="a"):
        store = (SqliteLogStore(str(tmp_path / name)) if request.param == "sqlite"
                 else MemoryLogStore())
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def entries(start, n, table="kv", cid=b"c", tseq0=None, op=OP_PUT):
    tseq0 = start if tseq0 is None else tseq0
    return [[start + i, cid, start + i, op, table, b"k%d" % (start + i), b"v%d" % (start + i),
             tseq0 + i] for i in range(n)]


def test_append_get_scan_dedup(make_store):
    s = make_store()
    s.append(entries(1, 5))
    assert s.last_seq == 5 and s.tseqs["kv"] == 5
    assert s.get("kv", b"k3") == b"v3" and s.get("kv", b"nope") is None
    assert [k for k, _v in s.scan("kv", b"k")] == [b"k1", b"k2", b"k3", b"k4", b"k5"]
    assert s.scan("kv", b"k", limit=2) == [[b"k1", b"v1"], [b"k2", b"v2"]]
    assert s.dedup(b"c") == (5, 5) and s.dedup(b"other") is None
    s.append([[6, b"c", 6, OP_DELETE, "kv", b"k1", None, 6]])
    assert s.get("kv", b"k1") is None


def test_append_refuses_a_gap_and_changes_nothing(make_store):
    s = make_store()
    s.append(entries(1, 2))
    with pytest.raises(ValueError):
        s.append(entries(4, 1))
    assert s.last_seq == 2


def test_read_log_table_log_and_compaction(make_store):
    s = make_store()
    s.append(entries(1, 10))
    assert [e[0] for e in s.read_log(7, 100)] == [8, 9, 10]
    assert [r[0] for r in s.read_table_log("kv", 8, 100)] == [9, 10]
    assert s.compact(6) == 6
    assert s.first_seq == 7
    with pytest.raises(LogTruncated):
        s.read_log(3, 10)
    with pytest.raises(LogTruncated):
        s.read_table_log("kv", 2, 10)
    assert [e[0] for e in s.read_log(6, 10)] == [7, 8, 9, 10]
    assert s.get("kv", b"k1") == b"v1"  # compaction keeps the tables


def test_snapshot_install(make_store):
    a, b = make_store("a"), make_store("b")
    a.append(entries(1, 4))
    a.append([[5, b"c", 5, OP_PUT, "tasks", b"t", b"spec", 1]])
    a.append([[6, b"c", 6, OP_ARCHIVE, "tasks", b"t", None, 2]])
    b.append(entries(1, 1, cid=b"x"))
    b.install_snapshot(a.snapshot())
    assert b.last_seq == 6 and b.first_seq == 7
    assert b.scan("kv") == a.scan("kv")
    assert b.dedup(b"c") == (6, 6) and b.dedup(b"x") is None
    assert b.get("tasks", b"t") == b"spec" and b.scan("tasks") == []  # archived, still readable
    b.append(entries(7, 1, tseq0=5))
    assert b.last_seq == 7


def test_archive_with_a_value_writes_straight_to_the_archive(make_store):
    s = make_store()
    s.append([[1, b"c", 1, OP_PUT, "tasks", b"live", b"old", 1]])
    s.append([[2, b"c", 2, OP_ARCHIVE, "tasks", b"done", b"spec", 2],
              [3, b"c", 3, OP_ARCHIVE, "tasks", b"live", b"new", 3]])
    assert s.get("tasks", b"done") == b"spec" and s.get("tasks", b"live") == b"new"
    assert s.scan("tasks") == []  # neither is in the live table


def test_sqlite_state_survives_reopen(tmp_path):
    s = SqliteLogStore(str(tmp_path))
    s.append(entries(1, 3))
    s.compact(1)
    s.close()
    s = SqliteLogStore(str(tmp_path))
    assert (s.last_seq, s.first_seq, s.tseqs["kv"]) == (3, 2, 3)
    assert s.get("kv", b"k2") == b"v2" and s.dedup(b"c") == (3, 3)
    s.close()
    s = SqliteLogStore(str(tmp_path), wipe=True)
    assert s.last_seq == 0 and s.get("kv", b"k2") is None
    s.close()
    assert os.path.exists(tmp_path / "gcs.sqlite")


def test_sqlite_is_wal_with_synchronous_normal(tmp_path):
    s = SqliteLogStore(str(tmp_path))
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    s.close()
