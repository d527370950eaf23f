"""The home side of actor incarnations: a call meant for another incarnation is refused, and a
copy of an actor whose row has moved on stops serving.

Runs inside the node manager's loop, as part of RemoteTasks. Every actor restart is a new
incarnation (the actor table row's ``incarnation``; ActorManager's ``actor.restarts``). A
caller on another node forwards each call with the incarnation it believes in (the one the
row named when it looked the actor up, remote_actors.py). Here, at the actor's home:

- a call for the incarnation this node holds runs as usual;
- a call for an *older* one (the actor restarted here since the caller looked it up) is
  refused: REMOTE_DONE with ``STALE_INCARNATION`` and this node's incarnation, and the caller
  re-sends it (to this incarnation, without a look-up);
- a call for a *newer* one means this copy is stale (the actor restarted elsewhere while this
  node was cut off or paused): the copy *retires* (below) and the call is refused, so the
  caller looks the actor up again and re-sends to the live incarnation, or fails with
  ActorDiedError if there is none.

*Row watch.* Refusals need a caller that knows better; a copy that only hears from callers as
stale as itself would keep serving. So once a second the node reads the rows of the actors it
holds (one ``get_many``, in a short-lived thread); a row whose incarnation is newer than the
copy's, or that says DEAD while the copy lives (an owner died and the cluster marked it), makes
the copy retire. Fencing (node_link.py) stops a whole node declared dead; this stops the copies
even where fencing has not, or not yet.

*Retiring* (ActorManager.retire): the copy's worker is killed and the copy forgotten, without
writing the row (it names the live incarnation). Calls queued or running on it go to the live
one: those of other nodes are refused back to their callers, those of this node are routed
like calls to any actor of another node. Until it retires, a stale copy's own writes cannot
undo the live one's: actor rows and checkpoints are written only over rows of an incarnation
not above theirs (GcsRecorder, the control store's ``not_above`` condition).
"""

from __future__ import annotations

import threading
from collections import deque

from zactor import protocol
from zactor.cluster import messages as cm
from zactor.exceptions import ActorDiedError

ROW_CHECK_S = 1.0
ROW_TIMEOUT_S = 5.0


class Incarnations:
    def __init__(self, remote):
        self.remote = remote
        self.nm = remote.nm
        self.refusing: dict = {}  # task id -> [incarnation, why]: answered with a refusal
        self.rows: deque = deque()  # [(actor id, row)] read by the row watch
        self.stats = {"calls_refused": 0, "copies_retired": 0}
        self._next_check = 0.0
        self._checking = False

    # ---- calls arriving from other nodes -----------------------------------------------------

    def refuse(self, identity: bytes, spec: dict) -> bool:
        """A forwarded call: True if it is refused (answered here, not run)."""
        actors = self.nm.actors
        aid, believed = spec["actor"]["aid"], spec["actor"].get("inc")
        actor = actors.actors.get(aid)
        retired = actors.retired.get(aid)
        if actor is None and retired is not None:
            self._send_refusal(identity, spec["id"], *retired)
            return True
        if actor is None or believed is None or believed == actor.restarts or \
                actor.state == "DEAD":
            return False
        if believed > actor.restarts:
            self.retire(aid, f"its incarnation {believed} exists elsewhere; this node's copy "
                             f"(incarnation {actor.restarts}) is stale and stopped serving")
            self._send_refusal(identity, spec["id"], *actors.retired[aid])
            return True
        self._send_refusal(identity, spec["id"], actor.restarts,
                           f"this node holds incarnation {actor.restarts} of the actor, not "
                           f"{believed}")
        return True

    def _send_refusal(self, identity: bytes, task_id: bytes, incarnation: int, why: str):
        self.stats["calls_refused"] += 1
        self.remote.router.send_multipart([identity, *protocol.encode(cm.REMOTE_DONE, {
            "done": [[task_id, [incarnation, why], cm.STALE_INCARNATION]]})])

    def refused_here(self, task) -> bool:
        """A call of another node that was waiting on a retired copy finished (with an
        error): answered with a refusal instead (finished_for_peer)."""
        refusal = self.refusing.pop(task.spec["id"], None)
        if refusal is None:
            return False
        self._send_refusal(task.submitter, task.spec["id"], *refusal)
        return True

    # ---- retiring a stale copy -----------------------------------------------------------------

    def retire(self, aid: bytes, why: str) -> None:
        self.stats["copies_retired"] += 1
        self.nm.actors.retire(aid, why, self._hand_back)

    def _hand_back(self, task, incarnation: int, why: str) -> None:
        """A call that was queued or running on a retired copy: to the live incarnation."""
        if task.submitter.startswith(b"peer:"):
            self.refusing[task.spec["id"]] = [incarnation, why]
            self.nm._fail_task(task.spec["id"], ActorDiedError(
                None, task.spec["actor"]["aid"].hex(), why))  # -> refused_here
        else:
            task.spec.pop("direct", None)  # (a direct call's record: now an ordinary call)
            task.spec["actor"].pop("to", None)
            self.remote.actors.call(task)

    # ---- the row watch ----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if now < self._next_check or self._checking or self.nm.gcs.client is None:
            return
        self._next_check = now + ROW_CHECK_S
        held = [(aid, a.restarts) for aid, a in self.nm.actors.actors.items()
                if a.state != "DEAD"]
        if held:
            self._checking = True
            threading.Thread(target=self._read_rows, args=(held,), daemon=True,
                             name="zactor-actor-rows").start()

    def _read_rows(self, held) -> None:
        try:
            rows = self.nm.gcs.client.get_many("actors", [aid for aid, _ in held],
                                               timeout_s=ROW_TIMEOUT_S)
            self.rows.append(list(zip([aid for aid, _ in held], rows)))
            self.nm.wake()
        except Exception:  # noqa: BLE001 - the control store is away: next time
            pass
        finally:
            self._checking = False

    def pump(self) -> None:
        while self.rows:
            for aid, row in self.rows.popleft():
                actor = self.nm.actors.actors.get(aid)
                why = stale(actor, row)
                if why is not None:
                    self.retire(aid, why)


def stale(actor, row):
    """Why the actor table says this live copy is not the actor any more (None: it is)."""
    if actor is None or actor.state == "DEAD" or not isinstance(row, dict):
        return None
    incarnation = row.get("incarnation", 0)
    node = bytes(row.get("node") or b"").hex()[:16]
    if incarnation > actor.restarts:
        return f"the actor table names its incarnation {incarnation} (node {node}); this " \
               f"node's copy (incarnation {actor.restarts}) is stale and stopped serving"
    if row.get("state") == "DEAD" and incarnation == actor.restarts:
        return f"the actor table marks it dead ({row.get('death') or 'no reason given'}); " \
               f"this node's copy stopped serving"
    return None
