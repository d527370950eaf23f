"""The control store's ipc transport refuses what would be unsafe or cannot work, clearly and
before any process starts: a directory other users may enter, a socket path past the Unix
limit, an unknown transport."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import zmq

from zactor.control import LocalControlStore
from zactor.net.sockets import MAX_IPC_PATH_BYTES, bind_ipc, endpoint, ipc_endpoint


def test_ipc_endpoint_makes_an_owner_only_directory_and_binds_in_it(tmp_path):
    directory = str(tmp_path / "sockets")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    try:
        addr = bind_ipc(sock, directory, "gcs")
        assert addr == f"ipc://{directory}/gcs.sock"
        assert os.stat(directory).st_mode & 0o777 == 0o700
        assert endpoint(addr) == addr and endpoint("127.0.0.1:6380") == "tcp://127.0.0.1:6380"
    finally:
        sock.close(0)
        ctx.term()


def test_a_directory_open_to_others_is_refused(tmp_path):
    directory = tmp_path / "open"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)  # whatever the umask
    with pytest.raises(PermissionError, match="mode 0700"):
        ipc_endpoint(str(directory), "gcs")


def test_a_socket_path_past_the_unix_limit_is_refused_by_name(tmp_path):
    directory = str(tmp_path / ("d" * (MAX_IPC_PATH_BYTES - len(str(tmp_path)))))
    with pytest.raises(ValueError, match=f"over the {MAX_IPC_PATH_BYTES}-byte limit"):
        ipc_endpoint(directory, "gcs")


def test_control_store_checks_its_transport_before_starting_anything(tmp_path):
    with pytest.raises(ValueError, match="transport must be one of"):
        LocalControlStore(str(tmp_path / "a"), transport="udp")
    long_dir = str(tmp_path / ("d" * (MAX_IPC_PATH_BYTES - len(str(tmp_path)) - 20)))
    with pytest.raises(ValueError, match="limit of Unix sockets"):
        LocalControlStore(long_dir, transport="ipc")


def test_zactor_gcs_with_an_unsafe_ipc_dir_exits_with_the_reason(tmp_path):
    directory = tmp_path / "open"
    directory.mkdir()
    os.chmod(directory, 0o755)
    proc = subprocess.run(
        [sys.executable, "-m", "zactor.control.replica_main", "--coordinator-mode",
         "--ipc-dir", str(directory), "--data-dir", str(tmp_path / "coord")],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "must be owned by uid" in proc.stderr and str(directory) in proc.stderr
    assert "Traceback" not in proc.stderr
