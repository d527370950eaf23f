"""A replica's durable state: an SQLite database (WAL, synchronous=NORMAL) via sqlite-utils.

Run inside each replica process. The database holds

    log      seq -> (cid, cseq, op, tbl, key, value, tseq)   append-only, compacted
    <table>  key -> value for each table in schema.TABLES        materialised from the log
    dedup    cid -> (highest cseq applied, its seq)            makes retried writes idempotent
    meta     name -> integer (last_seq, first_seq, tseq:<table>)

``append`` applies one batch of log entries in one transaction: the entries, their effect on
the tables, the dedup rows and the counters commit together or not at all, so after a kill the
tables always equal "the log applied up to last_seq" (the invariant the chain relies on).
SQLite's automatic checkpoint (every 1000 WAL pages, in the writer) keeps the WAL near 4 MB; it
is the only fsync under synchronous=NORMAL and costs the commit that triggers it 15-25 ms on
the development VM. (Moving checkpoints to a background connection halved the cost per write
but let the WAL grow without bound under a steady stream, and forcing it back with RESTART
stalled writers for up to 190 ms in SQLite's busy-wait: measured, rejected.)
WAL with synchronous=NORMAL survives a killed process (a lost machine may lose the last
transactions; the other replicas cover it). Compaction deletes log entries below a bound: the
tables are the snapshot, the log keeps only a suffix long enough for catch-up and for
subscribers repairing gaps. ``archive`` moves finished tasks' lineage to a second, disk-only
file (``archive.sqlite``) that is read only on a miss.

Failure contract: every method either completes or raises ``sqlite3.Error`` with nothing
modified (transactions roll back).
"""

from __future__ import annotations

import os
import sqlite3
import sys


def _import_sqlite_utils():
    """sqlite-utils imports numpy (if present) only to store numpy scalars, which the control
    store never writes; a replica that skips it is ~20 MB smaller and starts 0.1 s sooner.
    numpy stays importable afterwards for anyone else in the process."""
    block = "numpy" not in sys.modules
    if block:
        sys.modules["numpy"] = None  # makes `import numpy` raise ImportError inside
    try:
        import sqlite_utils
    finally:
        if block and sys.modules.get("numpy") is None:
            del sys.modules["numpy"]
    return sqlite_utils


sqlite_utils = _import_sqlite_utils()

from zactor.control.schema import OP_ARCHIVE, OP_DELETE, OP_PUT, TABLES  # noqa: E402 (after the sqlite-utils import above)

DB_FILE = "gcs.sqlite"
ARCHIVE_FILE = "archive.sqlite"


class LogTruncated(Exception):
    """The log no longer holds entries that far back: copy a snapshot instead."""


class SqliteLogStore:
    """The store of one replica; the chain state machine is its only writer."""

    def __init__(self, data_dir: str, wipe: bool = False):
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, DB_FILE)
        archive = os.path.join(data_dir, ARCHIVE_FILE)
        if wipe:
            for p in (self.path, archive):
                for suffix in ("", "-wal", "-shm"):
                    try:
                        os.unlink(p + suffix)
                    except FileNotFoundError:
                        pass
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(f"ATTACH DATABASE '{archive}' AS archive")
        self.db.execute("PRAGMA archive.journal_mode=WAL")
        with self.db.atomic():
            self.db["log"].create({"seq": int, "cid": bytes, "cseq": int, "op": int, "tbl": str,
                                   "key": bytes, "value": bytes, "tseq": int}, pk="seq",
                                  if_not_exists=True)
            self.db["log"].create_index(["tbl", "tseq"], if_not_exists=True)
            # Tables keyed by a blob: WITHOUT ROWID stores each row once, in its key's
            # B-tree, rather than in a rowid tree plus a key index (one insert, not two).
            for table in TABLES:
                self.db.execute(f"CREATE TABLE IF NOT EXISTS [{table}] (key BLOB PRIMARY KEY,"
                                " value BLOB) WITHOUT ROWID")
            self.db.execute("CREATE TABLE IF NOT EXISTS dedup (cid BLOB PRIMARY KEY, "
                            "cseq INTEGER, seq INTEGER) WITHOUT ROWID")
            self.db["meta"].create({"name": str, "value": int}, pk="name", if_not_exists=True)
            self.db.execute("CREATE TABLE IF NOT EXISTS archive.tasks "
                            "(key BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID")
        meta = dict(self.db.execute("SELECT name, value FROM meta").fetchall())
        self.last_seq = meta.get("last_seq", 0)
        self.first_seq = meta.get("first_seq", 1)
        self.tseqs = {t: meta.get("tseq:" + t, 0) for t in TABLES}

    # ---- writes ------------------------------------------------------------------------------
    def append(self, entries) -> None:
        """Apply log entries [seq, cid, cseq, op, table, key, value, tseq] (seq contiguous
        after last_seq) in one transaction."""
        if not entries:
            return
        if entries[0][0] != self.last_seq + 1:
            raise ValueError(f"log gap: have {self.last_seq}, got {entries[0][0]}")
        conn = self.db.conn
        dedup = {}
        tseqs = {}
        with self.db.atomic():
            conn.executemany("INSERT INTO log VALUES (?,?,?,?,?,?,?,?)", entries)
            puts: list = []  # a run of puts to one table goes in one executemany
            put_table = None
            for seq, cid, cseq, op, table, key, value, tseq in entries:
                if puts and (op != OP_PUT or table != put_table):
                    conn.executemany(f"INSERT OR REPLACE INTO {put_table} VALUES (?,?)", puts)
                    puts = []
                if op == OP_PUT:
                    puts.append((key, value))
                    put_table = table
                elif op == OP_DELETE:
                    conn.execute(f"DELETE FROM {table} WHERE key=?", (key,))
                elif op == OP_ARCHIVE and table == "tasks":
                    if value is None:  # move the live row
                        conn.execute("INSERT OR REPLACE INTO archive.tasks "
                                     "SELECT key, value FROM tasks WHERE key=?", (key,))
                    else:  # written straight to the archive (a finished task's lineage)
                        conn.execute("INSERT OR REPLACE INTO archive.tasks VALUES (?,?)",
                                     (key, value))
                    conn.execute("DELETE FROM tasks WHERE key=?", (key,))
                if cid:
                    dedup[cid] = (cid, cseq, seq)
                tseqs[table] = tseq
            if puts:
                conn.executemany(f"INSERT OR REPLACE INTO {put_table} VALUES (?,?)", puts)
            conn.executemany("INSERT OR REPLACE INTO dedup VALUES (?,?,?)", dedup.values())
            last = entries[-1][0]
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)",
                             [("last_seq", last)] + [("tseq:" + t, n) for t, n in tseqs.items()])
        self.last_seq = last
        self.tseqs.update(tseqs)

    def compact(self, upto_seq: int) -> int:
        """Delete log entries with seq <= upto_seq; returns how many. The WAL is checkpointed
        and truncated so the files stop growing (freed pages are reused)."""
        upto_seq = min(upto_seq, self.last_seq)
        if upto_seq < self.first_seq:
            return 0
        with self.db.atomic():
            n = self.db.conn.execute("DELETE FROM log WHERE seq <= ?", (upto_seq,)).rowcount
            self.db.conn.execute("INSERT OR REPLACE INTO meta VALUES ('first_seq', ?)",
                                 (upto_seq + 1,))
        self.first_seq = upto_seq + 1
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    # ---- reads -------------------------------------------------------------------------------
    def get(self, table: str, key: bytes):
        row = self.db.conn.execute(f"SELECT value FROM {table} WHERE key=?", (key,)).fetchone()
        if row is None and table == "tasks":
            row = self.db.conn.execute("SELECT value FROM archive.tasks WHERE key=?",
                                       (key,)).fetchone()
        return None if row is None else row[0]

    def scan(self, table: str, prefix: bytes = b"", limit: int = 0) -> list:
        sql = f"SELECT key, value FROM {table}"
        args: tuple = ()
        if prefix:
            sql += " WHERE substr(key, 1, ?) = ?"
            args = (len(prefix), prefix)
        sql += " ORDER BY key"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [[k, v] for k, v in self.db.conn.execute(sql, args)]

    def dedup(self, cid: bytes):
        row = self.db.conn.execute("SELECT cseq, seq FROM dedup WHERE cid=?", (cid,)).fetchone()
        return None if row is None else (row[0], row[1])

    def read_log(self, after_seq: int, limit: int) -> list:
        if after_seq + 1 < self.first_seq:
            raise LogTruncated(after_seq)
        return [list(r) for r in self.db.conn.execute(
            "SELECT * FROM log WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))]

    def read_table_log(self, table: str, after_tseq: int, limit: int) -> list:
        rows = self.db.conn.execute(
            "SELECT tseq, op, key, value, seq FROM log WHERE tbl=? AND tseq > ? "
            "ORDER BY tseq LIMIT ?", (table, after_tseq, limit)).fetchall()
        if after_tseq < self.tseqs[table] and (not rows or rows[0][0] != after_tseq + 1):
            raise LogTruncated(after_tseq)
        return [list(r[:4]) for r in rows]

    # ---- state transfer ----------------------------------------------------------------------
    def snapshot(self) -> dict:
        rows = [[t, k, v] for t in TABLES
                for k, v in self.db.conn.execute(f"SELECT key, value FROM {t}")]
        rows += [["archive:tasks", k, v] for k, v in
                 self.db.conn.execute("SELECT key, value FROM archive.tasks")]
        dedup = [list(r) for r in self.db.conn.execute("SELECT cid, cseq, seq FROM dedup")]
        return {"seq": self.last_seq, "rows": rows, "dedup": dedup, "tseqs": dict(self.tseqs)}

    def install_snapshot(self, snap: dict) -> None:
        """Replace the whole state by a snapshot (log emptied, starting after snap['seq'])."""
        conn = self.db.conn
        with self.db.atomic():
            for t in TABLES:
                conn.execute(f"DELETE FROM {t}")
            conn.execute("DELETE FROM archive.tasks")
            conn.execute("DELETE FROM log")
            conn.execute("DELETE FROM dedup")
            for t, k, v in snap["rows"]:
                target = "archive.tasks" if t == "archive:tasks" else t
                if target != "archive.tasks" and t not in TABLES:
                    raise ValueError(f"snapshot names unknown table {t!r}")
                conn.execute(f"INSERT OR REPLACE INTO {target} VALUES (?,?)", (k, v))
            conn.executemany("INSERT INTO dedup VALUES (?,?,?)", snap["dedup"])
            seq = snap["seq"]
            meta = [("last_seq", seq), ("first_seq", seq + 1)]
            meta += [("tseq:" + t, int(snap["tseqs"].get(t, 0))) for t in TABLES]
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)", meta)
        self.last_seq, self.first_seq = seq, seq + 1
        self.tseqs = {t: int(snap["tseqs"].get(t, 0)) for t in TABLES}

    def size_bytes(self) -> int:
        total = 0
        for p in (self.path, self.path + "-wal"):
            try:
                total += os.path.getsize(p)
            except FileNotFoundError:
                pass
        return total

    def close(self) -> None:
        self.db.close()
