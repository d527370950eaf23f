"""Fixtures for the control-store tests: a control store started as child processes and
always stopped, and a client always closed."""

from __future__ import annotations

import pytest

from zactor.control import GcsClient, LocalControlStore


@pytest.fixture
def transport():
    """The control store's transport; a test runs on both with
    ``@pytest.mark.parametrize("transport", TRANSPORTS)``."""
    return "tcp"


@pytest.fixture
def control_store(tmp_path, transport):
    """``control_store(shards=1, replicas=1, **kw)`` -> a started LocalControlStore."""
    started = []

    def start(shards=1, replicas=1, **kwargs):
        kwargs.setdefault("transport", transport)
        store = LocalControlStore(str(tmp_path / f"gcs{len(started)}"), shards, replicas,
                                  **kwargs)
        started.append(store)
        return store.start()

    yield start
    for store in started:
        store.stop()


@pytest.fixture
def gcs_client():
    clients = []

    def connect(address, **kwargs):
        client = GcsClient.connect(address, **kwargs)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()

