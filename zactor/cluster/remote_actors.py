"""Calls to actors that live on other nodes: where each actor lives, and its calls queued
here in submission order until they can be forwarded there.

Runs inside the node manager's loop (``pump``, every turn while anything is pending). Where
an actor lives is read from the control store's actor table by short-lived threads (a
look-up may wait while the actor restarts elsewhere), whose answers the loop takes from
``lookups``; a call is forwarded (RemoteTasks._forward, FORWARD_TASKS) once its home is known
and its arguments exist, so calls from one caller reach the actor in order. An actor whose
home node died is ActorFailover's (cluster/actor_failover.py).

Each call carries the incarnation its home had when this node learned where it lives
(``incs``); a home holding another incarnation refuses it (actor_incarnations.py) and the
refused calls come back here in the order they were sent: they go first again, once every
call still out at that home has come back (``draining``), to the home's newer incarnation
when it said it has one, else wherever a new look-up finds the actor.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from zactor import protocol
from zactor.cluster import messages as cm
from zactor.exceptions import ActorDiedError
from zactor.runtime import messages as m

ACTOR_LOOKUP_TIMEOUT_S = 5.0
AFFINITY_GRACE_S = 10.0  # how long a node named by the actor table may be unknown here


class RemoteActors:
    def __init__(self, remote):
        self.remote = remote  # the node's RemoteTasks: peers, forwarding, failover
        self.nm = remote.nm
        self.link = remote.link
        self.calls: dict = {}    # actor id -> deque of Tasks not forwarded yet
        self.homes: dict = {}    # actor id -> node id
        self.incs: dict = {}     # actor id -> the incarnation its calls are meant for
        # actor id -> [home that refused calls, calls put back, re-routed yet]
        self.draining: dict = {}
        self.pending_kills: dict = {}  # actor id -> (reason, when_idle) for its home
        self.home_unknown: dict = {}  # actor id -> when its row first named an unknown node
        self.lookups: deque = deque()  # (actor id, row) answers from the lookup threads
        self.looking_up: set = set()
        self.superseded: set = set()  # actors whose look-up in flight is to be ignored

    def pump(self) -> None:
        if self.calls or self.lookups or self.pending_kills:
            self._pump()

    def moved(self, aid: bytes, node_id: bytes) -> None:
        """An actor created here is being created on ``node_id`` instead (its placement
        group or affinity named it): that node owns it from now on (its actor table row,
        restarts, name); calls made here are forwarded there, in order."""
        self.homes[aid] = node_id
        actors = self.nm.actors
        actor = actors.actors.pop(aid, None)
        self.remote.failover.moved(aid, node_id, actor)  # this node owns its restarts
        if actor is None:
            return
        self.incs[aid] = actor.restarts
        actors.by_creation.pop(actor.creation_task_id, None)
        if actor.name:
            actors.by_name.pop((actor.namespace, actor.name), None)
        queued, actor.queue = list(actor.queue), deque()
        for task in queued:
            self.call(task)

    def kill(self, aid: bytes, reason: str, when_idle: bool = False) -> bool:
        """End an actor that lives on another node (sent once its home is known and, with
        ``when_idle``, after the calls queued here for it). False: no such actor known."""
        if aid not in self.homes and aid not in self.looking_up and \
                aid not in self.calls and self.nm.gcs.client is None:
            return False
        self.pending_kills[aid] = (reason, when_idle)
        if aid not in self.homes and aid not in self.looking_up:
            self.looking_up.add(aid)
            threading.Thread(target=self.look_up, args=(aid,), daemon=True,
                             name="zactor-actor-lookup").start()
        return True

    def on_kill_actor(self, _identity, msg) -> None:
        if msg["when_idle"]:
            self.nm.actors.end_soon(msg["aid"], msg["reason"])
        else:
            self.nm.actors.kill(msg["aid"], reason=msg["reason"])

    def _send_kills(self) -> None:
        for aid, (reason, when_idle) in list(self.pending_kills.items()):
            home = self.homes.get(aid)
            if home is None:
                if aid not in self.looking_up:  # looked up: it lives nowhere
                    del self.pending_kills[aid]
                continue
            if when_idle and self.calls.get(aid):
                continue  # its calls go first
            sock = self.remote._peer(home)
            if sock is not None:
                sock.send_multipart(protocol.encode(cm.KILL_ACTOR_REMOTE, {
                    "aid": aid, "reason": reason, "when_idle": when_idle}))
            del self.pending_kills[aid]

    def call(self, task) -> None:
        if self.remote.failover.refused(task):
            return
        aid = task.spec["actor"]["aid"]
        self.calls.setdefault(aid, deque()).append(task)
        if aid not in self.homes and aid not in self.looking_up:
            self.looking_up.add(aid)
            threading.Thread(target=self.look_up, args=(aid,), daemon=True,
                             name="zactor-actor-lookup").start()

    def look_up(self, aid: bytes, delay: float = 0.0) -> None:
        if delay:
            time.sleep(delay)  # (its own thread: the loop never waits for it)
        client = self.nm.gcs.client
        row = None
        try:
            if client is not None:
                row = self.remote.failover.look_up(aid)  # waits while it restarts elsewhere
        except Exception as exc:  # noqa: BLE001 - reported to the calls as the cause
            row = {"error": str(exc)}
        self.lookups.append((aid, row))
        self.nm.wake()

    def find_named_actor(self, identity: bytes, name: str, namespace: str) -> None:
        """GET_ACTOR of a name this node does not host: the actors table is scanned in a
        thread; the client is answered on the loop (None: not found, or no answer in time)."""
        def scan():
            for aid, row in self.nm.gcs.client.scan("actors", timeout_s=ACTOR_LOOKUP_TIMEOUT_S):
                if isinstance(row, dict) and row.get("name") == name and \
                        row.get("namespace", "") == namespace and \
                        row.get("state") != "DEAD" and \
                        self.link.peers.get(row.get("node"), {}).get("state") == "alive":
                    return aid, row
            return None

        def answer(hit) -> None:
            found = None
            if hit is not None:
                aid, row = hit
                found = {"aid": aid, "methods": row.get("methods") or {},
                         "cls": row.get("class", "")}
                self.lookups.append((aid, row))  # and where it lives
            self.nm._send(identity, m.INFO_REPLY, {"value": found})

        self.nm.thread_reads.start("zactor-named-actor", scan, answer)

    def _pump(self) -> None:
        while self.lookups:
            aid, row = self.lookups.popleft()
            self.looking_up.discard(aid)
            if aid in self.nm.actors.actors or aid in self.superseded:
                # this node restarted it meanwhile (it adopted it): it knows where it lives,
                # and has sent its calls since the checkpoint there already
                self.superseded.discard(aid)
                continue
            home = row.get("node") if isinstance(row, dict) else None
            alive = home is not None and row.get("state") != "DEAD" and \
                self.link.peers.get(home, {}).get("state") == "alive"
            if alive:
                self.home_unknown.pop(aid, None)
                self.homes[aid] = home
                self.incs[aid] = row.get("incarnation", 0)
                self.remote.failover.found(aid, row)
                continue
            if self._home_not_seen_yet(aid, home, row):
                self.looking_up.add(aid)
                threading.Thread(target=self.look_up, args=(aid, 0.1), daemon=True,
                                 name="zactor-actor-lookup").start()
                continue
            self.home_unknown.pop(aid, None)
            why = (row or {}).get("error") if isinstance(row, dict) else None
            error = ActorDiedError(None, aid.hex(), "the actor is not alive anywhere in the "
                                   f"cluster ({why or 'no live node holds it'})")
            for task in self.calls.pop(aid, ()):
                self.nm._fail_task(task.spec["id"], error)
            self.remote.failover.lost(aid, error)
        for aid, queue in list(self.calls.items()):
            home = self.homes.get(aid)
            if home is None or aid in self.draining and self._still_out(aid):
                continue
            while queue:  # in order: a call waits for its own arguments and for those before
                task = queue[0]
                if task.spec["id"] not in self.nm.tasks and \
                        task.spec["id"] not in self.remote.failover.replaying:
                    queue.popleft()
                    continue
                if self.remote._dep_locations(task) is None or self.remote._peer(home) is None or \
                        self.link.peers.get(home, {}).get("state") == "dead":
                    break  # (a dead home: the calls wait for node_died, which re-routes)
                queue.popleft()
                self.remote._forward(task, home)
            if not queue:
                del self.calls[aid]
        if self.pending_kills:
            self._send_kills()

    def refused(self, task_id: bytes, node: bytes, incarnation: int, why: str) -> None:
        """The home refused a call meant for another incarnation (actor_incarnations.py)."""
        task = self.nm.tasks.get(task_id) or self.remote.failover.kept_task(task_id)
        if task is None:
            return
        aid = task.spec["actor"]["aid"]
        if task_id not in self.nm.tasks:
            self.remote.failover.replaying.add(task_id)  # a finished call being replayed
        drain = self.draining.get(aid)
        if drain is None or drain[0] != node:
            drain = self.draining[aid] = [node, 0, False]
        queue = self.calls.setdefault(aid, deque())
        queue.insert(drain[1], task)  # refused in the order they were sent: that order
        drain[1] += 1
        if drain[2]:
            return  # a later refusal by that home: already re-routed
        drain[2] = True
        believed = self.incs.get(aid)
        if self.homes.get(aid) == node and believed is not None and incarnation > believed:
            self.incs[aid] = incarnation  # it restarted there since: send to that one
            return
        if self.homes.get(aid) == node:  # a stale copy there: where does the actor live?
            del self.homes[aid]
            self.incs.pop(aid, None)
        if aid not in self.looking_up:
            self.looking_up.add(aid)
            threading.Thread(target=self.look_up, args=(aid,), daemon=True,
                             name="zactor-actor-lookup").start()

    def _still_out(self, aid: bytes) -> bool:
        """Calls for the actor still unanswered at the home that refused some (they come
        back in order: refused ones go first); False once all are back (draining ends)."""
        node = self.draining[aid][0]
        tasks = self.nm.tasks
        for task_id, where in self.remote.forwarded.items():
            task = tasks.get(task_id)
            if where == node and task is not None and \
                    (task.spec.get("actor") or {}).get("aid") == aid:
                return True
        del self.draining[aid]
        return False

    def _home_not_seen_yet(self, aid: bytes, home, row) -> bool:
        """The actor table names a home this node has no row for yet (this node joined a
        moment ago and has not read every peer): unknown is not dead. Looked up again for
        at most AFFINITY_GRACE_S; a home known dead, or a row saying DEAD, fails at once."""
        if home is None or not isinstance(row, dict) or row.get("state") == "DEAD" or \
                home in self.link.peers:
            return False
        first = self.home_unknown.setdefault(aid, time.monotonic())
        return time.monotonic() - first < AFFINITY_GRACE_S
