"""The global scheduler's event loop: sockets and control-store rows around ``GlobalPolicy``.

Runs in the ``zactor scheduler`` process (scheduler_main.py). Stateless by design: whatever it
must not lose is a control-store row (nodes, kv pg:*), so a SIGKILLed scheduler restarted
anywhere rebuilds its state by scanning them. What it keeps only in memory is soft: the
optimistic view adjustments (the next heartbeats replace them), the infeasible tasks waiting for
a node (their origins re-send SPILLs), when it last heard from each node (a restart grants
every node a fresh node-death-timeout).

One thread owns the sockets: a ROUTER for node managers and drivers (SPILL, CREATE_PG,
REMOVE_PG, GET_PG) and a DEALER per node manager (RESERVE_BUNDLES, FENCED). The control-store
client's IO thread delivers ``nodes`` updates into a queue this loop drains.
Placement groups: scheduler_pgs.py.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import time

import zmq

from zactor import protocol as P
from zactor.cluster import messages as M
from zactor.control.client import GcsClient
from zactor.exceptions import ControlStoreError, ProtocolError
from zactor.net.sockets import bind_free, make_socket
from zactor.scheduling.global_policy import (
    FAILED,
    INFEASIBLE,
    Decision,
    GlobalPolicy,
    node_key,
    parse_strategy,
)
from zactor.scheduling.scheduler_pgs import GCS_TIMEOUT_S, PlacementGroups

log = logging.getLogger(__name__)
POLL_MS = 10
TICK_S = 0.02              # death checks at most this often
RETRY_S = 0.1              # re-decisions of what did not fit at most this often
MAX_PENDING_TASKS = 100_000
SCHEDULER_KEY = b"cluster:scheduler"
ERR_UNAVAILABLE = "unavailable"   # the control store did not answer: retry later
ERR_INTERNAL = "internal"         # a scheduler bug, logged with its traceback
#: a SPILL naming a node this view has no row for re-reads the nodes table at most this often
#: (and waits at most this long for it)
CATCH_UP_S = 0.2


class SchedulerDaemon(PlacementGroups):
    def __init__(self, gcs_address: str, host: str = "127.0.0.1", port: int = 0,
                 node_death_timeout_s: float = M.NODE_DEATH_TIMEOUT_S, keys=None):
        from zactor.net.security import curve_server, keys_from, start_authenticator

        self.keys = keys_from(keys)  # the cluster's CURVE keys: every socket authenticates
        self.death_timeout_s = node_death_timeout_s
        self.gcs = GcsClient.connect(gcs_address, timeout_s=GCS_TIMEOUT_S, keys=self.keys)
        self.ctx = zmq.Context()
        self.auth = start_authenticator(self.ctx, self.keys)
        self.router = curve_server(make_socket(self.ctx, zmq.ROUTER), self.keys)
        self.addr = bind_free(self.router, host, port)
        self.host, self.port = host, int(self.addr.rsplit(":", 1)[1])
        self.policy = GlobalPolicy()
        self.updates: queue.Queue = queue.Queue()
        self.node_keys: dict = {}        # node_id -> its nodes-table key
        self.last_heard: dict = {}       # node_id -> monotonic time of its last alive row
        self.fenced: set = set()         # (node_id, incarnation) declared dead
        self.dealers: dict = {}          # node_id -> (address, DEALER)
        self.pgs: dict = {}              # pg_id bytes -> row
        self.pending = collections.OrderedDict()  # task_id -> (origin identity, task)
        self.dirty = False               # nodes changed: retry what did not fit
        self.running = True
        self.next_tick = self.next_retry = self.next_catch_up = 0.0
        self.stats = collections.Counter()

    # ---- start-up: rebuild from the control store -------------------------------------------
    def start(self) -> None:
        # subscribe before scanning: an update racing the scan is delivered after it, and a
        # row read twice is harmless (the newer one wins)
        self.sub = self.gcs.subscribe("nodes", callback=self.updates.put)
        now = time.monotonic()
        for key, row in self.gcs.scan("nodes", timeout_s=GCS_TIMEOUT_S):
            self._on_row(key, row, "put", now)
        for key, row in self.gcs.scan("kv", prefix=b"pg:", timeout_s=GCS_TIMEOUT_S):
            if isinstance(row, dict) and row.get("state") != "removed":
                self._load_pg(key[3:], row)
        # a group row may still name a node that died while no scheduler ran (or before the
        # last one saved the re-placement): re-place those bundles now
        for row in list(self.pgs.values()):
            for nid in {n for n in row.get("nodes") or [] if n is not None}:
                view = self.policy.nodes.get(nid)
                if view is None or not view.alive:
                    self._node_gone(nid, "dead or unknown when the scheduler started")
        self.gcs.put("kv", SCHEDULER_KEY, {"host": self.host, "port": self.port,
                                           "pid": os.getpid(), "started_at": time.time()},
                     timeout_s=GCS_TIMEOUT_S)
        log.info("scheduler at %s: %d nodes, %d placement groups", self.addr,
                 len(self.policy.nodes), len(self.pgs))

    # ---- node rows ----------------------------------------------------------------------------
    def _drain_updates(self, now: float) -> None:
        while True:
            try:
                upd = self.updates.get_nowait()
            except queue.Empty:
                return
            if upd.op in ("put", "resync", "delete"):
                self._on_row(upd.key, upd.value, upd.op, now)

    def _on_row(self, key: bytes, row, op: str, now: float) -> None:
        if op == "delete":
            nid = next((n for n, k in self.node_keys.items() if k == key), None)
            if nid is not None:
                self._node_gone(nid, "its row was deleted")
                self.policy.remove_node(nid)
            return
        try:
            nid, inc = row["node_id"], row.get("incarnation")
            state = str(row.get("state", "alive")).lower()
            if state == "alive" and (nid, inc) in self.fenced:
                self._refence(key, row)
                return
            old = self.policy.nodes.get(nid)
            view = self.policy.update_node(row)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring malformed nodes row %r: %s", key, exc)
            return
        self.node_keys[nid] = key
        if view.alive:
            self.last_heard[nid] = now
            self.last_row_at = now
            # retry what did not fit only when room may have appeared: a new or revived node,
            # or more of some resource than the scheduler believed (not on every heartbeat)
            if (old is None or not old.alive or old.total != view.total
                    or not view.available.fits_in(old.available)):
                self.dirty = True
        else:
            self._node_gone(nid, row.get("reason", "dead"))
            self.fenced.add((nid, inc))

    def _refence(self, key: bytes, row: dict) -> None:
        """A node declared dead wrote an alive row: tell it and restore the death notice."""
        log.warning("node %s (incarnation %s) was declared dead and still writes rows",
                    node_key(row["node_id"]), row.get("incarnation"))
        self._send_node(row["node_id"], M.FENCED, {"node_id": row["node_id"],
                                                   "incarnation": row.get("incarnation")}, row)
        self.gcs.put_async("nodes", key, dict(row, state="dead", reason="fenced: declared "
                                              "dead by the global scheduler"))

    def _check_deaths(self, now: float) -> None:
        # Rows reach the scheduler through its control-store subscription: when *no* node's
        # row has arrived for a while, the feed stalled (a replica failover, this process
        # starved of CPU), not every node at once. Declaring them all dead would fence the
        # whole cluster, head included; grant everyone a fresh timeout instead.
        last_row = getattr(self, "last_row_at", None)
        if last_row is not None and len(self.last_heard) > 1 and \
                now - last_row > self.death_timeout_s / 2:
            for nid in self.last_heard:
                self.last_heard[nid] = now
            return
        for nid, heard in list(self.last_heard.items()):
            if now - heard <= self.death_timeout_s:
                continue
            view = self.policy.nodes.get(nid)
            reason = (f"no heartbeat received by the global scheduler for "
                      f"{self.death_timeout_s:g} s")
            log.warning("node %s is dead: %s", node_key(nid), reason)
            self.stats["nodes_dead"] += 1
            self.policy.mark_dead(nid)
            if view is not None:
                self.fenced.add((nid, view.row.get("incarnation")))
                self.gcs.put_async("nodes", self.node_keys[nid],
                                   dict(view.row, state="dead", reason=reason))
            self._node_gone(nid, reason)

    def _node_gone(self, nid, reason: str) -> None:
        self.last_heard.pop(nid, None)
        entry = self.dealers.pop(nid, None)
        if entry is not None:
            entry[1].close(0)
        for pg_id, row in self.pgs.items():
            nodes = row.get("nodes") or []
            if nid in nodes and row.get("state") in ("created", "rescheduling"):
                lost = [i for i, n in enumerate(nodes) if n == nid]
                log.warning("placement group %r loses bundles %s (%s)", pg_id, lost, reason)
                row = dict(row, nodes=[None if n == nid else n for n in nodes],
                           state="rescheduling", reason=f"node died: {reason}")
                self._save_pg(pg_id, row, wait=False)
                self.dirty = True

    # ---- sockets to node managers --------------------------------------------------------------
    def _send_node(self, nid, mtype, body, row=None) -> None:
        row = row or (self.policy.nodes[nid].row if nid in self.policy.nodes else None)
        if row is None:
            return
        addr = f"tcp://{row.get('host')}:{row.get('node_port')}"
        entry = self.dealers.get(nid)
        if entry is None or entry[0] != addr:
            if entry is not None:
                entry[1].close(0)
            from zactor.net.security import curve_client

            sock = curve_client(make_socket(self.ctx, zmq.DEALER,
                                            b"zactor-scheduler-%d" % os.getpid()), self.keys)
            sock.connect(addr)
            entry = self.dealers[nid] = (addr, sock)
        try:
            entry[1].send_multipart(P.encode(mtype, body, P.next_request_id()), zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("cannot send %s to node %s: %s", mtype.name, node_key(nid), exc)

    def _drain_dealers(self) -> None:
        for _addr, sock in list(self.dealers.values()):
            while True:  # node replies (OK / ERROR) carry nothing the scheduler needs
                try:
                    sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break

    # ---- spilled tasks -------------------------------------------------------------------------
    def on_spill(self, ident: bytes, msg: P.Message) -> list:
        tasks = msg["tasks"]
        if not isinstance(tasks, list) or not all(isinstance(t, dict) and "task_id" in t
                                                  for t in tasks):
            raise ValueError("tasks must be a list of maps with a task_id")
        self._catch_up_on_nodes(tasks)
        out = []
        for task in tasks:
            try:
                d = self.policy.decide(task)
            except (KeyError, TypeError, ValueError) as exc:
                # one bad entry fails alone: the rest of the batch is still placed
                d = Decision(task["task_id"], None, f"{FAILED}: malformed task: {exc}")
            self.stats["decisions"] += 1
            if d.node_id is None and d.reason.startswith(INFEASIBLE):
                self.pending[d.task_id] = (ident, task)
                self.pending.move_to_end(d.task_id)
                while len(self.pending) > MAX_PENDING_TASKS:
                    self.pending.popitem(last=False)  # its origin re-sends it
            else:
                self.pending.pop(d.task_id, None)
            out.append(d.wire())
        return out

    def _catch_up_on_nodes(self, tasks: list) -> None:
        """A task with node affinity to a node this view has no row for: read the nodes
        table now. The node may have joined a moment ago and its row not have come through
        the subscription yet (a driver that saw it in ``zactor.nodes()`` names it at once);
        deciding without it made a soft affinity fall back to another node (in CI) and a hard
        one wait for the origin's retry. Rows of nodes already known are left to the feed."""
        now = time.monotonic()
        if now < self.next_catch_up:
            return
        unknown = False
        for task in tasks:
            try:
                kind, args = parse_strategy(task.get("strategy"))
            except (TypeError, ValueError):
                continue  # answered as malformed by decide()
            if kind == "node" and self.policy.resolve(args[0]) not in self.policy.nodes:
                unknown = True
                break
        if not unknown:
            return
        self.next_catch_up = now + CATCH_UP_S
        self._drain_updates(now)
        try:
            rows = list(self.gcs.scan("nodes", timeout_s=CATCH_UP_S))
        except ControlStoreError as exc:
            log.info("reading the nodes table for an unknown node failed: %s", exc)
            return
        for key, row in rows:
            if isinstance(row, dict) and row.get("node_id") not in self.policy.nodes:
                self._on_row(key, row, "put", now)

    def _retry_pending(self) -> None:
        for pg_id, row in list(self.pgs.items()):
            if row.get("state") in ("pending", "rescheduling"):
                self._try_place_pg(pg_id, row, wait=False)
        by_origin: dict = {}
        for task_id, (ident, task) in list(self.pending.items()):
            try:
                d = self.policy.decide(task)
            except (KeyError, TypeError, ValueError):
                d = None
            if d is None or d.node_id is not None or d.reason.startswith(FAILED):
                del self.pending[task_id]
                if d is not None:
                    by_origin.setdefault(ident, []).append(d.wire())
        for ident, decisions in by_origin.items():
            self.router.send_multipart([ident, *P.encode(M.PLACE, {"decisions": decisions})])

    # ---- the loop ----------------------------------------------------------------------------
    def handle(self, frames: list) -> None:
        if len(frames) < 3:
            log.warning("dropping a message of %d frames", len(frames))
            return
        ident = frames[0]
        try:
            mtype, req_id = P.decode_header(frames[1])
        except ProtocolError as exc:
            log.warning("dropping garbage from %r: %s", ident[:32], exc)
            return
        try:
            msg = P.decode(frames[1:])
        except ProtocolError as exc:
            return self._reply(ident, req_id, P.ERROR, {"code": P.ERR_MALFORMED,
                                                         "message": str(exc)})
        try:
            if mtype is M.SPILL:
                return self._reply(ident, req_id, M.PLACE,
                                   {"decisions": self.on_spill(ident, msg)})
            handler = {M.CREATE_PG.code: self.on_create_pg,  # MessageType is unhashable
                       M.REMOVE_PG.code: self.on_remove_pg,
                       M.GET_PG.code: self.on_get_pg}.get(mtype.code)
            if handler is None:
                if mtype is P.PING:
                    return self._reply(ident, req_id, P.PONG, {"sender": "scheduler"})
                return self._reply(ident, req_id, P.ERROR, {
                    "code": P.ERR_UNKNOWN_TYPE, "message": f"the scheduler does not serve "
                                                          f"{mtype.name}"})
            self._reply(ident, req_id, P.OK, {"value": handler(msg)})
        except ControlStoreError as exc:
            self._reply(ident, req_id, P.ERROR, {"code": ERR_UNAVAILABLE, "message": str(exc)})
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            log.warning("bad %s from %r: %s", mtype.name, ident[:32], exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            self._reply(ident, req_id, P.ERROR, {"code": P.ERR_MALFORMED, "message": str(exc)})
        except Exception as exc:  # noqa: BLE001 - a bug met by one request must not stop the
            log.exception("%s from %r failed", mtype.name, ident[:32])  # cluster's scheduler
            self._reply(ident, req_id, P.ERROR, {"code": ERR_INTERNAL, "message": repr(exc)})

    def _reply(self, ident, req_id, mtype, body) -> None:
        try:
            frames = P.encode(mtype, body, req_id)
        except ProtocolError as exc:  # e.g. a task_id msgpack cannot hold: answer the error
            frames = P.encode(P.ERROR, {"code": P.ERR_MALFORMED, "message": str(exc)}, req_id)
        self.router.send_multipart([ident, *frames])

    def serve(self) -> None:
        while self.running:
            try:
                self._step()
            except zmq.ZMQError:
                raise  # the sockets themselves are broken: exit and be restarted
            except Exception:  # noqa: BLE001 - log a bug in one step, keep scheduling
                log.exception("scheduler loop step failed")

    def _step(self) -> None:
        if self.router.poll(POLL_MS):
            for _ in range(1000):
                try:
                    frames = self.router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.handle(frames)
        now = time.monotonic()
        self._drain_updates(now)
        if now >= self.next_tick:
            self.next_tick = now + TICK_S
            self._check_deaths(now)
            self._drain_dealers()
            if self.dirty and now >= self.next_retry:
                self.dirty = False
                self.next_retry = now + RETRY_S
                self._retry_pending()

    def close(self) -> None:
        for _addr, sock in self.dealers.values():
            sock.close(0)
        self.router.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        try:
            self.gcs.flush(timeout_s=1.0)
        except ControlStoreError:
            pass
        self.gcs.close()
