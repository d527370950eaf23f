"""A real multi-node cluster: three hosts in network namespaces (each node with its own
address, the driver in the root namespace), started with ``zactor start``."""

from __future__ import annotations

import pytest

from tests.cluster.helpers import NetnsCluster, run_driver, zactor_cli

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def three_hosts(host_network):
    net = host_network(3)
    cluster = NetnsCluster(net, cpus=(1, 1, 1))
    try:
        yield cluster
    finally:
        cluster.stop()


def test_task_graph_over_three_hosts_moves_objects_and_keeps_work_near_its_data(three_hosts):
    status = zactor_cli("status", "--address", three_hosts.address)
    assert "nodes: 3 alive" in status.stdout, status.stdout + status.stderr
    out = run_driver("""
        import collections, numpy as np, zactor
        from zactor.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
        zactor.init(address="auto")
        here = zactor.get_runtime_context().get_node_id()
        nodes = [n["NodeID"] for n in zactor.nodes()]
        others = [n for n in nodes if n != here]
        assert len(nodes) == 3 and len(others) == 2, nodes

        def node():
            return zactor.get_runtime_context().get_node_id()

        @zactor.remote
        def block(seed, n):
            return np.random.default_rng(seed).integers(0, 1000, n).astype(np.float64)

        @zactor.remote
        def combine(a, b):
            return a + b, node()

        # inputs made on the two other hosts, combined on the driver's host: both move
        a = block.options(scheduling_strategy=On(others[0], soft=False)).remote(1, 3_000_000)
        b = block.options(scheduling_strategy=On(others[1], soft=False)).remote(2, 3_000_000)
        total, where = zactor.get(combine.options(
            scheduling_strategy=On(here, soft=False)).remote(a, b), timeout=120)
        expect = (np.random.default_rng(1).integers(0, 1000, 3_000_000) +
                  np.random.default_rng(2).integers(0, 1000, 3_000_000))
        assert where == here and np.array_equal(total, expect)
        print("GRAPH OK")

        # locality: a 100 MB input made on another host; the task using it runs there
        big = block.options(scheduling_strategy=On(others[0], soft=False)).remote(3, 12_500_000)

        @zactor.remote
        def checksum(x):
            return float(x.sum()), node()

        s, ran_on = zactor.get(checksum.remote(big), timeout=120)
        assert ran_on == others[0], (ran_on, others[0])
        assert s == float(np.random.default_rng(3).integers(0, 1000, 12_500_000).sum())
        print("LOCALITY OK")

        # spillover: 100 tasks submitted on a 1-CPU node spread over the cluster
        @zactor.remote
        def work(i):
            import time
            time.sleep(0.02)
            return i, node()

        results = zactor.get([work.remote(i) for i in range(100)], timeout=120)
        assert [i for i, _ in results] == list(range(100))
        used = collections.Counter(n for _, n in results)
        print("SPREAD", dict(used))
        assert len(used) >= 2, used
    """, env=three_hosts.env, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "GRAPH OK" in out.stdout and "LOCALITY OK" in out.stdout


def test_infeasible_task_waits_for_a_node_that_fits(host_network):
    net = host_network(2)
    cluster = NetnsCluster(net, cpus=(1,))
    try:
        import subprocess
        import sys
        import textwrap

        code = textwrap.dedent("""
            import zactor
            zactor.init(address="auto")

            @zactor.remote(resources={"special": 1})
            def on_special():
                return zactor.get_runtime_context().get_node_id()

            ref = on_special.remote()
            ready, _ = zactor.wait([ref], timeout=1.0)
            print("WAITING", len(ready) == 0, flush=True)
            print("RAN", zactor.get(ref, timeout=120) != zactor.get_runtime_context().get_node_id(), flush=True)
        """)
        proc = subprocess.Popen([sys.executable, "-c", code], env=cluster.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "WAITING True"
            cluster.start_node(1, 1, resources={"special": 1})
            out, err = proc.communicate(timeout=150)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert "RAN True" in out, out + err
    finally:
        cluster.stop()
