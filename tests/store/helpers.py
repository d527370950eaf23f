"""Helpers shared by the store tests (imported, not a conftest)."""

from __future__ import annotations

import os
import struct
import time

SMALL_STORE_BYTES = 64 << 20


def oid(n: int) -> bytes:
    """A 28-byte object id numbered n (a put id of a fixed task, as zactor.ids lays them)."""
    return b"\x07" * 24 + struct.pack("<I", 0x8000_0000 | n)


def wait_for(predicate, timeout_s: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` until it is true or the deadline passes; returns its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.01)


def shm_free_bytes() -> int:
    st = os.statvfs("/dev/shm")
    return st.f_bavail * st.f_frsize
