"""Placement groups (``ray.util.placement_group``): reserve bundles of resources across nodes,
then schedule tasks and actors into them with ``PlacementGroupSchedulingStrategy``.

Runs in drivers and workers. The global scheduler (``zactor scheduler``) places the bundles
and keeps the group's row (kv ``pg:<id>``); this module validates arguments and talks to it
through one hook the runtime provides:

    zactor.api._cluster_request(mtype, body: dict, timeout_s: float) -> value

It sends one message of type ``mtype`` (CREATE_PG, REMOVE_PG, GET_PG of
zactor/cluster/messages.py) to the cluster's global scheduler (its address is
kv[b"cluster:scheduler"]) and returns the ``value`` of the OK reply; an ERROR reply raises
``ValueError(message)`` when its code is "malformed", ``RuntimeError`` otherwise, and no reply
within ``timeout_s`` raises ``zactor.exceptions.GetTimeoutError`` (re-sending is safe: every
one of these messages is idempotent). Optionally, ``zactor.api._current_placement_group()``
returns the wire strategy's (pg id bytes, bundle specs) of the running task, or None; without
it ``get_current_placement_group()`` returns None (as in a driver).
"""

from __future__ import annotations

import math
import time

from zactor.exceptions import GetTimeoutError
from zactor.ids import PlacementGroupID
from zactor.scheduling.resources import RESOURCE_UNIT

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
REQUEST_TIMEOUT_S = 30.0
_POLL_MAX_S = 0.2


def _request(mtype, body: dict, timeout_s: float = REQUEST_TIMEOUT_S):
    import zactor.api as api

    hook = getattr(api, "_cluster_request", None)
    if hook is None:
        raise RuntimeError("placement groups need a cluster with a global scheduler "
                           "(zactor.api._cluster_request is not available in this runtime)")
    return hook(mtype, body, timeout_s)


def validate_bundles(bundles) -> list:
    """Copies of the bundles as {name: float}; raises ValueError/TypeError naming the problem."""
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError("bundles must be a non-empty list of {resource: amount} dicts")
    out = []
    for i, bundle in enumerate(bundles):
        if not isinstance(bundle, dict):
            raise TypeError(f"bundle {i} must be a dict, got {type(bundle).__name__}")
        if not bundle:
            raise ValueError(f"bundle {i} is empty: a bundle reserves at least one resource")
        clean = {}
        for name, amount in bundle.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"bundle {i}: resource names must be non-empty strings, "
                                f"got {name!r}")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)):
                raise TypeError(f"bundle {i}: {name!r} must be a number, got {amount!r}")
            if not math.isfinite(amount) or amount <= 0:
                raise ValueError(f"bundle {i}: {name!r} must be > 0, got {amount}")
            if round(amount * RESOURCE_UNIT) == 0:
                raise ValueError(f"bundle {i}: {name!r}={amount} is below the smallest unit "
                                 f"1/{RESOURCE_UNIT}")
            clean[name] = float(amount) if isinstance(amount, float) else amount
        out.append(clean)
    return out


def _check_strategy(strategy) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"placement group strategy must be one of {', '.join(STRATEGIES)}, "
                         f"got {strategy!r}")
    return strategy


class PlacementGroup:
    """A handle to a placement group: ``id``, ``bundle_specs``, ``ready()``, ``wait()``."""

    def __init__(self, id: PlacementGroupID, bundle_specs: list, strategy: str = "PACK",
                 name: str = ""):
        self.id = id
        self.bundle_specs = [dict(b) for b in bundle_specs]
        self.strategy = strategy
        self.name = name

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def _row(self, timeout_s: float):
        from zactor.cluster.messages import GET_PG
        return _request(GET_PG, {"pg_id": self.id.binary()}, timeout_s)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """True once every bundle is reserved; False if ``timeout_seconds`` pass first (or the
        group was removed)."""
        deadline = time.monotonic() + max(0.0, timeout_seconds)
        delay = 0.005
        while True:
            left = deadline - time.monotonic()
            try:
                row = self._row(max(0.1, min(left, REQUEST_TIMEOUT_S)))
            except GetTimeoutError:
                row = None
            if row is not None and row.get("state") == "created":
                return True
            if row is not None and row.get("state") == "removed":
                return False
            if time.monotonic() >= deadline:
                return False
            # polling the scheduler for a state change with back-off (it has no push to drivers)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, _POLL_MAX_S)

    def ready(self):
        """An ObjectRef that resolves (to this group) once its bundles are reserved, as in
        Ray: a task that needs no CPU, scheduled into the group, so ``zactor.get``,
        ``zactor.wait`` and ``await`` all work on it."""
        from zactor.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return _bundle_probe().options(scheduling_strategy=PlacementGroupSchedulingStrategy(
            self, placement_group_bundle_index=-1)).remote(self)

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"PlacementGroup(id={self.id.hex()}, bundles={self.bundle_specs}, " \
               f"strategy={self.strategy!r})"


_probe = None


def _bundle_probe():
    global _probe
    if _probe is None:
        from zactor.api import remote

        def placement_group_ready(pg):
            return pg

        _probe = remote(num_cpus=0, max_retries=-1)(placement_group_ready)
    return _probe


class PlacementGroupReady:
    """What ``PlacementGroup.ready()`` returns (Ray returns an ObjectRef; zactor's object refs
    belong to the runtime, so this is a ref-like handle the runtime's ``get`` can accept by
    calling ``get``)."""

    def __init__(self, pg: PlacementGroup):
        self.placement_group = pg

    def wait(self, timeout_seconds: float = 30) -> bool:
        return self.placement_group.wait(timeout_seconds)

    def get(self, timeout: float | None = None) -> PlacementGroup:
        if not self.placement_group.wait(1e9 if timeout is None else timeout):
            raise GetTimeoutError(f"placement group {self.placement_group.id.hex()} was not "
                                  f"ready within {timeout} s")
        return self.placement_group


def placement_group(bundles, strategy: str = "PACK", name: str = "",
                    lifetime: str | None = None) -> PlacementGroup:
    """Ask the cluster to reserve ``bundles``; returns at once (``ready()``/``wait()`` tell when
    they are reserved). ``lifetime="detached"`` is accepted: groups outlive their creator
    already, until ``remove_placement_group``."""
    specs = validate_bundles(bundles)
    _check_strategy(strategy)
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
    pg = PlacementGroup(PlacementGroupID.from_random(), specs, strategy, name)
    from zactor.cluster.messages import CREATE_PG
    _request(CREATE_PG, create_pg_body(pg))
    return pg


def create_pg_body(pg: PlacementGroup) -> dict:
    """The CREATE_PG body for ``pg``."""
    return {"pg_id": pg.id.binary(), "bundles": pg.bundle_specs, "strategy": pg.strategy,
            "name": pg.name}


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Release the group's bundles; its tasks' later placements fail."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"expected a PlacementGroup, got {type(placement_group).__name__}")
    from zactor.cluster.messages import REMOVE_PG
    _request(REMOVE_PG, {"pg_id": placement_group.id.binary()})


def get_current_placement_group() -> PlacementGroup | None:
    """The placement group of the running task or actor, or None (always None in a driver)."""
    import zactor.api as api

    hook = getattr(api, "_current_placement_group", None)
    current = hook() if hook is not None else None
    if current is None:
        return None
    pg_id, specs = current
    return PlacementGroup(PlacementGroupID(pg_id), specs)


def _table_entry(row: dict) -> dict:
    nodes = row.get("nodes") or []
    return {"placement_group_id": bytes(row["pg_id"]).hex(), "name": row.get("name", ""),
            "strategy": row.get("strategy"), "state": str(row.get("state", "")).upper(),
            "bundles": dict(enumerate(row.get("bundles") or [])),
            "bundles_to_node_id": {i: n for i, n in enumerate(nodes) if n is not None},
            "stats": {"reason": row.get("reason", "")}}


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict:
    """Ray's shape: one group's entry, or {pg id hex: entry} for every group."""
    from zactor.cluster.messages import GET_PG
    if placement_group is not None:
        row = _request(GET_PG, {"pg_id": placement_group.id.binary()})
        return {} if row is None else _table_entry(row)
    rows = _request(GET_PG, {"pg_id": None}) or {}
    return {key: _table_entry(row) for key, row in rows.items()}


__all__ = ["PlacementGroup", "placement_group", "remove_placement_group",
           "get_current_placement_group", "placement_group_table", "validate_bundles"]
