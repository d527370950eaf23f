"""Fixtures of the transfer tests: two stores (a "remote" one that serves, a "local" one that
pulls), cluster keys, and servers/clients that are always closed."""

from __future__ import annotations

import os
import struct
import time

import pytest

from zactor.net.security import generate_keys
from zactor.store import ObjectStore
from zactor.transfer import TransferClient, TransferServer

STORE_BYTES = 256 << 20


def oid(n: int) -> bytes:
    return b"\x0b" * 24 + struct.pack("<I", n)


def put_bytes(store, object_id: bytes, data, metadata: bytes = b"") -> None:
    buf = store.create_buffer(object_id, len(data), metadata)
    buf[:] = data
    buf.release()
    store.seal(object_id)


def read_bytes(store, object_id: bytes) -> bytes:
    with store.get_buffer(object_id) as buf:
        return bytes(buf.data)


def _segment(tag: str) -> str:
    # the test process's pid in the name: the leak check in tests/conftest.py watches these
    return f"/dev/shm/zactor-test-{os.getpid()}-{tag}-{time.monotonic_ns()}"


@pytest.fixture
def two_stores():
    """(remote, local): two segments of one test, both destroyed after it."""
    stores = [ObjectStore.create(_segment("remote"), STORE_BYTES),
              ObjectStore.create(_segment("local"), STORE_BYTES)]
    yield stores
    for s in stores:
        s.destroy()


@pytest.fixture
def keys(tmp_path):
    return generate_keys(str(tmp_path / "cluster.key"))


@pytest.fixture
def closing():
    """``closing(obj)`` -> obj, closed after the test (clients before servers)."""
    items = []
    yield lambda obj: items.append(obj) or obj
    for obj in reversed(items):
        obj.close()


@pytest.fixture
def pair(two_stores, closing):
    """``pair(server_kw, client_kw)`` -> (remote, local, server, client)."""
    remote, local = two_stores

    def make(server_kw=None, client_kw=None):
        server = closing(TransferServer(remote, **(server_kw or {})))
        client = closing(TransferClient(local, **(client_kw or {})))
        return remote, local, server, client

    return make
