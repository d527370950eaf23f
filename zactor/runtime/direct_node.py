"""The node manager's side of direct calls and task leases (runtime/direct.py: the caller's).

A direct call or task reaches the node manager twice, off the critical path, in either order:
- its *record*: the spec (``spec["direct"]`` set) in the caller's SUBMIT, and
- its *report*: the worker's TASK_DONE entry with the TASK_DIRECT flag (the caller already
  has the results, so the node manager does not push them to it again).

Record first (the usual case): it is registered as an ordinary task (arguments held, returns
pending with the caller counted as a holder) and as *running* on the actor or the lease, so a
worker death, a kill, a restart or a cancel retries or fails it exactly like one the node
manager had sent (the error reaches the caller in OBJECTS). A record that names an actor
incarnation that is gone (the worker died before the record arrived) is treated as a call that
was running when it died: retried on the new incarnation if ``max_task_retries`` allows, else
failed with ``ActorDiedError``; a task sent to a lease that is gone is scheduled again.

Report first: the results are set at once (another process waiting for them is answered),
each with a provisional hold until the record arrives and takes over. A record that never
comes (its caller died) lets the holds go after ``EARLY_KEEP_S``.

A report flagged retryable or cancelled was *not* sent to the caller: the node manager decides
(retry, re-run after a stray interrupt, or finish and push the error). A refused call or task
(TASK_REFUSED: another actor incarnation, or a leased worker that blocked) never ran: it is
queued again through the node manager.

Leases: LEASE_REQUEST becomes a ``TaskRequest(lease=True)`` in the local scheduler; its
Dispatch grants the worker (LEASE_GRANTED); LEASE_RETURN, or the client's departure, ends it
(``task_finished``); its worker's death fails it (FailTask), which re-runs or fails the tasks
in flight on it, the first (the one that may have been running) using a retry.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from zactor import serialization as ser
from zactor.exceptions import ActorDiedError, TaskCancelledError, WorkerCrashedError
from zactor.runtime import messages as m
from zactor.scheduling import local_scheduler as ls

EARLY_KEEP_S = 60.0
_DECIDE = m.TASK_RETRYABLE | m.TASK_CANCELLED  # reports the node manager settles


class Lease:
    __slots__ = ("lid", "client", "worker_id", "addr", "inflight")

    def __init__(self, lid, client):
        self.lid, self.client, self.worker_id, self.addr = lid, client, None, ""
        self.inflight: OrderedDict = OrderedDict()  # direct task ids, in the worker's order


class DirectLedger:
    def __init__(self, node):
        self.node = node
        self.early: dict = {}      # task id -> (time, results, flags) reported before record
        self.refused: set = set()  # task ids refused before their record arrived
        self.leases: dict = {}     # lease id -> Lease

    # ---- records ----------------------------------------------------------------------

    def record(self, task) -> None:
        """A direct call's or task's record, from its caller's SUBMIT."""
        node = self.node
        spec = task.spec
        task_id = spec["id"]
        node._submit(task, request=False)
        early = self.early.pop(task_id, None)
        if early is not None:
            if early[2] & _DECIDE:
                self._settle(task, early[1], early[2])
                return
            self.finish(task, [])  # its values were set when the report came
            for oid in task.returns:  # the caller's count now keeps them
                node._free(node.objects.remove_ref(oid))
            return
        if task_id in self.refused:
            self.refused.discard(task_id)
            self._reroute(task)
            return
        if spec.get("actor") is None:
            lease = self.leases.get(spec["direct"])
            if lease is not None and lease.addr:
                lease.inflight[task_id] = None
            else:
                node._schedule_task(task)
            return
        actors = node.actors
        actor = actors.actors.get(spec["actor"]["aid"])
        if actor is None or actor.state == "DEAD":
            actors.call(task)  # fails it with the actor's death
            return
        if actor.state == "ALIVE" and actor.restarts == spec["actor"].get("inc"):
            actor.running[task_id] = task
            return
        worker = node.clients.get(node.worker_identity.get(actor.worker_id))
        if worker is not None and worker.address == spec["actor"].get("to"):
            actor.running[task_id] = task  # sent to the live worker, which refuses it
            return
        # sent to an incarnation that has died since: as if it was running then
        if actor.task_retries < 0 or task.attempt < actor.task_retries:
            task.attempt += 1
            actors.call(task)
            return
        node._finish_task(task_id, [[o, m.OBJ_ERROR, ser.dumps(ActorDiedError(
            None, actor.actor_id.hex(), actor.last_death or "The actor died while this call "
            "was in flight"))] for o in task.returns])

    def finish(self, task, results) -> None:
        """Results the caller has already: no OBJECTS to it."""
        node = self.node
        for oid in task.returns:
            e = node.objects.entries.get(oid)
            if e is not None:
                e.waiters.discard(task.submitter)
        self._unplace(task)
        node._finish_task(task.spec["id"], results)

    def _unplace(self, task) -> None:
        """No longer in flight on its lease or actor."""
        spec = task.spec
        if spec.get("actor") is None:
            lease = self.leases.get(spec.get("direct"))
            if lease is not None:
                lease.inflight.pop(spec["id"], None)
        else:
            actor = self.node.actors.actors.get(spec["actor"]["aid"])
            if actor is not None:
                actor.running.pop(spec["id"], None)

    def _reroute(self, task) -> None:
        """Run it through the node manager (the actor's queue, or the scheduler)."""
        self._unplace(task)
        if task.cancelled:  # cancelled while it came back (the worker no longer had it)
            self.node._fail_task(task.spec["id"], TaskCancelledError(task.spec["id"].hex()))
            return
        if task.spec.get("actor") is None:
            self.node._schedule_task(task)
        else:
            self.node.actors.call(task)

    def _settle(self, task, results, flags) -> None:
        """A retryable error or a cancellation: decided here, as on_task_done does."""
        retries = task.spec["retries"]
        if flags & m.TASK_CANCELLED and not task.cancelled:
            self._reroute(task)  # a stray interrupt meant for the task before it
        elif flags & m.TASK_RETRYABLE and (retries < 0 or task.attempt < retries):
            task.attempt += 1
            self._reroute(task)
        else:
            self._unplace(task)
            self.node._finish_task(task.spec["id"], results)

    # ---- reports ----------------------------------------------------------------------

    def report(self, task_id: bytes, results, flags: int) -> None:
        """A worker's TASK_DONE entry for a direct call or task."""
        node = self.node
        task = node.tasks.get(task_id)
        if flags & m.TASK_REFUSED:
            if task is None:
                self.refused.add(task_id)
            else:
                self._reroute(task)
            return
        if task is not None:
            if flags & _DECIDE:
                self._settle(task, results, flags)
            else:
                self.finish(task, results)
            return
        if not flags & _DECIDE:
            # before the record: set the values now, held until the record takes over
            for oid, *_ in results:
                node.objects.add_ref(oid)
            for oid, state, data, *contained in results:
                node._set_value(oid, state, data, contained[0] if contained else ())
        self.early[task_id] = (time.monotonic(), results, flags)

    def expire(self, now: float) -> None:
        """Release the holds of reports whose record never came (the caller died)."""
        if not self.early:
            return
        node = self.node
        for task_id in [t for t, e in self.early.items() if e[0] < now - EARLY_KEEP_S]:
            _, results, flags = self.early.pop(task_id)
            if not flags & _DECIDE:
                for oid, *_ in results:
                    node._free(node.objects.remove_ref(oid))

    # ---- leases -----------------------------------------------------------------------

    def on_request(self, identity, msg) -> None:
        lid = msg["lid"]
        if lid in self.leases or lid in self.node.tasks:
            return
        self.leases[lid] = Lease(lid, identity)
        demand = self.node._demand(msg["res"])
        self.node._apply(self.node.scheduler.submit(ls.TaskRequest(lid, demand, lease=True,
                                                                   payload=lid)))

    def granted(self, ins) -> None:
        """The scheduler placed lease ``ins.task_id`` on worker ``ins.worker_id``."""
        node = self.node
        lease = self.leases[ins.task_id]
        lease.worker_id = ins.worker_id
        worker = node.clients.get(node.worker_identity.get(ins.worker_id))
        if lease.client not in node.clients or worker is None or not worker.address:
            self.end(lease.lid)
            return
        lease.addr = worker.address
        node._send(lease.client, m.LEASE_GRANTED, {"lid": lease.lid, "addr": lease.addr})

    def on_return(self, identity, msg) -> None:
        lease = self.leases.get(msg["lid"])
        if lease is not None and lease.client == identity:
            self.end(lease.lid)

    def end(self, lid: bytes) -> None:
        lease = self.leases.pop(lid, None)
        if lease is None:
            return
        scheduler = self.node.scheduler
        if lease.worker_id is not None:
            self.node._apply(scheduler.task_finished(lid, lease.worker_id))
        else:
            self.node._apply(scheduler.cancel(lid))  # still waiting for a worker

    def want_back(self) -> None:
        """Tasks wait for a worker while leases are out: ask their holders for idle ones."""
        if not self.leases or not any(queue and key[1] != "lease"
                                      for key, queue in self.node.scheduler._ready.items()):
            return
        node = self.node
        for client in {x.client for x in self.leases.values() if x.addr}:
            if client in node.clients:
                node._send(client, m.LEASES_WANTED, {})

    def client_gone(self, identity) -> None:
        for lid in [x.lid for x in self.leases.values() if x.client == identity]:
            self.end(lid)

    def lease_failed(self, lid: bytes, detail: str) -> None:
        """The leased worker died: its tasks run again elsewhere, or fail."""
        node = self.node
        lease = self.leases.pop(lid, None)
        if lease is None:
            return
        if lease.client in node.clients:
            node._send(lease.client, m.LEASE_GRANTED, {"lid": lid, "addr": ""})
        for i, task_id in enumerate(list(lease.inflight)):
            task = node.tasks.get(task_id)
            if task is None:
                continue
            retries = task.spec["retries"]
            if task.cancelled:
                node._fail_task(task_id, TaskCancelledError(task_id.hex()))
            elif i > 0 or retries < 0 or task.attempt < retries:
                task.attempt += i == 0  # only the first can have been running
                node._schedule_task(task)
            else:
                node._fail_task(task_id, WorkerCrashedError(
                    f"The worker running this task died ({detail}) and the task's retries "
                    f"are spent (max_retries={retries})."))

    def cancel(self, task, force: bool) -> bool:
        """Cancel a task in flight on a lease (True if it was one)."""
        spec = task.spec
        lease = self.leases.get(spec.get("direct")) if spec.get("actor") is None else None
        if lease is None or spec["id"] not in lease.inflight:
            return False
        # the worker knows whether it runs it, has it queued, or has not received it yet
        identity = self.node.worker_identity.get(lease.worker_id)
        if identity is not None:
            self.node._send(identity, m.INTERRUPT, {"task_id": spec["id"], "direct": True,
                                                    "force": bool(force)})
        return True
