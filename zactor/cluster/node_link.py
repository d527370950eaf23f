"""A node manager's link to the rest of its cluster: its row in the control store's ``nodes``
table (registration, heartbeats with its load, death), the drivers that join it from
elsewhere, and fencing.

Runs inside the node manager's process and loop (``tick`` is called every loop turn that
passes a timer, never blocks: control-store writes are asynchronous). A node started by
``zactor.init()`` has a link too (its row is what ``zactor.nodes()`` and the scheduler read),
but only a cluster node (config ``cluster``) accepts drivers that are not its parent and
watches them.

Fencing: the row carries the node's ``incarnation`` (a random number per node-manager start).
The global scheduler marks a node "dead" after missed heartbeats; a node that sees its own row
marked dead (it was paused, or cut off, and came back) stops: it must not keep running work
the cluster has already given up on and redone elsewhere. Its supervisor (zactor start)
reports it; a new node can then join.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections import deque

from zactor.cluster.messages import HEARTBEAT_INTERVAL_S

DRIVER_CHECK_INTERVAL_S = 0.2
FENCE_CHECK_INTERVAL_S = 0.5
#: a single-node session's row is written when it changes (at most every heartbeat
#: interval) and otherwise this often: nobody watches it for liveness, and ten writes a
#: second kept its control-store processes at ~4% of a CPU each while idle
LOCAL_ROW_REFRESH_S = 5.0
#: how long ``zactor.nodes()`` waits for the control store before answering from the
#: subscription's view
INFO_SCAN_TIMEOUT_S = 5.0
MUTE_FEED_ENV = "ZACTOR_TEST_MUTE_NODE_FEED"


class NodeLink:
    def __init__(self, nm, *, host: str = "127.0.0.1", cluster: bool = False,
                 heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S):
        self.nm = nm
        self.host = host
        self.cluster = cluster
        self.incarnation = random.getrandbits(48)
        self.started_at = time.time()
        self.heartbeat_interval_s = heartbeat_interval_s
        self.node_port = 0
        self.transfer_port = 0
        self._next_heartbeat = 0.0
        self._last_row = None  # a single-node session's last written row (its content)
        self._row_written_at = 0.0
        self._next_driver_check = 0.0
        self._next_fence_check = time.monotonic() + 1.0
        self._watching = False
        self.peers: dict[bytes, dict] = {}  # node id -> its row, as last published
        self._rows_reading: set = set()  # node ids read_row is reading
        self.deaths: deque = deque()  # (node id, reason), from the control-store thread
        self.fenced_reason = ""
        self.jobs: dict[int, bytes] = {}  # job id -> identity of its driver on this node

    # ---- the row --------------------------------------------------------------------------

    def row(self, state: str = "alive", reason: str = "") -> dict:
        nm = self.nm
        stats = nm.store.stats() if hasattr(nm.store, "stats") else {}
        # below zero while an unblocked worker over-commits the node (local_scheduler.py,
        # "Blocking"): nothing is free then. A negative figure made the global scheduler
        # drop the row as malformed, and so declare the live node dead 3 s later (chaos run)
        available = {name: max(0, amount) for name, amount in
                     nm.scheduler.resources.available.to_dict().items()}
        return {
            "node_id": nm.node_id, "incarnation": self.incarnation, "host": self.host,
            "node_port": self.node_port, "transfer_port": self.transfer_port,
            "ipc_address": nm.address, "pid": os.getpid(), "store": nm.store.path,
            "resources_total": nm.resources.to_dict(), "resources_available": available,
            "queue_len": nm.scheduler.queue_length(),
            "store_used": int(stats.get("used_bytes", 0)),
            "store_capacity": int(stats.get("capacity", 0)),
            "spill": dict(nm.spill.stats) if hasattr(nm, "spill") else {},
            "actor_incarnations": dict(nm.remote.incarnations.stats)
            if getattr(nm, "remote", None) is not None else {},
            "state": state, "reason": reason, "started_at": self.started_at,
            "heartbeat_at": time.time()}

    def register(self) -> None:
        self.nm.gcs.write_node(self.nm.node_id, self.row())

    def deregister(self, reason: str) -> None:
        self.nm.gcs.write_node(self.nm.node_id, self.row("dead", reason))

    # ---- every loop turn ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_interval_s
            if self.nm.gcs.client is not None:
                self._heartbeat(now)
        if self.cluster and now >= self._next_driver_check:
            self._next_driver_check = now + DRIVER_CHECK_INTERVAL_S
            self._check_drivers()
        if self.fenced_reason:
            self.fenced()
        self.handle_deaths()
        if now >= self._next_fence_check:
            self._next_fence_check = now + FENCE_CHECK_INTERVAL_S
            self._check_fenced()

    def _heartbeat(self, now: float) -> None:
        row = self.row()
        if not self.cluster:
            content = {k: v for k, v in row.items() if k != "heartbeat_at"}
            if content == self._last_row and now - self._row_written_at < LOCAL_ROW_REFRESH_S:
                return
            self._last_row, self._row_written_at = content, now
        self.nm.gcs.write_node(self.nm.node_id, row)

    def handle_deaths(self) -> None:
        """Deaths the nodes-table subscription queued (the loop is woken for them)."""
        while self.deaths:
            node_id, reason = self.deaths.popleft()
            if self.nm.remote is not None:
                self.nm.remote.node_died(node_id, reason)

    # ---- drivers --------------------------------------------------------------------------

    def new_job_id(self) -> int:
        """A cluster-unique job id: random, since several nodes hand them out (4 bytes,
        never 0; a collision among a cluster's live jobs is ~n^2/2^32)."""
        if not self.cluster:
            job, self.nm.next_job = self.nm.next_job, self.nm.next_job + 1
            return job
        return random.randrange(1, 2 ** 31)

    def driver_joined(self, identity: bytes, job_id: int) -> None:
        self.jobs[job_id] = identity

    def _check_drivers(self) -> None:
        for identity, client in list(self.nm.clients.items()):
            if client.kind == "driver" and not _alive(client.pid):
                self.driver_gone(identity, f"its driver (pid {client.pid}) died")

    def driver_gone(self, identity: bytes, reason: str) -> None:
        """A driver left (BYE) or died: its references go, and so do its job's actors that
        are not detached (Ray: an actor's lifetime is its job's unless detached)."""
        client = self.nm.clients.get(identity)
        job = next((j for j, ident in self.jobs.items() if ident == identity), None)
        if client is not None:
            self.nm._drop_client(identity)
        if job is None:
            return
        del self.jobs[job]
        job_bytes = job.to_bytes(4, "little")
        for actor_id, actor in list(self.nm.actors.actors.items()):
            if actor_id.endswith(job_bytes) and not actor.detached:
                self.nm.actors.kill(actor_id, reason=f"the job that created it ended: {reason}")

    # ---- fencing ------------------------------------------------------------------------------

    def _check_fenced(self) -> None:
        """Start watching the ``nodes`` table once the control store is reachable (a scan,
        then a subscription answered in the control-store client's thread): it keeps the
        view of the other nodes, and a "dead" mark on our own row means stop."""
        client = self.nm.gcs.client
        if client is None or self._watching:
            return
        self._watching = True  # from a thread: scan and subscribe wait for answers
        threading.Thread(target=self._watch_nodes, args=(client,), daemon=True,
                         name="zactor-node-watch").start()

    def _watch_nodes(self, client) -> None:
        # tests only: the feed delivers no other node's row (one that lags behind a join)
        mute = os.environ.get(MUTE_FEED_ENV) == "1"

        def on_update(update) -> None:
            if not mute or update.key == self.nm.node_id:
                self._on_row(update.key, update.value)

        try:
            client.subscribe("nodes", on_update, timeout_s=5.0)
            for key, row in client.scan("nodes", timeout_s=5.0):
                if not mute or key == self.nm.node_id:
                    self._on_row(key, row)
        except Exception:  # noqa: BLE001 - the control store is away: try again later
            self._watching = False

    def _on_row(self, node_id: bytes, row) -> None:
        if not isinstance(row, dict):
            self.peers.pop(node_id, None)
            return
        previous = self.peers.get(node_id)
        self.peers[node_id] = row
        if node_id != self.nm.node_id and row.get("state") == "dead" and \
                (previous is None or previous.get("state") == "alive"):
            self.deaths.append((node_id, row.get("reason") or "missed heartbeats"))
            self.nm.wake()
        if node_id == self.nm.node_id and row.get("state") == "dead" and \
                row.get("incarnation") == self.incarnation and row.get("fenced_by"):
            self.fenced_reason = row.get("reason") or "missed heartbeats"

    def read_row(self, node_id: bytes) -> None:
        """Read one node's row now, in a thread (answered on the loop): work was placed on a
        node whose row the subscription has not delivered here yet (it joined a moment
        ago). Without it the work ran here instead (CI: an actor with soft affinity to a
        node that had just joined started on the head)."""
        client = self.nm.gcs.client
        if client is None or node_id in self._rows_reading:
            return
        self._rows_reading.add(node_id)

        def answer(row) -> None:  # None: not readable now; the subscription delivers it
            self._rows_reading.discard(node_id)
            if isinstance(row, dict) and node_id not in self.peers:
                self._on_row(node_id, row)

        self.nm.thread_reads.start(
            "zactor-node-row",
            lambda: client.get("nodes", node_id, timeout_s=INFO_SCAN_TIMEOUT_S), answer)

    def alive_nodes(self) -> list:
        """Rows of the nodes the cluster believes alive (ours first)."""
        rows = [r for r in self.peers.values() if r.get("state") == "alive"]
        if not any(r.get("node_id") == self.nm.node_id for r in rows):
            rows.append(self.row())
        rows.sort(key=lambda r: r.get("node_id") != self.nm.node_id)
        return rows

    def read_alive_nodes(self, reply) -> None:
        """``reply(rows)`` on the loop, with the rows of the nodes alive (ours first, with
        its live figures) as the control store has them: ``zactor.nodes()`` reads them there,
        as Ray's reads its GCS, so a node that ``zactor start`` returned for is listed (the
        subscription's view may still lack it: a driver started at once saw one node of two
        in CI). The subscription's view when the store does not answer in time."""
        client = self.nm.gcs.client
        if not self.cluster or client is None:
            reply(self.alive_nodes())
            return

        def scan() -> list:
            return [row for _key, row in client.scan("nodes", timeout_s=INFO_SCAN_TIMEOUT_S)
                    if isinstance(row, dict) and row.get("state") == "alive"]

        def answer(rows) -> None:
            if rows is None:
                reply(self.alive_nodes())
            else:
                reply([self.row()] + [r for r in rows if r.get("node_id") != self.nm.node_id])

        self.nm.thread_reads.start("zactor-node-info", scan, answer)

    def fenced(self) -> None:
        print(f"zactor node manager: this node was declared dead by the cluster "
              f"({self.fenced_reason}); stopping its workers so that nothing runs twice",
              file=sys.stderr)
        self.fenced_reason = ""
        self.nm.stop("fenced: the cluster declared this node dead")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is an exited process its parent has not reaped yet
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
