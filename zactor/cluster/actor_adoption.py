"""Actors whose owner died with them: detached ones adopted by one surviving node, the others
marked DEAD.

Runs inside the node manager's loop, beside ActorFailover (actor_failover.py restarts actors
whose owner is alive). When a node dies, every surviving node reads, in a short-lived thread,
the actor rows that name the dead node as their home and whose owner (the node that restarts
them) is dead too (the same node, or one that died before). For each such row, Ray's rules:

- a *detached* actor (``lifetime="detached"``) with restarts left is restarted by the cluster.
  Every surviving node tries to claim its row with one compare-and-set (``put_if``: the row
  still names the dead node and the incarnation read) that writes RESTARTING, incarnation + 1
  and itself as home and owner; the chain's head lets exactly one win. The winner becomes its
  owner and restarts it from the creation spec its home recorded (``actor-creation:`` in the
  ``kv`` table, with the class's function from the ``functions`` table) and its last
  checkpoint, through ActorFailover's restart: wherever it fits, maybe the winner itself.
- any other actor (not detached, no restarts left, or constructor arguments passed as object
  references, which died with the node) is dead: the row is set DEAD with the reason, also
  with a compare-and-set, so a row that moved on meanwhile is left alone.

An actor alive on a surviving node whose owner died is the owner's to end when it is not
detached (it fate-shares with its owner, as in Ray): its node kills it (``owner_died``).
Callers that look such an actor up wait while its row may still be adopted
(ActorFailover._verdict), and get ActorDiedError with the row's reason otherwise.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from types import SimpleNamespace

from zactor.cluster.actor_failover import Owned
from zactor.cluster.remote_actors import AFFINITY_GRACE_S

ROW_TIMEOUT_S = 5.0


def creation_key(aid: bytes) -> bytes:
    return b"actor-creation:" + aid


class ActorAdoption:
    def __init__(self, failover):
        self.failover = failover
        self.nm = failover.nm
        self.adopted: deque = deque()  # (actor id, dead node, reason, row, checkpoint, record)

    def node_died(self, node_id: bytes, reason: str) -> None:
        self._end_orphans(node_id, reason)
        if self.nm.gcs.client is not None:
            threading.Thread(target=self._claim_rows, args=(node_id, reason), daemon=True,
                             name="zactor-actor-adopt").start()

    def _end_orphans(self, node_id: bytes, reason: str) -> None:
        """Actors living here whose owner was that node: not detached, they end with it."""
        actors = self.nm.actors
        for aid, actor in list(actors.actors.items()):
            if actor.owner == node_id and not actor.detached and actor.state != "DEAD":
                actors.kill(aid, reason=f"its owner (node {node_id.hex()[:16]}, where it was "
                                        f"created) died ({reason}); an actor that is not "
                                        f"detached fate-shares with its owner")

    # ---- in a thread: which rows were orphaned, and claiming them ----------------------------

    def _claim_rows(self, node_id: bytes, reason: str) -> None:
        client = self.nm.gcs.client
        try:
            rows = client.scan("actors", timeout_s=ROW_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - the control store is away: callers time out
            return
        for aid, row in rows:
            if self._orphaned(row, node_id):
                try:
                    self._claim(client, aid, row, node_id, reason)
                except Exception:  # noqa: BLE001 - another node may still claim it
                    continue

    def _orphaned(self, row, node_id: bytes) -> bool:
        if not isinstance(row, dict) or row.get("node") != node_id or row.get("state") == "DEAD":
            return False
        owner = row.get("owner") or node_id
        link = self.failover.remote.link
        state = link.peers.get(owner, {}).get("state")
        if state is None:  # not read yet, or gone from the table: known once we are settled
            return time.time() - link.started_at > AFFINITY_GRACE_S
        return owner == node_id or state != "alive"

    def _claim(self, client, aid: bytes, row: dict, node_id: bytes, reason: str) -> None:
        expect = {"node": node_id, "incarnation": row.get("incarnation", 0),
                  "state": row.get("state")}
        died = f"its node {node_id.hex()[:16]} died ({reason})"
        record = client.get("kv", creation_key(aid), timeout_s=ROW_TIMEOUT_S) \
            if row.get("detached") else None
        why = self._why_not_adopted(row, record, died)
        if why is not None:
            client.put_if("actors", aid, expect, {**row, "state": "DEAD", "death": why,
                                                  "time": time.time()},
                          timeout_s=ROW_TIMEOUT_S)
            return
        me = self.nm.node_id
        claim = {**row, "state": "RESTARTING", "incarnation": row.get("incarnation", 0) + 1,
                 "node": me, "owner": me, "worker": None, "time": time.time()}
        if not client.put_if("actors", aid, expect, claim, timeout_s=ROW_TIMEOUT_S):
            return  # another node adopted it (or it moved on)
        checkpoint = self.failover._checkpoint_row(client, aid)
        blob = client.get("functions", record["spec"].get("fid") or b"",
                          timeout_s=ROW_TIMEOUT_S)
        self.adopted.append((aid, node_id, reason, row, checkpoint, record, blob))
        self.nm.wake()

    @staticmethod
    def _why_not_adopted(row: dict, record, died: str):
        cls = row.get("class", "")
        if not row.get("detached"):
            return f"The actor {cls} is dead: {died} together with its owner (the driver or " \
                   f"task that created it); an actor that is not detached fate-shares with " \
                   f"its owner"
        if row.get("restarts_left", 0) == 0:
            return f"The actor {cls} is dead: {died} and it has no restarts left " \
                   f"(max_restarts)"
        if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
            return f"The actor {cls} is dead: {died} and its creation spec was not recorded"
        spec = record["spec"]
        if any(a[0] == 1 for a in spec.get("args", ())) or \
                any(a[1] == 1 for a in spec.get("kwargs", ())) or spec.get("held"):
            return f"The actor {cls} is dead: {died}; its constructor took object " \
                   f"references, which cannot be restored for a restart elsewhere"
        return None

    # ---- in the loop: the winner restarts it ------------------------------------------------

    def pump(self) -> None:
        while self.adopted:
            self._adopt(*self.adopted.popleft())

    def _adopt(self, aid, node_id, reason, row, checkpoint, record, blob) -> None:
        failover, nm = self.failover, self.nm
        spec = record["spec"]
        if blob is not None and spec.get("fid"):
            nm.functions.setdefault(spec["fid"], blob)
        creation = SimpleNamespace(spec=dict(spec), submitter=record.get("submitter") or b"")
        failover.owned[aid] = Owned(creation, [])  # restarts_left and incarnation: the row's
        failover.info[aid] = {"replayable": bool(row.get("replayable")),
                              "task_retries": row.get("task_retries", 0)}
        if aid in failover.remote.actors.looking_up:  # started as a caller: this node knows
            failover.remote.actors.superseded.add(aid)
        failover._restart(aid, node_id, reason, row, checkpoint)
