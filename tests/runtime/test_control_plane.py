"""The node manager records the cluster's control state in the control store, off the
critical path: the node, the job, the function table, lineage, object locations."""

from __future__ import annotations

import time

import numpy as np

from zactor.control.client import GcsClient


def wait_for(predicate, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_control_store_holds_node_job_functions_lineage_and_objects(cluster):
    plane = cluster.api._node.control_plane
    assert plane.wait_ready(60)

    @cluster.remote
    def double(x):
        return x * 2

    arr_ref = cluster.put(np.ones(1 << 18))  # 2 MB: lives in the shared-memory store
    arr_id = arr_ref.binary()
    refs = [double.remote(i) for i in range(20)]
    assert cluster.get(refs) == [2 * i for i in range(20)]
    node_id = bytes.fromhex(cluster.get_runtime_context().get_node_id())
    with GcsClient.connect(plane.store.address, timeout_s=10) as gcs:
        node = wait_for(lambda: gcs.get("nodes", node_id))
        assert node["state"] == "alive" and node["resources_total"]["CPU"] == 2
        assert node["ipc_address"].startswith("ipc://") and node["incarnation"]
        assert wait_for(lambda: gcs.scan("jobs"))
        assert wait_for(lambda: len(gcs.scan("functions")) >= 1)
        location = wait_for(lambda: gcs.get("objects", arr_id))
        assert location["node"] == node_id and location["size"] >= 2 << 20
        # finished tasks' lineage is archived (still readable), not kept in the live table
        spec = wait_for(lambda: gcs.get("tasks", refs[0].binary()[:24]))
        assert spec["name"].endswith("double")
        wait_for(lambda: not any(k[:24] == refs[0].binary()[:24] for k, _ in gcs.scan("tasks")))
        del arr_ref
        cluster.put(0)  # flushes the release; the freed object's location is deleted
        wait_for(lambda: gcs.get("objects", arr_id) is None)


def test_lineage_is_kept_only_for_results_that_still_exist(cluster):
    plane = cluster.api._node.control_plane
    assert plane.wait_ready(60)

    @cluster.remote
    def square(x):
        return x * x

    kept = square.remote(3)
    dropped = square.remote(4)
    assert cluster.get([kept, dropped]) == [9, 16]
    dropped_task = dropped.binary()[:24]
    del dropped
    cluster.put(0)  # flushes the release
    with GcsClient.connect(plane.store.address, timeout_s=10) as gcs:
        spec = wait_for(lambda: gcs.get("tasks", kept.binary()[:24]))  # written after ~1 s
        assert spec["name"].endswith("square")
        time.sleep(0.5)  # the dropped result's lineage was due at the same moment
        cluster.available_resources()
        assert gcs.get("tasks", dropped_task) is None
