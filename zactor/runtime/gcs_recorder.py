"""What the node manager writes to the control store, off the per-task critical path.

Runs in the node manager. Every write is asynchronous (``put_async``: the GcsClient packs
writes into batches, one SQLite transaction each at every replica) and nothing on the task
path ever waits for an acknowledgement. Until the control store is reachable (the local
cluster starts it in the background after the node, so that ``init`` does not wait ~0.5 s for
SQLite-backed processes), writes queue here and go out when ``connect`` succeeds.

Tables written (zactor/control/schema.py):
    nodes      node id  -> {address, resources, store path, pid, state, start time}
    jobs       job id   -> {driver pid, start time}
    functions  function id -> the cloudpickled function (once per function)
    tasks      task id  -> the task spec (lineage), written once, a second after the task
                           finished and only if its results still exist then (most tiny
                           tasks' results are read and dropped at once: an object that is gone
                           needs no re-creation), straight to the disk-only archive (the paper
                           flushes finished lineage to disk to bound the GCS's memory); a task
                           still queued or running is re-created from the node's own memory
    objects    object id -> {node, size} for objects in the shared-memory store
"""

from __future__ import annotations

import sys
import threading
import time

BACKLOG_LIMIT = 1_000_000  # writes kept while disconnected; past this, lineage is dropped


class GcsRecorder:
    def __init__(self, node_id: bytes):
        self.node_id = node_id
        self.client = None
        self.backlog: list = []
        self.address = None
        self._dropped = 0
        self._lock = threading.Lock()  # the backlog is drained by the connecting thread

    def connect_in_background(self, address: str, keys=None) -> None:
        """Connect without blocking the node manager's loop; writes queue until then."""
        self.keys = keys
        threading.Thread(target=self._connect, args=(address,), daemon=True,
                         name="zactor-gcs-connect").start()

    def _connect(self, address: str) -> None:
        from zactor.control.client import GcsClient  # imported late: keeps node start fast

        try:
            client = GcsClient.connect(address, timeout_s=30.0,
                                       keys=getattr(self, "keys", None))
        except Exception as exc:  # noqa: BLE001 - tasks still run; say why lineage is off
            print(f"zactor node manager: cannot reach the control store at {address}: "
                  f"{exc}", file=sys.stderr)
            return
        with self._lock:
            self.address = address
            backlog, self.backlog = self.backlog, []
            for op, table, key, value in backlog:
                self._send(client, op, table, key, value)
            self.client = client

    def _write(self, op: str, table: str, key: bytes, value) -> None:
        client = self.client
        if client is None:
            with self._lock:
                client = self.client
                if client is None:
                    if len(self.backlog) < BACKLOG_LIMIT:
                        self.backlog.append((op, table, key, value))
                    else:
                        self._dropped += 1
                    return
        self._send(client, op, table, key, value)

    @staticmethod
    def _send(client, op, table, key, value) -> None:
        try:
            if op == "put":
                client.put_async(table, key, value)
            elif op == "put_not_above":  # value: (ceiling, row)
                client.put_not_above_async(table, key, *value)
            elif op == "delete":
                client.delete_async(table, key)
            else:
                client.archive_task_async(key, value)
        except Exception as exc:  # noqa: BLE001 - the control store must not stop tasks
            print(f"zactor node manager: control-store write failed: {exc}", file=sys.stderr)

    # ---- what happens on the node ---------------------------------------------------------

    def write_node(self, node_id: bytes, row: dict) -> None:
        """This node's row (zactor/cluster/messages.py: registration, heartbeat, death)."""
        self._write("put", "nodes", node_id, row)

    def job_started(self, job_id: int, driver_pid: int) -> None:
        self._write("put", "jobs", job_id.to_bytes(4, "little"),
                    {"driver_pid": driver_pid, "node": self.node_id,
                     "start_time": time.time()})

    def function(self, fid: bytes, blob: bytes) -> None:
        self._write("put", "functions", fid, blob)

    def task_finished(self, spec: dict) -> None:
        self._write("archive", "tasks", spec["id"], spec)

    def actor_state(self, actor_id: bytes, state: str, incarnation: int, class_name: str,
                    name, namespace: str, worker_id=None, methods=None, **extra) -> None:
        """Where an actor lives and in which incarnation (each restart is a new one);
        ``extra``: what a restart on another node needs (cluster/actor_failover.py: owner,
        restarts_left, task_retries, replayable; death when it is dead for good). Written
        unless the row already names a later incarnation: a node that was cut off must not
        undo a restart elsewhere (cluster/actor_incarnations.py)."""
        self._write("put_not_above", "actors", actor_id, ({"incarnation": incarnation}, {
            "state": state, "incarnation": incarnation, "class": class_name, "name": name,
            "namespace": namespace, "node": self.node_id, "worker": worker_id,
            "methods": methods or {},
            "time": time.time(), **extra}))

    def actor_checkpoint(self, actor_id: bytes, state: bytes, after_task: bytes,
                         covered=(), incarnation: int = 0) -> None:
        """An actor's last checkpoint (so that it survives the node, for restarts elsewhere);
        kept apart from its state row, which changes at every restart. ``covered``:
        [[caller node id, its last call the state includes]] (which calls to replay). Not
        written over a later incarnation's checkpoint."""
        self._write("put_not_above", "kv", b"actor-checkpoint:" + actor_id, (
            {"incarnation": incarnation}, {
                "checkpoint": state, "after_task": after_task, "node": self.node_id,
                "covered": list(covered), "incarnation": incarnation, "time": time.time()}))

    def actor_creation(self, actor_id: bytes, spec: dict, submitter: bytes) -> None:
        """A detached actor's creation spec: a surviving node restarts it from this if its
        node dies with its owner (cluster/actor_adoption.py)."""
        actor = {k: v for k, v in spec["actor"].items() if k not in ("checkpoint", "covered")}
        self._write("put", "kv", b"actor-creation:" + actor_id,
                    {"spec": {**spec, "actor": actor}, "submitter": submitter})

    def object_stored(self, oid: bytes, size: int) -> None:
        self._write("put", "objects", oid, {"node": self.node_id, "size": size})

    def object_freed(self, oid: bytes) -> None:
        self._write("delete", "objects", oid, None)

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.flush(timeout_s=2.0)
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
            self.client.close()
            self.client = None
