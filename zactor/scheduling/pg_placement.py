"""Placement-group bundle placement: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD (sans-IO).

Used by the global scheduler (through ``GlobalPolicy.place_bundles``). Input: the alive node
views (their ``available`` already excludes bundles reserved earlier, by the node's own
accounting or the scheduler's optimistic one), the bundles, the strategy, and optionally the
bundles that keep their node (``fixed``: re-placing the bundles of a dead node). Output: a node
id per bundle, or None when the bundles cannot be reserved now.

Exactness: STRICT_PACK and STRICT_SPREAD are exact (one node holding the sum; a bipartite
matching, Kuhn's augmenting paths). PACK and SPREAD are a preference-ordered depth-first
search whose first path is the greedy answer; it backtracks, so it fails only when no
assignment exists, unless MAX_STEPS is reached first (bin packing is NP-hard; a group that
large is then reported as not fitting now and retried when nodes change).
"""

from __future__ import annotations

from zactor.scheduling.resources import ResourceSet

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
MAX_STEPS = 20_000


def _util(view, free: ResourceSet) -> float:
    worst = 0.0
    for name in view.total.names():
        tot = view.total.units(name)
        if tot > 0:
            worst = max(worst, (tot - free.units(name)) / tot)
    return worst


def _size(bundle: ResourceSet) -> tuple:
    return tuple(sorted(((bundle.units(n), n) for n in bundle.names()), reverse=True))


def place_bundles(views, bundles, strategy: str, fixed=None):
    """A node id per bundle (fixed ones kept), or None; deterministic for the same input."""
    if strategy not in STRATEGIES:
        raise ValueError(f"placement strategy must be one of {STRATEGIES}, got {strategy!r}")
    bundles = [b if isinstance(b, ResourceSet) else ResourceSet(b) for b in bundles]
    fixed = dict(fixed or {})
    views = sorted((v for v in views if v.alive), key=lambda v: v.key)
    by_id = {v.node_id: v for v in views}
    free = {v.node_id: v.available for v in views}
    todo = [i for i in range(len(bundles)) if i not in fixed]
    out = [fixed.get(i) for i in range(len(bundles))]
    if not todo:
        return out
    if strategy == "STRICT_PACK" or strategy == "PACK":
        targets = set(fixed.values())
        total = ResourceSet()
        for i in todo:
            total = total + bundles[i]
        if targets:
            cands = [by_id[t] for t in targets if t in by_id] if len(targets) == 1 else []
        else:
            cands = views
        cands = [v for v in cands if total.fits_in(free[v.node_id])]
        if cands:
            best = min(cands, key=lambda v: (_util(v, free[v.node_id]), v.key))
            for i in todo:
                out[i] = best.node_id
            return out
        if strategy == "STRICT_PACK":
            return None
    used = {}
    for n in fixed.values():
        used[n] = used.get(n, 0) + 1
    if strategy in ("STRICT_SPREAD", "SPREAD"):
        match = _match(views, bundles, todo, free, set(used))
        if match is not None:
            for i, n in match.items():
                out[i] = n
            return out
        if strategy == "STRICT_SPREAD":
            return None
    return _search(views, bundles, todo, free, used, out, pack=strategy == "PACK")


def _match(views, bundles, todo, free, taken):
    """Each bundle in ``todo`` on a distinct node outside ``taken``: a maximum bipartite
    matching by augmenting paths (exact); nodes tried least utilised first."""
    order = sorted((v for v in views if v.node_id not in taken),
                   key=lambda v: (_util(v, free[v.node_id]), v.key))
    by_bundle: dict = {}  # identical bundles (the common case) share one scan of the nodes
    fits = {}
    for i in todo:
        b = bundles[i]
        if b not in by_bundle:
            by_bundle[b] = [v.node_id for v in order if b.fits_in(free[v.node_id])]
        fits[i] = by_bundle[b]
    owner: dict = {}  # node_id -> bundle index

    def augment(i, seen) -> bool:
        for n in fits[i]:
            if n in seen:
                continue
            seen.add(n)
            if n not in owner or augment(owner[n], seen):
                owner[n] = i
                return True
        return False

    for i in sorted(todo, key=lambda i: (len(fits[i]), i)):
        if not augment(i, set()):
            return None
    return {i: n for n, i in owner.items()}


def _search(views, bundles, todo, free, used, out, pack: bool):
    """Depth-first assignment, biggest bundles first; PACK prefers nodes the group already
    uses, SPREAD nodes it uses least."""
    free = dict(free)
    used = dict(used)
    order = sorted(todo, key=lambda i: (_size(bundles[i]), -i), reverse=True)
    steps = [0]

    def prefs(b):
        cands = [v for v in views if b.fits_in(free[v.node_id])]
        sign = -1 if pack else 1

        def key(v):
            return (sign * used.get(v.node_id, 0), _util(v, free[v.node_id]),
                    v.key)

        return sorted(cands, key=key)

    def dfs(k) -> bool:
        if k == len(order):
            return True
        i = order[k]
        b = bundles[i]
        tried = set()
        for v in prefs(b):
            steps[0] += 1
            if steps[0] > MAX_STEPS:
                return False
            state = (free[v.node_id], used.get(v.node_id, 0))
            if state in tried:
                continue  # an identical node state fails the same way: skip the symmetry
            tried.add(state)
            n = v.node_id
            free[n] = free[n] - b
            used[n] = used.get(n, 0) + 1
            out[i] = n
            if dfs(k + 1):
                return True
            free[n] = free[n] + b
            used[n] -= 1
            out[i] = None
        return False

    return out if dfs(0) else None
