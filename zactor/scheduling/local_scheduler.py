"""The local scheduler of one node, as a sans-IO state machine.

Runs inside the node manager. It owns no sockets and no clock: the node manager feeds it events
(a task submitted, an object became local, a worker registered / finished / blocked / died, a
cancel) and carries out the instructions each event returns (dispatch a task to a worker, start
workers, spill a task to the global scheduler, fail a task, kill a worker; those types are in
local_instructions.py). That keeps every scheduling decision testable without processes
(tests/scheduling/).

Model
-----
*Leases.* A worker is leased to one *scheduling class* (a task's resource demand): the demand is
acquired once when the lease starts and released when it ends. While leased, the worker may be
sent up to ``pipeline_depth`` tasks of that class; it runs them one after another, so the CPU
it holds is never shared. Pipelining hides the round trip between "task done" and "next task"
that otherwise bounds tiny-task throughput.

*Blocking.* A task that calls ``get`` on an object not yet available makes its worker *blocked*:
the worker lends its CPUs back (so a nested task can run: the pool never deadlocks on a tree of
tasks) and the tasks queued behind it are recalled, since they could be the very tasks it waits
for. When it unblocks it takes the CPUs back even if that over-commits the node for a while
(as Ray does); new leases wait until the node is back under its totals.

*Dependencies.* A task waits until every object it depends on is local; the node manager reports
objects as they arrive (``object_local``) or are lost (``object_gone``).

*Chains* (the paper's pipelining of dependent tasks). A waiting task whose missing objects are
all made by tasks in flight on one leased worker of its class is sent to that worker at once,
queued behind them (``Dispatch.pending`` names those objects): the worker runs it on their
results as soon as they are made, without a round trip through the node manager per hop. The
worker hands a chained task back (``tasks_returned``) when a producer's result is not there to
use (it failed to be retried, was cancelled or recalled); the task then waits as any other and
is not chained again. ``producer_of`` (the node manager's object table) says which task makes
an object; without it nothing is chained.

*Spilling.* A task that can never fit on this node, or that the spill policy (a hook, see
``SpillPolicy``) wants elsewhere, is handed to the global scheduler with a ``Spill``
instruction. Without a global scheduler (``can_spill=False``) an infeasible task waits, and a
single ``Infeasible`` warning is emitted for it, as Ray warns.

Invariants (checked by ``check()``):
- every task is in exactly one of: waiting for objects, ready, in flight on one worker;
- a worker's in-flight tasks are all of its lease's class, and at most ``pipeline_depth``;
- the resources acquired equal the sum of the demands of live leases (minus lent CPUs).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Callable, Optional

from zactor.scheduling.local_instructions import (
    DedicatedWorkerDied,
    Dispatch,
    FailTask,
    Infeasible,
    Interrupt,
    KillWorker,
    Recall,
    Spill,
    SpillPolicy,
    StartWorkers,
    TaskRequest,
    spill_when_queue_long,
)
from zactor.scheduling.resources import CPU, NodeResources, ResourceSet

#: the instructions and requests (local_instructions.py) are used through this module
__all__ = ["LocalScheduler", "DedicatedWorkerDied", "Dispatch", "FailTask", "Infeasible",
           "Interrupt", "KillWorker", "Recall", "Spill", "SpillPolicy", "StartWorkers",
           "TaskRequest", "spill_when_queue_long"]

# ---- internal state ------------------------------------------------------------------------

WAITING, READY, IN_FLIGHT = "waiting", "ready", "in_flight"
IDLE, LEASED, BLOCKED, DEDICATED = "idle", "leased", "blocked", "dedicated"


class _Task:
    __slots__ = ("request", "state", "attempt", "worker_id", "cancelled",
                 "warned_infeasible", "pending", "no_chain")

    def __init__(self, request: TaskRequest, state: str):
        self.request = request
        self.state = state
        self.attempt = 0
        self.worker_id: Optional[bytes] = None
        self.cancelled = False
        self.warned_infeasible = False
        self.pending = frozenset()  # chained: objects its worker makes before running it
        self.no_chain = False  # handed back once: waits for its objects like any task


class _Worker:
    __slots__ = ("worker_id", "status", "lease", "gpu_ids", "in_flight", "lent_cpu",
                 "actor_task_id", "recalling", "direct")

    def __init__(self, worker_id: bytes):
        self.worker_id = worker_id
        self.status = IDLE
        self.lease: Optional[ResourceSet] = None
        self.gpu_ids: tuple = ()
        self.in_flight: "OrderedDict[bytes, None]" = OrderedDict()
        self.lent_cpu = ResourceSet()
        self.actor_task_id = b""
        self.recalling = False
        self.direct = False  # leased to a submitter (TaskRequest.lease): no task is added


class LocalScheduler:
    def __init__(self, total: ResourceSet, *, pipeline_depth: int = 1,
                 max_workers: Optional[int] = None, can_spill: bool = False,
                 spill_policy: Optional[SpillPolicy] = None,
                 producer_of: Optional[Callable[[bytes], Optional[bytes]]] = None):
        if pipeline_depth < 1:
            raise ValueError(f"pipeline_depth must be >= 1, got {pipeline_depth}")
        self.resources = NodeResources(total)
        self.pipeline_depth = pipeline_depth
        cpus = total.units(CPU) // 10_000
        self.base_workers = max_workers if max_workers is not None else max(1, cpus)
        self.can_spill = can_spill
        self.spill_policy = spill_policy
        self.tasks: dict[bytes, _Task] = {}
        self.workers: dict[bytes, _Worker] = {}
        self.idle: list[bytes] = []  # LIFO: reuse the most recently used (warm) worker
        self.starting = 0
        self.local_objects: set = set()
        self._missing: dict[bytes, set] = {}
        self._waiters: dict[bytes, set] = {}
        # ready tasks, one FIFO per scheduling class (its demand): scheduling scans classes,
        # not tasks, so 10,000 queued tasks of one kind cost one check per event.
        self._ready: "OrderedDict[tuple, deque]" = OrderedDict()
        # chains (see the module's docstring): producer task id -> waiting tasks that need
        # one of its results; producers to look at in the next scheduling pass
        self.producer_of = producer_of if pipeline_depth > 1 else None
        self._chainable: dict[bytes, dict] = {}
        self._chain_check: list = []

    # ---- queries -----------------------------------------------------------------------

    def queue_length(self) -> int:
        return sum(len(q) for q in self._ready.values())

    def blocked_workers(self) -> int:
        return sum(1 for w in self.workers.values() if w.status == BLOCKED)

    def worker_limit(self) -> int:
        """Workers this node may run: its CPUs, plus one for each blocked worker (whose CPU
        is lent out), plus dedicated actor workers (they hold their own resources)."""
        dedicated = sum(1 for w in self.workers.values() if w.status == DEDICATED)
        return self.base_workers + self.blocked_workers() + dedicated

    # ---- events ------------------------------------------------------------------------

    def submit(self, request: TaskRequest) -> list:
        return self.submit_many((request,))

    def submit_many(self, requests) -> list:
        """Several tasks at once, with one scheduling pass (a SUBMIT batch)."""
        out = []
        for request in requests:
            out.extend(self._accept(request))
        return out + self._schedule()

    def _accept(self, request: TaskRequest) -> list:
        if request.task_id in self.tasks:
            raise ValueError(f"task {request.task_id.hex()} submitted twice")
        if self.can_spill and not request.local_only:
            reason = None if self.resources.can_ever_fit(request.demand) else \
                "does not fit on this node"
            if reason is None and self.spill_policy is not None:
                reason = self.spill_policy(request, self)
            if reason is not None:
                return [Spill(request.task_id, request.payload, reason)]
        task = _Task(request, WAITING)
        self.tasks[request.task_id] = task
        missing = {d for d in request.deps if d not in self.local_objects}
        if missing:
            self._wait_for(task, missing)
        else:
            self._make_ready(task)
        return []

    def _wait_for(self, task: _Task, missing: set) -> None:
        task_id = task.request.task_id
        task.state = WAITING
        self._missing[task_id] = missing
        for oid in missing:
            self._waiters.setdefault(oid, set()).add(task_id)
        if self.producer_of is None or task.no_chain or task.request.dedicated or \
                task.request.lease:
            return
        for oid in missing:
            producer = self.producer_of(oid)
            if producer is not None and producer in self.tasks:
                self._chainable.setdefault(producer, {})[task_id] = None
                self._chain_check.append(producer)

    def _drop(self, task_id: bytes) -> _Task:
        """Forget a task that leaves this scheduler (finished, failed, spilled, taken)."""
        self._chainable.pop(task_id, None)
        return self.tasks.pop(task_id)

    def change_capacity(self, removed: ResourceSet, added: ResourceSet) -> list:
        """Turn ``removed`` of this node's resources into ``added`` ones (a placement group's
        bundle reserved here: CPU becomes CPU_group_i_<pg>; released: the reverse). What is
        available may go below zero until running tasks give ``removed`` back."""
        res = self.resources
        res.total = res.total - removed + added
        res.available = res.available - removed + added
        return self._schedule()

    def waits_for(self, object_id: bytes) -> bool:
        """Whether a task here waits for this object to become local."""
        return object_id in self._waiters

    def object_local(self, object_id: bytes) -> list:
        self.local_objects.add(object_id)
        woken = self._waiters.pop(object_id, ())
        for task_id in woken:
            missing = self._missing.get(task_id)
            if missing is None:
                continue
            missing.discard(object_id)
            if not missing:
                del self._missing[task_id]
                self._make_ready(self.tasks[task_id])
        return self._schedule() if woken else []

    def object_gone(self, object_id: bytes) -> list:
        """The object left this node (evicted, lost): ready tasks that need it wait again."""
        self.local_objects.discard(object_id)
        return []

    def worker_registered(self, worker_id: bytes) -> list:
        if worker_id in self.workers:
            return []
        self.starting = max(0, self.starting - 1)
        self.workers[worker_id] = _Worker(worker_id)
        self.idle.append(worker_id)
        return self._schedule()

    def worker_start_failed(self) -> list:
        self.starting = max(0, self.starting - 1)
        return self._schedule()

    def task_finished(self, task_id: bytes, worker_id: bytes) -> list:
        """The worker finished the task (with a result or an application error)."""
        return self.tasks_finished(((task_id, worker_id),))

    def tasks_finished(self, pairs) -> list:
        """Several (task_id, worker_id) finished, with one scheduling pass."""
        touched = False
        for task_id, worker_id in pairs:
            task = self.tasks.get(task_id)
            worker = self.workers.get(worker_id)
            if task is None or worker is None or task.worker_id != worker_id:
                continue  # stale report (e.g. the task was recalled or retried elsewhere)
            touched = True
            worker.in_flight.pop(task_id, None)
            self._drop(task_id)
            if self.producer_of is not None and worker.in_flight:
                self._chain_check.extend(worker.in_flight)  # room for their dependents
            if task.request.dedicated and not task.cancelled:
                worker.status = DEDICATED  # the actor keeps its worker and its lease
                worker.actor_task_id = task_id
            else:
                self._end_lease_if_done(worker)
        return self._schedule() if touched else []

    def rebalance(self) -> list:
        """Called now and then (the node manager's timer): when workers sit idle with no
        task ready, take back the tasks queued behind a running one elsewhere (a long task
        must not hold up the short ones pipelined after it)."""
        if not self.idle or any(queue and key[1] != "lease"
                                for key, queue in self._ready.items()):
            return []  # (a waiting direct lease does not count: see _schedule)
        out = []
        for worker in self.workers.values():
            if worker.status == LEASED and len(worker.in_flight) > 1 and not worker.recalling \
                    and not worker.direct:
                queued = self._movable(worker)
                if queued:
                    worker.recalling = True
                    out.append(Recall(worker.worker_id, queued))
        return out

    def _movable(self, worker: _Worker) -> tuple:
        """Tasks queued behind the running one that another worker could run now (not
        chained ones: they need what this worker is making)."""
        tasks = self.tasks
        return tuple(t for t in list(worker.in_flight)[1:] if not tasks[t].pending)

    def take_ready(self, limit: int) -> list:
        """Remove up to ``limit`` tasks that are ready but not sent to a worker (not actor
        creations), oldest class first; their requests. Tasks the cluster placed here may go
        too: the cluster's view when it placed them is older than the free room seen now."""
        out = []
        for key, queue in list(self._ready.items()):
            if key[1]:
                continue  # dedicated (actor creation): stays
            while queue and len(out) < limit:
                task_id = queue.popleft()
                out.append(self._drop(task_id).request)
            if not queue:
                del self._ready[key]
        return out

    def tasks_returned(self, worker_id: bytes, task_ids) -> list:
        """A worker handed back tasks it had not started (after a ``Recall``)."""
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.recalling = False
        out = []
        for task_id in reversed(tuple(task_ids)):  # pushed to the front: keep their order
            task = self.tasks.get(task_id)
            if task is None or task.worker_id != worker_id:
                continue
            if worker is not None:
                worker.in_flight.pop(task_id, None)
            task.worker_id = None
            if task.cancelled:  # handed back while its interrupt was on the way
                self._drop(task_id)
                out.append(FailTask(task_id, task.request.payload, "cancelled",
                                    "the task was cancelled before it ran"))
                continue
            self._requeue(task)
        return out + (self._after_worker_progress(worker) if worker else self._schedule())

    def worker_blocked(self, worker_id: bytes) -> list:
        worker = self.workers.get(worker_id)
        if worker is None or worker.status != LEASED:
            return []
        worker.status = BLOCKED
        lent = worker.lease.only([CPU])
        worker.lent_cpu = lent
        self.resources.release(lent)
        out = []
        queued = tuple(list(worker.in_flight)[1:])
        if queued and not worker.recalling:
            worker.recalling = True
            out.append(Recall(worker_id, queued))
        return out + self._schedule()

    def worker_unblocked(self, worker_id: bytes) -> list:
        worker = self.workers.get(worker_id)
        if worker is None or worker.status != BLOCKED:
            return []
        self.resources.acquire(worker.lent_cpu, allow_overcommit=True)
        worker.lent_cpu = ResourceSet()
        worker.status = LEASED
        return []

    def worker_died(self, worker_id: bytes, detail: str) -> list:
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            self.starting = max(0, self.starting - 1)
            return self._schedule()
        if worker_id in self.idle:
            self.idle.remove(worker_id)
        out = []
        if worker.status == DEDICATED:
            self._end_lease(worker)
            out.append(DedicatedWorkerDied(worker.actor_task_id, worker_id, detail))
            return out + self._schedule()
        for i, task_id in enumerate(list(worker.in_flight)):
            task = self.tasks[task_id]
            task.worker_id = None
            started = i == 0  # only the first in-flight task can have been running
            if task.cancelled:
                self._drop(task_id)
                out.append(FailTask(task_id, task.request.payload, "cancelled",
                                    "the task was cancelled"))
            elif started and task.attempt >= task.request.max_retries:
                self._drop(task_id)
                out.append(FailTask(task_id, task.request.payload, "worker_crashed", detail))
            else:
                if started:
                    task.attempt += 1
                self._requeue(task)
        worker.in_flight.clear()
        if worker.status in (LEASED, BLOCKED):
            self._end_lease(worker)
        return out + self._schedule()

    def release_dedicated(self, worker_id: bytes) -> list:
        """The actor on this worker exited (killed, or its creation failed): the worker's
        lease ends and it returns to the pool."""
        worker = self.workers.get(worker_id)
        if worker is None or worker.status != DEDICATED:
            return []
        self._end_lease(worker)
        worker.status, worker.actor_task_id = IDLE, b""
        self.idle.append(worker_id)
        return self._schedule()

    def cancel(self, task_id: bytes, force: bool = False) -> list:
        task = self.tasks.get(task_id)
        if task is None:
            return []
        if task.state != IN_FLIGHT:
            self._forget_queued(task)
            return [FailTask(task_id, task.request.payload, "cancelled",
                             "the task was cancelled before it ran")]
        task.cancelled = True
        worker = self.workers[task.worker_id]
        if force and list(worker.in_flight)[0] == task_id:
            return [KillWorker(worker.worker_id, f"force-cancel of task {task_id.hex()}")]
        # running or queued in the worker: the worker knows which (the task it runs is
        # interrupted, a queued one dropped) and reports it cancelled; one it has finished
        # meanwhile keeps its result
        return [Interrupt(worker.worker_id, task_id)]

    # ---- the scheduling step ------------------------------------------------------------

    def _make_ready(self, task: _Task, front: bool = False) -> None:
        task.state = READY
        key = self._class_of(task.request)
        queue = self._ready.get(key)
        if queue is None:
            queue = self._ready[key] = deque()
        if front:
            queue.appendleft(task.request.task_id)
        else:
            queue.append(task.request.task_id)

    @staticmethod
    def _class_of(request: TaskRequest) -> tuple:
        return (request.demand, "lease" if request.lease else request.dedicated)

    def _requeue(self, task: _Task) -> None:
        """A task back from a worker (recalled, handed back, its worker dead): ready again,
        at the front of its class; a chained one waits for what its worker did not make."""
        pending, task.pending = task.pending, frozenset()
        if pending:
            task.no_chain = True  # (no hand-back loop between a worker and this scheduler)
            missing = {oid for oid in pending if oid not in self.local_objects}
            if missing:
                self._wait_for(task, missing)
                return
        self._make_ready(task, front=True)

    def _forget_queued(self, task: _Task) -> None:
        task_id = task.request.task_id
        self._drop(task_id)
        for oid in self._missing.pop(task_id, ()):
            waiters = self._waiters.get(oid)
            if waiters is not None:
                waiters.discard(task_id)
                if not waiters:
                    del self._waiters[oid]
        for queue in self._ready.values():
            try:
                queue.remove(task_id)
            except ValueError:
                continue
            break

    def _end_lease(self, worker: _Worker) -> None:
        if worker.lease is not None:
            held = worker.lease - worker.lent_cpu
            self.resources.release(held, list(worker.gpu_ids))
        worker.lease, worker.gpu_ids, worker.lent_cpu = None, (), ResourceSet()
        worker.direct = False

    def _after_worker_progress(self, worker: _Worker) -> list:
        """A worker has room again: feed it more of its class, or end its lease."""
        self._end_lease_if_done(worker)
        return self._schedule()

    def _end_lease_if_done(self, worker: _Worker) -> None:
        if worker.status in (LEASED, BLOCKED) and not worker.in_flight:
            if worker.status == BLOCKED:  # finished while blocked: its CPU is already lent
                worker.status = LEASED
            self._end_lease(worker)
            worker.status = IDLE
            self.idle.append(worker.worker_id)

    def _schedule(self) -> list:
        out = []
        # 1. start new leases on idle workers, class by class in arrival order
        wanted_workers = 0
        # a direct lease waits while tasks sit pipelined behind others: an idle worker is
        # what ``rebalance`` needs to take them back (else they could wait behind a long one)
        backlog = any(w.status == LEASED and not w.direct and len(w.in_flight) > 1
                      and self._movable(w) for w in self.workers.values())
        # tasks before direct leases: a lease is a worker for tasks not submitted yet
        for key in sorted(self._ready, key=lambda k: k[1] == "lease"):
            queue = self._ready[key]
            if backlog and key[1] == "lease":
                continue
            demand = key[0]
            while queue:
                task = self.tasks[queue[0]]
                if not self.resources.can_ever_fit(demand):
                    if self.can_spill and not task.request.local_only:
                        queue.popleft()
                        self._drop(task.request.task_id)
                        out.append(Spill(task.request.task_id, task.request.payload,
                                         "does not fit on this node"))
                        continue
                    if not task.warned_infeasible:
                        task.warned_infeasible = True
                        out.append(Infeasible(task.request.task_id, demand,
                                              self.resources.total))
                    break
                if not self._under_totals() or not self.resources.can_fit_now(demand):
                    break
                if not self.idle:
                    wanted_workers += 1
                    break
                worker = self.workers[self.idle.pop()]
                worker.lease = demand
                worker.gpu_ids = tuple(self.resources.acquire(demand))
                worker.status = LEASED
                out.append(self._send(self.tasks[queue.popleft()], worker))
            if not queue:
                del self._ready[key]
        # 2. then top up leased workers with tasks of their own class (pipelining); idle
        #    workers came first so that a task is not queued behind a long one needlessly
        #    One task per worker per round, so a burst spreads over the workers.
        if self.pipeline_depth > 1 and self._ready:
            open_workers = [w for w in self.workers.values()
                            if w.status == LEASED and not w.recalling and not w.direct
                            and (w.lease, False) in self._ready]
            while open_workers:
                still_open = []
                for worker in open_workers:
                    key = (worker.lease, False)
                    queue = self._ready.get(key)
                    if not queue or len(worker.in_flight) >= self.pipeline_depth:
                        continue
                    out.append(self._send(self.tasks[queue.popleft()], worker))
                    if not queue:
                        del self._ready[key]
                    elif len(worker.in_flight) < self.pipeline_depth:
                        still_open.append(worker)
                open_workers = still_open
        if self._chain_check:
            out.extend(self._chain())
        room = self.worker_limit() - len(self.workers) - self.starting
        start = min(wanted_workers, room)
        if start > 0:
            self.starting += start
            out.append(StartWorkers(start))
        return out

    def _chain(self) -> list:
        """Send waiting tasks to the worker that makes what they wait for (module docstring,
        *Chains*); each one sent may let its own dependents follow it."""
        out = []
        check, tasks, producer_of = self._chain_check, self.tasks, self.producer_of
        while check:
            producer_id = check.pop()
            waiting = self._chainable.get(producer_id)
            producer = tasks.get(producer_id)
            if not waiting or producer is None or producer.state != IN_FLIGHT:
                continue
            worker = self.workers.get(producer.worker_id)
            if worker is None or worker.status != LEASED or worker.recalling or worker.direct:
                continue
            for task_id in list(waiting):
                if len(worker.in_flight) >= self.pipeline_depth:
                    break
                missing = self._missing.get(task_id)
                task = tasks.get(task_id)
                if missing is None or task is None:
                    del waiting[task_id]  # ready, cancelled or gone meanwhile
                    continue
                if task.request.demand != worker.lease:
                    continue
                if not all((p := tasks.get(producer_of(oid))) is not None and
                           p.state == IN_FLIGHT and p.worker_id == worker.worker_id
                           for oid in missing):
                    continue  # also waits for something made elsewhere
                del waiting[task_id]
                del self._missing[task_id]
                for oid in missing:
                    waiters = self._waiters.get(oid)
                    if waiters is not None:
                        waiters.discard(task_id)
                        if not waiters:
                            del self._waiters[oid]
                task.pending = frozenset(missing)
                out.append(self._send(task, worker))
            if not waiting:
                self._chainable.pop(producer_id, None)
        return out

    def _under_totals(self) -> bool:
        """False while unblocked workers over-commit the node (see 'Blocking' above)."""
        avail = self.resources.available
        return all(avail.units(n) >= 0 for n in avail.names())

    def _send(self, task: _Task, worker: _Worker) -> Dispatch:
        if task.request.lease:
            worker.direct = True
        task.state = IN_FLIGHT
        task_id = task.request.task_id
        task.worker_id = worker.worker_id
        worker.in_flight[task_id] = None
        if task_id in self._chainable:  # tasks wait for its results: they may follow it
            self._chain_check.append(task_id)
        return Dispatch(task_id, worker.worker_id, worker.gpu_ids, task.attempt,
                        task.request.payload, task.pending)

    def describe(self) -> str:
        """A human-readable dump of the state (the node manager prints it on SIGUSR2)."""
        lines = [f"resources: total {self.resources.total.to_dict()} available "
                 f"{self.resources.available.to_dict()}",
                 f"tasks: {len(self.tasks)} known, {self.queue_length()} ready, "
                 f"{len(self._missing)} waiting for objects; workers starting: {self.starting}"]
        for w in self.workers.values():
            lines.append(f"  worker {w.worker_id.hex()[:8]} {w.status} lease="
                         f"{w.lease.to_dict() if w.lease else None} in_flight="
                         f"{len(w.in_flight)} recalling={w.recalling}")
        return "\n".join(lines)

    # ---- invariants ----------------------------------------------------------------------

    def check(self) -> list:
        """Walk the state; return a list of violated invariants (empty when consistent)."""
        problems = []
        ready = [t for q in self._ready.values() for t in q]
        if len(ready) != len(set(ready)):
            problems.append("a task is queued twice")
        in_flight = [t for w in self.workers.values() for t in w.in_flight]
        if len(in_flight) != len(set(in_flight)):
            problems.append("a task is in flight on two workers")
        for task_id, task in self.tasks.items():
            places = (task_id in self._missing) + (task_id in ready) + (task_id in in_flight)
            if places != 1:
                problems.append(f"task {task_id.hex()} is in {places} places ({task.state})")
        held = ResourceSet()
        for w in self.workers.values():
            if w.status == IDLE and (w.lease is not None or w.in_flight):
                problems.append(f"idle worker {w.worker_id.hex()} holds a lease or tasks")
            if len(w.in_flight) > self.pipeline_depth:
                problems.append(f"worker {w.worker_id.hex()} has too many tasks")
            if w.lease is not None:
                held = held + (w.lease - w.lent_cpu)
        if self.resources.total - held != self.resources.available:
            problems.append(f"resources: total {self.resources.total} - held {held} != "
                            f"available {self.resources.available}")
        if set(self.idle) != {w.worker_id for w in self.workers.values() if w.status == IDLE}:
            problems.append("the idle list does not match the idle workers")
        return problems
