"""The user-facing placement-group and scheduling-strategy objects: validation, their wire form,
and (through a stand-in for the runtime's ``_cluster_request`` hook) a real scheduler daemon."""

from __future__ import annotations

import pytest

import zactor.api
from zactor import protocol as P
from zactor.ids import NodeID
from zactor.util.placement_group import (
    PlacementGroup,
    get_current_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from zactor.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
    strategy_to_wire,
)


@pytest.mark.parametrize("bundles, strategy, error", [
    ([], "PACK", "non-empty"),
    ([{}], "PACK", "empty"),
    ([{"CPU": 0}], "PACK", "> 0"),
    ([{"CPU": -1}], "PACK", "> 0"),
    ([{"CPU": float("nan")}], "PACK", "> 0"),
    ([{"CPU": 1e-9}], "PACK", "smallest unit"),
    ([{"CPU": 1}], "BEST", "PACK, SPREAD, STRICT_PACK, STRICT_SPREAD"),
    ([{"CPU": 1}], "pack", "strategy"),
])
def test_placement_group_validation(bundles, strategy, error):
    with pytest.raises(ValueError, match=error):
        placement_group(bundles, strategy)


@pytest.mark.parametrize("bundles", [[{"CPU": "1"}], [{1: 1}], ["CPU"], {"CPU": 1},
                                     [{"CPU": True}]])
def test_placement_group_type_errors(bundles):
    with pytest.raises((TypeError, ValueError)):
        placement_group(bundles)


def test_other_arguments_and_the_missing_hook(monkeypatch):
    with pytest.raises(ValueError, match="lifetime"):
        placement_group([{"CPU": 1}], lifetime="forever")
    with pytest.raises(TypeError):
        placement_group([{"CPU": 1}], name=3)
    monkeypatch.delattr(zactor.api, "_cluster_request", raising=False)
    with pytest.raises(RuntimeError, match="_cluster_request"):
        placement_group([{"CPU": 1}])
    assert get_current_placement_group() is None


def test_strategy_to_wire():
    assert strategy_to_wire(None) is None and strategy_to_wire("DEFAULT") is None
    assert strategy_to_wire("SPREAD") == "SPREAD"
    nid = NodeID.from_random()
    assert strategy_to_wire(NodeAffinitySchedulingStrategy(nid, soft=True)) == \
        ["node", nid.hex(), True]
    assert strategy_to_wire(NodeAffinitySchedulingStrategy(nid.hex(), False)) == \
        ["node", nid.hex(), False]
    pg = PlacementGroup(zactor.ids.PlacementGroupID.from_random(), [{"CPU": 1}, {"GPU": 1}])
    assert strategy_to_wire(PlacementGroupSchedulingStrategy(pg)) == ["pg", pg.id.binary(), -1]
    assert strategy_to_wire(PlacementGroupSchedulingStrategy(pg, 1)) == \
        ["pg", pg.id.binary(), 1]
    for bad in (2, -2, True, "0"):
        with pytest.raises(ValueError):
            PlacementGroupSchedulingStrategy(pg, bad)
    with pytest.raises(TypeError):
        PlacementGroupSchedulingStrategy("not a pg")
    with pytest.raises(TypeError):
        NodeAffinitySchedulingStrategy(nid, soft="yes")
    with pytest.raises(TypeError):
        NodeAffinitySchedulingStrategy(None, soft=True)
    with pytest.raises(ValueError):
        strategy_to_wire("PACK")
    with pytest.raises(TypeError):
        strategy_to_wire(object())


@pytest.fixture
def live(tmp_path, monkeypatch):
    """A real scheduler and two fake nodes; ``_cluster_request`` stands in for the runtime's
    hook: a DEALER to the scheduler (what the driver's client will do)."""
    from test_scheduler_daemon import Cluster, wait_known

    c = Cluster(tmp_path)
    try:
        c.add("a")
        c.add("b")
        wait_known(c, "a", "b")

        def request(mtype, body, timeout_s):
            reply = c.nodes["a"].peer.request(mtype, body, timeout_s=timeout_s)
            if reply.name == "ERROR":
                exc = ValueError if reply["code"] == P.ERR_MALFORMED else RuntimeError
                raise exc(reply["message"])
            return reply["value"]

        monkeypatch.setattr(zactor.api, "_cluster_request", request, raising=False)
        yield c
    finally:
        c.close()


def test_placement_group_lifecycle_against_the_daemon(live):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD", name="two")
    assert pg.wait(30)  # ready() is an ObjectRef: tests/cluster checks it on a real cluster
    entry = placement_group_table(pg)
    assert entry["state"] == "CREATED" and entry["name"] == "two"
    assert sorted(entry["bundles_to_node_id"].values()) == ["a", "b"]
    assert pg.id.hex() in placement_group_table()
    big = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert not big.wait(0.5)  # two nodes cannot hold three spread bundles
    assert placement_group_table(big)["state"] == "PENDING"
    remove_placement_group(pg)
    remove_placement_group(big)
    assert placement_group_table(pg)["state"] == "REMOVED"
    assert not pg.wait(1)
    remove_placement_group(pg)  # a second removal is harmless (a resend looks the same)
    never = PlacementGroup(zactor.ids.PlacementGroupID.from_random(), [{"CPU": 1}])
    with pytest.raises(ValueError, match="does not exist"):
        remove_placement_group(never)
