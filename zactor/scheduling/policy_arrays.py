"""Column (numpy) copies of the alive node views, so ``GlobalPolicy`` scores all nodes at once.

Used by global_policy.py only. Scoring 100 nodes one by one in Python costs ~100 µs per
decision and is the scheduler's whole cost; the same arithmetic over arrays is a handful of
vector operations. The arrays are a cache of the ``NodeView`` objects (which stay the truth, and
what pg_placement and the pure-Python reference ``GlobalPolicy._best_py`` read): a change of
membership or of a node's totals rebuilds them; a heartbeat or an optimistic charge rewrites one
node's entries (``touch``). Row i is the i-th alive node in node-key order, so "the first of the
tied" is "the smallest node id", as in the reference.
"""

from __future__ import annotations

import numpy as np

TIE_EPS = 1e-12  # estimates this close are a tie (the reference uses the same rule)


class NodeArrays:
    def __init__(self):
        self.gen = -1            # the policy generation these arrays were built for
        self.ids: list = []
        self.index: dict = {}    # node_id -> row
        self.dirty: set = set()  # node ids whose views changed since the last sync

    def rebuild(self, views, gen: int, last_spread: dict) -> None:
        self.gen = gen
        self.dirty = set()
        self.ids = [v.node_id for v in views]
        self.index = {nid: i for i, nid in enumerate(self.ids)}
        self.views = list(views)
        n = len(views)
        self.qterm = np.zeros(n)
        self.avt = np.zeros(n)
        self.bw = np.ones(n)
        # when SPREAD last picked each node (-1: never), for the round robin
        self.last = np.array([last_spread.get(v.node_id, -1) for v in views], dtype=float)
        names = set()
        for v in views:
            names.update(v.total.names())
            names.update(v.available.names())
        self.total = {name: np.zeros(n) for name in names}
        self.avail = {name: np.zeros(n) for name in names}
        for i, v in enumerate(views):
            for name in v.total.names():
                self.total[name][i] = v.total.units(name)
            self._set(i, v)

    def _set(self, i: int, v) -> None:
        self.views[i] = v
        self.qterm[i] = v.queue_len * v.avg_task_s / v.par
        self.avt[i] = v.avg_task_s
        self.bw[i] = v.bandwidth
        units = v.available._units
        for name, col in self.avail.items():
            col[i] = units.get(name, 0)

    def sync(self, nodes: dict) -> bool:
        """Apply the changed views; False when one needs a rebuild (a new resource name)."""
        for nid in self.dirty:
            i = self.index.get(nid)
            v = nodes.get(nid)
            if i is None or v is None:
                continue
            if any(name not in self.avail for name in v.available.names()):
                return False
            self._set(i, v)
        self.dirty = set()
        return True

    def busy(self, rows: np.ndarray, items) -> np.ndarray:
        """Per row: the demand does not fit what the node has free now."""
        busy = np.zeros(len(rows), dtype=bool)
        for name, amount in items:
            col = self.avail.get(name)
            busy |= (col[rows] < amount) if col is not None else (amount > 0)
        return busy

    def spread_pick(self, rows: np.ndarray, items) -> int:
        """SPREAD: among rows with room now (else all), the one picked least recently."""
        free = rows[~self.busy(rows, items)]
        cand = free if len(free) else rows
        return int(cand[int(np.argmin(self.last[cand]))])

    def best(self, rows: np.ndarray, items, total_bytes: int, local: dict, names):
        """The row (of ``rows``, fitting nodes) with the lowest estimate; ties: least utilised
        over ``names``, then the lowest row."""
        w = self.qterm[rows] + np.where(self.busy(rows, items), self.avt[rows], 0.0)
        if total_bytes:
            have = np.zeros(len(self.ids))
            for nid, nbytes in local.items():
                i = self.index.get(nid)
                if i is not None:
                    have[i] = nbytes
            w += (total_bytes - have[rows]) / self.bw[rows]
        low = w.min()
        ties = rows[w <= low + TIE_EPS]
        if len(ties) == 1:
            return int(ties[0])
        util = np.zeros(len(ties))
        for name in names:
            tot = self.total.get(name)
            if tot is None:
                continue
            t = tot[ties]
            a = self.avail[name][ties]
            frac = np.where(t > 0, (t - a) / np.where(t > 0, t, 1.0), 0.0)
            util = np.maximum(util, frac)
        return int(ties[int(np.argmin(util))])
