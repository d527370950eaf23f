"""Where a spilled task goes when a node decides by itself (no scheduler daemon registered).

The global scheduler's own policy (zactor/scheduling/global_policy.py), run over the node rows
this node watches: the node with the least estimated waiting time among those that fit.
"""

from __future__ import annotations

from zactor.scheduling.global_policy import FAILED, GlobalPolicy


def decide(rows: list, task: dict) -> tuple:
    """(node id or None, reason) for one SPILL entry ``task`` over the node ``rows``."""
    policy = GlobalPolicy()
    for row in rows:
        try:
            policy.update_node(row)
        except (TypeError, ValueError, KeyError):
            continue  # a malformed row is skipped, as the daemon does
    decision = policy.decide(task)
    return decision.node_id, decision.reason


def is_failure(reason: str) -> bool:
    """A decision that can never succeed (hard affinity to a dead node, a removed group):
    the task fails instead of waiting."""
    return bool(reason) and reason.startswith(FAILED)
