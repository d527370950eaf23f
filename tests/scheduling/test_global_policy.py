"""The global scheduler's policy, sans-IO: task decisions and placement-group bundles."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zactor.scheduling import global_policy
from zactor.scheduling.global_policy import GlobalPolicy, NodeView, parse_strategy
from zactor.scheduling.pg_placement import place_bundles
from zactor.scheduling.resources import ResourceSet

MB = 1 << 20


def row(nid, cpus=4, avail=None, queue=0, state="alive", **extra):
    total = {"CPU": cpus, **extra.pop("res", {})}
    return {"node_id": nid, "incarnation": 1, "resources_total": total,
            "resources_available": avail if avail is not None else dict(total),
            "queue_len": queue, "state": state, **extra}


def policy(*rows):
    p = GlobalPolicy()
    for r in rows:
        p.update_node(r)
    return p


def task(tid=1, cpus=1, strategy=None, deps=(), **res):
    return {"task_id": tid, "resources": {"CPU": cpus, **res}, "strategy": strategy,
            "deps": [list(d) for d in deps], "origin": "a"}


def test_picks_the_shortest_queue_among_fitting_nodes():
    p = policy(row("a", queue=10), row("b", queue=2), row("c", queue=5))
    assert p.decide(task()).node_id == "b"


def test_only_nodes_whose_total_fits():
    p = policy(row("a", cpus=2), row("b", cpus=8, avail={"CPU": 0}, queue=50))
    assert p.decide(task(cpus=4)).node_id == "b"


def test_infeasible_is_none():
    p = policy(row("a", cpus=2), row("b", cpus=2, state="dead", res={"GPU": 1}))
    d = p.decide(task(GPU=1))
    assert d.node_id is None and d.reason.startswith("infeasible")


def test_locality_beats_a_short_queue():
    p = policy(row("a"), row("b", queue=3))
    d = p.decide(task(deps=[(b"o1", 100 * MB, ["b"])]))
    assert d.node_id == "b"


def test_small_inputs_do_not_outweigh_a_long_queue():
    p = policy(row("a"), row("b", queue=400))
    assert p.decide(task(deps=[(b"o1", 1000, ["b"])])).node_id == "a"


def test_per_node_bandwidth_and_duration_from_rows():
    # b holds the input but is slow to drain: 20 x 1 s / 4 cpus = 5 s > 100 MB / 1 GB/s
    p = policy(row("a"), row("b", queue=20, avg_task_s=1.0))
    assert p.decide(task(deps=[(b"o", 100 * MB, ["b"])])).node_id == "a"
    # a pulls at 10 MB/s: 10 s for the input, worse than b's 5 s
    p = policy(row("a", bandwidth=10e6), row("b", queue=20, avg_task_s=1.0))
    assert p.decide(task(deps=[(b"o", 100 * MB, ["b"])])).node_id == "b"


def test_optimistic_accounting_spreads_a_burst():
    p = policy(*(row(n, cpus=2) for n in "abc"))
    chosen = [p.decide(task(i)).node_id for i in range(6)]
    assert sorted(chosen) == sorted("aabbcc")
    # the next heartbeat replaces the view
    p.update_node(row("a", cpus=2))
    assert p.nodes["a"].available == ResourceSet({"CPU": 2})


def test_spread_round_robins_over_fitting_nodes():
    p = policy(row("a"), row("b"), row("c"), row("d", cpus=1))
    chosen = [p.decide(task(i, cpus=2, strategy="SPREAD")).node_id for i in range(6)]
    assert chosen == ["a", "b", "c", "a", "b", "c"]


def test_node_affinity_hard_and_soft():
    p = policy(row("a"), row("b", queue=100), row("c", state="dead"))
    assert p.decide(task(strategy=["node", "b", False])).node_id == "b"
    d = p.decide(task(strategy=["node", "c", False]))
    assert d.node_id is None and d.reason.startswith("failed") and "dead" in d.reason
    assert p.decide(task(strategy=["node", "zz", False])).reason.startswith("failed")
    # soft: the preferred node when it has room, else the policy's pick
    assert p.decide(task(strategy=["node", "b", True])).node_id == "b"
    assert p.decide(task(strategy=["node", "c", True])).node_id == "a"
    p.update_node(row("b", avail={"CPU": 0}))
    assert p.decide(task(strategy=["node", "b", True])).node_id == "a"


def test_placement_group_strategies():
    p = policy(row("a"), row("b"))
    p.set_pg(b"pg", [{"CPU": 1}, {"CPU": 2}], ["a", "b"])
    assert p.decide(task(cpus=2, strategy=["pg", b"pg", 1])).node_id == "b"
    assert p.decide(task(cpus=1, strategy=["pg", b"pg", 0])).node_id == "a"
    assert p.decide(task(cpus=2, strategy=["pg", b"pg", -1])).node_id == "b"
    assert p.decide(task(cpus=3, strategy=["pg", b"pg", -1])).reason.startswith("failed")
    assert p.decide(task(strategy=["pg", b"nope", 0])).reason.startswith("failed")
    assert p.decide(task(strategy=["pg", b"pg", 5])).reason.startswith("failed")
    p.set_pg(b"later", [{"CPU": 1}], [None])
    assert p.decide(task(strategy=["pg", b"later", 0])).reason.startswith("infeasible")


@pytest.mark.parametrize("bad", ["PACK", ["node"], ["pg", b"x", -2], ["x", 1, 2], 3])
def test_unknown_strategies_are_refused(bad):
    with pytest.raises(ValueError):
        parse_strategy(bad)


# ---- placement groups -------------------------------------------------------------------------
def views(*caps):
    return [NodeView.from_row(row(f"n{i}", cpus=c)) for i, c in enumerate(caps)]


def test_pg_examples():
    vs = views(4, 4, 2)
    assert place_bundles(vs, [{"CPU": 2}] * 2, "STRICT_PACK") == ["n0", "n0"]
    assert place_bundles(vs, [{"CPU": 3}] * 2, "STRICT_PACK") is None
    assert len(set(place_bundles(vs, [{"CPU": 1}] * 3, "STRICT_SPREAD"))) == 3
    assert place_bundles(vs, [{"CPU": 1}] * 4, "STRICT_SPREAD") is None
    assert sorted(place_bundles(vs, [{"CPU": 3}, {"CPU": 3}, {"CPU": 2}], "PACK")) == \
        ["n0", "n1", "n2"]
    assert len(set(place_bundles(vs, [{"CPU": 1}] * 3, "SPREAD"))) == 3
    # SPREAD falls back to sharing nodes; PACK to several nodes
    assert place_bundles(vs, [{"CPU": 1}] * 5, "SPREAD") is not None
    assert place_bundles(vs, [{"CPU": 4}] * 2, "PACK") == ["n0", "n1"]
    with pytest.raises(ValueError):
        place_bundles(vs, [{"CPU": 1}], "BEST")


def test_pg_fixed_bundles_keep_their_node():
    vs = views(4, 4, 4)
    assert place_bundles(vs, [{"CPU": 1}] * 3, "STRICT_SPREAD", fixed={0: "n1"})[0] == "n1"
    out = place_bundles(vs, [{"CPU": 1}] * 3, "STRICT_SPREAD", fixed={0: "n1"})
    assert len(set(out)) == 3
    assert place_bundles(vs, [{"CPU": 1}] * 2, "STRICT_PACK", fixed={0: "n2"}) == ["n2", "n2"]


def test_policy_place_bundles_ignores_dead_nodes():
    p = policy(row("a", state="dead", cpus=8), row("b", cpus=2))
    assert p.place_bundles([{"CPU": 2}], "STRICT_PACK") == ["b"]
    assert p.place_bundles([{"CPU": 4}], "PACK") is None


resource_names = st.sampled_from(["CPU", "GPU", "x"])
amounts = st.sampled_from([0.5, 1, 2, 3])
bundle_st = st.dictionaries(resource_names, amounts, min_size=1, max_size=2)
node_st = st.dictionaries(resource_names, st.sampled_from([0, 1, 2, 4]), min_size=1,
                          max_size=3)


def _brute_force(caps, bundles, strategy):
    """Whether any assignment exists (small inputs only)."""
    for assign in itertools.product(range(len(caps)), repeat=len(bundles)):
        if strategy == "STRICT_PACK" and len(set(assign)) > 1:
            continue
        if strategy == "STRICT_SPREAD" and len(set(assign)) < len(assign):
            continue
        used = [ResourceSet() for _ in caps]
        for b, n in zip(bundles, assign):
            used[n] = used[n] + ResourceSet(b)
        if all(u.fits_in(ResourceSet(c)) for u, c in zip(used, caps)):
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(st.lists(node_st, min_size=1, max_size=4), st.lists(bundle_st, min_size=1, max_size=4),
       st.sampled_from(["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]))
def test_pg_placement_properties(caps, bundles, strategy):
    # caps are what is available; totals are larger (the rest is in use)
    vs = [NodeView.from_row({"node_id": f"n{i}", "resources_total": {k: 2 * v + 1 for k, v
                                                                     in c.items()},
                             "resources_available": c}) for i, c in enumerate(caps)]
    out = place_bundles(vs, bundles, strategy)
    assert out == place_bundles(vs, bundles, strategy)  # deterministic
    if out is None:
        assert not _brute_force(caps, bundles, strategy)  # infeasible only when really so
        return
    assert len(out) == len(bundles)
    used = {}
    for b, n in zip(bundles, out):
        used[n] = used.get(n, ResourceSet()) + ResourceSet(b)
    for i, c in enumerate(caps):
        assert used.get(f"n{i}", ResourceSet()).fits_in(ResourceSet(c))
    if strategy == "STRICT_PACK":
        assert len(set(out)) == 1
    if strategy == "STRICT_SPREAD":
        assert len(set(out)) == len(out)
    if strategy == "SPREAD" and _brute_force(caps, bundles, "STRICT_SPREAD"):
        assert len(set(out)) == len(out)
    if strategy == "PACK" and _brute_force(caps, bundles, "STRICT_PACK"):
        assert len(set(out)) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(node_st, st.integers(0, 20), st.booleans()), min_size=1, max_size=6),
       st.lists(st.tuples(bundle_st, st.sampled_from([None, "SPREAD"])), min_size=1,
                max_size=12))
def test_task_decisions_properties(nodes, tasks):
    rows = [row(f"n{i}", cpus=0, res=c, queue=q, state="alive" if a else "dead")
            for i, (c, q, a) in enumerate(nodes)]
    results = []
    for _ in range(2):
        p = policy(*rows)
        results.append([p.decide({"task_id": k, "resources": r, "strategy": s}).wire()
                        for k, (r, s) in enumerate(tasks)])
    assert results[0] == results[1]  # deterministic
    for (_tid, node, reason), (res, _s) in zip(results[0], tasks):
        demand = ResourceSet(res)
        fits = [r["node_id"] for r in rows if r["state"] == "alive"
                and demand.fits_in(ResourceSet(r["resources_total"]))]
        if node is None:
            assert not fits and reason.startswith("infeasible")
        else:
            assert node in fits


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([1, 2, 4, 16]), st.sampled_from([0, 1, 4]),
                          st.integers(0, 30), st.sampled_from([1e8, 1e9])),
                min_size=16, max_size=40),
       st.lists(st.tuples(st.sampled_from([0.5, 1, 2]), st.sampled_from([0, 0, 1]),
                          st.sampled_from([None, "SPREAD", ["node", "n3", True]]),
                          st.lists(st.tuples(st.sampled_from([0, 10 ** 6, 10 ** 8]),
                                             st.integers(0, 45)), max_size=3),
                          st.integers(-1, 45)),
                min_size=1, max_size=40))
def test_array_scoring_matches_the_python_reference(monkeypatch, nodes, work):
    """The numpy path (many nodes) decides exactly as the per-node Python loop, through
    optimistic charges, heartbeats (some adding a new resource) and a node dying."""
    rows = [row(f"n{i}", cpus=c, res={"GPU": g} if g else {}, queue=q, bandwidth=bw)
            for i, (c, g, q, bw) in enumerate(nodes)]
    fast, ref = policy(*rows), policy(*rows)
    ref.fast = False
    monkeypatch.setattr(global_policy, "FAST_MIN_NODES", 16)
    for k, (cpus, gpu, strategy, deps, beat) in enumerate(work):
        t = task(k, cpus=cpus, strategy=strategy,
                 deps=[(b"o%d" % j, size, [f"n{h}"]) for j, (size, h) in enumerate(deps)],
                 **({"GPU": gpu} if gpu else {}))
        assert fast.decide(t).wire() == ref.decide(t).wire()
        if 0 <= beat < len(rows):  # a heartbeat of one node, now and then with a new resource
            r = dict(rows[beat], queue_len=beat % 7)
            if beat % 5 == 0:
                r["resources_available"] = dict(r["resources_available"], x=1)
            for p in (fast, ref):
                p.update_node(r)
        if k == 3:
            for p in (fast, ref):
                p.mark_dead("n0")


def test_bytes_node_ids_and_hex_affinity():
    """Node managers key rows by raw-bytes ids; drivers name nodes by hex (Ray's public form)."""
    a, b = bytes.fromhex("aa01"), bytes.fromhex("bb02")
    p = policy(row(a), row(b, queue=9))
    assert p.decide(task(strategy=["node", "bb02", False])).node_id == b
    assert p.decide(task(strategy=["node", b, False])).node_id == b
    assert p.decide(task(strategy=["node", "zz", False])).reason.startswith("failed")
    assert p.decide(task(deps=[(b"o", 100 * MB, [b])])).node_id == b
    assert p.place_bundles([{"CPU": 1}] * 2, "STRICT_SPREAD") in ([a, b], [b, a])


def test_removed_node_and_changed_totals_refresh_the_caches():
    p = policy(*(row(f"n{i:02d}", cpus=2) for i in range(40)))
    assert p.decide(task(cpus=4)).node_id is None
    p.update_node(row("n07", cpus=8))          # totals grew: the fit cache must see it
    assert p.decide(task(cpus=4)).node_id == "n07"
    p.remove_node("n07")
    assert p.decide(task(cpus=4)).node_id is None
    p.update_node(row("n39", cpus=2, avail={"CPU": 2, "x": 1}, res={"x": 1}))  # a new name
    assert p.decide(task(cpus=1, x=1)).node_id == "n39"


def test_the_row_of_an_over_committed_node_is_accepted():
    """An unblocked worker over-commits its node (available CPU below zero); the row says
    nothing is free, and the global scheduler takes it (it dropped it as malformed, and so
    declared the live node dead for want of heartbeats)."""
    from types import SimpleNamespace

    from zactor.cluster.node_link import NodeLink
    from zactor.scheduling.resources import NodeResources

    res = NodeResources(ResourceSet.of(num_cpus=2))
    res.acquire(ResourceSet.of(num_cpus=3), allow_overcommit=True)
    nm = SimpleNamespace(
        node_id=b"n" * 28, address="ipc://x", resources=ResourceSet.of(num_cpus=2),
        store=SimpleNamespace(path="/dev/shm/x", stats=lambda: {}),
        scheduler=SimpleNamespace(resources=res, queue_length=lambda: 0))
    row = NodeLink(nm).row()
    assert row["resources_available"]["CPU"] == 0
    view = GlobalPolicy().update_node(row)
    assert view.alive and not ResourceSet.of(num_cpus=1).fits_in(view.available)
