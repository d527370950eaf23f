"""The node manager's actors: where each lives, and the calls waiting for it.

Runs in the node manager. An actor is created by an ordinary task marked ``dedicated`` (the
local scheduler places it and keeps its worker and resources for the actor's lifetime); its
method calls then bypass the scheduler: they queue here, one FIFO per actor, and go to the
actor's worker in the order they arrived, each once its arguments exist (a call waits for the
one before it, so calls from one caller run in submission order, as in Ray).

When the actor's worker dies, or it is killed, or its ``__init__`` raised, every queued and
running call fails with a specific error (``ActorDiedError``, or ``RayActorError`` carrying the
``__init__`` error), and so does every later call: no call is left hanging.

Restarts: an actor whose worker dies is re-created (its creation task submitted again, so
``__init__`` runs again on a fresh worker: a restarted actor starts from fresh state, as in
Ray) while it has ``max_restarts`` left (-1: forever); calls queued meanwhile wait for it. The
calls that were running when it died are retried on the new instance if ``max_task_retries``
allows (per call), otherwise they fail with ``ActorDiedError``. ``kill`` never restarts.

Checkpoints and replay (opt-in: the class defines ``__zactor_checkpoint__(self)`` returning
its state and ``__zactor_restore__(self, state)``). The node manager is the only way calls
reach an actor, so it knows the order in which a one-call-at-a-time actor executes them: it
keeps every call it sent since the last checkpoint (with holds on their arguments) in a
*replay log*, off the per-call path (an append). The worker checkpoints after every
``checkpoint_interval`` calls (default 100) and sends the state with that call's TASK_DONE; the
node manager stores it in the control store's ``actors`` table and trims the log. After a
restart it sends the actor its last checkpoint (``__zactor_restore__``) and replays the logged
calls in their original order (their results exist already and are kept: objects are
immutable), then the calls that waited. So a counter killed mid-stream ends with exactly the
value it would have had, and no call fails because of the restart. Async and threaded actors
restart from their checkpoint without replay (their execution order is not defined).

Each actor has a row in the control store's ``actors`` table (state, incarnation = number of
restarts, node, worker). A new incarnation is created only after the node has seen the old
worker's exit status, so two copies of one actor never serve calls on a node.

In a cluster, an actor whose *node* dies is restarted on another node by its owner (the node
that created it), with its last checkpoint from the control store and the calls its callers
kept since: zactor/cluster/actor_failover.py; one whose owner died with it is adopted or
marked dead: cluster/actor_adoption.py. A copy whose row names a newer incarnation elsewhere
retires (``retire``): cluster/actor_incarnations.py.
"""

from __future__ import annotations

from collections import deque

from zactor import serialization as ser
from zactor.exceptions import ActorDiedError, RayActorError, RayTaskError, WorkerCrashedError
from zactor.runtime import messages as m

PENDING, ALIVE, DEAD = "PENDING", "ALIVE", "DEAD"


class Actor:
    __slots__ = ("actor_id", "state", "worker_id", "creation_task_id", "queue", "running",
                 "name", "namespace", "methods", "class_name", "death", "killed", "waiting_on",
                 "creation", "restarts_left", "task_retries", "restarts", "checkpointable",
                 "sequential", "log", "checkpoint", "kill_reason", "told", "last_death",
                 "detached", "covered", "owner")

    def __init__(self, actor_id, creation_task_id, info):
        self.actor_id = actor_id
        self.state = PENDING
        self.worker_id = None
        self.creation_task_id = creation_task_id
        self.queue: deque = deque()     # calls not yet sent, in arrival order
        self.running: dict = {}         # task id -> Task, sent to the worker
        self.name = info.get("name")
        self.namespace = info.get("ns", "")
        self.methods = info.get("methods", {})
        self.class_name = info.get("cls", "")
        self.death = None               # serialized error every call gets once DEAD
        self.killed = False
        self.waiting_on = None          # the object the head call waits for
        self.creation = None            # the creation Task, kept to restart the actor
        self.restarts_left = info.get("max_restarts", 0)
        self.task_retries = info.get("max_task_retries", 0)
        # an actor restarted on another node after its node died continues the numbering
        self.restarts = info.get("inc", 0)
        self.checkpointable = bool(info.get("checkpointable"))
        self.sequential = not info.get("concurrent")
        self.log: list = []             # calls sent since the last checkpoint (replay)
        self.kill_reason = "it was killed by zactor.kill()"
        self.checkpoint = info.get("checkpoint")  # the last checkpoint's serialized state
        # caller node id -> its last call the checkpoint covers (cluster/actor_failover.py)
        self.covered: dict = dict(info.get("covered") or ())
        self.owner = info.get("owner")  # the node that restarts it when its node dies
        self.detached = bool(info.get("detached"))  # outlives its job (until killed)
        self.told: set = set()          # clients sent this incarnation's route (direct.py)
        self.last_death = None          # why the last incarnation died

    def replayable(self) -> bool:
        """Restarted from its checkpoint with the calls since replayed in order."""
        return self.checkpointable and self.sequential and self.restarts_left != 0

    def direct_ok(self) -> bool:
        """Callers may call it directly, unless its replay log needs to see every call."""
        return not self.replayable()


class ActorManager:
    def __init__(self, node):
        self.node = node                # the NodeManager: objects, sending, finishing tasks
        self.actors: dict = {}
        self.by_name: dict = {}         # (namespace, name) -> actor id
        self.by_worker: dict = {}
        self.by_creation: dict = {}
        self.waiters: dict = {}         # object id -> actor ids whose head call waits on it
        self.by_handle_ref: dict = {}   # the object every handle holds -> actor id
        self.end_when_idle: set = set()  # actors whose handles are gone, calls still running
        # actor id -> [incarnation, why]: copies that stopped serving because the actor table
        # names a newer incarnation (cluster/actor_incarnations.py); their calls are refused
        self.retired: dict = {}

    # ---- creation -------------------------------------------------------------------------

    def creating(self, task) -> str | None:
        """A creation task arrived; returns an error text if the actor cannot exist."""
        info = task.spec["actor"]
        key = (info.get("ns", ""), info.get("name"))
        if info.get("name") and key in self.by_name and \
                self.actors[self.by_name[key]].state != DEAD:
            return f"an actor named {info['name']!r} already exists in namespace {key[0]!r}"
        actor = Actor(info["aid"], task.spec["id"], info)
        actor.creation = task
        self.retired.pop(actor.actor_id, None)  # a newer incarnation lives here again
        self._record(actor)
        if actor.detached and not actor.restarts and self.node.remote is not None:
            # what a surviving node needs to restart it if its node dies with its owner
            # (cluster/actor_adoption.py)
            self.node.gcs.actor_creation(actor.actor_id, task.spec, task.submitter)
        if not actor.name and not info.get("detached"):
            self.by_handle_ref[task.returns[0]] = actor.actor_id
        if actor.restarts_left != 0:  # a restart needs the constructor's arguments again
            for oid in list(task.deps) + list(task.held):
                self.node.objects.add_ref(oid)
        self.actors[actor.actor_id] = actor
        self.by_creation[task.spec["id"]] = actor
        if actor.name:
            self.by_name[key] = actor.actor_id
        return None

    def placed(self, task_id: bytes, worker_id: bytes) -> None:
        actor = self.by_creation.get(task_id)
        if actor is not None:
            actor.worker_id = worker_id
            self.by_worker[worker_id] = actor

    def created(self, task_id: bytes, results) -> None:
        """The creation task finished: the actor lives, or its ``__init__`` failed."""
        actor = self.by_creation.pop(task_id, None)
        if actor is None:
            return
        _, state, data = results[0][:3]
        if state == m.OBJ_ERROR:
            cause = ser.deserialize(data)
            if isinstance(cause, RayTaskError):
                cause = cause.cause
            if isinstance(cause, WorkerCrashedError) and not actor.killed and \
                    actor.restarts_left != 0:
                # the process died under __init__ (not __init__ raising): as in Ray, that
                # is a death like any other and costs one restart
                if actor.worker_id is not None:
                    self.by_worker.pop(actor.worker_id, None)
                self._restart(actor, f"The actor {actor.class_name} died unexpectedly in "
                                     f"its __init__: {cause}")
                return
            self._die(actor, RayActorError(cause, actor.actor_id.hex(),
                                           f"The actor {actor.class_name} died in its "
                                           f"__init__: {type(cause).__name__}: {cause}"))
            if actor.worker_id is not None:
                self.node._apply(self.node.scheduler.release_dedicated(actor.worker_id))
            return
        actor.state = ALIVE
        self._record(actor)
        if actor.restarts and actor.checkpointable:
            identity = self.node.worker_identity.get(actor.worker_id)
            if identity is not None:
                self._resume(actor, identity)
        self.pump(actor)

    # ---- calls ----------------------------------------------------------------------------

    def call(self, task) -> None:
        actor = self.actors.get(task.spec["actor"]["aid"])
        if actor is None and self.node.remote is not None:
            self.node.remote.actors.call(task)  # an actor of another node: routed there
            return
        if actor is None:
            self.node._fail_task(task.spec["id"], ActorDiedError(
                None, task.spec["actor"]["aid"].hex(), "no such actor on this node (it was "
                "never created here, or its node is gone)"))
            return
        if actor.state == DEAD:
            self.node._finish_task(task.spec["id"], [[o, m.OBJ_ERROR, actor.death]
                                                     for o in task.returns])
            return
        actor.queue.append(task)
        self.pump(actor)

    def pump(self, actor: Actor) -> None:
        """Send the actor's queued calls, in order, while their arguments exist."""
        if actor.state != ALIVE:
            return
        node = self.node
        identity = node.worker_identity.get(actor.worker_id)
        while actor.queue and identity is not None:
            task = actor.queue[0]
            if task.submitter not in actor.told and actor.direct_ok():
                self._tell_route(actor, task.submitter, identity)
            resolved, failed = [], None
            for oid in task.deps:
                e = node.objects.entries.get(oid)
                if e is not None and e.state == m.OBJ_REMOTE:
                    node.remote.ensure_local(oid)  # on another node: fetched, then called
                if e is None or e.state is None or e.state == m.OBJ_REMOTE:
                    actor.waiting_on = oid
                    self.waiters.setdefault(oid, set()).add(actor.actor_id)
                    return
                if e.state == m.OBJ_ERROR:
                    failed = e.data
                    break
                resolved.append([oid, e.state, e.data])
            actor.queue.popleft()
            actor.waiting_on = None
            if failed is not None:  # a failed argument fails the call, as in Ray
                node._finish_task(task.spec["id"], [[o, m.OBJ_ERROR, failed]
                                                    for o in task.returns])
                continue
            actor.running[task.spec["id"]] = task
            if actor.replayable():
                self._log(actor, task)
            node._queue_execute(identity, [task.spec, resolved, [], 0], [])

    def _tell_route(self, actor: Actor, submitter: bytes, identity: bytes) -> None:
        """Give a caller the actor worker's address: its next calls can go direct."""
        client = self.node.clients.get(identity)
        if client is None or not client.address or submitter not in self.node.clients:
            return
        actor.told.add(submitter)
        self.node._send(submitter, m.ACTOR_ROUTE, {"aid": actor.actor_id,
                                                   "addr": client.address,
                                                   "inc": actor.restarts})

    def _forget_routes(self, actor: Actor) -> None:
        """The incarnation the routes point at is gone: callers go through the node again."""
        for submitter in actor.told:
            if submitter in self.node.clients:
                self.node._send(submitter, m.ACTOR_ROUTE, {"aid": actor.actor_id, "addr": ""})
        actor.told.clear()

    # ---- checkpoints and replay -------------------------------------------------------------

    def _log(self, actor: Actor, task) -> None:
        """Keep a sent call for replay; its arguments stay alive while it is logged."""
        for oid in list(task.deps) + list(task.held):
            self.node.objects.add_ref(oid)
        actor.log.append(task)

    def _trim(self, actor: Actor, upto: int) -> None:
        node = self.node
        for task in actor.log[:upto]:
            for oid in list(task.deps) + list(task.held):
                node._free(node.objects.remove_ref(oid))
        del actor.log[:upto]

    def checkpointed(self, task_id: bytes, checkpoint: dict) -> None:
        """The actor checkpointed right after call ``task_id``: keep the state (here and in
        the control store) and forget the calls it covers."""
        actor = self.actors.get(checkpoint.get("aid"))
        if actor is None or actor.state == DEAD:
            return
        actor.checkpoint = checkpoint["state"]
        upto = next((i + 1 for i, task in enumerate(actor.log) if task.spec["id"] == task_id),
                    0)
        for task in actor.log[:upto]:  # per calling node, the last call the state includes
            if task.submitter.startswith(b"peer:"):
                actor.covered[task.submitter[5:]] = task.spec["id"]
        self.node.gcs.actor_checkpoint(actor.actor_id, checkpoint["state"], task_id,
                                       [[n, t] for n, t in actor.covered.items()],
                                       actor.restarts)
        self._trim(actor, upto)

    def _resume(self, actor: Actor, identity: bytes) -> None:
        """After a restart: the last checkpoint, then the logged calls, in order."""
        node = self.node
        if actor.checkpoint is not None:
            restore = {"id": node.new_task_id(), "fid": b"", "name":
                       f"{actor.class_name}.__zactor_restore__", "args": [], "kwargs": [],
                       "nret": 0, "res": {}, "retries": 0, "retry_exc": False,
                       "actor": {"op": "restore", "aid": actor.actor_id,
                                 "state": actor.checkpoint}}
            node._queue_execute(identity, [restore, [], [], 0], [])
        if not actor.sequential:
            return
        for task in actor.log:
            resolved = []
            for oid in task.deps:
                e = node.objects.entries.get(oid)
                if e is not None and e.state is not None:
                    resolved.append([oid, e.state, e.data])
            if task.spec["id"] in node.tasks:  # it had not finished: its result is awaited
                actor.running[task.spec["id"]] = task
            node._queue_execute(identity, [task.spec, resolved, [], 0], [])

    def object_ready(self, oid: bytes) -> None:
        for actor_id in self.waiters.pop(oid, ()):
            actor = self.actors.get(actor_id)
            if actor is not None and actor.waiting_on == oid:
                self.pump(actor)

    def call_done(self, task_id: bytes, actor_id: bytes) -> None:
        actor = self.actors.get(actor_id)
        if actor is not None:
            actor.running.pop(task_id, None)
            if actor_id in self.end_when_idle and not actor.running and not actor.queue:
                self.end_when_idle.discard(actor_id)
                self.kill(actor_id, reason="its last handle went out of scope")

    # ---- death ----------------------------------------------------------------------------

    def handles_gone(self, oid: bytes) -> None:
        """The object every handle of an actor holds was freed: no handle is left, so the
        actor ends (its pending calls were already submitted and hold their own refs)."""
        actor_id = self.by_handle_ref.pop(oid, None)
        if actor_id is None:
            return
        reason = "its last handle went out of scope"
        if actor_id not in self.actors and self.node.remote is not None:
            # created here but living on another node: its home ends it
            self.node.remote.actors.kill(actor_id, reason, when_idle=True)
            return
        self.end_soon(actor_id, reason)

    def end_soon(self, actor_id: bytes, reason: str) -> None:
        """End the actor once the calls already sent to it have run."""
        actor = self.actors.get(actor_id)
        if actor is not None and not actor.queue and not actor.running:
            self.kill(actor_id, reason=reason)
        elif actor is not None:
            actor.restarts_left = 0  # let the calls finish, then end after the last
            self.end_when_idle.add(actor_id)

    def kill(self, actor_id: bytes, reason: str = "it was killed by zactor.kill()") -> bool:
        actor = self.actors.get(actor_id)
        if actor is None or actor.state == DEAD:
            return False
        actor.killed = True
        actor.kill_reason = reason
        if actor.state == PENDING and actor.worker_id is None:
            self._die(actor, ActorDiedError(None, actor_id.hex(),
                                            f"The actor is dead: {reason}"))
            self.node._cancel(actor.creation_task_id, True, False)
            return True
        pid = self.node.worker_pid.get(actor.worker_id)
        if pid:
            self.node._kill_pid(pid)
        return True

    def worker_died(self, worker_id: bytes, detail: str) -> None:
        actor = self.by_worker.pop(worker_id, None)
        if actor is None or actor.state == DEAD:
            return
        why = (f"The actor is dead: {actor.kill_reason}" if actor.killed else
               f"The actor {actor.class_name} died unexpectedly: its worker {detail}")
        if actor.killed or actor.restarts_left == 0:
            self._die(actor, ActorDiedError(None, actor.actor_id.hex(), why))
            return
        self._restart(actor, why)

    def retire(self, actor_id: bytes, why: str, hand_back) -> None:
        """This copy is not the actor's live incarnation any more: its worker is killed and
        the copy forgotten, without writing the row (it names the live one); each call queued
        or running on it goes to ``hand_back(task, incarnation, why)``."""
        actor = self.actors.pop(actor_id, None)
        if actor is None:
            return
        node = self.node
        self.retired[actor_id] = [actor.restarts, why]
        self._forget_routes(actor)
        if actor.restarts_left != 0 and actor.creation is not None:
            for oid in list(actor.creation.deps) + list(actor.creation.held):
                node._free(node.objects.remove_ref(oid))
        self._trim(actor, len(actor.log))
        self.by_creation.pop(actor.creation_task_id, None)
        if actor.name and self.by_name.get((actor.namespace, actor.name)) == actor_id:
            del self.by_name[(actor.namespace, actor.name)]
        if actor.worker_id is not None:
            self.by_worker.pop(actor.worker_id, None)
            pid = node.worker_pid.get(actor.worker_id)
            if pid:
                node._kill_pid(pid)
        calls = list(actor.running.values()) + list(actor.queue)
        actor.running.clear()
        actor.queue.clear()
        for task in calls:
            hand_back(task, actor.restarts, why)

    def _restart(self, actor: Actor, why: str) -> None:
        """Run the creation task again; calls that were running are retried or failed."""
        if actor.restarts_left > 0:
            actor.restarts_left -= 1
        actor.restarts += 1
        actor.last_death = why
        self._forget_routes(actor)
        node = self.node
        error = ser.dumps(ActorDiedError(None, actor.actor_id.hex(), why))
        retry = []
        replayed = actor.checkpointable and actor.sequential
        for task in list(actor.running.values()):  # finishing a call removes it from running
            if replayed:
                continue  # in the replay log: re-run in order after the restart
            attempts = task.attempt
            if actor.task_retries < 0 or attempts < actor.task_retries:
                task.attempt += 1
                retry.append(task)
            else:
                node._finish_task(task.spec["id"], [[o, m.OBJ_ERROR, error]
                                                    for o in task.returns])
        actor.running.clear()
        actor.queue.extendleft(reversed(retry))  # retried calls keep their order, first
        actor.state = PENDING
        actor.worker_id = None
        self._record(actor)  # a new incarnation (actor.restarts) is starting
        creation = actor.creation
        spec = dict(creation.spec)
        spec["id"] = node.new_task_id()  # a fresh creation task (same class and arguments)
        spec["actor"] = {**spec["actor"], "inc": actor.restarts}  # the new incarnation
        actor.creation_task_id = spec["id"]
        restart = type(creation)(spec, creation.submitter)
        self.by_creation[spec["id"]] = actor
        node._apply(node.scheduler.submit(node._submit(restart)))

    def _die(self, actor: Actor, error) -> None:
        node = self.node
        if actor.restarts_left != 0 and actor.creation is not None:  # the restart holds
            for oid in list(actor.creation.deps) + list(actor.creation.held):
                node._free(node.objects.remove_ref(oid))
        self._trim(actor, len(actor.log))
        self._forget_routes(actor)
        actor.state = DEAD
        self._record(actor, death=str(error))  # callers on other nodes read why
        actor.creation = None
        actor.death = ser.dumps(error)
        for task in list(actor.running.values()) + list(actor.queue):
            node._finish_task(task.spec["id"], [[o, m.OBJ_ERROR, actor.death]
                                                for o in task.returns])
        actor.running.clear()
        actor.queue.clear()
        self.by_creation.pop(actor.creation_task_id, None)
        if actor.worker_id is not None:
            self.by_worker.pop(actor.worker_id, None)

    def _record(self, actor: Actor, **death) -> None:
        """The actor's row in the control store's actor table (state, incarnation, place)."""
        self.node.gcs.actor_state(actor.actor_id, actor.state, actor.restarts,
                                  actor.class_name, actor.name, actor.namespace,
                                  actor.worker_id, actor.methods,
                                  owner=actor.owner or self.node.node_id,
                                  restarts_left=actor.restarts_left,
                                  task_retries=actor.task_retries,
                                  replayable=actor.replayable(), detached=actor.detached,
                                  **death)

    # ---- names ----------------------------------------------------------------------------

    def lookup(self, name: str, namespace: str):
        actor_id = self.by_name.get((namespace, name))
        actor = self.actors.get(actor_id) if actor_id else None
        if actor is None or actor.state == DEAD or actor.killed:  # killed: dying already
            return None
        return {"aid": actor.actor_id, "methods": actor.methods, "cls": actor.class_name}
