"""Where a spilled task goes when a node decides by itself (no scheduler daemon registered).

The same rule as the global scheduler's (zactor/scheduling/global_policy.py, which it uses
when installed): among the alive nodes whose total resources fit the task, the one with the
least estimated waiting time = queue time + time to fetch the inputs it does not hold.
"""

from __future__ import annotations

ASSUMED_TASK_S = 0.01          # queue time per queued task, before anything is measured
ASSUMED_BANDWIDTH_BPS = 1e9    # bytes per second between nodes


def _fits(total: dict, demand: dict) -> bool:
    return all(total.get(name, 0) >= amount for name, amount in demand.items() if amount)


def choose_node(rows: list, demand: dict, deps: list, strategy, here: bytes):
    """The node id for a task (``rows``: node rows, ``deps``: [[oid, size, [node ids]]]),
    or None when no alive node can ever fit it."""
    alive = [r for r in rows if r.get("state") == "alive"
             and _fits(r.get("resources_total", {}), demand)]
    if isinstance(strategy, (list, tuple)) and strategy and strategy[0] == "node":
        target = strategy[1]
        if any(r["node_id"] == target for r in alive):
            return target
        if not strategy[2]:  # hard affinity to a node that is gone or too small
            return None
    if not alive:
        return None
    if strategy == "SPREAD":
        return min(alive, key=lambda r: (r.get("queue_len", 0), r["node_id"]))["node_id"]

    def waiting_time(row) -> float:
        missing = sum(size for _oid, size, holders in deps if row["node_id"] not in holders)
        queue = row.get("queue_len", 0)
        free = all(row.get("resources_available", {}).get(k, 0) >= v
                   for k, v in demand.items() if v)
        return (0 if free else queue + 1) * ASSUMED_TASK_S + missing / ASSUMED_BANDWIDTH_BPS

    return min(alive, key=lambda r: (waiting_time(r), r["node_id"] != here))["node_id"]
