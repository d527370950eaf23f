"""Tasks that leave their node, and objects that live on another node: the node manager's
side of bottom-up scheduling and object transfer.

Runs inside the node manager's loop (``on_readable`` when its sockets have messages, ``tick``
on timers). Ownership stays where a task was submitted (its *origin* node): the origin's
object table holds the task's returns and every reference count; a node that runs a task for
another one (the *executor*) keeps its results in its own store for the origin until the origin
frees them. So a driver never talks to another node.

    origin NM                    global scheduler            executor NM
    Spill from its LocalScheduler
    (deps ready) ---SPILL------------> picks a node
                 <--PLACE----------
    ---FORWARD_TASKS(spec, args: inline values, or OBJ_REMOTE locations)----->
                                                              pulls remote args (transfer),
                                                              runs the task locally
    <--REMOTE_DONE(results: inline, or OBJ_REMOTE [executor, transfer addr, size])----
    an OBJ_REMOTE result is pulled into the origin's store when something here needs it
    (a client's get, a local task); FREE_OBJECTS tells the holder when its last ref is gone

Without a scheduler daemon (none registered in the control store) the origin places spilled
tasks itself with the same policy over the node rows it watches: scheduling degrades to
decentralised, it does not stop. The objects' side (pulls, frees, evicted copies) is the
RemoteObjects mixin (remote_objects.py); lost forwards, forward_check.py.
"""

from __future__ import annotations

import os
import sys
import time

import zmq

from zactor import protocol
from zactor.cluster import messages as cm
from zactor.cluster.borrowed_objects import PEER_PREFIX
from zactor.cluster.forward_check import ForwardCheck
from zactor.cluster.remote_actors import AFFINITY_GRACE_S
from zactor.cluster.remote_objects import RemoteObjects, TransferLink
from zactor.exceptions import WorkerCrashedError
from zactor.net.security import curve_client
from zactor.net.sockets import bind_free, make_socket
from zactor.runtime import messages as m

SPILL_RESEND_S = 2.0      # a SPILL without PLACE is sent again (the scheduler restarted)
ROW_WAIT_S = 0.2          # placed on a node whose row is being read: asked again after this
SCHEDULER_LOOKUP_S = 1.0  # how often to re-read where the scheduler listens
NO_SCHEDULER_ENV = "ZACTOR_TEST_NO_SCHEDULER"


class RemoteTasks(RemoteObjects):
    def __init__(self, nm, link, host: str):
        self.nm = nm
        self.link = link
        self.host = host
        self.ctx = nm.ctx
        from zactor.net.security import curve_server, keys_from, start_authenticator

        self.keys = keys_from(nm.config.get("key_file"))
        self.auth = start_authenticator(self.ctx, self.keys)  # only the cluster key gets in
        self.router = curve_server(make_socket(self.ctx, zmq.ROUTER, hwm=0), self.keys)
        link.node_port = int(bind_free(self.router, host).rsplit(":", 1)[1])
        self.identity = PEER_PREFIX + nm.node_id
        self.dealers: dict[bytes, zmq.Socket] = {}
        self.scheduler_sock = None
        self.scheduler_addr = None
        self._next_scheduler_lookup = 0.0
        self.transfer = TransferLink(nm.store, host, self.keys,
                                     encrypt=nm.config.get("transfer_encrypt", True),
                                     restore=nm.spill.restore_blocking)
        link.transfer_port = self.transfer.port
        self.spilling: dict[bytes, list] = {}   # task id -> [Task, SPILL sent at or None]
        self.forwarded: dict[bytes, bytes] = {}  # task id -> node id (at the origin)
        self.forward_check = ForwardCheck(self)  # forwards lost on the way are sent again
        #: tests only: never read where the scheduler listens (this node decides by itself)
        self._no_scheduler = os.environ.get(NO_SCHEDULER_ENV) == "1"
        self.held_for_peer: dict[bytes, bytes] = {}  # oid -> origin node (at the executor)
        self.free_out: dict[bytes, list] = {}    # node id -> oids to free there
        self.functions_sent: dict[bytes, set] = {}
        self.warned: set = set()  # infeasible tasks already warned about
        self.bundles: dict = {}  # (pg id, bundle index) -> amounts reserved on this node
        self.unsent: set = set()  # spilled task ids not sent to the scheduler yet
        self.remote_copies: dict = {}  # oid pulled here -> the node that still holds it
        self.wanted: set = set()  # oids a client asked for before they existed: pull them
        self.room_retry: dict = {}  # oid -> when to pull it again (no room here, none spilled)
        self.refetching: dict = {}  # oid -> readers waiting for an evicted copy, pulled again
        nm.spill.refetch = self.refetch
        self.affinity_unknown: dict = {}  # task id -> when the scheduler first said so
        from zactor.cluster.actor_failover import ActorFailover
        from zactor.cluster.actor_incarnations import Incarnations
        from zactor.cluster.borrowed_objects import BorrowedObjects
        from zactor.cluster.remote_actors import RemoteActors

        self.borrowed = BorrowedObjects(self)  # objects of other nodes: where, re-made

        self.actors = RemoteActors(self)  # calls to actors that live on other nodes
        self.failover = ActorFailover(self)  # actors whose node died (restarts, replay)
        self.incarnations = Incarnations(self)  # calls for another incarnation: refused

    # ---- sockets ----------------------------------------------------------------------

    def poll_sources(self) -> list:
        return [self.router, self.transfer.fd] + list(self.dealers.values()) + (
            [self.scheduler_sock] if self.scheduler_sock is not None else [])

    def on_readable(self) -> None:
        for sock in [self.router] + list(self.dealers.values()) + (
                [self.scheduler_sock] if self.scheduler_sock is not None else []):
            for _ in range(1000):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                identity = frames.pop(0) if sock is self.router else None
                self._on_frames(identity, frames)
        for oid, error, address in self.transfer.finished():
            self._pull_done(oid, error, address)

    def _on_frames(self, identity, frames) -> None:
        try:
            msg = protocol.decode(frames)
        except Exception as exc:  # noqa: BLE001 - a garbage frame never stops the node
            print(f"zactor node manager: dropped a bad peer message ({exc})", file=sys.stderr)
            return
        handler = {"FORWARD_TASKS": self.on_forward, "REMOTE_DONE": self.on_remote_done,
                   "FREE_OBJECTS": self.on_free, "PLACE": self.on_place,
                   "RESERVE_BUNDLES": self.on_reserve_bundles,
                   "FENCED": self.on_fenced, "KILL_ACTOR_REMOTE": self.actors.on_kill_actor,
                   "LOCATE_OBJECTS": self.borrowed.on_locate,
                   "OBJECT_LOCATIONS": self.borrowed.on_locations,
                   "TASKS_HELD": self.forward_check.on_tasks_held,
                   "TASKS_MISSING": self.forward_check.on_tasks_missing,
                   "WORKER_OUTPUT": self.nm.output.on_output}.get(msg.name)
        if handler is None:
            return
        try:
            handler(identity, msg)
        except Exception:  # noqa: BLE001 - a bad request must not kill the node
            import traceback

            traceback.print_exc()

    def _peer(self, node_id: bytes):
        sock = self.dealers.get(node_id)
        if sock is None:
            row = self.link.peers.get(node_id)
            if row is None or row.get("state") != "alive":
                return None
            sock = make_socket(self.ctx, zmq.DEALER, identity=self.identity, hwm=0)
            curve_client(sock, self.keys)
            sock.connect(f"tcp://{row['host']}:{row['node_port']}")
            self.dealers[node_id] = sock
            self.nm.poller_changed = True
        return sock

    # ---- origin: spilling and forwarding --------------------------------------------------

    def spill(self, task_id: bytes, reason: str) -> None:
        task = self.nm.tasks.get(task_id)
        if task is not None:
            self.spilling[task_id] = [task, None, reason]
            self.unsent.add(task_id)

    def tick(self, now: float) -> None:
        if now >= self._next_scheduler_lookup:
            self._next_scheduler_lookup = now + SCHEDULER_LOOKUP_S
            self._lookup_scheduler()
        self._move_queued_work()
        if self.room_retry:
            self._retry_pulls_for_room(now)
        self.incarnations.tick(now)
        self.forward_check.tick(now)
        self.pump(now, resend=True)

    def pump(self, now: float, resend: bool = False) -> None:
        """Send what is pending: SPILLs of tasks whose arguments exist (every loop turn, so a
        spilled task waits for no timer; ``resend``: also those unanswered for a while), and
        the batched FREE_OBJECTS."""
        if self.failover.restart_rows or self.failover.adoption.adopted:
            self.failover.pump()
        if self.incarnations.rows:
            self.incarnations.pump()
        self.actors.pump()
        if self.borrowed.outgoing or self.borrowed.answers:
            self.borrowed.pump()
        if not self.unsent and not self.free_out and not resend:
            return
        requests = []
        for task_id in list(self.spilling if resend else self.unsent):
            entry = self.spilling.get(task_id)
            if entry is None:
                self.unsent.discard(task_id)
                continue
            task, sent_at, _reason = entry
            if task.cancelled or task_id not in self.nm.tasks:
                del self.spilling[task_id]
                self.unsent.discard(task_id)
                continue
            if sent_at is not None and now - sent_at < SPILL_RESEND_S:
                continue
            deps = self._dep_locations(task)
            if deps is None:
                continue  # an argument is not ready yet: spill once it exists
            request = {"task_id": task_id, "resources": task.spec["res"],
                       "strategy": task.spec.get("strategy"), "deps": deps,
                       "origin": self.nm.node_id}
            self.unsent.discard(task_id)
            if self.scheduler_sock is None:
                self._decide_here(task_id, request)
                continue
            entry[1] = now
            requests.append(request)
        if requests:
            self.scheduler_sock.send_multipart(protocol.encode(cm.SPILL, {"tasks": requests}))
        for node_id, oids in self.free_out.items():
            sock = self._peer(node_id)
            if sock is not None:
                sock.send_multipart(protocol.encode(cm.FREE_OBJECTS, {"oids": oids}))
        self.free_out.clear()

    def _move_queued_work(self) -> None:
        """Tasks waiting here for a worker while other nodes have free CPUs go to the
        scheduler (spillback). A cluster node sends each worker one task at a time
        (pipeline depth 1), so no task waits inside a busy worker where this cannot see it."""
        scheduler = self.nm.scheduler
        if not scheduler.tasks or scheduler.idle:
            return
        free_elsewhere = sum(
            int(row.get("resources_available", {}).get("CPU", 0))
            for row in self.link.alive_nodes() if row.get("node_id") != self.nm.node_id)
        if free_elsewhere <= 0:
            return
        for request in scheduler.take_ready(free_elsewhere):
            self.spill(request.task_id, "waiting here while other nodes have free CPUs")

    def _lookup_scheduler(self) -> None:
        client = self.nm.gcs.client
        if client is None or self._no_scheduler:
            return
        try:
            row = client.get("kv", b"cluster:scheduler", timeout_s=0.2)
        except Exception:  # noqa: BLE001 - try again later
            return
        addr = f"tcp://{row['host']}:{row['port']}" if isinstance(row, dict) else None
        if addr != self.scheduler_addr:
            if self.scheduler_sock is not None:
                self.scheduler_sock.close(0)
                self.scheduler_sock = None
            self.scheduler_addr = addr
            if addr is not None:
                self.scheduler_sock = make_socket(self.ctx, zmq.DEALER, identity=self.identity)
                curve_client(self.scheduler_sock, self.keys)
                self.scheduler_sock.connect(addr)
            self.nm.poller_changed = True

    def _dep_locations(self, task):
        """[[oid, size, [node ids holding it]]] of the task's arguments, or None while one
        has no value yet."""
        out = []
        for oid in task.deps:
            e = self.nm.objects.entries.get(oid)
            if e is None or e.state is None:
                return None
            if e.state == m.OBJ_STORE:
                out.append([oid, int(e.data), [self.nm.node_id]])
            elif e.state == m.OBJ_REMOTE:
                out.append([oid, int(e.data[2]), [e.data[0]]])
            else:
                out.append([oid, len(e.data) if isinstance(e.data, bytes) else 0,
                            [self.nm.node_id]])
        return out

    def _decide_here(self, task_id: bytes, request: dict) -> None:
        """The scheduler's policy, run here while no scheduler daemon is registered (or this
        node has not read where it listens yet)."""
        from zactor.cluster.placement import decide

        strategy = request.get("strategy")
        entry = self.spilling.get(task_id)
        if isinstance(strategy, (list, tuple)) and strategy and strategy[0] == "pg" and \
                entry is not None:
            # placement groups live in the scheduler daemon (created through it): this
            # node's view knows none, and failed the group's tasks with "does not exist"
            # while it had not read where the scheduler listens (CI: a ready() probe under
            # load). Asked again shortly; placed once the scheduler's address is read.
            entry[1] = _ask_again_soon()
            return
        if isinstance(strategy, (list, tuple)) and strategy and strategy[0] == "node" and \
                entry is not None:
            target = self._resolve(strategy[1])
            if target and target != self.nm.node_id and self._row_coming(entry[0], target):
                # a node this one has no row for yet: decided once the row is read
                entry[1] = _ask_again_soon()
                return
        node_id, reason = decide(self.link.alive_nodes(), request)
        self._place(task_id, node_id, reason)

    def on_place(self, _identity, msg) -> None:
        for task_id, node_id, *reason in msg["decisions"]:
            if self.spilling.get(task_id, [None, None])[1] is not None:
                self._place(task_id, node_id, reason[0] if reason else "")

    def _place(self, task_id: bytes, node_id, reason: str = "") -> None:
        from zactor.cluster.placement import is_failure

        entry = self.spilling.pop(task_id, None)
        if entry is None:
            return
        task = entry[0]
        if node_id is None and is_failure(reason) and self._scheduler_behind(task, reason):
            self.spilling[task_id] = [task, time.monotonic(), entry[2]]  # asked again later
            return
        if node_id is None and is_failure(reason):
            self.affinity_unknown.pop(task_id, None)
            self.nm._fail_task(task_id, ValueError(
                f"task {task.spec.get('name')} cannot be scheduled: {reason}"))
            return
        if node_id is not None and node_id != self.nm.node_id and \
                self._peer(node_id) is None and self._row_coming(task, node_id):
            # placed on a node this one has no row for yet: asked again once it is read
            self.spilling[task_id] = [task, _ask_again_soon(), entry[2]]
            return
        self.affinity_unknown.pop(task_id, None)
        strategy = task.spec.get("strategy")
        if isinstance(strategy, (list, tuple)) and strategy and strategy[0] == "node" and \
                node_id != self._resolve(strategy[1]):
            # rare, and the first question when an actor turns up elsewhere: say why
            print(f"zactor node manager: {task.spec.get('name')} asked for node "
                  f"{str(strategy[1])[:16]} (soft: {bool(strategy[2])}) and goes to "
                  f"{_hex(node_id)[:16]}: {reason or 'decided here'}", file=sys.stderr)
        if node_id is None or node_id == self.nm.node_id or self._peer(node_id) is None:
            if node_id is None and task_id not in self.warned:
                self.warned.add(task_id)
                self.nm.output.warn(task_id, (
                    f"zactor: warning: task {task.spec.get('name')} needs "
                    f"{task.spec['res']}, which no node of the cluster has now ({reason}); "
                    f"it waits for a node that fits (infeasible)"))
            if node_id is None:  # infeasible: keep asking (a fitting node may join)
                self.spilling[task_id] = [task, time.monotonic(), entry[2]]
                return
            request = self.nm._request(task, local_only=True)
            self.nm._apply(self.nm.scheduler.submit(request))
            self.pull_missing([request])
            return
        self._forward(task, node_id)

    def _resolve(self, node) -> bytes:
        """A node id as the nodes table keys it (strategies name nodes in hex)."""
        if isinstance(node, str):
            try:
                return bytes.fromhex(node)
            except ValueError:
                return b""
        return bytes(node) if isinstance(node, (bytes, bytearray)) else b""

    def _row_coming(self, task, node_id) -> bool:
        """The scheduler placed ``task`` on a node whose row this node's subscription has
        not delivered (it joined a moment ago): read the row and ask again shortly, for at
        most AFFINITY_GRACE_S; then (or for a node known dead) the task runs here."""
        if node_id in self.link.peers or not isinstance(node_id, (bytes, bytearray)):
            return False
        first = self.affinity_unknown.setdefault(task.spec["id"], time.monotonic())
        if time.monotonic() - first >= AFFINITY_GRACE_S:
            return False
        self.link.read_row(bytes(node_id))
        return True

    def _scheduler_behind(self, task, reason: str) -> bool:
        """Hard affinity to a node the deciding view does not know: the scheduler (or this
        node, deciding while no scheduler is registered) may not have read that node's row
        yet (it joined a moment ago, this node just started, the scheduler restarted); a
        node id from ``zactor.nodes()`` names a node that exists. Asked again for at most
        AFFINITY_GRACE_S, then failed (a dead node fails at once)."""
        if not reason.endswith(cm.UNKNOWN_NODE):
            return False
        first = self.affinity_unknown.setdefault(task.spec["id"], time.monotonic())
        return time.monotonic() - first < AFFINITY_GRACE_S

    def _forward(self, task, node_id: bytes) -> None:
        args = []
        for oid in task.deps:
            e = self.nm.objects.entries[oid]
            # with the refs inside its value: the executor asks this node where they are
            args.append(self._location(oid, e.state, e.data) + [list(e.contained)])
        sent = self.functions_sent.setdefault(node_id, set())
        fid = task.spec.get("fid")
        functions = [] if not fid or fid in sent or fid not in self.nm.functions else \
            [[fid, self.nm.functions[fid]]]
        sent.add(fid)
        self.forwarded[task.spec["id"]] = node_id
        actor = task.spec.get("actor")
        if actor is None:  # (actor calls and creations are followed by their own rules)
            self.forward_check.sent(task.spec["id"])
        if actor is not None and actor["op"] == "create":
            self.actors.moved(actor["aid"], node_id)
        elif actor is not None:
            self.failover.sent(task)  # kept for replay until a checkpoint covers it
            actor["inc"] = self.actors.incs.get(actor["aid"])  # the home refuses another
        if self.forward_check.dropped():  # tests: a FORWARD_TASKS lost on the way
            return
        self._peer(node_id).send_multipart(protocol.encode(
            cm.FORWARD_TASKS, {"tasks": [[task.spec, args]], "functions": functions}))

    def on_remote_done(self, _identity, msg) -> None:
        objects = {o[0]: o for o in msg.get("objects", ())}
        for task_id, results, flags, *covered in msg["done"]:
            node = self.forwarded.pop(task_id, None)
            if covered and covered[0]:  # the actor's checkpoint covers our calls up to it
                self.failover.covered(*covered[0])
            if node is None:
                continue
            if flags & cm.STALE_INCARNATION:
                self.actors.refused(task_id, node, *results)
                continue
            if task_id not in self.nm.tasks:
                # a finished call replayed after its actor restarted: results exist here
                self.free_out.setdefault(node, []).extend(r[0] for r in results)
                continue
            # objects the results contain refs to (a put inside the task): known here
            # before the results that hold them
            for _oid, _state, _data, *contained in results:
                for oid in contained[0] if contained else ():
                    if oid in objects:
                        self.nm._set_value(*objects.pop(oid), collect=False)
            self.nm._finish_task(task_id, results)

    # ---- executor: running tasks for other nodes -------------------------------------------

    def on_forward(self, identity, msg) -> None:
        nm = self.nm
        for fid, blob in msg["functions"]:
            nm.functions.setdefault(fid, blob)
        requests = []
        origin = identity[len(PEER_PREFIX):]
        entries = nm.objects.entries
        for spec, args in msg["tasks"]:
            actor = spec.get("actor")
            if actor is not None and actor["op"] == "call" and \
                    self.incarnations.refuse(identity, spec):
                continue  # meant for another incarnation of the actor
            fid = spec.get("fid")
            if fid and fid not in nm.functions:
                # the FORWARD_TASKS that carried its function was lost: not taken, so the
                # origin's TASKS_HELD finds it missing and sends it again, function included
                print(f"zactor node manager: task {spec.get('name')} came without its "
                      f"function (lost on the way): left for its origin to send again",
                      file=sys.stderr)
                continue
            fresh = list({a[0]: a for a in args  # (once each: f(x, x))
                          if a[0] not in entries or entries[a[0]].state is None}.values())
            # refs nested in the arguments or inside their values come without a location
            nested = list(spec.get("held", ()))
            for _oid, _state, _data, *contained in fresh:
                nested += contained[0] if contained else ()
            self.borrowed.learned([arg[0] for arg in fresh] + nested, origin)
            for oid, state, data, *contained in fresh:
                nm.objects.set_value(oid, state, data, contained[0] if contained else ())
                if state == m.OBJ_REMOTE:
                    self.ensure_local(oid)
                else:
                    nm._apply(nm.scheduler.object_local(oid))
            task = nm.make_task(spec, identity)
            for oid in task.returns:  # held for the origin until it sends FREE_OBJECTS
                nm.objects.add_ref(oid)
                self.held_for_peer[oid] = identity
            nm._submit(task)
            self.borrowed.look_up(nested)  # asked of the origin now: nothing else would say
            if actor is not None and actor["op"] == "call":
                nm.actors.call(task)  # an actor of this node, called from another node
                continue
            if actor is not None and actor["op"] == "create":
                refused = nm.actors.creating(task)  # the actor lives here from now on
                if refused:
                    nm._fail_task(spec["id"], ValueError(refused))
                    continue
            requests.append(nm._request(task, local_only=True))
        nm._apply(nm.scheduler.submit_many(requests))
        self.pull_missing(requests)

    def finished_for_peer(self, task, results) -> None:
        """A task run for another node finished: send its results to the origin (values in
        this store travel as locations)."""
        if self.incarnations.refused_here(task):  # its actor's copy here retired
            self._unhold_returns(task)
            return
        out, objects = [], []
        for oid, state, data, *contained in results:
            contained = list(contained[0]) if contained else []
            out.append(self._location(oid, state, data) + [contained])
            for inner in contained:  # e.g. put by the task: the origin learns where it is
                e = self.nm.objects.entries.get(inner)
                if e is None or e.state is None:
                    continue  # not made yet: the origin cannot learn of it (a limit)
                if e.state == m.OBJ_STORE and inner not in self.held_for_peer:
                    self.nm.objects.add_ref(inner)  # kept for the origin, as a result is
                    self.held_for_peer[inner] = task.submitter
                objects.append(self._location(inner, e.state, e.data))
        done = [task.spec["id"], out, 0]
        if task.spec.get("actor") and task.spec["actor"]["op"] == "call":
            done.append(self.failover.covered_for(task))
        self.router.send_multipart([task.submitter, *protocol.encode(
            cm.REMOTE_DONE, {"done": [done], "objects": objects})])

    def _unhold_returns(self, task) -> None:
        """Results the origin will not get from here: no longer kept for it."""
        for oid in task.returns:
            if self.held_for_peer.get(oid) == task.submitter:
                del self.held_for_peer[oid]
                self.nm._free(self.nm.objects.remove_ref(oid))

    def _location(self, oid: bytes, state: int, data) -> list:
        """An object's triple as another node sees it (a value in this store: where)."""
        if state == m.OBJ_STORE:
            return [oid, m.OBJ_REMOTE, [self.nm.node_id, self.transfer.address, int(data)]]
        return [oid, state, data]

    def on_free(self, identity, msg) -> None:
        for oid in msg["oids"]:
            if self.held_for_peer.get(oid) == identity:
                del self.held_for_peer[oid]
                self.nm._free(self.nm.objects.remove_ref(oid))

    def describe(self) -> str:
        """Where this node's tasks went and what it is fetching (NodeManager.describe)."""
        def ids(keys):
            return [k.hex()[:16] for k in list(keys)[:20]]
        return "\n".join([
            f"  forwarded: {[(t.hex()[:16], n.hex()[:8]) for t, n in list(self.forwarded.items())[:20]]}",
            f"  spilling: {ids(self.spilling)} unsent: {ids(self.unsent)}",
            f"  wanted: {ids(self.wanted)} refetching: {ids(self.refetching)}",
            f"  affinity_unknown: {ids(self.affinity_unknown)}",
            f"  peers alive: {[k.hex()[:8] for k, r in self.link.peers.items() if r.get('state') == 'alive']}",
            f"  pulls: {ids(self.transfer.client._pulls)}"])

    # ---- placement groups and fencing ----------------------------------------------------

    def on_reserve_bundles(self, _identity, msg) -> None:
        from zactor.cluster import bundles

        for index, amounts in msg["bundles"]:
            key = (msg["pg_id"], index)
            if msg["release"]:
                if key not in self.bundles:
                    continue
                self.bundles.pop(key)
                removed, added = bundles.reservation(msg["pg_id"], index, amounts)
                self.nm._apply(self.nm.scheduler.change_capacity(added, removed))
            elif key not in self.bundles:  # a repeated reservation is a no-op
                self.bundles[key] = amounts
                removed, added = bundles.reservation(msg["pg_id"], index, amounts)
                self.nm._apply(self.nm.scheduler.change_capacity(removed, added))

    def on_fenced(self, _identity, msg) -> None:
        if msg["node_id"] == self.nm.node_id and msg["incarnation"] == self.link.incarnation:
            self.link.fenced_reason = "the global scheduler declared it dead"

    # ---- a node died ------------------------------------------------------------------------

    def node_died(self, node_id: bytes, reason: str) -> None:
        self.failover.node_died(node_id, reason)  # its actors: restarted, calls re-sent
        self.borrowed.node_died(node_id, reason)  # what it was asked, what it asked here
        sock = self.dealers.pop(node_id, None)
        if sock is not None:
            sock.close(0)
            self.nm.poller_changed = True
        for task_id, where in list(self.forwarded.items()):
            if where != node_id:
                continue
            del self.forwarded[task_id]
            task = self.nm.tasks.get(task_id)
            if task is None:
                continue
            retries = task.spec["retries"]
            if retries < 0 or task.attempt < retries:
                task.attempt += 1
                self.spilling[task_id] = [task, None, "its node died"]
                self.unsent.add(task_id)
            else:
                self.nm._fail_task(task_id, WorkerCrashedError(
                    f"The node {node_id.hex()[:16]} running this task died ({reason}) and "
                    f"the task's retries are spent (max_retries={retries})."))
        why = f"the node holding it ({node_id.hex()[:16]}) died: {reason}"
        for oid in [oid for oid, e in self.nm.objects.entries.items()
                    if e.state == m.OBJ_REMOTE and e.data[0] == node_id]:
            self._copy_gone(oid, why, node_id)

    def _copy_gone(self, oid: bytes, why: str, holder: bytes) -> None:
        """The only copy of an object known here is gone: re-made by lineage if this node
        owns it, asked of the node it came from if borrowed (cluster/borrowed_objects.py),
        else lost (ObjectLostError)."""
        if self.nm.lineage.producer.get(oid) is None and \
                self.borrowed.copy_gone(oid, why, holder):
            return  # borrowed: the node it came from re-makes it (or asks the owner)
        self.nm.lineage.copy_lost(oid, why)

    def close(self) -> None:
        for sock in self.dealers.values():
            sock.close(0)
        if self.scheduler_sock is not None:
            self.scheduler_sock.close(0)
        self.router.close(0)
        self.transfer.close()
        if self.auth is not None:
            self.auth.stop()


def _ask_again_soon() -> float:
    """A SPILL's sent-at time that makes the resend loop ask again ROW_WAIT_S from now."""
    return time.monotonic() - SPILL_RESEND_S + ROW_WAIT_S


def _hex(node_id) -> str:
    if isinstance(node_id, (bytes, bytearray)):
        return bytes(node_id).hex()
    return str(node_id)
