"""Pulls between two stores in one process: sizes, bytes exact, lz4 only when it pays, shared
transfers, errors, poll-loop integration."""

from __future__ import annotations

import os
import select
import threading

import numpy as np
import pytest

from tests.transfer.conftest import oid, put_bytes, read_bytes
from zactor.net.sockets import free_port
from zactor.transfer import TransferClient, TransferError, TransferServer, lz4_pays

SMALL_CHUNKS = {"chunk_bytes": 64 << 10, "window": 3}


def _random(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(n)


@pytest.mark.parametrize("size", [0, 1, 1000, (64 << 10) * 5 + 7])
def test_pull_sizes_exact(pair, size):
    remote, local, server, client = pair(client_kw=SMALL_CHUNKS)
    data = _random(size, seed=size)
    put_bytes(remote, oid(1), data, metadata=b"meta")
    assert client.fetch(oid(1), f"127.0.0.1:{server.port}", timeout=30) == size
    assert read_bytes(local, oid(1)) == data
    with local.get_buffer(oid(1)) as buf:
        assert buf.metadata == b"meta"


def test_pull_100mb_exact(pair):
    remote, local, server, client = pair()
    data = _random(100 << 20, seed=7)
    put_bytes(remote, oid(2), data)
    assert client.fetch(oid(2), server.address, timeout=120) == len(data)
    assert read_bytes(local, oid(2)) == data
    assert server.stats["chunk_requests"] == 25  # 4 MB chunks


def test_compressible_data_is_compressed(pair):
    remote, local, server, client = pair()
    data = bytes(8 << 20) + b"tail"
    put_bytes(remote, oid(3), data)
    client.fetch(oid(3), server.address, timeout=60)
    assert read_bytes(local, oid(3)) == data
    assert server.stats["compressed_chunks"] >= 2
    assert server.stats["bytes_sent"] < len(data) // 10


def test_incompressible_data_is_sent_raw(pair):
    remote, local, server, client = pair()
    data = np.random.default_rng(1).random((1 << 20,)).tobytes()  # 8 MB of random floats
    put_bytes(remote, oid(4), data)
    client.fetch(oid(4), server.address, timeout=60)
    assert read_bytes(local, oid(4)) == data
    assert server.stats["compressed_chunks"] == 0
    assert server.stats["bytes_sent"] == len(data)


def test_client_can_refuse_compression(pair):
    remote, local, server, client = pair(client_kw={"compress": False})
    put_bytes(remote, oid(5), bytes(1 << 20))
    client.fetch(oid(5), server.address, timeout=60)
    assert server.stats["compressed_chunks"] == 0


def test_lz4_pays_decision():
    assert lz4_pays(memoryview(bytes(1 << 20)))
    assert not lz4_pays(memoryview(_random(1 << 20)))
    assert not lz4_pays(memoryview(b"tiny"))


def test_concurrent_pulls_share_one_transfer(two_stores, closing):
    remote, local = two_stores
    data = _random(3 << 20, seed=3)
    put_bytes(remote, oid(6), data)
    port = free_port()
    client = closing(TransferClient(local, **SMALL_CHUNKS))
    # every pull is asked for before the server exists, so none can finish before the others
    # join: the DEALER queues the request until the server binds
    handles = [client.pull(oid(6), f"127.0.0.1:{port}") for _ in range(3)]
    other = []
    t = threading.Thread(target=lambda: other.append(client.pull(oid(6), f"127.0.0.1:{port}")))
    t.start()
    t.join(10)
    server = closing(TransferServer(remote, "127.0.0.1", port))
    for h in handles + other:
        assert h.result(60) == len(data)
    assert len({id(h) for h in handles + other}) == 1
    assert server.stats["meta_requests"] == 1
    assert server.stats["chunk_requests"] == 48  # 3 MB in 64 KB chunks, once
    assert read_bytes(local, oid(6)) == data


def test_missing_object_names_object_and_peer(pair):
    _, local, server, client = pair()
    with pytest.raises(TransferError) as info:
        client.fetch(oid(7), server.address, timeout=30)
    err = info.value
    assert err.reason == "missing" and err.oid == oid(7) and err.peer == server.address
    assert oid(7).hex() in str(err) and server.address in str(err)
    assert not local.contains(oid(7))


def test_no_server_times_out_clearly(two_stores, closing):
    _, local = two_stores
    client = closing(TransferClient(local, idle_timeout_s=0.5))
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(TransferError) as info:
        client.fetch(oid(8), address, timeout=30)
    assert info.value.reason == "timeout" and address in str(info.value)


def test_overall_timeout(two_stores, closing):
    _, local = two_stores
    client = closing(TransferClient(local))
    with pytest.raises(TransferError, match="timeout"):
        client.pull(oid(9), f"127.0.0.1:{free_port()}", timeout=0.2).result(30)


def test_already_local_object_needs_no_transfer(pair):
    remote, local, server, client = pair()
    put_bytes(local, oid(10), b"here")
    assert client.fetch(oid(10), server.address, timeout=30) == 4
    assert server.stats["meta_requests"] == 0


def test_callback_and_pollable_fd(two_stores, closing):
    remote, local = two_stores
    server = closing(TransferServer(remote))
    client = closing(TransferClient(local, pollable=True))
    put_bytes(remote, oid(11), b"x" * 100)
    seen = []
    done = threading.Event()
    handle = client.pull(oid(11), server.address,
                         callback=lambda h: (seen.append(h), done.set()))
    readable, _, _ = select.select([client.fileno()], [], [], 30)
    assert readable == [client.fileno()]
    assert client.completed() == [handle]
    assert done.wait(30) and seen == [handle]
    assert handle.result(0) == 100
    missing = client.pull(oid(12), server.address)
    select.select([client.fileno()], [], [], 30)
    (h,) = client.completed()
    assert h is missing and isinstance(h.exception(0), TransferError)
    late = []
    handle.add_done_callback(late.append)  # already done: runs at once
    assert late == [handle]


def test_store_full_fails_cleanly(pair):
    remote, local, server, client = pair()
    put_bytes(remote, oid(13), _random(200 << 20))
    put_bytes(local, oid(14), _random(100 << 20), )
    local.set_evictable(oid(14), False)
    with pytest.raises(TransferError) as info:
        client.fetch(oid(13), server.address, timeout=60)
    assert info.value.reason == "store_full"  # the node manager makes room and retries
    assert not local.contains(oid(13))


def test_close_aborts_pull_in_flight(two_stores):
    remote, local = two_stores
    client = TransferClient(local)
    handle = client.pull(oid(15), f"127.0.0.1:{free_port()}")
    client.close()
    assert handle.exception(10).reason == "closed"
    with pytest.raises(RuntimeError):
        client.pull(oid(15), "127.0.0.1:1")
    assert os.path.exists(local.path)


def test_shared_pull_deadlines(two_stores, closing):
    _, local = two_stores
    client = closing(TransferClient(local, idle_timeout_s=300))
    address = f"127.0.0.1:{free_port()}"
    patient = client.pull(oid(16), address)  # no deadline
    with pytest.raises(TransferError, match="timeout"):
        client.fetch(oid(16), address, timeout=0.2)  # gives up waiting, alone
    assert not patient.done()  # the shared pull goes on for the caller without a deadline
    client.close()
    assert patient.exception(10).reason == "closed"


def test_spilled_object_is_restored_before_it_is_served(two_stores, closing, tmp_path):
    """A server given ``restore`` (the node's spilling) reads a missing object back from its
    spill file, then serves it; a restore that fails leaves the pull failing as missing."""
    from zactor.store.spill_file import read_object, write_object

    remote, local = two_stores
    data = _random((64 << 10) * 5 + 3, seed=11)
    path = str(tmp_path / "spilled")
    write_object(path, memoryview(data), b"meta")
    asked = []

    def restore(object_id, timeout_s):
        asked.append(object_id)
        if object_id != oid(21):
            return "it is neither in the node's object store nor spilled to disk"
        read_object(path, lambda n, meta: remote.create_buffer(object_id, n, meta))
        remote.seal(object_id)
        return ""

    server = closing(TransferServer(remote, "127.0.0.1", restore=restore))
    client = closing(TransferClient(local, **SMALL_CHUNKS))
    assert client.fetch(oid(21), server.address, timeout=30) == len(data)
    assert read_bytes(local, oid(21)) == data and asked == [oid(21)]
    with pytest.raises(TransferError) as info:
        client.fetch(oid(22), server.address, timeout=30)
    assert info.value.reason == "missing" and asked == [oid(21), oid(22)]
