"""The global scheduler's placement policy: sans-IO, deterministic, no clocks, no sockets.

Runs inside the ``zactor scheduler`` daemon (and the benchmark, in-process). The daemon feeds
it node views (from the ``nodes`` table rows) and asks it where a spilled task should run
(``decide``) or where a placement group's bundles go (``place_bundles``, see pg_placement.py).

The paper's rule (bottom-up scheduling): among the nodes whose resources can hold the task,
pick the one with the lowest *estimated waiting time*:

    wait(node) = queue_len x avg task duration / parallelism      (queueing)
               + (one more task duration when the demand does not fit what is free now)
               + bytes of the task's inputs not on that node / that node's bandwidth

Ties go to the least utilised node, then the smallest node id, so the same input always gives
the same answer (the daemon may be restarted and must not depend on hash order).

Optimistic accounting: a decision takes the demand out of the chosen node's view (or adds one
to its queue) at once, so a burst of spilled tasks does not all land on the node that looked
best at the last heartbeat; the node's next row (``update_node``) replaces the view.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zactor.cluster.messages import UNKNOWN_NODE
from zactor.scheduling.policy_arrays import TIE_EPS, NodeArrays
from zactor.scheduling.resources import CPU, RESOURCE_UNIT, ResourceSet

DEFAULT_BANDWIDTH = 1e9         # bytes/s a node pulls remote objects at, unless its row says
DEFAULT_TASK_S = 0.01           # a queued task's assumed duration, unless its row says
# reason codes that start every PLACE reason (``code: detail``); see zactor/cluster/messages.py
PLACED, INFEASIBLE, FAILED = "placed", "infeasible", "failed"
# fewer fitting nodes than this: the Python loop costs no more than numpy's per-call overhead
# (numpy is 1.2-1.6x faster at 100 nodes on the benchmark VM, 7x at 1,000)
FAST_MIN_NODES = 32


def node_key(node_id) -> str:
    """A total order over node ids whatever their type (bytes, str): for deterministic ties."""
    if isinstance(node_id, (bytes, bytearray)):
        return bytes(node_id).hex()
    return str(node_id)


@dataclass
class NodeView:
    """What the scheduler believes of one node (its row, minus what it placed since)."""

    node_id: object
    total: ResourceSet
    available: ResourceSet
    queue_len: int = 0
    alive: bool = True
    bandwidth: float = DEFAULT_BANDWIDTH
    avg_task_s: float = DEFAULT_TASK_S
    row: dict = field(default_factory=dict)
    key: str = ""
    par: int = 1

    def __post_init__(self):
        self.key = node_key(self.node_id)
        self.par = max(1, self.total.units(CPU) // RESOURCE_UNIT)

    @classmethod
    def from_row(cls, row: dict) -> "NodeView":
        """A view of a ``nodes`` table row; raises ValueError/TypeError on a malformed one."""
        total = ResourceSet(row.get("resources_total") or {})
        avail = row.get("resources_available")
        return cls(node_id=row["node_id"], total=total,
                   available=total if avail is None else ResourceSet(avail),
                   queue_len=max(0, int(row.get("queue_len") or 0)),
                   alive=str(row.get("state", "alive")).lower() == "alive",
                   bandwidth=max(1.0, float(row.get("bandwidth") or DEFAULT_BANDWIDTH)),
                   avg_task_s=max(0.0, float(row.get("avg_task_s") or DEFAULT_TASK_S)),
                   row=row)

    def utilisation(self, demand: ResourceSet) -> float:
        """The largest used fraction among the resources the task asks for (0 = idle)."""
        worst = 0.0
        for name in demand.names() or self.total.names():
            tot = self.total.units(name)
            if tot > 0:
                worst = max(worst, (tot - self.available.units(name)) / tot)
        return worst


@dataclass
class Decision:
    task_id: object
    node_id: object | None
    reason: str

    def wire(self) -> list:
        return [self.task_id, self.node_id, self.reason]


def parse_strategy(strategy):
    """The SPILL wire strategy -> (kind, args); raises ValueError on anything else."""
    if strategy is None or strategy == "DEFAULT":
        return "DEFAULT", ()
    if strategy == "SPREAD":
        return "SPREAD", ()
    if isinstance(strategy, (list, tuple)) and len(strategy) == 3:
        if strategy[0] == "node":
            return "node", (strategy[1], bool(strategy[2]))
        if strategy[0] == "pg" and isinstance(strategy[2], int) and strategy[2] >= -1:
            return "pg", (strategy[1], strategy[2])
    raise ValueError(f"unknown scheduling strategy {strategy!r}")


def _fits(items, units: dict) -> bool:
    # the hot loop reads ResourceSet's unit dicts directly: a method call and a generator per
    # (task, node) pair cost more than the whole comparison
    for name, amount in items:
        if units.get(name, 0) < amount:
            return False
    return True


def _dep_bytes(deps):
    """(bytes of all inputs, {node_id: bytes of them it holds})."""
    total, local = 0, {}
    for dep in deps or ():
        size = max(0, int(dep[1] or 0))
        total += size
        for holder in set(dep[2] or ()):
            local[holder] = local.get(holder, 0) + size
    return total, local


def _wait(view: NodeView, items, total: int, local: dict) -> float:
    wait = view.queue_len * view.avg_task_s / view.par
    if not _fits(items, view.available._units):
        wait += view.avg_task_s  # it waits at least for one running task to end
    if total:
        wait += (total - local.get(view.node_id, 0)) / max(1.0, view.bandwidth)
    return wait


class GlobalPolicy:
    """Node views, placement-group bundle locations, and the placement decisions."""

    def __init__(self, task_s: float = DEFAULT_TASK_S, bandwidth: float = DEFAULT_BANDWIDTH):
        self.default_task_s = task_s
        self.default_bandwidth = bandwidth
        self.nodes: dict = {}          # node_id -> NodeView
        self.pgs: dict = {}            # pg_id -> {"bundles": [ResourceSet], "nodes": [...]}
        self._alive = None             # sorted alive node ids; rebuilt when membership changes
        self._alive_gen = 0            # bumped whenever _alive or any node's totals change
        self._fit_cache: dict = {}     # demand -> (fitting node ids, their rows), _alive_gen
        self.arrays = NodeArrays()     # column copies of the alive views (policy_arrays.py)
        self.fast = True               # score with the arrays (False: the Python reference)
        self._fit_cache_gen = -1
        self._spread_clock = 0
        self._last_spread: dict = {}   # node_id -> clock of its last SPREAD pick

    # ---- views ------------------------------------------------------------------------------
    def update_node(self, row: dict) -> NodeView:
        view = NodeView.from_row(row)
        if "bandwidth" not in row:
            view.bandwidth = self.default_bandwidth
        if "avg_task_s" not in row:
            view.avg_task_s = self.default_task_s
        old = self.nodes.get(view.node_id)
        if old is None or old.alive != view.alive:
            self._alive = None
            self._alive_gen += 1
        elif old.total != view.total:
            self._alive_gen += 1
        self.nodes[view.node_id] = view
        self.arrays.dirty.add(view.node_id)
        return view

    def remove_node(self, node_id) -> None:
        self.nodes.pop(node_id, None)
        self._last_spread.pop(node_id, None)
        self._alive = None
        self._alive_gen += 1

    def mark_dead(self, node_id) -> None:
        if node_id in self.nodes:
            self.nodes[node_id].alive = False
            self._alive = None
            self._alive_gen += 1

    def alive_nodes(self) -> list:
        if self._alive is None:
            self._alive = [v.node_id for v in sorted(
                (v for v in self.nodes.values() if v.alive), key=lambda v: v.key)]
        nodes = self.nodes
        return [nodes[n] for n in self._alive]

    def set_pg(self, pg_id, bundles, nodes) -> None:
        """Record where a placement group's bundles are (None: not placed)."""
        self.pgs[pg_id] = {"bundles": [b if isinstance(b, ResourceSet) else ResourceSet(b)
                                       for b in bundles], "nodes": list(nodes)}

    def drop_pg(self, pg_id) -> None:
        self.pgs.pop(pg_id, None)

    def reserve(self, node_id, demand: ResourceSet) -> None:
        """Take ``demand`` out of a node's view until its next row (a task or a bundle)."""
        view = self.nodes.get(node_id)
        if view is not None:
            view.available = view.available - demand
            self.arrays.dirty.add(node_id)

    def unreserve(self, node_id, demand: ResourceSet) -> None:
        view = self.nodes.get(node_id)
        if view is not None:
            view.available = view.available + demand
            self.arrays.dirty.add(node_id)

    # ---- estimates --------------------------------------------------------------------------
    def estimate_s(self, view: NodeView, demand: ResourceSet, deps) -> float:
        """Estimated seconds before the task could start on ``view``'s node."""
        total, local = _dep_bytes(deps)
        return _wait(view, list(demand._units.items()), total, local)

    def _best(self, candidates, demand, deps):
        """The candidate with the lowest estimate; ties (within TIE_EPS of the lowest): least
        utilised, then smallest id. The Python reference of ``NodeArrays.best``."""
        items = list(demand._units.items())
        total, local = _dep_bytes(deps)
        scored = []
        for v in candidates:  # _wait inlined: this loop is the policy's whole cost
            w = v.queue_len * v.avg_task_s / v.par
            avail = v.available._units
            for name, amount in items:
                if avail.get(name, 0) < amount:
                    w += v.avg_task_s
                    break
            if total:
                w += (total - local.get(v.node_id, 0)) / v.bandwidth
            scored.append((w, v))
        low = min(w for w, _ in scored)
        ties = [v for w, v in scored if w <= low + TIE_EPS]
        if len(ties) == 1:
            return ties[0]
        return min(ties, key=lambda v: (v.utilisation(demand), v.key))

    def _best_fitting(self, demand: ResourceSet, deps):
        """``_best`` over the nodes whose totals fit, scored over the arrays when many fit."""
        ids, rows = self._fitting(demand)
        if not ids:
            return None
        if not self._use_arrays(ids):
            return self._best([self.nodes[n] for n in ids], demand, deps)
        arrays = self._synced_arrays()
        total, local = _dep_bytes(deps)
        row = arrays.best(rows, list(demand._units.items()), total, local,
                          list(demand.names()) or list(arrays.total))
        return self.nodes[arrays.ids[row]]

    def _synced_arrays(self) -> NodeArrays:
        arrays = self.arrays
        if arrays.gen != self._alive_gen or not arrays.sync(self.nodes):
            arrays.rebuild(self.alive_nodes(), self._alive_gen, self._last_spread)
        return arrays

    def _use_arrays(self, ids) -> bool:
        return self.fast and len(ids) >= FAST_MIN_NODES

    def _fitting(self, demand: ResourceSet):
        """(ids of the alive nodes whose totals hold ``demand``, their rows in the alive order),
        cached per demand until membership or a node's totals change (totals are nearly
        static and a burst repeats few demands)."""
        if self._fit_cache_gen != self._alive_gen or len(self._fit_cache) > 4096:
            self._fit_cache = {}
            self._fit_cache_gen = self._alive_gen
        hit = self._fit_cache.get(demand)
        if hit is None:
            alive = self.alive_nodes()
            items = list(demand._units.items())
            rows = [i for i, v in enumerate(alive) if _fits(items, v.total._units)]
            hit = self._fit_cache[demand] = ([alive[i].node_id for i in rows],
                                             np.array(rows, dtype=np.intp))
        return hit

    def _commit(self, view: NodeView, demand: ResourceSet) -> None:
        self.arrays.dirty.add(view.node_id)
        if demand.fits_in(view.available):
            view.available = view.available - demand
        else:
            view.queue_len += 1

    # ---- decisions --------------------------------------------------------------------------
    def decide(self, task: dict) -> Decision:
        """Where one spilled task (a SPILL ``tasks`` entry) should run.

        Raises ValueError/TypeError for a malformed entry (the daemon answers ERROR)."""
        task_id = task["task_id"]
        demand = ResourceSet(task.get("resources") or {})
        deps = task.get("deps") or []
        for dep in deps:
            if not isinstance(dep, (list, tuple)) or len(dep) != 3:
                raise ValueError(f"dep {dep!r} is not [oid, size, [node_id...]]")
        kind, args = parse_strategy(task.get("strategy"))
        if kind == "pg":
            node, reason = self._decide_pg(demand, deps, *args)
        elif kind == "node":
            node, reason = self._decide_affinity(demand, deps, *args)
        else:
            if not self._fitting(demand)[0]:
                return Decision(task_id, None, f"{INFEASIBLE}: no alive node has {demand}")
            if kind == "SPREAD":
                view = self._spread_pick(demand)
                reason = f"{PLACED}: spread"
            else:
                view = self._best_fitting(demand, deps)
                reason = f"{PLACED}: est {self.estimate_s(view, demand, deps):.4f} s"
            node = view.node_id
        if node is not None and kind != "pg":
            # a bundle's resources were taken out of the node's pool when it was reserved:
            # a task inside it must not be charged to the pool a second time
            self._commit(self.nodes[node], demand)
        return Decision(task_id, node, reason)

    def _spread_pick(self, demand) -> NodeView:
        # prefer nodes with room now; among them the one picked least recently (round robin)
        ids, rows = self._fitting(demand)
        if self._use_arrays(ids):
            arrays = self._synced_arrays()
            view = self.nodes[arrays.ids[arrays.spread_pick(rows, list(demand._units.items()))]]
        else:
            fitting = [self.nodes[n] for n in ids]
            free = [v for v in fitting if demand.fits_in(v.available)] or fitting
            view = min(free, key=lambda v: (self._last_spread.get(v.node_id, -1), v.key))
        self._spread_clock += 1
        self._last_spread[view.node_id] = self._spread_clock
        i = self.arrays.index.get(view.node_id)
        if i is not None and self.arrays.gen == self._alive_gen:
            self.arrays.last[i] = self._spread_clock
        return view

    def resolve(self, node_id):
        """The known node id a strategy names: drivers send hex strings (Ray's public form),
        node rows may use raw bytes; either names the same node."""
        if node_id in self.nodes:
            return node_id
        if isinstance(node_id, str):
            try:
                alt = bytes.fromhex(node_id)
            except ValueError:
                return node_id
        elif isinstance(node_id, (bytes, bytearray)):
            alt = bytes(node_id).hex()
        else:
            return node_id
        return alt if alt in self.nodes else node_id

    def _decide_affinity(self, demand, deps, node_id, soft):
        node_id = self.resolve(node_id)
        view = self.nodes.get(node_id)
        ok = view is not None and view.alive and demand.fits_in(view.total)
        if ok and (not soft or demand.fits_in(view.available)):
            return node_id, f"{PLACED}: node affinity"
        if not soft:
            why = (UNKNOWN_NODE if view is None else "node is dead" if not view.alive
                   else f"node cannot hold {demand}")
            return None, f"{FAILED}: hard node affinity to {node_key(node_id)}: {why}"
        ids, rows = self._fitting(demand)
        if not ids:
            return None, f"{INFEASIBLE}: no alive node has {demand}"
        if self._use_arrays(ids):
            all_busy = bool(self._synced_arrays().busy(rows, list(demand._units.items())).all())
        else:
            all_busy = not any(demand.fits_in(self.nodes[n].available) for n in ids)
        if ok and all_busy:
            return node_id, f"{PLACED}: node affinity (all busy)"
        best = self._best_fitting(demand, deps)
        why = ("unknown" if view is None else "dead" if not view.alive else
               f"too small for {demand}" if not ok else f"full ({view.available})")
        return best.node_id, f"{PLACED}: soft affinity fell back ({node_key(node_id)} {why})"

    def _decide_pg(self, demand, deps, pg_id, index):
        pg = self.pgs.get(pg_id)
        if pg is None:
            return None, f"{FAILED}: placement group {pg_id!r} does not exist (removed?)"
        indices = range(len(pg["bundles"])) if index == -1 else [index]
        if index >= len(pg["bundles"]):
            return None, f"{FAILED}: bundle index {index} out of range"
        fits = [i for i in indices if demand.fits_in(pg["bundles"][i])]
        if not fits:
            return None, f"{FAILED}: {demand} does not fit in bundle(s) {list(indices)}"
        placed = [pg["nodes"][i] for i in fits if pg["nodes"][i] in self.nodes
                  and self.nodes[pg["nodes"][i]].alive]
        if not placed:
            return None, f"{INFEASIBLE}: placement group bundle not placed yet"
        views = {n: self.nodes[n] for n in placed}
        best = self._best(list(views.values()), demand, deps)
        return best.node_id, f"{PLACED}: placement group bundle"

    def place_bundles(self, bundles, strategy: str, fixed=None):
        """Nodes for a placement group's bundles (see pg_placement.place_bundles)."""
        from zactor.scheduling.pg_placement import place_bundles
        return place_bundles(self.alive_nodes(), bundles, strategy, fixed)
