"""Placement-group bundles as node resources (Ray's scheme).

A bundle ``i`` of group ``pg`` reserved on a node turns its amounts into resources only the
group's tasks ask for: {"CPU": 2} becomes {"CPU_group_i_<pg>": 2, "CPU_group_<pg>": 2} plus a
marker "bundle_group_i_<pg>" / "bundle_group_<pg>" (1000 units), so that even a task or actor
that needs no CPU is held to the bundle. A task scheduled with
``PlacementGroupSchedulingStrategy(pg, bundle_index)`` asks for the renamed amounts
(``rewrite_demand``); index -1 (any bundle) asks for the group-wide names.
"""

from __future__ import annotations

from zactor.scheduling.resources import ResourceSet

MARKER = "bundle"
MARKER_AMOUNT = 1000.0
MARKER_DEMAND = 0.001


def _names(pg_id: bytes, index: int, name: str) -> tuple:
    tag = pg_id.hex()
    return f"{name}_group_{index}_{tag}", f"{name}_group_{tag}"


def reservation(pg_id: bytes, index: int, amounts: dict) -> tuple:
    """(removed, added) ResourceSets of reserving bundle ``index`` on a node."""
    removed = {name: amount for name, amount in amounts.items() if amount}
    added: dict = {}
    for name, amount in list(removed.items()) + [(MARKER, MARKER_AMOUNT)]:
        for renamed in _names(pg_id, index, name):
            added[renamed] = added.get(renamed, 0) + amount
    return ResourceSet(removed), ResourceSet(added)


def rewrite_demand(res: dict, pg_id: bytes, index: int) -> dict:
    """A task's demand inside bundle ``index`` (-1: any bundle of the group)."""
    out = {}
    for name, amount in list(res.items()) + [(MARKER, MARKER_DEMAND)]:
        if not amount:
            continue
        specific, group = _names(pg_id, index, name)
        out[group if index < 0 else specific] = amount
    return out
