"""Ray's log_to_driver on a ``zactor start`` cluster: what a task prints reaches the terminal
of the driver that submitted it, prefixed with the function, pid and ip, whichever node ran
it; the "infeasible task" warning too; ``log_to_driver=False`` keeps it in the node logs."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.cluster.helpers import CliCluster, run_driver

pytestmark = pytest.mark.timeout(300)

DRIVER = """
    import sys, zactor
    from zactor.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
    zactor.init(address="auto", log_to_driver={log_to_driver})
    nodes = [n["NodeID"] for n in zactor.nodes() if n["Alive"]]
    assert len(nodes) == 2, nodes

    @zactor.remote
    def shout(tag):
        print("out-line", tag, flush=True)
        print("err-line", tag, file=sys.stderr)
        return zactor.get_runtime_context().get_node_id()

    @zactor.remote
    def outer(tag, node):  # a nested task: its output is relayed up the chain
        return zactor.get(shout.options(scheduling_strategy=On(node, soft=False)).remote(tag))

    ran = zactor.get([shout.options(scheduling_strategy=On(n, soft=False)).remote(
        "{token}-" + str(i)) for i, n in enumerate(nodes)], timeout=120)
    assert ran == nodes, (ran, nodes)
    nested = zactor.get(outer.options(scheduling_strategy=On(nodes[1], soft=False)).remote(
        "{token}-nested", nodes[0]), timeout=120)
    assert nested == nodes[0]

    @zactor.remote(resources={{"no_such_resource": 1}})
    def never():
        return 1

    ready, _ = zactor.wait([never.remote()], timeout=4.0)
    assert not ready
    zactor.shutdown()
    print("DRIVER DONE", flush=True)
"""


@pytest.fixture
def two_nodes():
    cluster = CliCluster(num_cpus=1)
    try:
        cluster.add_node(1)
        yield cluster
    finally:
        cluster.stop()


def test_task_output_reaches_a_joined_driver_from_every_node(two_nodes):
    token = uuid.uuid4().hex[:12]
    out = run_driver(DRIVER.format(token=token, log_to_driver=True), env=two_nodes.env,
                     timeout=240)
    assert "DRIVER DONE" in out.stdout, out.stdout + out.stderr
    for tag in (f"{token}-0", f"{token}-1", f"{token}-nested"):
        # Ray's prefix: (function pid=N, ip=...) on the driver's terminal, stdout to stdout
        assert re.search(rf"^\(shout pid=\d+, ip=127\.0\.0\.1\) out-line {tag}$",
                         out.stdout, re.M), out.stdout + out.stderr
        assert re.search(rf"^\(shout pid=\d+, ip=127\.0\.0\.1\) err-line {tag}$",
                         out.stderr, re.M), out.stdout + out.stderr
    # the two first tasks ran on different nodes: two different worker pids printed them
    pids = {re.search(rf"pid=(\d+), ip=[^)]*\) out-line {token}-{i}$", out.stdout,
                      re.M).group(1) for i in (0, 1)}
    assert len(pids) == 2, out.stdout
    assert "infeasible" in out.stderr and "never" in out.stderr, out.stderr


def test_log_to_driver_false_keeps_output_off_the_driver(two_nodes):
    token = uuid.uuid4().hex[:12]
    out = run_driver(DRIVER.format(token=token, log_to_driver=False), env=two_nodes.env,
                     timeout=240)
    assert "DRIVER DONE" in out.stdout, out.stdout + out.stderr
    assert token not in out.stdout + out.stderr, out.stdout + out.stderr
