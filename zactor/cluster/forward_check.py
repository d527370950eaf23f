"""Forwarded tasks that never arrived: the origin asks, the executor answers.

Runs inside the node manager's loop, as part of RemoteTasks (cluster/remote_tasks.py). A
FORWARD_TASKS or its REMOTE_DONE between two live nodes can be lost (a chaos run hung on one
during a third node's link-down). The origin notes when it forwards a task (not actor calls
or creations: they follow their own rules); a task forwarded FORWARD_CHECK_S ago without a
report is asked about (TASKS_HELD, on the same pipe as the forward, so FIFO order makes the
answer exact: a finished task's REMOTE_DONE arrives first). The executor names those it does
not hold (TASKS_MISSING) and the origin schedules them again, not counted against
``max_retries`` (the task did not fail).
"""

from __future__ import annotations

import os
import sys
import time

from zactor import protocol
from zactor.cluster import messages as cm

#: a task forwarded this long ago without a report: ask its executor whether it holds it
FORWARD_CHECK_S = 5.0
CHECK_EVERY_S = 1.0
DROP_FORWARDS_ENV = "ZACTOR_TEST_DROP_FORWARDS"


class ForwardCheck:
    def __init__(self, remote):
        self.remote = remote
        self.nm = remote.nm
        self.sent_at: dict[bytes, float] = {}  # task id -> when last sent or asked about
        self._next_check = 0.0
        #: tests only: this many FORWARD_TASKS are dropped instead of sent (a lost message)
        self._drop = int(os.environ.get(DROP_FORWARDS_ENV, "0") or 0)

    def sent(self, task_id: bytes) -> None:
        self.sent_at[task_id] = time.monotonic()

    def dropped(self) -> bool:
        """Tests only: whether this forward is to be lost on the way."""
        if self._drop > 0:
            self._drop -= 1
            return True
        return False

    def tick(self, now: float) -> None:
        """(origin) Ask the executors of tasks forwarded FORWARD_CHECK_S ago and not
        reported yet whether they hold them."""
        if not self.sent_at or now < self._next_check:
            return
        self._next_check = now + CHECK_EVERY_S
        forwarded = self.remote.forwarded
        ask: dict = {}
        for task_id, at in list(self.sent_at.items()):
            node = forwarded.get(task_id)
            if node is None:
                del self.sent_at[task_id]  # reported (or no longer forwarded)
            elif now - at >= FORWARD_CHECK_S:
                self.sent_at[task_id] = now
                ask.setdefault(node, []).append(task_id)
        for node, task_ids in ask.items():
            sock = self.remote.dealers.get(node)
            if sock is not None:
                sock.send_multipart(protocol.encode(cm.TASKS_HELD, {"task_ids": task_ids}))

    def on_tasks_held(self, identity, msg) -> None:
        """(executor) Name the asked tasks this node does not hold: never received, or lost
        here. A finished one's REMOTE_DONE went out before this answer, on the same pipe."""
        task_ids = msg["task_ids"]
        if not isinstance(task_ids, list):
            raise ValueError("TASKS_HELD task_ids must be a list")
        missing = [t for t in task_ids if t not in self.nm.tasks]
        if missing:
            self.remote.router.send_multipart([identity, *protocol.encode(
                cm.TASKS_MISSING, {"task_ids": missing, "node_id": self.nm.node_id})])

    def on_tasks_missing(self, _identity, msg) -> None:
        """(origin) Tasks an executor does not hold though it was sent them: scheduled
        again."""
        remote = self.remote
        node_id = msg.get("node_id")
        for task_id in msg["task_ids"]:
            task = self.nm.tasks.get(task_id)
            if task is None or remote.forwarded.get(task_id) != node_id:
                continue  # reported meanwhile, or sent elsewhere since
            del remote.forwarded[task_id]
            self.sent_at.pop(task_id, None)
            remote.functions_sent.get(node_id, set()).discard(task.spec.get("fid"))
            print(f"zactor node manager: task {task.spec.get('name')} "
                  f"({task_id.hex()[:16]}) was forwarded to node {node_id.hex()[:16]}, "
                  f"which does not hold it (a message was lost): scheduling it again",
                  file=sys.stderr)
            remote.spilling[task_id] = [task, None, "its executor did not hold it"]
            remote.unsent.add(task_id)
