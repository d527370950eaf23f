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

**The byte cap** (Ray's ``max_lineage_bytes``, ``_system_config``, default 1 GB): the kept
specs' sizes (their inline arguments, mostly) are summed; past the cap the oldest records are
dropped, as if their objects had no lineage. An object that then needs one gets
ObjectReconstructionFailedLineageEvictedError (an ObjectLostError) saying so; the ids whose
lineage was dropped are remembered (at most EVICTED_MEMORY) only for that message.

The control store's ``tasks`` table (gcs_recorder.py) is not read here: it holds the same
specs, and a node that lost its own memory lost the objects' owner too (fate sharing).
"""

from __future__ import annotations

from collections import OrderedDict

from zactor import serialization as ser
from zactor.exceptions import ObjectLostError, ObjectReconstructionFailedLineageEvictedError
from zactor.runtime import messages as m

#: the submitter recorded on re-runs: not a client, so nobody is notified but the waiters
LINEAGE_SUBMITTER = b"lineage"
MAX_LINEAGE_BYTES = 1 << 30  # Ray's default max_lineage_bytes
SPEC_OVERHEAD_BYTES = 200    # a spec's fields other than its inline arguments, about
EVICTED_MEMORY = 100_000     # object ids whose dropped lineage an error message can name


def spec_bytes(spec: dict) -> int:
    """What a kept spec costs, about: its inline arguments (the bulk) plus its other fields
    (cheaper than serialising the spec again at every finished task)."""
    inline = sum(len(a[1]) for a in spec["args"] if a[0] == 0) + \
        sum(len(a[2]) for a in spec["kwargs"] if a[1] == 0)
    return SPEC_OVERHEAD_BYTES + inline


class Record:
    __slots__ = ("spec", "returns", "attempt", "live_returns", "dependents", "deps",
                 "size_bytes")

    def __init__(self, spec, returns, deps, attempt):
        self.spec = spec
        self.returns = returns
        self.deps = deps
        self.attempt = attempt
        self.live_returns = len(returns)
        self.dependents = 0
        self.size_bytes = spec_bytes(spec)


class Lineage:
    """The records (sans-IO) and the re-creation (through the node manager ``nm``)."""

    def __init__(self, nm, max_bytes=None):
        self.nm = nm
        self.records: dict[bytes, Record] = {}   # task id -> record, oldest first
        self.producer: dict[bytes, bytes] = {}   # return oid -> task id, for kept records
        self.bytes = 0  # sum of the kept records' size_bytes
        self.max_bytes = _checked_max_bytes(max_bytes)
        self.evicted: OrderedDict = OrderedDict()  # oid whose record the cap dropped

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
        self.bytes += record.size_bytes
        for oid in task.returns:
            self.producer[oid] = task_id
        for oid in deps:
            parent = self.records.get(self.producer.get(oid))
            if parent is not None:
                parent.dependents += 1
        while self.bytes > self.max_bytes and self.records:
            self._evict_oldest()

    def entry_recreated(self, oid: bytes) -> None:
        record = self.records.get(self.producer.get(oid))
        if record is not None:
            record.live_returns += 1

    def object_freed(self, oid: bytes) -> None:
        """``oid``'s entry left the object table: drop what no longer needs keeping."""
        self.evicted.pop(oid, None)
        task_id = self.producer.get(oid)
        record = self.records.get(task_id)
        if record is None:
            return
        record.live_returns -= 1
        self._release([task_id])

    def _release(self, stack: list) -> None:
        """Drop the records of ``stack`` that nothing needs any more, then their parents."""
        while stack:
            task_id = stack.pop()
            record = self.records.get(task_id)  # None: dropped already (two args of one)
            if record is None or record.live_returns > 0 or record.dependents > 0:
                continue
            self._drop(task_id, record)
            stack.extend(self._parents_released(record))

    def _drop(self, task_id: bytes, record: Record) -> None:
        del self.records[task_id]
        self.bytes -= record.size_bytes
        for oid in record.returns:
            if self.producer.get(oid) == task_id:
                del self.producer[oid]

    def _parents_released(self, record: Record) -> list:
        parents = []
        for oid in record.deps:
            parent_id = self.producer.get(oid)
            parent = self.records.get(parent_id)
            if parent is not None:
                parent.dependents -= 1
                parents.append(parent_id)
        return parents

    def _evict_oldest(self) -> None:
        """Over the byte cap: forget the oldest record although it may still be needed (its
        returns, and what re-running a dependent would need them for, become lost)."""
        task_id, record = next(iter(self.records.items()))
        self._drop(task_id, record)
        for oid in record.returns:
            self.evicted[oid] = None
            if len(self.evicted) > EVICTED_MEMORY:
                self.evicted.popitem(last=False)
        self._release(self._parents_released(record))

    # ---- re-creation ----------------------------------------------------------------------

    def copy_lost(self, oid: bytes, reason: str) -> None:
        """The only copy of ``oid`` (an OBJ_REMOTE entry here) is gone: re-run its producer,
        or answer every waiter with ObjectLostError."""
        nm = self.nm
        e = nm.objects.entries.get(oid)
        if e is None or e.state != m.OBJ_REMOTE:
            return
        e.state = e.data = None
        why = self._rebuild(oid, reason)
        if why is not None:
            self._lost(oid, e, why)

    def _rebuild(self, oid: bytes, reason: str):
        """Re-submit the task that made ``oid`` (and, first, the producers of its arguments
        that are gone); None when it runs (or already did), else (error class, why not)."""
        nm = self.nm
        task_id = self.producer.get(oid)
        record = self.records.get(task_id)
        if record is None and oid in self.evicted:
            return ObjectReconstructionFailedLineageEvictedError, (
                f"{reason}; its lineage was evicted: the specs kept to re-create objects "
                f"exceeded max_lineage_bytes ({self.max_bytes} bytes), and the oldest were "
                f"dropped")
        if record is None:
            return ObjectLostError, (
                f"{reason}; it was not made by a task of this node (a put, an actor "
                f"call's result, or an object owned by another node): no lineage to "
                f"re-create it from")
        if task_id in nm.tasks:
            return None  # already being re-created: one re-run serves every waiter
        retries = record.spec["retries"]
        if 0 <= retries <= record.attempt:
            return ObjectLostError, (
                f"{reason}; re-creating it would re-run task "
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
        why = self._rebuild(oid, reason)
        if why is None:
            return
        # kept (collect=False) for the task about to take it: its run fails with this error
        self._lost(oid, nm.objects.entry(oid), why, collect=False)

    def _lost(self, oid: bytes, e, why: tuple, collect: bool = True) -> None:
        error_class, reason = why
        e.state, e.data = m.OBJ_ERROR, ser.dumps(error_class(oid.hex(), reason=reason))
        self.nm.object_arrived(oid, e, collect)


def _checked_max_bytes(value) -> int:
    if value is None:
        return MAX_LINEAGE_BYTES
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"_system_config max_lineage_bytes must be a whole number of bytes "
                         f">= 0, not {value!r}")
    return value
