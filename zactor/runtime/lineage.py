"""Owner-held lineage: what a cluster node keeps to re-create the objects it owns when their
only copies were on a node that died, and the re-creation itself.

Runs in the node manager of the task's *origin* (the node it was submitted to, which owns its
returns: zactor/cluster/remote_tasks.py). Ray's rule: the owner keeps the spec of every task
whose returns are still referenced; a node that ran a task for another node keeps nothing.

**What is kept, and for how long.** A ``Record`` (the spec, the return ids, the attempts
used) is made when a task of this node finishes. It lives while

    live_returns  (its returns with an entry in the object table: referenced or waited for)
  + dependents    (kept records of tasks that took one of its returns as an argument)

is above zero: re-running a consumer whose argument was freed needs the producer's spec too
(a chain a -> b -> c where only c is referenced rebuilds a, then b, then c). So the memory
held is one spec per task in the lineage of a referenced object, and nothing once the last
reference to the last object depending on it is gone. Actor tasks are not recorded: an actor
call cannot be re-run alone (its results are lost with the node, ObjectLostError).

**When objects are re-created: eagerly, when the copy is known lost** (the holder's death
notice, or a failed pull of the object). Only objects with an entry here are rebuilt, and an
entry exists only while something references or waits for the object, so an unreferenced
object is never rebuilt; rebuilding at once rather than at the next ``get`` starts the re-run
a round trip earlier, and needs no hook in every path that reads an object (get, wait, task
arguments, forwarded arguments). Each task is re-submitted once however many objects wait
for it (``nm.tasks`` holds it until it finishes). Each re-run counts against the task's
``max_retries`` as in Ray; when they are spent, its lost returns become ObjectLostError
naming the object, the node and why.

The control store's ``tasks`` table (gcs_recorder.py) is not read here: it holds the same
specs, and a node that lost its own memory lost the objects' owner too (fate sharing).
"""

from __future__ import annotations

from zactor import serialization as ser
from zactor.exceptions import ObjectLostError
from zactor.runtime import messages as m

#: the submitter recorded on re-runs: not a client, so nobody is notified but the waiters
LINEAGE_SUBMITTER = b"lineage"


class Record:
    __slots__ = ("spec", "returns", "attempt", "live_returns", "dependents", "deps")

    def __init__(self, spec, returns, deps, attempt):
        self.spec = spec
        self.returns = returns
        self.deps = deps
        self.attempt = attempt
        self.live_returns = len(returns)
        self.dependents = 0


class Lineage:
    """The records (sans-IO) and the re-creation (through the node manager ``nm``)."""

    def __init__(self, nm):
        self.nm = nm
        self.records: dict[bytes, Record] = {}   # task id -> record
        self.producer: dict[bytes, bytes] = {}   # return oid -> task id, for kept records

    # ---- keeping and freeing ------------------------------------------------------------

    def task_finished(self, task) -> None:
        """A task submitted here finished (before its results are set, so every return has
        its entry: none can have been freed yet)."""
        spec = task.spec
        task_id = spec["id"]
        record = self.records.get(task_id)
        if record is not None:  # a re-run: the record lives on, with its attempts
            record.attempt = max(record.attempt, task.attempt)
            return
        if spec.get("actor"):
            return
        deps = list(task.deps) + list(task.held)
        record = self.records[task_id] = Record(spec, task.returns, deps, task.attempt)
        for oid in task.returns:
            self.producer[oid] = task_id
        for oid in deps:
            parent = self.records.get(self.producer.get(oid))
            if parent is not None:
                parent.dependents += 1

    def entry_recreated(self, oid: bytes) -> None:
        record = self.records.get(self.producer.get(oid))
        if record is not None:
            record.live_returns += 1

    def object_freed(self, oid: bytes) -> None:
        """``oid``'s entry left the object table: drop what no longer needs keeping."""
        task_id = self.producer.get(oid)
        record = self.records.get(task_id)
        if record is None:
            return
        record.live_returns -= 1
        stack = [task_id]
        while stack:
            task_id = stack.pop()
            record = self.records.get(task_id)  # None: dropped already (two args of one)
            if record is None or record.live_returns > 0 or record.dependents > 0:
                continue
            del self.records[task_id]
            for oid in record.returns:
                if self.producer.get(oid) == task_id:
                    del self.producer[oid]
            for oid in record.deps:
                parent_id = self.producer.get(oid)
                parent = self.records.get(parent_id)
                if parent is not None:
                    parent.dependents -= 1
                    stack.append(parent_id)

    # ---- re-creation ----------------------------------------------------------------------

    def copy_lost(self, oid: bytes, reason: str) -> None:
        """The only copy of ``oid`` (an OBJ_REMOTE entry here) is gone: re-run its producer,
        or answer every waiter with ObjectLostError."""
        nm = self.nm
        e = nm.objects.entries.get(oid)
        if e is None or e.state != m.OBJ_REMOTE:
            return
        e.state = e.data = None
        why = self._rebuild(self.producer.get(oid), reason)
        if why is not None:
            self._lost(oid, e, why)

    def _rebuild(self, task_id, reason: str):
        """Re-submit ``task_id`` (and, first, the producers of its arguments that are gone);
        None when it runs (or already did), else why it cannot."""
        nm = self.nm
        record = self.records.get(task_id)
        if record is None:
            return (f"{reason}; it was not made by a task of this node (a put, an actor "
                    f"call's result, or an object owned by another node): no lineage to "
                    f"re-create it from")
        if task_id in nm.tasks:
            return None  # already being re-created: one re-run serves every waiter
        retries = record.spec["retries"]
        if 0 <= retries <= record.attempt:
            return (f"{reason}; re-creating it would re-run task "
                    f"{record.spec.get('name') or task_id.hex()}, whose retries are spent "
                    f"(max_retries={retries})")
        record.attempt += 1
        for oid in record.deps:
            self._ensure_argument(oid, reason)
        from zactor.runtime.node_tasks import Task

        task = Task(record.spec, LINEAGE_SUBMITTER)
        task.attempt = record.attempt
        survived = []
        for oid in task.returns:
            e = nm.objects.entries.get(oid)
            if e is None:
                self.entry_recreated(oid)
            elif e.state is not None:
                survived.append(e)  # pulled here before the loss: its value stays
        request = nm._submit(task)
        for e in survived:  # the re-run's value for it will be ignored (immutable)
            e.waiters.discard(LINEAGE_SUBMITTER)
            e.producer = None
        nm._apply(nm.scheduler.submit(request))
        if nm.remote is not None:
            nm.remote.pull_missing([request])
        return None

    def _ensure_argument(self, oid: bytes, reason: str) -> None:
        """An argument of a task being re-run must exist again: re-create it if it was freed
        (or its copy is lost too); mark it lost if it cannot be."""
        nm = self.nm
        e = nm.objects.entries.get(oid)
        if e is not None and e.state != m.OBJ_REMOTE:
            return  # here, or being made
        if e is not None:
            holder = e.data[0]
            peer = nm.link.peers.get(holder, {})
            if peer.get("state") == "alive":
                return  # on a live node: pulled from there as usual
            e.state = e.data = None
        why = self._rebuild(self.producer.get(oid), reason)
        if why is None:
            return
        # kept (collect=False) for the task about to take it: its run fails with this error
        self._lost(oid, nm.objects.entry(oid), why, collect=False)

    def _lost(self, oid: bytes, e, why: str, collect: bool = True) -> None:
        e.state, e.data = m.OBJ_ERROR, ser.dumps(ObjectLostError(oid.hex(), reason=why))
        self.nm.object_arrived(oid, e, collect)
