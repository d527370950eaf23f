"""Resource quantities and a node's resource accounting (CPU, GPU, memory, custom).

Quantities are kept as integers in units of 1/10,000 (``RESOURCE_UNIT``), as Ray does, so that
fractional demands (``num_gpus=0.25``) add and subtract without floating-point drift: four
quarter-GPU tasks release exactly one GPU. ``ResourceSet`` is an immutable value; ``NodeResources``
is the mutable ledger of one node: totals, what is available, and which GPU ids are handed out
(for ``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

RESOURCE_UNIT = 10_000
CPU = "CPU"
GPU = "GPU"
MEMORY = "memory"


def _to_units(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"resource {name!r} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"resource {name!r} must be a finite number >= 0, got {value}")
    units = round(value * RESOURCE_UNIT)
    if units == 0 and value > 0:
        raise ValueError(f"resource {name!r}={value} is below the smallest unit "
                         f"1/{RESOURCE_UNIT}")
    return units


class ResourceSet:
    """An immutable map of resource name -> quantity (zero quantities are dropped)."""

    __slots__ = ("_units",)

    def __init__(self, amounts: Mapping[str, float] | None = None, *, _units=None):
        if _units is not None:
            self._units = {k: v for k, v in _units.items() if v != 0}
            return
        units = {}
        for name, value in (amounts or {}).items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"resource names must be non-empty strings, got {name!r}")
            u = _to_units(name, value)
            if u:
                units[name] = u
        self._units = units

    @classmethod
    def of(cls, num_cpus=0, num_gpus=0, memory=0, resources: Mapping | None = None):
        """The demand of a task or actor, from Ray-style options."""
        amounts = dict(resources or {})
        for reserved in (CPU, GPU):
            if reserved in amounts:
                raise ValueError(f"use num_cpus/num_gpus instead of resources={{{reserved!r}: "
                                 f"...}}")
        amounts[CPU] = num_cpus
        amounts[GPU] = num_gpus
        amounts[MEMORY] = memory
        return cls(amounts)

    def units(self, name: str) -> int:
        return self._units.get(name, 0)

    def get(self, name: str) -> float:
        return self._units.get(name, 0) / RESOURCE_UNIT

    def names(self) -> Iterable[str]:
        return self._units.keys()

    def is_empty(self) -> bool:
        return not self._units

    def fits_in(self, other: ResourceSet) -> bool:
        """True when every quantity here is <= the same quantity in ``other``."""
        return all(other._units.get(k, 0) >= v for k, v in self._units.items())

    def __add__(self, other: ResourceSet) -> ResourceSet:
        units = dict(self._units)
        for k, v in other._units.items():
            units[k] = units.get(k, 0) + v
        return ResourceSet(_units=units)

    def __sub__(self, other: ResourceSet) -> ResourceSet:
        units = dict(self._units)
        for k, v in other._units.items():
            units[k] = units.get(k, 0) - v
        return ResourceSet(_units=units)

    def only(self, names: Iterable[str]) -> ResourceSet:
        keep = set(names)
        return ResourceSet(_units={k: v for k, v in self._units.items() if k in keep})

    def to_dict(self) -> dict:
        return {k: v / RESOURCE_UNIT for k, v in sorted(self._units.items())}

    def __eq__(self, other):
        return isinstance(other, ResourceSet) and other._units == self._units

    def __hash__(self):
        return hash(frozenset(self._units.items()))

    def __repr__(self):
        return f"ResourceSet({self.to_dict()})"


class NodeResources:
    """The resource ledger of one node.

    Invariant: for every resource, 0 <= available <= total, except while workers blocked in
    ``get`` re-acquire the CPU they lent out (``acquire(..., allow_overcommit=True)``), when
    available may go below zero until tasks finish; it never exceeds total.
    GPU ids: whole-GPU demands get distinct ids; a fractional demand shares one id that still
    has that fraction free.
    """

    def __init__(self, total: ResourceSet):
        self.total = total
        self.available = total
        n_gpus = total.units(GPU) // RESOURCE_UNIT
        self._gpu_free_units = {i: RESOURCE_UNIT for i in range(n_gpus)}

    def can_ever_fit(self, demand: ResourceSet) -> bool:
        return demand.fits_in(self.total)

    def can_fit_now(self, demand: ResourceSet) -> bool:
        return demand.fits_in(self.available) and self._pick_gpus(demand) is not None

    def acquire(self, demand: ResourceSet, allow_overcommit=False) -> list[int]:
        """Take ``demand``; returns the GPU ids assigned. Raises ValueError when it does not fit
        (nothing is modified then)."""
        if not allow_overcommit and not self.can_fit_now(demand):
            raise ValueError(f"{demand} does not fit in available {self.available}")
        gpus = self._pick_gpus(demand) or []
        need = demand.units(GPU)
        for gid in gpus:
            take = min(need, self._gpu_free_units[gid]) if need < RESOURCE_UNIT else RESOURCE_UNIT
            self._gpu_free_units[gid] -= take
            need -= take
        self.available = self.available - demand
        return gpus

    def release(self, demand: ResourceSet, gpu_ids: list[int] = ()) -> None:
        need = demand.units(GPU)
        for gid in gpu_ids:
            give = min(need, RESOURCE_UNIT - self._gpu_free_units[gid])
            self._gpu_free_units[gid] += give
            need -= give
        self.available = self.available + demand
        for name in self.available.names():
            if self.available.units(name) > self.total.units(name):
                raise AssertionError(f"released more {name} than the node has: "
                                     f"{self.available} > {self.total}")

    def _pick_gpus(self, demand: ResourceSet):
        need = demand.units(GPU)
        if need == 0:
            return []
        if need < RESOURCE_UNIT:  # fractional: one GPU with enough room
            for gid, free in sorted(self._gpu_free_units.items()):
                if free >= need:
                    return [gid]
            return None
        if need % RESOURCE_UNIT:
            return None  # Ray also refuses e.g. num_gpus=1.5
        whole = [gid for gid, free in sorted(self._gpu_free_units.items())
                 if free == RESOURCE_UNIT]
        count = need // RESOURCE_UNIT
        return whole[:count] if len(whole) >= count else None
