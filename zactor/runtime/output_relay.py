"""What tasks print, on their driver's terminal wherever they ran (Ray's ``log_to_driver``).

On a single local node (``zactor.init()``) workers inherit the driver's terminal and write to
it directly (worker.py ``_PrefixedStream``): nothing here is involved. On a cluster node the
terminal a worker inherits is its node's (a ``zactor start`` log file), so:

    worker  RelayedStream: each whole line is written to the node's log as before, and queued
            with its task id in the CoreClient; the client's flush (every FLUSH_INTERVAL_S,
            and right before a TASK_DONE, so a task's lines precede its result) sends them as
            one WORKER_OUTPUT message: batched, and off the task's critical path.
    node    OutputRelay: a line goes to the driver of its task's job when that driver is a
            client of this node; otherwise up the chain of tasks to the peer node that
            forwarded the task (or its parent), which applies the same rule. Each destination
            gets at most RATE_BYTES_PER_S (bursts of BURST_BYTES): beyond that lines are
            dropped and the next delivery starts with a note saying how many.
    driver  CoreClient prints them (stdout lines to stdout, stderr lines to stderr) as it reads
            its messages, and a cluster driver's flusher thread reads them while the driver
            does not wait for anything; ``init(log_to_driver=False)`` discards them (the
            node's log still has them).

The node's "infeasible task" warnings take the same way (``warn``).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque

from zactor import protocol
from zactor.runtime import context
from zactor.runtime import messages as m

#: a worker keeps at most this many lines unsent (a task printing faster than its node can
#: take them loses the rest, with a note)
MAX_QUEUED_LINES = 10_000
RATE_BYTES_PER_S = 1 << 20
BURST_BYTES = 8 << 20
JOB_ID_BYTES = 4
#: node-to-node relays of one line at most (a chain of nested tasks across nodes is shorter;
#: a bound in case the task tables of two nodes ever point at each other)
MAX_HOPS = 16


class RelayedStream:
    """A worker's sys.stdout / sys.stderr on a cluster node."""

    def __init__(self, stream, client, is_stderr: bool):
        self._stream = stream
        self._client = client
        self._is_stderr = is_stderr
        self._prefix_tail = f" pid={os.getpid()}, ip={client.config.get('host', '')}) "
        self._partial = ""
        self._task = None

    def write(self, text):
        if not text:
            return 0
        task = context.current_task_id()
        if task is not None:
            self._task = task  # a thread of the task's may print after it
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        if lines:
            prefix = f"({context.current_task_name() or 'worker'}{self._prefix_tail}"
            out = "".join(f"{prefix}{line}\n" for line in lines)
            self._stream.write(out)
            self._queue(out)
        return len(text)

    def _queue(self, out: str) -> None:
        if self._task is None:
            return
        queue = self._client.output
        if len(queue) >= MAX_QUEUED_LINES:
            self._client.output_dropped += out.count("\n")
            return
        queue.append([self._task, self._is_stderr, out])

    def flush(self):
        if self._partial:
            self.write("\n")
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def take_queued(client) -> list:
    """The lines a worker's client sends in its next WORKER_OUTPUT (from its flush)."""
    queue = client.output
    lines = []
    while True:
        try:
            lines.append(queue.popleft())
        except IndexError:
            break
    if client.output_dropped and lines:
        lines.insert(0, [lines[0][0], True, f"(zactor: {client.output_dropped} lines of "
                                            f"worker output dropped: printed too fast)\n"])
        client.output_dropped = 0
    return lines


def print_lines(lines) -> None:
    """A driver's side: write delivered lines to its terminal."""
    for line in lines:
        stream = sys.stderr if line[1] else sys.stdout
        try:
            stream.write(line[2])
        except (ValueError, OSError):  # a closed stream at exit: nothing to do
            return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (ValueError, OSError):
        pass


class OutputRelay:
    """The node manager's part: where each line goes, and the per-destination bound."""

    def __init__(self, nm):
        self.nm = nm
        self.buckets: dict = {}  # destination identity -> [tokens, last refill, dropped]

    def on_output(self, _identity, msg) -> None:
        """WORKER_OUTPUT from a worker of this node or from a peer node."""
        by_destination: dict = {}
        for task_id, is_stderr, text, *hops in msg["lines"]:
            hops = hops[0] if hops else 0
            destination, key = self.destination(task_id)
            if destination is None or (destination[0] == "peer" and hops >= MAX_HOPS):
                continue  # no one to tell: the node's log keeps it
            by_destination.setdefault(destination, []).append(
                [key, is_stderr, text, hops + (destination[0] == "peer")])
        for destination, lines in by_destination.items():
            self._send(destination, lines)

    def warn(self, task_id: bytes, text: str) -> None:
        """A warning about a task: in the node's log, and on its driver's terminal."""
        print(text, file=sys.stderr, flush=True)
        if not self.nm.config.get("cluster"):
            return  # a local node's stderr is its driver's terminal already
        destination, key = self.destination(task_id)
        if destination is not None:
            self._send(destination, [[key, True, text + "\n", 0]])

    def destination(self, task_id: bytes):
        """Where a line of ``task_id`` goes: (("client", identity) of the driver of a job
        in the task's chain of parents on this node, or ("peer", identity) of the node a
        task of that chain came from, or None: no one to tell) and the task id it travels
        with: the task of the chain the next node knows. Tasks submitted by workers carry
        job 0, so the chain and not the line's own job leads to the driver."""
        nm = self.nm
        key = task_id
        for _ in range(1000):  # the chain of parents is finite; bounded all the same
            driver = nm.link.jobs.get(int.from_bytes(key[-JOB_ID_BYTES:], "little"))
            if driver is not None and driver in nm.clients:
                return ("client", driver), key
            task = nm.tasks.get(key)
            if task is None:
                return None, key
            if task.submitter.startswith(b"peer:"):
                return ("peer", task.submitter), key
            key = task.spec.get("parent") or b""
            if not key:
                return None, key
        return None, key

    def _send(self, destination, lines) -> None:
        lines = self._bounded(destination, lines)
        if not lines:
            return
        kind, identity = destination
        frames = protocol.encode(m.WORKER_OUTPUT, {"lines": lines})
        if kind == "client":
            self.nm.sock.send_multipart([identity, *frames])
        elif self.nm.remote is not None:
            self.nm.remote.router.send_multipart([identity, *frames])

    def _bounded(self, destination, lines) -> list:
        now = time.monotonic()
        bucket = self.buckets.get(destination)
        if bucket is None:
            bucket = self.buckets[destination] = [BURST_BYTES, now, 0]
        bucket[0] = min(BURST_BYTES, bucket[0] + (now - bucket[1]) * RATE_BYTES_PER_S)
        bucket[1] = now
        kept = deque()
        for line in lines:
            size = len(line[2])
            if size <= bucket[0]:
                bucket[0] -= size
                kept.append(line)
            else:
                bucket[2] += line[2].count("\n")
        if bucket[2] and kept:
            kept.appendleft([kept[0][0], True, f"(zactor: {bucket[2]} lines of worker output "
                                               f"dropped: more than {RATE_BYTES_PER_S >> 20} "
                                               f"MB/s for this driver)\n"])
            bucket[2] = 0
        return list(kept)

    def client_gone(self, identity: bytes) -> None:
        self.buckets.pop(("client", identity), None)
