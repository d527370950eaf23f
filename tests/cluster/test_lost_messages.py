"""A message between two live nodes that never arrives: the origin of a forwarded task asks
its executor after a while whether it holds it (TASKS_HELD), and schedules it again when it
does not (zactor/cluster/remote_tasks.py). Found as a chaos-run hang: a task forwarded while a
third node's link was down was neither run nor reported. The loss is made here by the
origin's test hook that drops FORWARD_TASKS messages instead of sending them."""

from __future__ import annotations

import pytest

from tests.cluster.helpers import CliCluster, run_driver, zactor_cli
from tests.cluster.test_cluster_faults import _wait

pytestmark = pytest.mark.timeout(300)

DRIVER = """
import zactor
from zactor.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
zactor.init(address="auto")
me = zactor.get_runtime_context().get_node_id()
other = next(n["NodeID"] for n in zactor.nodes() if n["NodeID"] != me)

@zactor.remote
def where(i):
    return i, zactor.get_runtime_context().get_node_id()

refs = [where.options(scheduling_strategy=On(other, soft=False)).remote(i) for i in range(3)]
print("GOT", zactor.get(refs, timeout=90) == [(i, other) for i in range(3)], flush=True)
zactor.shutdown()
"""


def test_a_lost_forward_is_scheduled_again(monkeypatch):
    monkeypatch.setenv("ZACTOR_TEST_DROP_FORWARDS", "2")  # the head drops its first two
    cluster = CliCluster(num_cpus=1)
    try:
        monkeypatch.delenv("ZACTOR_TEST_DROP_FORWARDS")  # (node B's node manager sends all)
        cluster.add_node(1)
        _wait(lambda: "nodes: 2 alive" in zactor_cli("status", "--address",
                                                     cluster.address).stdout,
              what="node B registered")
        out = run_driver(DRIVER, env=cluster.env, timeout=200)
        assert "GOT True" in out.stdout, out.stdout + out.stderr
    finally:
        cluster.stop()
