"""An in-memory log store with ``SqliteLogStore``'s interface and contract.

Used by the sans-IO property tests of the chain (no files, fast) and as the reference the
SQLite store is checked against. Not used by a running cluster.
"""

from __future__ import annotations

from zactor.control.log_store import OP_ARCHIVE, LogTruncated
from zactor.control.schema import OP_DELETE, OP_PUT, TABLES


class MemoryLogStore:
    def __init__(self):
        self.log: list = []  # entries, seq ascending
        self.tables = {t: {} for t in TABLES}
        self.archive: dict = {}
        self.dedup_rows: dict = {}
        self.last_seq = 0
        self.first_seq = 1
        self.tseqs = {t: 0 for t in TABLES}

    def append(self, entries) -> None:
        if not entries:
            return
        if entries[0][0] != self.last_seq + 1:
            raise ValueError(f"log gap: have {self.last_seq}, got {entries[0][0]}")
        for e in entries:
            seq, cid, cseq, op, table, key, value, tseq = e
            self.log.append(list(e))
            if op == OP_PUT:
                self.tables[table][key] = value
            elif op == OP_DELETE:
                self.tables[table].pop(key, None)
            elif op == OP_ARCHIVE and table == "tasks" and value is not None:
                self.archive[key] = value
                self.tables["tasks"].pop(key, None)
            elif op == OP_ARCHIVE and table == "tasks" and key in self.tables["tasks"]:
                self.archive[key] = self.tables["tasks"].pop(key)
            if cid:
                self.dedup_rows[cid] = (cseq, seq)
            self.tseqs[table] = tseq
            self.last_seq = seq

    def compact(self, upto_seq: int) -> int:
        upto_seq = min(upto_seq, self.last_seq)
        before = len(self.log)
        self.log = [e for e in self.log if e[0] > upto_seq]
        self.first_seq = max(self.first_seq, upto_seq + 1)
        return before - len(self.log)

    def get(self, table, key):
        value = self.tables[table].get(key)
        if value is None and table == "tasks":
            value = self.archive.get(key)
        return value

    def scan(self, table, prefix=b"", limit=0):
        rows = sorted([k, v] for k, v in self.tables[table].items() if k.startswith(prefix))
        return rows[:limit] if limit else rows

    def dedup(self, cid):
        return self.dedup_rows.get(cid)

    def read_log(self, after_seq, limit):
        if after_seq + 1 < self.first_seq:
            raise LogTruncated(after_seq)
        return [list(e) for e in self.log if e[0] > after_seq][:limit]

    def read_table_log(self, table, after_tseq, limit):
        rows = [[e[7], e[3], e[5], e[6]] for e in self.log if e[4] == table and e[7] > after_tseq]
        rows = rows[:limit]
        if after_tseq < self.tseqs[table] and (not rows or rows[0][0] != after_tseq + 1):
            raise LogTruncated(after_tseq)
        return rows

    def snapshot(self):
        rows = [[t, k, v] for t in TABLES for k, v in self.tables[t].items()]
        rows += [["archive:tasks", k, v] for k, v in self.archive.items()]
        dedup = [[c, cs, s] for c, (cs, s) in self.dedup_rows.items()]
        return {"seq": self.last_seq, "rows": rows, "dedup": dedup, "tseqs": dict(self.tseqs)}

    def install_snapshot(self, snap):
        self.tables = {t: {} for t in TABLES}
        self.archive = {}
        for t, k, v in snap["rows"]:
            if t == "archive:tasks":
                self.archive[k] = v
            else:
                self.tables[t][k] = v
        self.dedup_rows = {c: (cs, s) for c, cs, s in snap["dedup"]}
        self.log = []
        self.last_seq = snap["seq"]
        self.first_seq = self.last_seq + 1
        self.tseqs = {t: int(snap["tseqs"].get(t, 0)) for t in TABLES}

    def close(self):
        pass
