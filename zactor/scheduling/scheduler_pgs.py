"""The global scheduler's placement groups: create, place, re-place, remove (a mixin of
``SchedulerDaemon``, scheduler_daemon.py, whose sockets, control-store client and policy it uses).

A group's row kv[b"pg:" + id] is written before any node is told to reserve a bundle, so a
scheduler killed in between finds the row on restart and tells the nodes again
(``_load_pg``); node managers treat a reservation they already hold as a no-op.
"""

from __future__ import annotations

import logging
import time

from zactor import protocol as P
from zactor.cluster import messages as M
from zactor.scheduling.global_policy import node_key
from zactor.scheduling.pg_placement import STRATEGIES
from zactor.scheduling.resources import ResourceSet

log = logging.getLogger(__name__)
GCS_TIMEOUT_S = 5.0


def pg_key(pg_id) -> bytes:
    if isinstance(pg_id, str):
        return pg_id.encode()
    if isinstance(pg_id, bytes) and pg_id:
        return pg_id
    raise ValueError(f"pg_id must be non-empty bytes or str, got {pg_id!r}")


def parse_bundles(bundles) -> list:
    if not isinstance(bundles, list) or not bundles:
        raise ValueError("bundles must be a non-empty list of {resource: amount} maps")
    out = []
    for i, b in enumerate(bundles):
        if not isinstance(b, dict) or not b:
            raise ValueError(f"bundle {i} must be a non-empty map, got {b!r}")
        for name, amount in b.items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
                raise ValueError(f"bundle {i}: resource {name!r} must be > 0, got {amount!r}")
        out.append(ResourceSet(b))
    return out


class PlacementGroups:
    def _load_pg(self, pg_id: bytes, row: dict) -> None:
        try:
            bundles = parse_bundles(row["bundles"])
            nodes = list(row.get("nodes") or [None] * len(bundles))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring malformed pg row %r: %s", pg_id, exc)
            return
        self.pgs[pg_id] = row
        self.policy.set_pg(pg_id, bundles, nodes)
        # the scheduler may have died between writing the row and telling the nodes: tell
        # them again (a node treats a reservation it already holds as a no-op)
        self._send_reservations(pg_id, bundles, nodes, release=False)
        if row.get("state") != "created":
            self.dirty = True

    def _send_reservations(self, pg_id, bundles, nodes, release: bool) -> None:
        per_node: dict = {}
        for i, (b, n) in enumerate(zip(bundles, nodes)):
            if n is not None:
                per_node.setdefault(n, []).append([i, b.to_dict()])
        for n, items in sorted(per_node.items(), key=lambda kv: node_key(kv[0])):
            self._send_node(n, M.RESERVE_BUNDLES, {"pg_id": pg_id, "bundles": items,
                                                   "release": release})

    # ---- placement groups ----------------------------------------------------------------------
    def _save_pg(self, pg_id: bytes, row: dict, wait: bool = True) -> None:
        self.pgs[pg_id] = row
        if wait:
            self.gcs.put("kv", b"pg:" + pg_id, row, timeout_s=GCS_TIMEOUT_S)
        else:
            self.gcs.put_async("kv", b"pg:" + pg_id, row)

    def _try_place_pg(self, pg_id: bytes, row: dict, wait: bool = True) -> dict:
        """Place what is unplaced of a pending/rescheduling group; returns its new row."""
        bundles = parse_bundles(row["bundles"])
        nodes = list(row.get("nodes") or [None] * len(bundles))
        fixed = {i: n for i, n in enumerate(nodes) if n is not None}
        placed = self.policy.place_bundles(bundles, row["strategy"], fixed)
        if placed is None:
            reason = (f"{len(bundles) - len(fixed)} bundle(s) {[b.to_dict() for b in bundles]}"
                      f" cannot be reserved {row['strategy']} on the alive nodes now")
            self.policy.set_pg(pg_id, bundles, nodes)
            if row.get("reason") != reason or pg_id not in self.pgs:
                row = dict(row, reason=reason, nodes=nodes)
                self._save_pg(pg_id, row, wait)
            return row
        new = {i: n for i, n in enumerate(placed) if i not in fixed}
        for i, n in new.items():
            self.policy.reserve(n, bundles[i])
        self.policy.set_pg(pg_id, bundles, placed)
        row = dict(row, nodes=placed, state="created", reason="")
        self._save_pg(pg_id, row, wait)
        self._send_reservations(pg_id, bundles, [placed[i] if i in new else None
                                                 for i in range(len(placed))], release=False)
        self.stats["pgs_placed"] += 1
        self.dirty = True  # tasks waiting for this group's bundles can be placed now
        return row

    def on_create_pg(self, msg: P.Message):
        pg_id = pg_key(msg["pg_id"])
        if pg_id in self.pgs:
            return self.pgs[pg_id]
        bundles = parse_bundles(msg["bundles"])
        if msg["strategy"] not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {msg['strategy']!r}")
        row = {"pg_id": pg_id, "bundles": [b.to_dict() for b in bundles],
               "strategy": msg["strategy"], "state": "pending", "nodes": [None] * len(bundles),
               "name": str(msg.get("name") or ""), "created_at": time.time(), "reason": ""}
        return self._try_place_pg(pg_id, row)

    def on_remove_pg(self, msg: P.Message):
        pg_id = pg_key(msg["pg_id"])
        row = self.pgs.pop(pg_id, None)
        if row is None:
            # a re-sent REMOVE_PG (its answer was lost) finds the removed row: answer it again
            stored = self.gcs.get("kv", b"pg:" + pg_id, timeout_s=GCS_TIMEOUT_S)
            if isinstance(stored, dict) and stored.get("state") == "removed":
                return stored
            raise KeyError(f"placement group {pg_id!r} does not exist")
        bundles = parse_bundles(row["bundles"])
        nodes = list(row.get("nodes") or [])
        for b, n in zip(bundles, nodes):
            if n is not None:
                self.policy.unreserve(n, b)
        self._send_reservations(pg_id, bundles, nodes, release=True)
        self.policy.drop_pg(pg_id)
        self.dirty = True  # the freed bundles may fit what waits
        row = dict(row, state="removed")
        self.gcs.put("kv", b"pg:" + pg_id, row, timeout_s=GCS_TIMEOUT_S)
        return row

    def on_get_pg(self, msg: P.Message):
        if msg["pg_id"] is None:
            return {k.hex(): v for k, v in sorted(self.pgs.items())}
        pg_id = pg_key(msg["pg_id"])
        if pg_id in self.pgs:
            return self.pgs[pg_id]
        # removed groups leave memory (bounded state) but keep their row: read it there
        return self.gcs.get("kv", b"pg:" + pg_id, timeout_s=GCS_TIMEOUT_S)

