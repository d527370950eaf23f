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
