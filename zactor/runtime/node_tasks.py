"""The node manager's tasks: taken in from clients (SUBMIT), scheduled by the LocalScheduler
(sans-IO; its instructions carried out here: dispatch, queue, spill, fail), finished (TASK_DONE),
retried, cancelled and recorded for lineage. A mixin of NodeManager (node_manager.py), which
owns the sockets, the object table and the clients these methods use.
"""

from __future__ import annotations

import os
import signal
import time

from zactor import serialization as ser
from zactor.exceptions import TaskCancelledError, WorkerCrashedError
from zactor.runtime import messages as m
from zactor.scheduling import local_scheduler as ls
from zactor.scheduling.resources import ResourceSet

LINEAGE_DELAY_S = 1.0  # a finished task's lineage is recorded if its results live this long
_NOT_SCHEDULED = m.TASK_DIRECT | m.TASK_REFUSED  # reports of tasks the scheduler never had


class Task:
    __slots__ = ("spec", "submitter", "returns", "deps", "held", "attempt", "cancelled")

    def __init__(self, spec, submitter):
        self.spec = spec
        self.submitter = submitter
        n = spec["nret"]
        self.returns = [spec["id"] + i.to_bytes(4, "little") for i in range(1, n + 1)]
        self.deps = [a[1] for a in spec["args"] if a[0] == 1]
        if spec["kwargs"]:
            self.deps += [a[2] for a in spec["kwargs"] if a[1] == 1]
        self.held = spec.get("held", [])
        self.attempt = 0
        self.cancelled = False


class TaskRouting:
    # ---- tasks --------------------------------------------------------------------------

    def on_submit(self, identity, msg) -> None:
        """Tasks and reference changes of one client, in the order that cannot free an
        object early: every +1, then the tasks, then every -1 (core_client.py explains)."""
        client = self.clients.get(identity)
        if client is None:
            return
        for fid, blob in msg.get("functions", ()):
            if fid not in self.functions:
                self.functions[fid] = blob
                self.gcs.function(fid, blob)  # the function table, once per function
        deltas = msg.get("deltas", ())
        self._apply_deltas(client, deltas, 1)
        for oid, state, data, contained, held in msg.get("objects", ()):
            if held:
                self._client_ref(client, oid)
            self._set_value(oid, state, data, contained, collect=False)
        requests = []
        for spec in msg["tasks"]:
            task = Task(spec, identity)
            for oid in task.returns:  # the submitter holds the refs it was handed
                self._client_ref(client, oid)
            if "direct" in spec:  # a call sent straight to the actor's worker
                self.direct.record(task)
                continue
            request = self._submit(task)
            actor = spec.get("actor")
            if actor is None:
                requests.append(request)
            elif actor["op"] == "call":
                self.actors.call(task)  # straight to the actor's queue, not the scheduler
            else:
                refused = self.actors.creating(task)
                if refused:
                    self._fail_task(spec["id"], ValueError(refused))
                else:
                    requests.append(request)
        self._apply(self.scheduler.submit_many(requests))
        if self.remote is not None:
            self.remote.pull_missing(requests)
        self._apply_deltas(client, deltas, -1)

    def _submit(self, task: Task, request: bool = True):
        """Register a task (returns pending, arguments held); its scheduler request, if
        ``request`` (a direct call's record needs none: it runs on its actor or lease)."""
        spec = task.spec
        self.tasks[spec["id"]] = task
        parent = spec.get("parent")
        if parent:
            self.children_of.setdefault(parent, []).append(spec["id"])
        for oid in task.returns:
            e = self.objects.entry(oid)
            e.producer = spec["id"]
            e.waiters.add(task.submitter)
        for oid in task.deps:
            self.objects.add_ref(oid)
        for oid in task.held:
            self.objects.add_ref(oid)
        return self._request(task) if request else None

    def make_task(self, spec, submitter) -> Task:
        return Task(spec, submitter)

    def _schedule_task(self, task: Task) -> None:
        self._apply(self.scheduler.submit(self._request(task)))

    def _demand(self, res: dict) -> ResourceSet:
        key = tuple(res.items())
        demand = self._demands.get(key)
        if demand is None:  # a few shapes of demand recur: build each ResourceSet once
            demand = self._demands[key] = ResourceSet.of(
                num_cpus=res.get("CPU", 0), num_gpus=res.get("GPU", 0),
                memory=res.get("memory", 0),
                resources={k: v for k, v in res.items() if k not in ("CPU", "GPU", "memory")})
        return demand

    def _request(self, task: Task, local_only: bool = False) -> ls.TaskRequest:
        spec = task.spec
        res = spec["res"]
        strategy = spec.get("strategy")
        if isinstance(strategy, (list, tuple)) and strategy and strategy[0] == "pg":
            from zactor.cluster.bundles import rewrite_demand

            res = rewrite_demand(res, strategy[1], strategy[2])
        demand = self._demand(res)
        retries = spec["retries"]
        actor = spec.get("actor")
        return ls.TaskRequest(
            spec["id"], demand, frozenset(task.deps),
            max_retries=(1 << 30) if retries < 0 else max(0, retries - task.attempt),
            payload=spec["id"], dedicated=actor is not None and actor["op"] == "create",
            local_only=local_only)

    def _finish_task(self, task_id: bytes, results) -> None:
        task = self.tasks.pop(task_id, None)
        if task is None:
            return
        # lineage goes to the control store only if its objects are still around a moment
        # later (see _record_lineage): most tiny tasks' results are read and dropped at once
        self.lineage_pending.append((time.monotonic(), task.spec, task.returns))
        if self.lineage is not None and not task.submitter.startswith(b"peer:"):
            self.lineage.task_finished(task)  # this node owns the results: keep the spec
        actor = task.spec.get("actor")
        if actor is not None:
            if actor["op"] == "create":
                self.actors.created(task_id, results)
            else:
                self.actors.call_done(task_id, actor["aid"])
        for oid, state, data, *contained in results:
            self._set_value(oid, state, data, contained[0] if contained else ())
        if task.submitter.startswith(b"peer:"):
            self.remote.finished_for_peer(task, results)
        for oid in task.deps:
            self._free(self.objects.remove_ref(oid))
        for oid in task.held:
            self._free(self.objects.remove_ref(oid))
        self.children_of.pop(task_id, None)

    def _record_lineage(self, now: float) -> None:
        """Write the lineage of tasks that finished LINEAGE_DELAY_S ago and whose results
        still exist; an object nobody holds any more needs no way to be re-created. Actor
        creation tasks are always recorded (a restart elsewhere needs them)."""
        pending = self.lineage_pending
        entries = self.objects.entries
        while pending and pending[0][0] <= now - LINEAGE_DELAY_S:
            _, spec, returns = pending.popleft()
            actor = spec.get("actor")
            if (actor is not None and actor.get("op") == "create") or \
                    any(oid in entries for oid in returns):
                self.gcs.task_finished(spec)  # asynchronous, batched, to the archive

    def _fail_task(self, task_id: bytes, error: BaseException) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return
        data = ser.dumps(error)
        self._finish_task(task_id, [[oid, m.OBJ_ERROR, data] for oid in task.returns])

    def on_task_done(self, identity, msg) -> None:
        client = self.clients.get(identity)
        wid = client.worker_id if client else b""
        # (direct calls and tasks never were the scheduler's: their records make no request)
        finished = [(d[0], wid) for d in msg["done"] if not d[2] & _NOT_SCHEDULED]
        if finished:
            self._apply(self.scheduler.tasks_finished(finished))
        for task_id, results, flags, *extra in msg["done"]:
            if extra:  # an actor checkpoint taken right after this call
                self.actors.checkpointed(task_id, extra[0])
            if flags & (m.TASK_DIRECT | m.TASK_REFUSED):
                self.direct.report(task_id, results, flags)
                continue
            task = self.tasks.get(task_id)
            if task is None:
                continue  # e.g. a call replayed after a restart: its results exist already
            retries = task.spec["retries"]
            if flags & m.TASK_CANCELLED and not task.cancelled:
                # the interrupt meant for the task before it reached this one: run it again
                self._schedule_task(task)
                continue
            if flags & m.TASK_RETRYABLE and (retries < 0 or task.attempt < retries):
                task.attempt += 1
                self._schedule_task(task)
                continue
            self._finish_task(task_id, results)

    def on_blocked(self, identity, msg) -> None:
        client = self.clients.get(identity)
        if client is not None and client.kind == "worker":
            self._apply(self.scheduler.worker_blocked(client.worker_id))

    def on_unblocked(self, identity, msg) -> None:
        client = self.clients.get(identity)
        if client is not None and client.kind == "worker":
            self._apply(self.scheduler.worker_unblocked(client.worker_id))

    def on_returned(self, identity, msg) -> None:
        client = self.clients.get(identity)
        if client is not None:
            self._apply(self.scheduler.tasks_returned(client.worker_id, msg["task_ids"]))

    def on_cancel(self, identity, msg) -> None:
        self._cancel(msg["task_id"], msg["force"], msg["recursive"])

    def _cancel(self, task_id, force, recursive) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return
        task.cancelled = True
        if recursive:
            for child in self.children_of.get(task_id, ()):
                self._cancel(child, force, recursive)
        if "direct" in task.spec and self.direct.cancel(task, force):
            return
        self._apply(self.scheduler.cancel(task_id, force))

    # ---- scheduler instructions -------------------------------------------------------------

    def _apply(self, instructions) -> None:
        for ins in instructions:
            kind = type(ins)
            if kind is ls.Dispatch:
                if ins.task_id in self.direct.leases:
                    self.direct.granted(ins)
                    continue
                self._dispatch(ins)
            elif kind is ls.StartWorkers:
                self._start_workers(ins.count)
            elif kind is ls.FailTask:
                if ins.task_id in self.direct.leases:
                    self.direct.lease_failed(ins.task_id, ins.detail)
                    continue
                if ins.kind == "cancelled":
                    err = TaskCancelledError(ins.task_id.hex())
                else:
                    err = WorkerCrashedError(
                        f"The worker running this task died ({ins.detail}) and the task's "
                        f"retries are spent (max_retries="
                        f"{self.tasks[ins.task_id].spec['retries']}).")
                self._fail_task(ins.task_id, err)
            elif kind is ls.Recall:
                # EXECUTEs still buffered must reach the worker first, or it could answer
                # the RECALL before it has the tasks and then run them behind a blocked one
                self._flush_outbox()
                self._send(self.worker_identity[ins.worker_id], m.RECALL,
                           {"task_ids": list(ins.task_ids)})
            elif kind is ls.Interrupt:
                self._interrupt(ins.worker_id, ins.task_id)
            elif kind is ls.KillWorker:
                pid = self.worker_pid.get(ins.worker_id)
                if pid:
                    _kill(pid, signal.SIGKILL)
            elif kind is ls.DedicatedWorkerDied:
                self.actors.worker_died(ins.worker_id, ins.detail)
            elif kind is ls.Spill:
                self.remote.spill(ins.task_id, ins.reason)
            elif kind is ls.Infeasible:
                self.output.warn(ins.task_id, (
                    f"zactor: warning: task {ins.task_id.hex()} needs {ins.demand.to_dict()}"
                    f" but this node has {ins.total.to_dict()}; it waits for a node that "
                    f"fits (infeasible here)"))

    def _dispatch(self, ins: ls.Dispatch) -> None:
        task = self.tasks[ins.task_id]
        resolved = []
        pending = ins.pending
        for oid in task.deps:
            if pending and oid in pending:  # made by a task before it on that worker
                resolved.append([oid, m.OBJ_PENDING, None])
                continue
            e = self.objects.entries.get(oid)
            if e is None or e.state is None:
                self._apply(self.scheduler.task_finished(ins.task_id, ins.worker_id))
                self._finish_task(ins.task_id, [self._lost(o, "an argument of the task was "
                                                              "lost") for o in task.returns])
                return
            if e.state == m.OBJ_ERROR:  # a failed argument fails the task, as in Ray
                self._apply(self.scheduler.task_finished(ins.task_id, ins.worker_id))
                self._finish_task(ins.task_id, [[o, m.OBJ_ERROR, e.data]
                                                for o in task.returns])
                return
            if e.state == m.OBJ_STORE:
                self.spill.touch(oid)
            resolved.append([oid, e.state, e.data])
        identity = self.worker_identity[ins.worker_id]
        client = self.clients[identity]
        functions = []
        fid = task.spec["fid"]
        if fid not in client.functions:
            client.functions.add(fid)
            functions.append([fid, self.functions[fid]])
        if task.spec.get("actor"):
            self.actors.placed(ins.task_id, ins.worker_id)
        self._queue_execute(identity, [task.spec, resolved, list(ins.gpu_ids), ins.attempt],
                            functions)

    def _queue_execute(self, identity: bytes, entry, functions) -> None:
        """Add a task to the EXECUTE batch going to ``identity`` at the end of this turn."""
        batch = self.exec_out.get(identity)
        if batch is None:
            batch = self.exec_out[identity] = ([], [])
        batch[0].append(entry)
        batch[1].extend(functions)

    def new_task_id(self) -> bytes:
        """A task id made by the node itself (an actor's restart)."""
        return os.urandom(8) + b"\xff" * 16

    def _kill_pid(self, pid: int) -> None:
        _kill(pid, signal.SIGKILL)

    def _interrupt(self, worker_id, task_id) -> None:
        # the worker interrupts the task only if it is the one running (worker_direct.py):
        # a signal sent from here could hit the task after it
        identity = self.worker_identity.get(worker_id)
        if identity is not None:
            self._send(identity, m.INTERRUPT, {"task_id": task_id, "direct": False,
                                               "force": False})


def _kill(pid, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
