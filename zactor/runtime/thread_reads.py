"""Control-store reads the node manager's loop must not wait for: each runs in its own
thread, and its answer is handed back to the loop, which calls ``answer(value)`` there (woken
through ``NodeManager.wake``). So the loop's tables are changed by the loop only.

Used for a node's row that the subscription has not delivered yet (cluster/node_link.py,
``read_row``), ``zactor.nodes()``'s scan of the nodes table (``read_alive_nodes``) and
``get_actor`` of an actor that lives on another node (cluster/remote_actors.py). A read that
raises (the store does not answer within its timeout, a replica fails over) answers None;
each caller says what None means for it.
"""

from __future__ import annotations

import threading
from collections import deque


class ThreadReads:
    def __init__(self, wake):
        self._wake = wake  # thread-safe: makes the loop call answer_all soon
        self._done: deque = deque()  # (answer, value), appended by the reading threads

    def start(self, name: str, read, answer) -> None:
        """Run ``read()`` in a daemon thread named ``name``; ``answer(value)`` on the loop."""
        def run() -> None:
            try:
                value = read()
            except Exception:  # noqa: BLE001 - the caller's answer handles "no value"
                value = None
            self._done.append((answer, value))
            self._wake()

        threading.Thread(target=run, daemon=True, name=name).start()

    def answer_all(self) -> None:
        """On the loop: the answers of the reads that have finished."""
        while self._done:
            answer, value = self._done.popleft()
            answer(value)
