"""Fixtures of the object store tests: a small store per test, ids, helpers."""

from __future__ import annotations

import pytest

from tests.store.helpers import SMALL_STORE_BYTES
from zactor.store import ObjectStore


@pytest.fixture
def store(shm_path):
    s = ObjectStore.create(shm_path, SMALL_STORE_BYTES, warm_bytes=SMALL_STORE_BYTES)
    yield s
    s.destroy()
