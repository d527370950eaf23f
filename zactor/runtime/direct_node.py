"""The node manager's side of direct actor calls (runtime/direct.py has the caller's side).

A direct call reaches the node manager twice, off the critical path and in either order:
- its *record*: the call's spec (``spec["direct"]`` set) in the caller's SUBMIT, and
- its *report*: the worker's TASK_DONE entry with the TASK_DIRECT flag (the caller already
  has the results, so the node manager does not push them to it again).

Record first (the usual case): the call is registered as an ordinary task (its arguments held,
its returns pending with the caller counted as a holder) and as *running* on the actor, so a
worker death, a kill or a restart retries or fails it exactly like a call the node manager had
sent (and the error reaches the caller in OBJECTS). If the record names an incarnation that is
no longer the actor's (the worker died before the record arrived), the call is treated as one
that was running when that worker died: retried on the new incarnation if ``max_task_retries``
allows, else failed with ``ActorDiedError``.

Report first: the results are set at once (so another process waiting for them is answered),
each with a provisional hold until the record arrives and takes over (the caller's reference
counted, arguments released). A record that never comes (its caller died) lets the holds go
after ``EARLY_KEEP_S``.

A refused call (TASK_REFUSED: the worker hosts another incarnation) never ran: it is queued
again through the node manager.
"""

from __future__ import annotations

import time

from zactor import serialization as ser
from zactor.exceptions import ActorDiedError
from zactor.runtime import messages as m

EARLY_KEEP_S = 60.0


class DirectLedger:
    def __init__(self, node):
        self.node = node
        self.early: dict = {}      # task id -> (time, results) reported before the record
        self.refused: set = set()  # task ids refused before their record arrived

    # ---- records ----------------------------------------------------------------------

    def record(self, task) -> None:
        """A direct call's record, from its caller's SUBMIT (after the +1s, before the -1s)."""
        node = self.node
        task_id = task.spec["id"]
        node._submit(task)
        early = self.early.pop(task_id, None)
        if early is not None:
            self.finish(task, [])  # its values were set when the report came
            for oid in task.returns:  # the caller's count now keeps them
                node._free(node.objects.remove_ref(oid))
            return
        actors = node.actors
        if task_id in self.refused:
            self.refused.discard(task_id)
            actors.call(task)
            return
        actor = actors.actors.get(task.spec["actor"]["aid"])
        if actor is None or actor.state == "DEAD":
            actors.call(task)  # fails it with the actor's death
            return
        if actor.state == "ALIVE" and actor.restarts == task.spec["actor"].get("inc"):
            actor.running[task_id] = task
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
        """Results of a direct call: its caller has them already (no OBJECTS to it)."""
        node = self.node
        for oid in task.returns:
            e = node.objects.entries.get(oid)
            if e is not None:
                e.waiters.discard(task.submitter)
        node._finish_task(task.spec["id"], results)

    # ---- reports ----------------------------------------------------------------------

    def report(self, task_id: bytes, results, flags: int) -> None:
        """A worker's TASK_DONE entry for a direct call."""
        node = self.node
        task = node.tasks.get(task_id)
        if flags & m.TASK_REFUSED:
            if task is None:
                self.refused.add(task_id)
                return
            actor = node.actors.actors.get(task.spec["actor"]["aid"])
            if actor is not None:
                actor.running.pop(task_id, None)
            node.actors.call(task)
            return
        if task is not None:
            self.finish(task, results)
            return
        # before the record: set the values now, held until the record takes over
        for oid, *_ in results:
            node.objects.add_ref(oid)
        for oid, state, data, *contained in results:
            node._set_value(oid, state, data, contained[0] if contained else ())
        self.early[task_id] = (time.monotonic(), results)

    def expire(self, now: float) -> None:
        """Release the holds of reports whose record never came (the caller died)."""
        if not self.early:
            return
        node = self.node
        for task_id in [t for t, (when, _) in self.early.items() if when < now - EARLY_KEEP_S]:
            _, results = self.early.pop(task_id)
            for oid, *_ in results:
                node._free(node.objects.remove_ref(oid))
