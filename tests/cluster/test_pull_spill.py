"""Pulls into a full store: a pulled copy is a cache the store may evict, and one it evicted is
pulled again when read (``refetch``); a store full of primary copies spills the least
recently used ones to disk and pulls again (``_make_room_then_pull``), instead of taking the
holder's copy for lost (cluster/remote_tasks.py, runtime/spilling.py)."""

from __future__ import annotations

import pytest

from tests.cluster.helpers import CliCluster, run_driver
from tests.cluster.test_cluster_faults import _wait
from tests.cluster.test_lineage import _alive

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def small_head():
    # the head's store (64 MB) cannot hold the results the driver reads from node B at once
    cluster = CliCluster(num_cpus=1, extra=("--object-store-memory", str(64 << 20)))
    try:
        cluster.add_node(2)
        _wait(lambda: "nodes: 2 alive" in _alive(cluster), what="node B registered")
        yield cluster
    finally:
        cluster.stop()


def test_results_pulled_into_a_full_store_spill_older_ones(small_head):
    out = run_driver("""
        import numpy as np
        import zactor
        from zactor.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        zactor.init(address="auto")
        me = zactor.get_runtime_context().get_node_id()
        b = next(n["NodeID"] for n in zactor.nodes() if n["NodeID"] != me and n["Alive"])

        @zactor.remote
        def block(i):
            return np.full(20 << 20, i, dtype=np.uint8)  # 20 MB, made on B

        # primary copies on the head (puts, referenced): 45 of its 64 MB
        puts = [zactor.put(np.full(15 << 20, 100 + i, dtype=np.uint8)) for i in range(3)]
        refs = [block.options(scheduling_strategy=NodeAffinitySchedulingStrategy(b, soft=False))
                .remote(i) for i in range(6)]  # 120 MB, all referenced
        for rnd in range(2):  # the second round reads copies the store evicted meanwhile
            for i, ref in enumerate(refs):
                value = zactor.get(ref, timeout=120)
                assert value.shape == (20 << 20,) and value[0] == i and value[-1] == i
                del value
        for i, ref in enumerate(puts):  # spilled to make room for the pulls, read back
            value = zactor.get(ref, timeout=120)
            assert value[0] == 100 + i and value[-1] == 100 + i
            del value
        spill = next(n for n in zactor.nodes() if n["NodeID"] == me)["ObjectSpilling"]
        assert spill["spilled_objects"] > 0, spill  # the head made room by spilling
        print("OK", flush=True)
    """, env=small_head.env, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout, out.stdout + out.stderr


def test_an_evicted_copy_whose_holder_died_is_remade_for_its_reader():
    """The holder of a copy the store evicted is dead: the object is re-made by lineage and
    the reader gets it (it failed with ObjectLostError "neither in the node's object store
    nor spilled to disk" in two 10-minute chaos runs)."""
    cluster = CliCluster(num_cpus=1, extra=("--object-store-memory", str(64 << 20),
                                            "--node-death-timeout", "2"))
    try:
        b_pid = int(cluster.record(cluster.add_node(2))["node_pid"])
        _wait(lambda: "nodes: 2 alive" in _alive(cluster), what="node B registered")
        out = run_driver(f"""
            import os, signal
            import numpy as np
            import zactor
            from zactor.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            zactor.init(address="auto")
            me = zactor.get_runtime_context().get_node_id()
            b = next(n["NodeID"] for n in zactor.nodes() if n["NodeID"] != me and n["Alive"])

            @zactor.remote(max_retries=2)
            def block(i):
                return np.full(20 << 20, i, dtype=np.uint8)  # 20 MB

            on_b = NodeAffinitySchedulingStrategy(b, soft=True)  # re-made anywhere
            puts = [zactor.put(np.full(15 << 20, 100 + i, dtype=np.uint8)) for i in range(3)]
            refs = [block.options(scheduling_strategy=on_b).remote(i) for i in range(6)]
            for i, ref in enumerate(refs):  # pulled here; the store evicts older copies
                assert zactor.get(ref, timeout=120)[0] == i
            os.kill({b_pid}, signal.SIGKILL)
            for i, ref in enumerate(refs):
                value = zactor.get(ref, timeout=120)
                assert value.shape == (20 << 20,) and value[0] == i and value[-1] == i
                del value
            print("OK", flush=True)
        """, env=cluster.env, timeout=240)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "OK" in out.stdout, out.stdout + out.stderr
    finally:
        cluster.stop()
