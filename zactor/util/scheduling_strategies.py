"""Scheduling strategies for ``.options(scheduling_strategy=...)`` (``ray.util.scheduling_strategies``).

Runs in drivers and workers. Each strategy object validates its arguments when built and knows
its wire form, the ``strategy`` field of a SPILL entry (zactor/cluster/messages.py), through
``strategy_to_wire``; the node manager passes that form to the global scheduler unchanged.
"""

from __future__ import annotations

from zactor.ids import NodeID


def _node_id_wire(node_id):
    """Node ids are hex strings in the public API (as ``get_runtime_context().get_node_id()``
    returns them); a NodeID or raw bytes is accepted too and sent as hex."""
    if isinstance(node_id, NodeID):
        return node_id.hex()
    if isinstance(node_id, (bytes, bytearray)):
        return bytes(node_id).hex()
    if isinstance(node_id, str) and node_id:
        return node_id
    raise TypeError(f"node_id must be a hex string or NodeID, got {node_id!r}")


class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id``. ``soft=False``: there or fail (the task errors when the node
    is dead or unknown); ``soft=True``: prefer it, run elsewhere when it is gone or busy."""

    def __init__(self, node_id, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False):
        if not isinstance(soft, bool):
            raise TypeError(f"soft must be a bool, got {soft!r}")
        self.node_id = node_id
        self.soft = soft
        self._wire_node = _node_id_wire(node_id)
        self._spill_on_unavailable = bool(_spill_on_unavailable)
        self._fail_on_unavailable = bool(_fail_on_unavailable)

    def __repr__(self):
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"


class PlacementGroupSchedulingStrategy:
    """Run inside a placement group's bundle (``placement_group_bundle_index=-1``: any bundle
    with room). ``placement_group_capture_child_tasks``: tasks this one submits default to the
    same group (None: the driver's default, False)."""

    def __init__(self, placement_group, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: bool | None = None):
        from zactor.util.placement_group import PlacementGroup

        if not isinstance(placement_group, PlacementGroup):
            raise TypeError(f"placement_group must be a PlacementGroup, got "
                            f"{type(placement_group).__name__}")
        index = placement_group_bundle_index
        if isinstance(index, bool) or not isinstance(index, int) or index < -1:
            raise ValueError(f"placement_group_bundle_index must be -1 or a bundle index, "
                             f"got {index!r}")
        if index >= len(placement_group.bundle_specs):
            raise ValueError(f"placement_group_bundle_index {index} is out of range: the "
                             f"group has {len(placement_group.bundle_specs)} bundles")
        if placement_group_capture_child_tasks not in (None, True, False):
            raise TypeError("placement_group_capture_child_tasks must be a bool or None")
        self.placement_group = placement_group
        self.placement_group_bundle_index = index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def __repr__(self):
        return (f"PlacementGroupSchedulingStrategy({self.placement_group!r}, "
                f"placement_group_bundle_index={self.placement_group_bundle_index})")


def strategy_to_wire(strategy):
    """A ``scheduling_strategy`` option -> the SPILL ``strategy`` field:
    None / "DEFAULT" -> None, "SPREAD" -> "SPREAD", node affinity -> ["node", hex, soft],
    placement group -> ["pg", pg id bytes, bundle index]. Raises ValueError/TypeError."""
    if strategy is None or strategy == "DEFAULT":
        return None
    if strategy == "SPREAD":
        return "SPREAD"
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return ["node", strategy._wire_node, strategy.soft]
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        return ["pg", strategy.placement_group.id.binary(),
                strategy.placement_group_bundle_index]
    if isinstance(strategy, str):
        raise ValueError(f"scheduling_strategy must be 'DEFAULT', 'SPREAD' or a strategy "
                         f"object, got {strategy!r}")
    raise TypeError(f"unknown scheduling_strategy {strategy!r}")


__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy",
           "strategy_to_wire"]
