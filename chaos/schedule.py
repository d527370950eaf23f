"""The fault schedule: a pure function of (seed, duration, kinds, nodes), so a run can be
repeated exactly and printed before it starts.

Every requested kind appears at least once (a shuffled pass over the kinds comes first),
then more faults are drawn at random until the duration is covered at about one fault per
``spacing_s``. Times are spread over the middle of the run: a warm-up at the start lets the
workloads complete rounds before anything breaks, and a quiet tail leaves time to see
recovery after the last fault.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass


@dataclass
class Fault:
    at_s: float          # seconds after the workloads start
    kind: str
    node: int            # index of the targeted node (0 is the head)
    hold_s: float = 0.0  # pause-node / partition / link-down: how long before undoing it
    pick: float = 0.0    # kill-worker / kill-gcs: which of the candidates (by pid order)

    def describe(self) -> str:
        hold = f" for {self.hold_s:.1f}s" if self.hold_s else ""
        return f"t={self.at_s:6.1f}s  {self.kind:<15} node {self.node}{hold}"

    def as_dict(self) -> dict:
        return asdict(self)


# faults aimed at the head's processes; the others target a non-head node
HEAD_FAULTS = {"kill-gcs", "kill-scheduler"}


def make_schedule(seed: int, duration_s: float, kinds, nodes: int, *,
                  spacing_s: float = 8.0, hold_s: float = 3.0) -> list:
    """The faults of a run, sorted by time. ``hold_s``: the typical pause/partition
    length (drawn between 0.5x and 1.5x of it)."""
    kinds = list(dict.fromkeys(kinds))
    if not kinds:
        return []
    rng = random.Random(seed)
    warmup = min(8.0, duration_s * 0.15)
    tail = min(10.0, duration_s * 0.2)
    window = max(1.0, duration_s - warmup - tail)
    count = max(len(kinds), int(window // spacing_s))
    order = kinds[:]
    rng.shuffle(order)
    order += [rng.choice(kinds) for _ in range(count - len(order))]
    slot = window / count
    faults = []
    for i, kind in enumerate(order):
        at = warmup + (i + rng.uniform(0.15, 0.85)) * slot
        if kind in HEAD_FAULTS or nodes < 2:
            node = 0
        elif kind == "kill-worker":
            node = rng.randrange(nodes)  # workers of any node, the head's included
        else:
            node = rng.randrange(1, nodes)  # never the head: the driver lives there
        hold = round(rng.uniform(0.5, 1.5) * hold_s, 1) if kind in (
            "pause-node", "partition", "link-down") else 0.0
        faults.append(Fault(round(at, 1), kind, node, hold, round(rng.random(), 3)))
    return faults
