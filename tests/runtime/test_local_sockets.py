"""A bare ``zactor.init()`` listens on ipc sockets in a directory only its user can open, and
on no TCP port: not the node, not the workers, not the control store."""

from __future__ import annotations

import os
import stat
import time

import psutil
import pytest

import zactor
from tests.conftest import assert_no_cluster_left
from zactor.control.client import GcsClient


def tcp_sockets(proc: psutil.Process) -> list:
    try:
        return [(proc.pid, c.laddr, c.status) for c in proc.net_connections(kind="tcp")]
    except psutil.NoSuchProcess:
        return []


def owner_only_directory(path: str) -> bool:
    st = os.stat(path)
    return st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700


@pytest.mark.timeout(120)
def test_a_bare_init_listens_on_no_tcp_port_and_its_sockets_are_owner_only():
    zactor.init(num_cpus=2, object_store_memory=64 << 20)
    try:
        node = zactor.api._node
        plane = node.control_plane
        assert plane.wait_ready(60)

        @zactor.remote
        def pid():
            return os.getpid()

        worker_pids = set(zactor.get([pid.remote() for _ in range(4)]))
        store = plane.store
        gcs_pids = {store.coordinator.pid} | {c.pid for c in store.replicas.values()}
        session = [psutil.Process()] + psutil.Process().children(recursive=True)
        session_pids = {p.pid for p in session}
        # what is checked really is the whole session: driver, node, workers, control store
        assert {node.proc.pid, *worker_pids, *gcs_pids} <= session_pids
        assert [s for p in session for s in tcp_sockets(p)] == []

        members = [store.coordinator.info] + [c.info for c in store.replicas.values()]
        endpoints = [info[k] for info in members for k in ("addr", "pub_addr")]
        assert len(endpoints) == 4 and store.address == endpoints[0]
        for addr in endpoints:
            assert addr.startswith("ipc://"), addr
            path = addr[len("ipc://"):]
            assert stat.S_ISSOCK(os.stat(path).st_mode)
            directory = os.path.dirname(path)
            assert directory.startswith(node.session_dir + os.sep)
            assert owner_only_directory(directory) and owner_only_directory(node.session_dir)
        # the node manager reached the store over ipc: its node record is there
        node_id = bytes.fromhex(zactor.get_runtime_context().get_node_id())
        with GcsClient.connect(store.address, timeout_s=10) as gcs:
            deadline = time.monotonic() + 30
            while gcs.get("nodes", node_id) is None:
                assert time.monotonic() < deadline, "the node never recorded itself"
                time.sleep(0.05)
    finally:
        zactor.shutdown()
    assert_no_cluster_left()
