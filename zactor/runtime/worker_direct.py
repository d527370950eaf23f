"""A worker's side of the direct paths (runtime/direct.py): direct calls and tasks arriving on
its own Unix socket (net/stream.py), the calls routed through the node manager that must wait
for an earlier direct one (``after``), cancels of direct tasks, and handing back queued direct
tasks when the running one blocks. A mixin of Worker (worker.py), split out to keep that
module small."""

from __future__ import annotations

import os
import signal

from zactor.exceptions import TaskCancelledError
from zactor.runtime import messages as m

SEEN_DIRECT_MAX = 100_000  # direct call ids remembered, for calls that must come after them
PARKED_MAX_S = 2.0  # a call held for a direct one that never came runs anyway after this


class DirectWorker:
    def _on_direct(self, caller, msg) -> None:
        """DIRECT_CALLS from a caller (runs under the client's lock, in pump)."""
        if msg.mtype is m.DIRECT_BOUNCE:
            self._bounce_direct()  # the caller saw them stuck behind the running task
            return
        if msg.mtype is not m.DIRECT_CALLS:
            return
        refused = []
        body = msg.body
        for fid, blob in body["functions"]:
            if fid not in self.functions:
                self.blobs.setdefault(fid, blob)
        seen, parked = self.seen_direct, self.parked
        for spec, resolved in body["calls"]:
            actor = spec.get("actor")
            task_id = spec["id"]
            if actor is None:  # a task on this (leased) worker
                if task_id in self.cancelled_direct:
                    self.cancelled_direct.discard(task_id)
                    self._report_cancelled(spec)
                elif self.actor_id is not None or self.is_blocked:
                    refused.append(task_id)  # the node manager schedules it
                    self.client.task_done([task_id, [], m.TASK_REFUSED])
                else:
                    self.queue.append([spec, resolved, [], 0, caller])
                continue
            if actor["aid"] != self.actor_id or actor.get("inc") != self.incarnation:
                refused.append(task_id)  # meant for another incarnation: the NM re-queues
                self.client.task_done([task_id, [], m.TASK_REFUSED])
                continue
            self.queue.append([spec, resolved, [], 0, caller])
            seen[task_id] = None
            if len(seen) > SEEN_DIRECT_MAX:
                seen.popitem(last=False)
            if parked:
                for _, entry in parked.pop(task_id, ()):
                    self.queue.append(entry)
        if refused:
            self.client.direct_refused(caller, refused)

    def _cancel_task(self, task_id: bytes, force: bool, direct: bool) -> None:
        """Cancel a task of this worker (INTERRUPT from the node manager, which cannot tell
        whether the worker has started it): the running one is interrupted, a queued one
        dropped and reported cancelled, a direct one not arrived yet dropped when it does.
        Checked here, by id, so that an interrupt never hits the task after the one meant."""
        if self.current_task == task_id:
            if force:
                os.kill(os.getpid(), signal.SIGKILL)  # the node re-runs nothing: cancelled
            os.kill(os.getpid(), signal.SIGUSR1)  # KeyboardInterrupt in the main thread
            return
        with self.queue_lock:
            hit = [t for t in self.queue if t[0]["id"] == task_id]
            for t in hit:
                self.queue.remove(t)
        if not hit and direct:  # not arrived yet: drop it when it does
            self.cancelled_direct.add(task_id)
        for t in hit:
            self._report_cancelled(t[0], direct)

    def _report_cancelled(self, spec, direct: bool = True) -> None:
        results, flags = self._error_results(spec, TaskCancelledError(spec["id"].hex()))
        self.client.task_done([spec["id"], results, flags | (m.TASK_DIRECT if direct else 0)])

    def _bounce_direct(self) -> None:
        with self.queue_lock:
            back = [t for t in self.queue if len(t) > 4 and "actor" not in t[0]]
            for t in back:
                self.queue.remove(t)
        by_caller: dict = {}
        for t in back:
            self.client.task_done([t[0]["id"], [], m.TASK_REFUSED])
            by_caller.setdefault(t[4], []).append(t[0]["id"])
        for caller, task_ids in by_caller.items():
            self.client.direct_refused(caller, task_ids)

    def _release_parked(self, now: float) -> None:
        for key in [k for k, v in self.parked.items() if v[0][0] < now - PARKED_MAX_S]:
            self.queue.extend(entry for _, entry in self.parked.pop(key))
