"""Keep libzmq's big receive buffers out of mmap/munmap (glibc only; elsewhere a no-op).

Runs once in a process that creates a TransferClient. libzmq allocates one buffer per
received message; a 4 MB chunk is above glibc's mmap threshold until the first such buffer is
freed, and freed heap above the trim threshold goes back to the kernel, so every chunk could
cost ~1000 fresh page faults (measured: ~20,000 minor faults per 256 MB pull and a third of
its throughput; docs/performance.md, "Object transfer"). Fixing both thresholds makes freed
chunk buffers reusable at once. The cost: the process keeps up to ``trim_bytes`` of freed
heap instead of returning it, and the dynamic threshold adjustment is off process-wide.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses larger values on 64-bit

_lock = threading.Lock()
_done_for = 0


def keep_chunk_buffers(chunk_bytes: int, in_flight_bytes: int) -> bool:
    """Raise the thresholds so buffers of ``chunk_bytes`` come from (and return to) the
    heap; True if applied. Idempotent; only ever raises them."""
    global _done_for
    with _lock:
        if chunk_bytes <= _done_for:
            return True
        if chunk_bytes + 4096 > MMAP_THRESHOLD_MAX:
            return False  # bigger chunks cannot be kept off mmap: leave glibc's defaults
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False  # not glibc
        ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and mallopt(
            M_TRIM_THRESHOLD, max(64 << 20, 2 * in_flight_bytes))
        if ok:
            _done_for = chunk_bytes
        return bool(ok)
