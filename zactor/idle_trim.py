"""Giving memory back after a burst: a long-lived process (the node manager, a control-store
replica) that has gone idle collects its garbage cycles and returns the C heap's free pages
to the system.

Why: the node manager's cyclic GC runs rarely (node_main.py: frozen at start, threshold
70,000, so that bursts of tasks do not pay for collections), and glibc keeps freed heap
memory mapped; after a burst of tens of thousands of tasks its resident memory stayed some
tens of MB above its idle size. Once the process has been idle for ``IDLE_S`` after work,
``IdleTrim.tick`` runs one ``gc.collect()`` and ``malloc_trim(0)`` (a few milliseconds,
never while work comes in). Measured with ``python -m zactor.benchmarks.microbenchmark``'s
idle-PSS case (docs/performance.md).
"""

from __future__ import annotations

import gc

IDLE_S = 1.0


def _malloc_trim():
    import ctypes  # here, not at import: ctypes cost the node manager's start ~9 ms

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: collecting alone still helps
        return None


class IdleTrim:
    def __init__(self):
        self._trim = None
        self._trim_found = False
        self._last_work = 0.0
        self._dirty = False

    def worked(self, now: float) -> None:
        """Call when the process handled work (cheap: a store and a flag)."""
        self._last_work = now
        self._dirty = True

    def tick(self, now: float) -> bool:
        """Trim once after IDLE_S without work; True if it did."""
        if not self._dirty or now - self._last_work < IDLE_S:
            return False
        self._dirty = False
        gc.collect()
        if not self._trim_found:
            self._trim, self._trim_found = _malloc_trim(), True
        if self._trim is not None:
            self._trim(0)
        return True
