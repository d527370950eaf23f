"""Actors whose node died: restarted on a live node by their owner, and found again by their
callers.

Runs inside the node manager's loop, as part of RemoteTasks (remote_tasks.py calls in at a few
points: an actor moved to another node, a call forwarded, a result back, a node dead, a
look-up). Reads of the control store happen in short-lived threads; their answers come back
through deques that the loop drains (``pump``).

*Owner.* The node where ``Cls.remote()`` was submitted keeps the creation task when the actor
goes to another node (placement group, affinity, resources it lacks): its spec, and references
on the constructor's arguments. When the actor's node dies and restarts are left (the actor
row's ``restarts_left``, written by the node that ran it, counts its local restarts too), the
owner marks the row RESTARTING, reads the last checkpoint, and submits a fresh creation task
(new id, incarnation + 1, ``max_restarts`` = what is left, the checkpoint and which calls it
covers) through its own scheduler: the actor lands on whichever live node fits (soft affinity
falls back; hard affinity to the dead node fails the actor), the owner's own included. With no
restarts left it writes the row DEAD with the cause and fails every call. An actor whose owner
died with it (e.g. created by a driver of that node) is actor_adoption.py's: a detached one is
adopted by one surviving node, the others are marked DEAD.

*Callers* (the owner and any node that forwarded calls to it). Calls queued here wait while the
actor restarts. Calls in flight on the dead node are sent again to the new instance if
``max_task_retries`` allows, otherwise fail with ActorDiedError naming the node and why it
died. A non-owner looks the actor up again; its look-up waits while the row says RESTARTING or
names a dead node whose owner is alive and may restart it (at most RESTART_WAIT_S).

*Replay* (checkpointable one-call-at-a-time actors with restarts left). Each caller keeps the
calls it forwarded (with references on their arguments) until a checkpoint surely covers them.
The executing node records, per calling node, the last call each checkpoint includes
(``covered``, in the checkpoint row) and tells the caller in that call's REMOTE_DONE; the caller
trims one announcement late (the announced checkpoint's control-store write may die with the
node; the one before it was written a whole interval earlier). After a restart each caller
re-sends, in its own order and before anything else it sends, the calls after its covered one.
Guarantee: with one calling node the restored state is exact; with several, every call is
applied exactly once but calls of different nodes since the checkpoint may interleave in
another order than the first time (exact for commutative updates such as a counter).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from zactor import serialization as ser
from zactor.exceptions import ActorDiedError
from zactor.runtime import messages as m

ROW_TIMEOUT_S = 5.0
RESTART_WAIT_S = 60.0  # a look-up waits this long for a restarting actor's new home
LOOKUP_POLL_S = 0.05


class Owned:
    """An actor created here that lives on another node: what restarting it needs."""

    __slots__ = ("spec", "submitter", "refs", "home", "restarts_left", "incarnation")

    def __init__(self, creation, refs):
        self.spec = creation.spec
        self.submitter = creation.submitter
        self.refs = refs                  # constructor arguments kept alive for restarts
        self.home = None
        self.restarts_left = creation.spec["actor"].get("max_restarts", 0)
        self.incarnation = creation.spec["actor"].get("inc", 0)


class ActorFailover:
    def __init__(self, remote):
        self.remote = remote
        self.nm = remote.nm
        self.owned: dict = {}      # actor id -> Owned
        self.info: dict = {}       # actor id -> {"replayable", "task_retries"} (spec or row)
        self.kept: dict = {}       # actor id -> [Task] forwarded, not surely checkpointed
        self.kept_ids: set = set()  # their task ids
        self.announced: dict = {}  # actor id -> last covered call id its node announced
        self.replaying: set = set()  # ids of finished calls being sent again (replay)
        self.dead: dict = {}       # actor id -> serialized ActorDiedError (owner gave up)
        self.restart_rows: deque = deque()  # (actor id, node, reason, row, checkpoint row)
        from zactor.cluster.actor_adoption import ActorAdoption  # (it imports Owned from here)
        self.adoption = ActorAdoption(self)  # actors whose owner died with them

    # ---- hooks from RemoteTasks -------------------------------------------------------------

    def moved(self, aid: bytes, node_id: bytes, actor) -> None:
        """The actor's creation task (first or restart) was forwarded to ``node_id``."""
        owned = self.owned.get(aid)
        if owned is not None:
            owned.home = node_id
        if actor is None:
            return
        refs = []
        if actor.restarts_left != 0 and actor.creation is not None:
            refs = list(actor.creation.deps) + list(actor.creation.held)
        if owned is None:
            self.owned[aid] = owned = Owned(actor.creation, refs)  # the refs move here
            owned.home = node_id
            owned.spec["actor"]["owner"] = self.nm.node_id  # in its row, wherever it runs
        else:
            self._unref(refs)  # a restart's own set: the owner already holds one
        self.info[aid] = {"replayable": actor.replayable(), "task_retries": actor.task_retries}
        if actor.log:  # a restart that did not stay here: its replays go first, in order
            calls = self.remote.actors.calls.setdefault(aid, deque())
            kept = self.kept.setdefault(aid, [])
            for task in reversed(actor.log):
                calls.appendleft(task)
                if task.spec["id"] not in self.nm.tasks:
                    self.replaying.add(task.spec["id"])
            kept[:0] = actor.log  # their references move back to the caller's log
            self.kept_ids.update(t.spec["id"] for t in actor.log)
            actor.log = []

    def refused(self, task) -> bool:
        """A call to an actor this owner gave up on fails at once."""
        death = self.dead.get(task.spec["actor"]["aid"])
        if death is None:
            return False
        self.nm._finish_task(task.spec["id"], [[o, m.OBJ_ERROR, death] for o in task.returns])
        return True

    def sent(self, task) -> None:
        """A call was forwarded: keep it for replay if the actor replays."""
        aid = task.spec["actor"]["aid"]
        self.replaying.discard(task.spec["id"])
        if not self.info.get(aid, {}).get("replayable"):
            return
        if task.spec["id"] in self.kept_ids:
            return  # a replay: already kept (its references too)
        for oid in list(task.deps) + list(task.held):
            self.nm.objects.add_ref(oid)
        self.kept.setdefault(aid, []).append(task)
        self.kept_ids.add(task.spec["id"])

    def kept_task(self, task_id: bytes):
        """A call kept for replay (a finished one included), or None."""
        if task_id not in self.kept_ids:
            return None
        return next((t for tasks in self.kept.values() for t in tasks
                     if t.spec["id"] == task_id), None)

    def covered_for(self, task):
        """[actor id, last call of ``task``'s node its checkpoint covers] for REMOTE_DONE."""
        actor = self.nm.actors.actors.get(task.spec["actor"]["aid"])
        if actor is None or not actor.covered:
            return None
        covered = actor.covered.get(task.submitter[5:])
        return None if covered is None else [actor.actor_id, covered]

    def covered(self, aid: bytes, task_id: bytes) -> None:
        """The actor's node announced a checkpoint covering our calls up to ``task_id``:
        forget the calls up to the one announced before (see the module docstring)."""
        previous = self.announced.get(aid)
        if previous == task_id:
            return
        self.announced[aid] = task_id
        if previous is not None:
            self._trim(aid, previous)

    def node_died(self, node_id: bytes, reason: str) -> None:
        self.adoption.node_died(node_id, reason)
        remote = self.remote
        where = f"its node {node_id.hex()[:16]} died ({reason})"
        retried: dict = {}
        for task_id, node in list(remote.forwarded.items()):
            task = self.nm.tasks.get(task_id)
            actor = task.spec.get("actor") if task is not None else None
            if node != node_id or actor is None:
                continue
            del remote.forwarded[task_id]
            aid = actor["aid"]
            if actor["op"] != "call":
                continue  # a creation: the owner restarts the actor below
            info = self.info.get(aid, {})
            if info.get("replayable"):
                continue  # kept: replayed on the new instance
            retries = info.get("task_retries", 0)
            if retries < 0 or task.attempt < retries:
                task.attempt += 1
                retried.setdefault(aid, []).append(task)
            else:
                self.nm._fail_task(task_id, ActorDiedError(
                    None, aid.hex(), f"The actor {task.spec.get('name', '')} was running this "
                    f"call when {where}; max_task_retries={retries} does not allow running "
                    f"it again"))
        for aid, tasks in retried.items():  # first, in the order they were sent
            calls = remote.actors.calls.setdefault(aid, deque())
            calls.extendleft(reversed(tasks))
        for aid, home in list(remote.actors.homes.items()):
            if home != node_id:
                continue
            del remote.actors.homes[aid]
            remote.actors.incs.pop(aid, None)
            owned = self.owned.get(aid)
            if owned is not None and owned.home == node_id:
                owned.home = None
                remote.actors.looking_up.add(aid)  # calls made here meanwhile wait for the restart
                self.nm.gcs.actor_state(aid, "RESTARTING", owned.incarnation + 1,
                                        owned.spec["actor"].get("cls", ""),
                                        owned.spec["actor"].get("name"),
                                        owned.spec["actor"].get("ns", ""), None,
                                        owned.spec["actor"].get("methods"),
                                        owner=self.nm.node_id,
                                        restarts_left=owned.restarts_left)
                threading.Thread(target=self._read_rows, args=(aid, node_id, reason),
                                 daemon=True, name="zactor-actor-restart").start()
            elif aid in remote.actors.calls or self.kept.get(aid):
                remote.actors.looking_up.add(aid)  # look it up again (waits for its restart)
                threading.Thread(target=remote.actors.look_up, args=(aid,), daemon=True,
                                 name="zactor-actor-lookup").start()

    def found(self, aid: bytes, row: dict) -> None:
        """A look-up found the actor's (new) home: note how to call it, replay first."""
        self.info[aid] = {"replayable": bool(row.get("replayable")),
                          "task_retries": row.get("task_retries", 0)}
        if "covered_here" in row:
            self._queue_replays(aid, row["covered_here"])

    def lost(self, aid: bytes, error) -> None:
        """The actor is dead for good: its kept calls still awaited fail too."""
        for task in self._take_kept(aid):
            self._unref(list(task.deps) + list(task.held))
            if task.spec["id"] in self.nm.tasks:
                self.nm._fail_task(task.spec["id"], error)
        self.announced.pop(aid, None)

    # ---- looking an actor up ------------------------------------------------------------------

    def look_up(self, aid: bytes):
        """The actor's row, waiting while it restarts (runs in a thread). A row that names a
        live home also carries ``covered_here``: the last of this node's calls its checkpoint
        includes (b"" when none), for the replay."""
        client = self.nm.gcs.client
        if client is None:
            return None
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            row = client.get("actors", aid, timeout_s=ROW_TIMEOUT_S)
            verdict, why = self._verdict(row)
            if verdict != "wait":
                break
            if time.monotonic() > deadline:
                return {"error": f"it did not restart within {RESTART_WAIT_S:.0f} s ({why})"}
            time.sleep(LOOKUP_POLL_S)  # polling the row with a deadline
        if verdict == "dead":
            return {"error": why}
        if row.get("replayable"):
            covered = self._checkpoint_row(client, aid).get("covered") or ()
            row["covered_here"] = dict(map(tuple, covered)).get(self.nm.node_id, b"")
        return row

    def _verdict(self, row):
        """("alive" | "wait" | "dead", why) for an actor row read during a look-up."""
        if not isinstance(row, dict):
            return "dead", "no such actor in the control store"
        peers = self.remote.link.peers
        home = row.get("node")
        state = row.get("state")
        if state == "DEAD":
            return "dead", row.get("death") or "it is dead"
        if home is not None and home not in peers:
            # a node this one has not read yet (it joined a moment ago, or this node did):
            # unknown is not dead; its row arrives with the nodes-table subscription
            return "wait", "its node is not known here yet"
        home_alive = peers.get(home, {}).get("state") == "alive"
        owner = row.get("owner") or home
        owner_alive = peers.get(owner, {}).get("state") == "alive"
        adoptable = row.get("detached") and row.get("restarts_left", 0) != 0
        if state == "RESTARTING":
            if owner_alive or adoptable:  # (a dead adopter's row is adopted again)
                return "wait", "restarting"
            return "dead", "it was restarting when its owner node died"
        if home_alive:
            return "alive", ""
        died = f"its node {bytes(home or b'').hex()[:16]} died " \
               f"({peers.get(home, {}).get('reason') or 'no live node holds it'})"
        if row.get("restarts_left", 0) == 0:
            return "dead", f"{died} and it has no restarts left (max_restarts)"
        if not owner_alive and not adoptable:
            return "dead", f"{died} together with its owner (the node that created it and " \
                           f"restarts it); an actor that is not detached fate-shares with it"
        return "wait", died  # its owner, or for a detached actor a surviving node, restarts it

    @staticmethod
    def _checkpoint_row(client, aid: bytes) -> dict:
        row = client.get("kv", b"actor-checkpoint:" + aid, timeout_s=ROW_TIMEOUT_S)
        return row if isinstance(row, dict) else {}

    # ---- the owner restarts it ------------------------------------------------------------------

    def _read_rows(self, aid: bytes, node_id: bytes, reason: str) -> None:
        row, checkpoint = None, {}
        client = self.nm.gcs.client
        try:
            row = client.get("actors", aid, timeout_s=ROW_TIMEOUT_S)
            checkpoint = self._checkpoint_row(client, aid)
        except Exception:  # noqa: BLE001 - restart from what the owner knows
            pass
        self.restart_rows.append((aid, node_id, reason, row, checkpoint))
        self.nm.wake()

    def pump(self) -> None:
        while self.restart_rows:
            self._restart(*self.restart_rows.popleft())
        self.adoption.pump()

    def _restart(self, aid, node_id, reason, row, checkpoint) -> None:
        self.remote.actors.looking_up.discard(aid)
        owned = self.owned.get(aid)
        if owned is None or owned.home is not None:
            return
        row = row if isinstance(row, dict) else {}
        left = row.get("restarts_left", owned.restarts_left)
        incarnation = max(owned.incarnation, row.get("incarnation", 0)) + 1
        if left == 0:
            self._give_up(aid, owned, f"The actor {owned.spec['actor'].get('cls', '')} is "
                          f"dead: its node {node_id.hex()[:16]} died ({reason}) and it has no "
                          f"restarts left (max_restarts)", incarnation)
            return
        owned.restarts_left = left - 1 if left > 0 else -1
        owned.incarnation = incarnation
        nm = self.nm
        spec = dict(owned.spec)
        spec["id"] = nm.new_task_id()
        info = {**spec["actor"], "max_restarts": owned.restarts_left, "inc": incarnation,
                "owner": nm.node_id}
        if self.info.get(aid, {}).get("replayable") and "checkpoint" in checkpoint:
            info["checkpoint"] = checkpoint["checkpoint"]
            info["covered"] = checkpoint.get("covered") or []
        spec["actor"] = info
        task = nm.make_task(spec, owned.submitter)
        request = nm._submit(task)
        refused = nm.actors.creating(task)
        if refused:
            nm._fail_task(spec["id"], ValueError(refused))
            return
        nm.actors.by_handle_ref.pop(task.returns[0], None)  # the handles hold the first one
        actor = nm.actors.actors[aid]
        if self.info.get(aid, {}).get("replayable"):  # restore, then these, then the rest
            covered_here = dict(map(tuple, info.get("covered", ()))).get(nm.node_id, b"")
            actor.log = self._replays(aid, covered_here)  # their references move along
        actor.queue.extend(self.remote.actors.calls.pop(aid, ()))  # waited: run after
        nm._apply(nm.scheduler.submit(request))
        self.remote.pull_missing([request])

    def _give_up(self, aid, owned, why: str, incarnation: int) -> None:
        error = ActorDiedError(None, aid.hex(), why)
        self.dead[aid] = ser.dumps(error)
        self.owned.pop(aid, None)
        self._unref(owned.refs)
        actor = owned.spec["actor"]
        self.nm.gcs.actor_state(aid, "DEAD", incarnation, actor.get("cls", ""),
                                actor.get("name"), actor.get("ns", ""), None,
                                actor.get("methods"), owner=self.nm.node_id, restarts_left=0,
                                death=why)
        for task in self.remote.actors.calls.pop(aid, ()):
            self.nm._fail_task(task.spec["id"], error)
        self.lost(aid, error)

    # ---- the calls kept for replay ---------------------------------------------------------------

    def _replays(self, aid: bytes, covered: bytes) -> list:
        """The kept calls after ``covered`` (all of them when it is not among them: the
        checkpoint covers none of those still kept); those covered are forgotten."""
        if covered:
            self._trim(aid, covered)
        return self._take_kept(aid)

    def _queue_replays(self, aid: bytes, covered: bytes) -> None:
        replays = self._replays(aid, covered)
        self.announced.pop(aid, None)
        if not replays:
            return
        calls = self.remote.actors.calls.setdefault(aid, deque())
        queued = {t.spec["id"] for t in calls}
        for task in reversed(replays):
            if task.spec["id"] in queued:
                continue
            calls.appendleft(task)
            if task.spec["id"] not in self.nm.tasks:
                self.replaying.add(task.spec["id"])
        self.kept[aid] = replays  # still kept (and referenced) until a checkpoint covers them
        self.kept_ids.update(t.spec["id"] for t in replays)

    def _trim(self, aid: bytes, upto: bytes) -> None:
        kept = self.kept.get(aid, [])
        for i, task in enumerate(kept):
            if task.spec["id"] == upto:
                for gone in kept[:i + 1]:
                    self.kept_ids.discard(gone.spec["id"])
                    self._unref(list(gone.deps) + list(gone.held))
                del kept[:i + 1]
                return

    def _take_kept(self, aid: bytes) -> list:
        """Hand over the kept calls (and the references they hold)."""
        kept = self.kept.pop(aid, [])
        for task in kept:
            self.kept_ids.discard(task.spec["id"])
        return kept

    def _unref(self, oids) -> None:
        for oid in oids:
            self.nm._free(self.nm.objects.remove_ref(oid))

