"""The node manager: one process per node that owns the node's object store segment, its
local scheduler and its worker pool, and routes every message of the node's clients.

    driver / workers --DEALER--> [ROUTER] node manager --pipe--> zygote --fork--> workers

Its poll loop reads every waiting message, feeds the events to the LocalScheduler and the
ObjectTable (both sans-IO), carries out their instructions, then sends the replies gathered
for each client as one message (so a burst of tiny tasks costs one OBJECTS message per client
per loop turn, not one per task).

It stops when its driver says BYE, when its parent process (the driver that started it) dies,
or on SIGTERM: it then tells clients, makes the zygote kill every worker, and removes the
store segment and the session directory.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import deque

import zmq

from zactor import protocol
from zactor import serialization as ser
from zactor.cluster.messages import HEARTBEAT_INTERVAL_S
from zactor.cluster.node_link import NodeLink
from zactor.exceptions import ObjectLostError
from zactor.idle_trim import IdleTrim
from zactor.net.frames import has_input, recv_frames, send_routed
from zactor.net.sockets import make_socket
from zactor.runtime import messages as m
from zactor.runtime.actor_manager import ActorManager
from zactor.runtime.direct_node import DirectLedger
from zactor.runtime.gcs_recorder import GcsRecorder
from zactor.runtime.lineage import Lineage
from zactor.runtime.node_tasks import Task, TaskRouting
from zactor.runtime.object_table import ObjectTable
from zactor.runtime.output_relay import OutputRelay
from zactor.runtime.spilling import Spilling
from zactor.runtime.thread_reads import ThreadReads
from zactor.runtime.worker_pool import WorkerPool
from zactor.scheduling import local_scheduler as ls
from zactor.scheduling.resources import ResourceSet

PARENT_CHECK_INTERVAL_S = 0.1
REBALANCE_INTERVAL_S = 0.1
GCS_EXIT_WAIT_S = 3.0
#: tasks a worker may be sent ahead of the one it runs (hides the NM round trip; a task stuck
#: behind a long one is taken back within REBALANCE_INTERVAL_S by LocalScheduler.rebalance)
DEFAULT_PIPELINE_DEPTH = 4
LOOP_POLL_MS = 100


class Client:
    __slots__ = ("identity", "kind", "pid", "worker_id", "refs", "functions", "address")

    def __init__(self, identity, kind, pid, worker_id, address=""):
        self.identity, self.kind, self.pid, self.worker_id = identity, kind, pid, worker_id
        self.address = address  # a worker's Unix socket for direct calls (net/stream.py)
        self.refs: dict = {}
        self.functions: set = set()


class NodeManager(WorkerPool, TaskRouting):
    def __init__(self, session_dir: str, store, resources: ResourceSet, *, node_id: bytes,
                 zygote_pid: int, zygote_cmd_fd: int, zygote_report_fd: int,
                 config: dict, initial_workers: int):
        self.session_dir = session_dir
        self.store = store
        self.node_id = node_id
        self.config = config
        self.resources = resources
        cluster = bool(config.get("cluster"))
        if cluster:  # (imported only here: a single-node session starts ~40 ms sooner)
            from zactor.cluster.remote_tasks import RemoteTasks
            from zactor.cluster.spill_policy import cluster_spill_policy
        self.scheduler = ls.LocalScheduler(
            # a cluster node keeps queued tasks in its own queue, where they can still move
            # to another node (remote_tasks.py), rather than pipelined into busy workers
            resources, pipeline_depth=config.get("pipeline_depth",
                                                 1 if cluster else DEFAULT_PIPELINE_DEPTH),
            can_spill=cluster, spill_policy=cluster_spill_policy(
                self, config.get("spill_queue_threshold")) if cluster else None,
            producer_of=self._producer_of)
        self.objects = ObjectTable()
        #: primary copies to local disk when the store is full, and back (runtime/spilling.py)
        self.spill = Spilling(store, session_dir, config,
                              send=lambda identity, body: self._send(identity, m.STORE_REPLY,
                                                                     body))
        self.tasks: dict[bytes, Task] = {}
        self.children_of: dict[bytes, list] = {}
        self.clients: dict[bytes, Client] = {}
        self.worker_identity: dict[bytes, bytes] = {}
        self.worker_pid: dict[bytes, int] = {}
        self.pid_worker: dict[int, bytes] = {}
        self.functions: dict[bytes, bytes] = {}
        self.outbox: dict[bytes, list] = {}
        self.exec_out: dict[bytes, tuple] = {}
        self._demands: dict = {}
        self.next_job = 1
        self.zygote_pid = zygote_pid
        self.zygote_cmd_fd = zygote_cmd_fd
        self.zygote_report_fd = zygote_report_fd
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        #: control-store reads in threads, answered on this loop (runtime/thread_reads.py)
        self.thread_reads = ThreadReads(self.wake)
        self._zygote_buf = b""
        self.ctx = zmq.Context()
        self.sock = make_socket(self.ctx, zmq.ROUTER, hwm=0)
        self.address = f"ipc://{os.path.join(session_dir, 'node.sock')}"
        self.sock.bind(self.address)
        self.parent_pid = os.getppid()
        self.running = True
        self.stop_reason = ""
        self.gcs = GcsRecorder(node_id)
        self.lineage_pending: deque = deque()  # (finish time, spec, return ids)
        self.gcs_pids: list = []
        self.actors = ActorManager(self)
        self.link = NodeLink(self, host=config.get("host", "127.0.0.1"),
                             cluster=bool(config.get("cluster")),
                             heartbeat_interval_s=config.get("heartbeat_interval_s",
                                                             HEARTBEAT_INTERVAL_S))
        #: tasks and objects of other nodes (a cluster node only)
        self.remote = RemoteTasks(self, self.link, self.link.host) if cluster else None
        #: specs of finished tasks whose objects may need re-creating (a cluster node only:
        #: on one node an object is lost only with its owner)
        self.lineage = Lineage(self, config.get("max_lineage_bytes")) if cluster else None
        self.poller_changed = True
        self.direct = DirectLedger(self)
        self.output = OutputRelay(self)  # what tasks print, to their drivers (cluster)
        self.link.register()
        if config.get("gcs_address"):  # a cluster node: the control store is already up
            self.gcs.connect_in_background(config["gcs_address"], config.get("key_file"))
        if initial_workers:
            self._start_workers(initial_workers)
            self.scheduler.starting += initial_workers

    # ---- the loop -----------------------------------------------------------------------

    def _make_poller(self) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.zygote_report_fd, zmq.POLLIN)
        poller.register(self.spill.fileno(), zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        for source in self.remote.poll_sources() if self.remote else ():
            poller.register(source, zmq.POLLIN)
        self.poller_changed = False
        return poller

    def serve(self) -> None:
        next_parent_check = 0.0
        idle_trim = IdleTrim()
        while self.running:
            if self.poller_changed:
                poller = self._make_poller()
            events = dict(poller.poll(LOOP_POLL_MS))
            if events:
                idle_trim.worked(time.monotonic())
            if self.sock in events:
                sock = self.sock
                for _ in range(10_000):  # bounded: timers and the zygote get their turn
                    # asking costs ~2 us, ending on zmq.Again (an exception) ~10 us
                    if not has_input(sock):
                        break
                    self._on_frames(recv_frames(sock))
            if self._wake_r in events:
                _drain(self._wake_r)
                self.link.handle_deaths()
                self.thread_reads.answer_all()
            if self.zygote_report_fd in events:
                self._on_zygote_reports()
            spill_fd = self.spill.fileno()
            if spill_fd in events:
                self.spill.on_readable()
            if self.remote is not None:
                if len(events) > (self.sock in events) + (self.zygote_report_fd in events) \
                        + (spill_fd in events) + (self._wake_r in events):
                    self.remote.on_readable()
                self.remote.pump(time.monotonic())
            self._flush_outbox()
            now = time.monotonic()
            if now >= next_parent_check:
                next_parent_check = now + PARENT_CHECK_INTERVAL_S
                if os.getppid() != self.parent_pid:
                    self.stop("the driver process died")
                self._apply(self.scheduler.rebalance())
                self._record_lineage(now)
                self.link.tick(now)
                if self.remote is not None:
                    self.remote.tick(now)
                self.direct.expire(now)
                self.direct.want_back()
                self._flush_outbox()
                idle_trim.tick(now)
        self._shutdown()

    def describe(self) -> str:
        """A developer's view (printed on SIGUSR2): the scheduler's state, the tasks it
        knows, the objects something waits for, and what went to other nodes."""
        lines = [self.scheduler.describe()]
        for task_id, task in list(self.tasks.items())[:50]:
            lines.append(f"  task {task_id.hex()[:16]} {task.spec.get('name')} "
                         f"deps={[d.hex()[:16] for d in task.deps]}")
        for oid, e in list(self.objects.entries.items()):
            if e.waiters or e.state in (None, m.OBJ_REMOTE, m.OBJ_PENDING):
                data = e.data if e.state == m.OBJ_REMOTE else ""
                lines.append(f"  object {oid.hex()[:16]}..{oid.hex()[-8:]} state={e.state} "
                             f"waiters={len(e.waiters or ())} producer="
                             f"{(e.producer or b'').hex()[:16]} {data}")
        if self.remote is not None:
            lines.append(self.remote.describe())
        return "\n".join(lines)

    def wake(self) -> None:
        """Called from another thread (the control store's, a look-up's) that queued work for
        the loop: handle it now rather than at the next timer turn (up to LOOP_POLL_MS)."""
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # a wake-up is pending already (or the loop is gone)

    def stop(self, reason: str) -> None:
        self.running = False
        self.stop_reason = reason

    def _send(self, identity: bytes, mtype, body) -> None:
        send_routed(self.sock, identity, protocol.encode(mtype, body))

    def _notify(self, identity: bytes, triple) -> None:
        self.outbox.setdefault(identity, []).append(triple)

    def _flush_outbox(self) -> None:
        if self.exec_out:
            exec_out, self.exec_out = self.exec_out, {}
            for identity, (tasks, functions) in exec_out.items():
                self._send(identity, m.EXECUTE, {"tasks": tasks, "functions": functions})
        if not self.outbox:
            return
        outbox, self.outbox = self.outbox, {}
        for identity, objects in outbox.items():
            if identity in self.clients:
                self._send(identity, m.OBJECTS, {"objects": objects})

    def _on_frames(self, frames) -> None:
        identity = frames[0]
        try:
            msg = protocol.decode(frames[1:])
        except Exception as exc:  # noqa: BLE001 - a garbage frame never stops the node
            self._reply_error(identity, frames[1:], exc)
            return
        handler = self.HANDLERS.get(msg.mtype.name)
        if handler is None:
            self._send(identity, protocol.ERROR, {"code": protocol.ERR_UNKNOWN_TYPE,
                                                  "message": f"unexpected {msg.name}"})
            return
        try:
            handler(self, identity, msg)
        except Exception as exc:  # noqa: BLE001 - a bad request must not kill the node
            import traceback

            traceback.print_exc()
            self._send(identity, protocol.ERROR, {"code": protocol.ERR_MALFORMED,
                                                  "message": f"{msg.name}: {exc}"})

    def _reply_error(self, identity, frames, exc) -> None:
        try:
            protocol.decode_header(frames[0])
        except Exception:  # noqa: BLE001 - not even a header: log and drop
            print(f"zactor node manager: dropped a garbage message ({exc})", file=sys.stderr)
            return
        self._send(identity, protocol.ERROR, {"code": protocol.ERR_MALFORMED,
                                              "message": str(exc)})

    # ---- clients ------------------------------------------------------------------------

    def on_hello(self, identity, msg) -> None:
        kind = msg["kind"]
        job_id = msg["job_id"]
        if kind == "driver" and not job_id:
            job_id = self.link.new_job_id()
            self.gcs.job_started(job_id, msg["pid"])
            self.link.driver_joined(identity, job_id)
        client = Client(identity, kind, msg["pid"], msg["worker_id"], msg["address"])
        self.clients[identity] = client
        self._send(identity, m.WELCOME, {
            "node_id": self.node_id, "store_path": self.store.path, "job_id": job_id,
            "session_dir": self.session_dir, "config": self.config,
            "resources": self.resources.to_dict()})
        if kind == "worker":  # after WELCOME: the worker's first task must not precede it
            wid = msg["worker_id"]
            self.worker_identity[wid] = identity
            self._apply(self.scheduler.worker_registered(wid))

    def on_bye(self, identity, msg) -> None:
        client = self.clients.get(identity)
        if client is None:
            return
        if client.kind == "driver":
            self.link.driver_gone(identity, "its driver disconnected")
        self._drop_client(identity)
        if client.kind == "driver" and client.pid == self.parent_pid:
            self.stop("the driver disconnected")  # only the driver that started this node

    def _drop_client(self, identity) -> None:
        client = self.clients.pop(identity, None)
        if client is None:
            return
        for oid, count in list(client.refs.items()):
            self._free(self.objects.remove_ref(oid, count))
        for e in self.objects.entries.values():
            e.waiters.discard(identity)
        self.direct.client_gone(identity)
        self.output.client_gone(identity)

    def on_ref_delta(self, identity, msg) -> None:
        client = self.clients.get(identity)
        if client is None:
            return
        self._apply_deltas(client, msg["deltas"], 1)
        self._apply_deltas(client, msg["deltas"], -1)

    def _client_ref(self, client: Client, oid: bytes) -> None:
        client.refs[oid] = client.refs.get(oid, 0) + 1
        self.objects.add_ref(oid)

    def _apply_deltas(self, client: Client, deltas, sign: int) -> None:
        """Apply the +1s (sign 1) or the -1s (sign -1) of a client's batch."""
        for oid, delta in deltas:
            if delta != sign:
                continue
            if delta > 0:
                self._client_ref(client, oid)
                continue
            left = client.refs.get(oid, 0) - 1
            if left < 0:
                continue  # a release this client never took: ignore it
            if left:
                client.refs[oid] = left
            else:
                del client.refs[oid]
                self._stop_pushing(client, oid)
            self._free(self.objects.remove_ref(oid))

    def _stop_pushing(self, client: Client, oid: bytes) -> None:
        """A submitter let go of a task's result before it was made: it is not sent there
        (a chain of tasks whose driver holds only the last ref made one message to the
        driver per hop, each waking it). Not for actor calls: a caller counts its calls
        routed through the node manager until each is answered, so that its direct calls
        never overtake them (direct.py)."""
        e = self.objects.entries.get(oid)
        if e is None or e.state is not None or client.identity not in e.waiters:
            return
        task = self.tasks.get(e.producer)
        if task is not None and task.spec.get("actor") is None:
            e.waiters.discard(client.identity)

    def on_subscribe(self, identity, msg) -> None:
        for oid in msg["oids"]:
            e = self.objects.entries.get(oid)
            if e is not None and e.state == m.OBJ_REMOTE:
                e.waiters.add(identity)
                self.remote.ensure_local(oid)
            elif e is not None and e.state is not None:
                self.spill.touch(oid)
                self._notify(identity, [oid, e.state, e.data])
            elif e is None and self.objects.was_freed(oid):
                self._notify(identity, self._lost(oid, "it was freed: no reference to it "
                                                       "was left"))
            else:
                self.objects.entry(oid).waiters.add(identity)
                if self.remote is not None:
                    self.remote.wanted.add(oid)  # fetch it as soon as it exists elsewhere

    def _lost(self, oid, reason):
        return [oid, m.OBJ_ERROR, ser.dumps(ObjectLostError(oid.hex(), reason=reason))]

    def on_put(self, identity, msg) -> None:
        # Not collected when unreferenced: an object made for a task's argument is held
        # only by that task, whose SUBMIT follows this message.
        client = self.clients.get(identity)
        for oid, state, data, contained, held in msg["objects"]:
            if held and client is not None:
                self._client_ref(client, oid)
            self._set_value(oid, state, data, contained, collect=False)

    def on_set_gcs(self, identity, msg) -> None:
        """The driver started the control store (in parallel with this node): connect."""
        self.gcs_pids = list(msg["pids"])
        self.gcs.connect_in_background(msg["address"])

    def on_kill_actor(self, identity, msg) -> None:
        killed = self.actors.kill(msg["aid"])
        if not killed and self.remote is not None and msg["aid"] not in self.actors.actors:
            killed = self.remote.actors.kill(msg["aid"], "it was killed by zactor.kill()")
        self._send(identity, m.INFO_REPLY, {"value": killed})

    def on_get_actor(self, identity, msg) -> None:
        found = self.actors.lookup(msg["name"], msg["namespace"])
        if found is None and self.remote is not None:
            # maybe an actor of another node: the control store's actor table says (the
            # answer comes from the loop once read, off this turn)
            self.remote.actors.find_named_actor(identity, msg["name"], msg["namespace"])
            return
        self._send(identity, m.INFO_REPLY, {"value": found})

    def on_info(self, identity, msg) -> None:
        """Cluster information, from the rows of the nodes alive as the control store has
        them (this node's own figures are live; the others' are as of their last
        heartbeat); answered on a later loop turn once read (node_link.py)."""
        what = msg["what"]
        if what not in ("total", "available", "nodes"):
            raise ValueError(f"unknown INFO {what!r} (nodes, total, available)")

        def reply(rows) -> None:
            if what in ("total", "available"):
                field = "resources_total" if what == "total" else "resources_available"
                value: dict = {}
                for row in rows:
                    for name, amount in row.get(field, {}).items():
                        value[name] = value.get(name, 0) + amount
                if what == "available":
                    value = {k: v for k, v in value.items() if v > 0}
            else:
                value = [_ray_node_info(row) for row in rows]
            self._send(identity, m.INFO_REPLY, {"value": value})

        self.link.read_alive_nodes(reply)

    # ---- objects --------------------------------------------------------------------------

    def _set_value(self, oid, state, data, contained=(), collect=True) -> None:
        e, _ = self.objects.set_value(oid, state, data, contained)
        if e.data is not data:  # already had a value
            if state == m.OBJ_REMOTE and self.remote is not None:
                self.remote.free_out.setdefault(data[0], []).append(oid)  # the extra copy
            return
        if state == m.OBJ_STORE:
            self.gcs.object_stored(oid, data)
            self.spill.stored(oid, data)
        elif state == m.OBJ_REMOTE:  # on another node: fetched when something here needs it
            self.remote.borrowed.value_known(oid, state, data)  # peers that asked where it is
            if oid in self.remote.wanted or self.scheduler.waits_for(oid) or \
                    oid in self.actors.waiters:
                self.remote.ensure_local(oid)
                return
            # nobody asked yet (the submitter is told once it asks: a cluster client
            # subscribes to its own results in get/wait): the bytes stay where they were
            # made, as in Ray, and an unreferenced result is freed there at once
            e.waiters.clear()
            if collect:
                self._free(self.objects.collect_unreferenced(oid))
            return
        self.object_arrived(oid, e, collect)

    def _producer_of(self, oid: bytes):
        """The task that will make ``oid`` (for the scheduler's chains), or None."""
        e = self.objects.entries.get(oid)
        return e.producer if e is not None else None

    def object_arrived(self, oid, e, collect=True) -> None:
        """``oid``'s value is here (or its error): answer the waiters, wake the tasks."""
        state, data = e.state, e.data
        for identity in e.waiters:
            self._notify(identity, [oid, state, data])
        e.waiters.clear()
        if self.remote is not None:
            self.remote.borrowed.value_known(oid, state, data)
            if self.remote.refetching:  # readers of an evicted copy that was re-made
                self.remote.answer_refetch(oid, state, data)
        self._apply(self.scheduler.object_local(oid))
        self.actors.object_ready(oid)
        if collect:
            self._free(self.objects.collect_unreferenced(oid))

    def _free(self, freed) -> None:
        for oid, e in freed:
            self.scheduler.object_gone(oid)
            if self.lineage is not None:
                self.lineage.object_freed(oid)
                self.remote.wanted.discard(oid)
            if oid in self.actors.by_handle_ref:
                self.actors.handles_gone(oid)
            if self.remote is not None:
                self.remote.freed(oid, e)  # a copy on another node goes too
            if e.state == m.OBJ_STORE:
                self.gcs.object_freed(oid)
                self.spill.forget(oid)
                try:
                    self.store.delete(oid)
                except Exception:  # noqa: BLE001 - already gone (a dead writer's abort,
                    pass  # or a spilled copy evicted)

    # ---- shutdown -----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        for identity in list(self.clients):
            try:
                self._send(identity, m.SHUTDOWN, {"reason": self.stop_reason})
            except zmq.ZMQError:
                pass
        os.close(self.zygote_cmd_fd)  # the zygote kills every worker when this closes
        try:
            os.waitpid(self.zygote_pid, 0)
        except ChildProcessError:
            pass
        self.link.deregister(self.stop_reason or "stopped")
        if self.remote is not None:
            self.remote.close()
        self.gcs.close()
        self.sock.close(0)
        self.ctx.term()
        self.spill.close()  # its thread is a store client: stopped before the store goes
        self.store.destroy()
        # The control store keeps its files under the session directory: remove it only once
        # those processes are gone (a dead driver's die with it, by PDEATHSIG), otherwise
        # the driver's shutdown removes it after stopping them.
        deadline = time.monotonic() + GCS_EXIT_WAIT_S
        while any(_alive(p) for p in self.gcs_pids) and time.monotonic() < deadline \
                and self.stop_reason == "the driver process died":
            time.sleep(0.02)
        # A driver that said BYE removes it itself once its control store is stopped: that
        # store may still be starting (it starts 0.5 s after the node, and this node does
        # not know its pids yet), and removing its directory under it made its processes
        # fail with tracebacks (sqlite "disk I/O error", a re-created 0755 ipc directory)
        if self.stop_reason != "the driver disconnected" and \
                not any(_alive(p) for p in self.gcs_pids):
            shutil.rmtree(self.session_dir, ignore_errors=True)

    HANDLERS = {
        "HELLO": on_hello, "BYE": on_bye, "REF_DELTA": on_ref_delta,
        "SUBSCRIBE": on_subscribe, "PUT": on_put, "SUBMIT": TaskRouting.on_submit,
        "TASK_DONE": TaskRouting.on_task_done, "BLOCKED": TaskRouting.on_blocked,
        "UNBLOCKED": TaskRouting.on_unblocked, "RETURNED": TaskRouting.on_returned,
        "CANCEL": TaskRouting.on_cancel, "INFO": on_info,
        "SET_GCS": on_set_gcs, "KILL_ACTOR": on_kill_actor, "GET_ACTOR": on_get_actor,
        "LEASE_REQUEST": lambda self, i, msg: self.direct.on_request(i, msg),
        "LEASE_RETURN": lambda self, i, msg: self.direct.on_return(i, msg),
        "WORKER_OUTPUT": lambda self, i, msg: self.output.on_output(i, msg),
        "STORE_REQUEST": lambda self, i, msg: self.spill.on_request(i, msg),
    }


def _ray_node_info(row: dict) -> dict:
    """A nodes-table row in the shape of Ray's ``ray.nodes()`` entries."""
    return {"NodeID": row["node_id"].hex(), "Alive": row.get("state") == "alive",
            "alive": row.get("state") == "alive", "NodeManagerAddress": row.get("host"),
            "NodeManagerHostname": os.uname().nodename if row.get("host") == "127.0.0.1"
            else row.get("host"), "NodeManagerPort": row.get("node_port"),
            "ObjectStoreSocketName": row.get("store"),
            "Resources": row.get("resources_total", {}),
            "ObjectStoreUsedBytes": row.get("store_used", 0),
            "ObjectStoreCapacityBytes": row.get("store_capacity", 0),
            # zactor's own: objects spilled to disk and restored (runtime/spilling.py)
            "ObjectSpilling": row.get("spill", {}),
            # calls refused for naming another actor incarnation, stale copies retired
            # (cluster/actor_incarnations.py)
            "ActorIncarnations": row.get("actor_incarnations", {})}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


