"""The replica process: a ZeroMQ poll loop around the ``ChainReplica`` state machine.

Runs as ``zactor gcs --coordinator HOST:PORT`` (one process per replica). Sockets (TCP, or
ipc files in ``ipc_dir`` for a local session):

    ROUTER  clients' WRITE/READ/SCAN/LOG_READ, peers' FORWARD/ACK/NEED_FROM/SNAPSHOT
    PUB     committed updates (UPDATE) and per-table BEACONs, sent by the tail
    DEALER  to the coordinator (identity = replica id): REGISTER, HEARTBEAT; CONFIG comes back
    DEALER  one per chain neighbour (identity = replica id), monitored: a neighbour whose
            connection closes is reported to the coordinator at once

Each poll round drains up to ``DRAIN_MAX`` messages and merges consecutive FORWARDs from the
predecessor into one event, so a busy replica commits one SQLite transaction per round rather
than per message. A frame whose header does not parse is logged and dropped; one whose header
parses but body does not gets an ERROR reply; no frame can stop the loop.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

import zmq

from zactor import protocol as P
from zactor.control import chain as C
from zactor.control.log_store import SqliteLogStore
from zactor.control.schema import TABLES, topic
from zactor.idle_trim import IdleTrim
from zactor.net.liveness import HEARTBEAT_INTERVAL_MS, POLL_INTERVAL_MS
from zactor.net.security import curve_client, curve_server, keys_from, start_authenticator
from zactor.net.sockets import MonitoredPeer, bind_endpoint, endpoint, make_socket

log = logging.getLogger(__name__)
DRAIN_MAX = 2000
KEEP_LOG_ENTRIES = 100_000  # log suffix kept after compaction (catch-up, subscriber repair)
COMPACT_EVERY_MS = 1000
REREGISTER_MS = 500
_PEER_TYPES = ("FORWARD", "ACK", "NEED_FROM", "SNAPSHOT")
_READ_TYPES = ("READ", "READ_MANY", "SCAN", "LOG_READ")


def replica_id_for(data_dir: str) -> str:
    """The replica's persistent id, kept in its data directory."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "replica_id")
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        rid = "r-" + uuid.uuid4().hex[:12]
        with open(path, "w") as f:
            f.write(rid)
        return rid


class ReplicaProcess:
    def __init__(self, coordinator: str, data_dir: str, port: int = 0, host: str = "127.0.0.1",
                 keep_log_entries: int = KEEP_LOG_ENTRIES, parent_pid: int | None = None,
                 keys=None, ipc_dir: str | None = None):
        # keys: CURVE on every socket when given; ipc_dir: ipc sockets there instead of TCP
        # (see coordinator.py)
        self.keys = keys_from(keys)
        self.data_dir = data_dir
        self.rid = replica_id_for(data_dir)
        self.keep_log_entries = keep_log_entries
        self.parent_pid = parent_pid
        self.store = SqliteLogStore(data_dir)
        self.machine = C.ChainReplica(self.rid, self.store)
        self.ctx = zmq.Context()
        self.auth = start_authenticator(self.ctx, self.keys)
        self.router = curve_server(make_socket(self.ctx, zmq.ROUTER), self.keys)
        # named by the persistent id: a restart with the same data rebinds the same endpoint
        self.addr = bind_endpoint(self.router, self.rid, host, port, ipc_dir)
        self.pub = curve_server(make_socket(self.ctx, zmq.PUB, hwm=1_000_000), self.keys)
        self.pub_addr = bind_endpoint(self.pub, f"{self.rid}-pub", host, 0, ipc_dir)
        self.coord = curve_client(make_socket(self.ctx, zmq.DEALER, self.rid.encode()),
                                  self.keys)
        self.coord.connect(endpoint(coordinator))
        self.peers: dict = {}   # replica id -> MonitoredPeer
        self.addrs: dict = {}   # replica id -> ROUTER address, from the configuration
        self.shard = -1
        self.running = True
        self.registered = False
        self.incarnation = uuid.uuid4().hex

    # ---- coordinator ------------------------------------------------------------------------
    def _register(self) -> None:
        self.coord.send_multipart(P.encode(P.REGISTER, {
            "replica_id": self.rid, "addr": self.addr, "pub_addr": self.pub_addr,
            "last_seq": self.store.last_seq, "incarnation": self.incarnation}))

    def _on_config(self, msg: P.Message) -> None:
        shard = msg["shard"]
        if msg["assign"] and shard < 0:
            self.registered = False  # "register again later" (we are no member)
            return
        if msg["assign"] and not self.registered:
            self.registered = True
            self.shard = shard
            if msg["wipe"] and self.store.last_seq:
                log.info("%s joins shard %d: dropping local state to copy it", self.rid, shard)
                self.store.close()
                self.store = SqliteLogStore(self.data_dir, wipe=True)
                self.machine = C.ChainReplica(self.rid, self.store)
        if self.shard < 0 or self.shard >= len(msg["shards"]):
            return
        epoch, members = msg["shards"][self.shard]
        if epoch <= self.machine.epoch:
            return
        ids = [m[0] for m in members]
        for member in members:
            self.addrs[member[0]] = member[1]
        if self.rid not in ids and self.machine.chain:
            log.warning("%s was removed from shard %d: registering again", self.rid, self.shard)
            self.registered = False
        log.debug("%s: epoch %d chain %s", self.rid, epoch, ids)
        learners = frozenset(m[0] for m in members if len(m) > 3 and not m[3])
        self._run(self.machine.handle(C.Configure(epoch, ids, learners)))
        self._sync_peers()

    def _sync_peers(self) -> None:
        wanted = {r for r in (self.machine.pred, self.machine.succ) if r is not None}
        for rid, peer in list(self.peers.items()):
            # a neighbour that restarted on TCP binds a new port: a DEALER left on the old
            # one would queue our NEED_FROM for a dead address for good (in a 10-minute chaos
            # run a joiner waited so for its restarted head and the control store stopped)
            if rid not in wanted or self.addrs.get(rid, peer.addr) != peer.addr:
                self.peers.pop(rid).close()
        for rid in wanted:
            if rid not in self.peers and rid in self.addrs:
                self.peers[rid] = MonitoredPeer(self.ctx, self.addrs[rid], self.rid.encode(),
                                                keys=self.keys)

    # ---- instructions -----------------------------------------------------------------------
    def _run(self, instructions: list) -> None:
        for ins in instructions:
            if isinstance(ins, C.Reply):
                self.router.send_multipart([ins.client] + P.encode(ins.mtype, ins.body,
                                                                   ins.req_id))
            elif isinstance(ins, C.Send):
                peer = self.peers.get(ins.to)
                if peer is None:
                    self._sync_peers()
                    peer = self.peers.get(ins.to)
                if peer is not None:
                    peer.sock.send_multipart(P.encode(ins.mtype, ins.body))
            elif isinstance(ins, C.Publish):
                by_table: dict = {}
                for _seq, _cid, _cseq, op, table, key, value, tseq in ins.entries:
                    by_table.setdefault(table, []).append([tseq, op, key, value])
                for table, updates in by_table.items():
                    self.pub.send_multipart([topic(table)] + P.encode(
                        P.UPDATE, {"table": table, "updates": updates}))

    def _beacon(self) -> None:
        if not self.machine.is_tail:
            return
        for table in TABLES:
            tseq = self.store.tseqs[table]
            if tseq:
                self.pub.send_multipart([topic(table)] + P.encode(
                    P.BEACON, {"table": table, "tseq": tseq}))

    # ---- incoming ---------------------------------------------------------------------------
    def _decode(self, frames: list):
        """(ident, message) or None; answers an ERROR where the header parsed."""
        if len(frames) < 2:
            log.warning("dropping a message of %d frame(s)", len(frames))
            return None
        ident = frames[0]
        try:
            _mtype, req_id = P.decode_header(frames[1])
        except P.ProtocolError as exc:
            log.warning("dropping a malformed frame from %r: %s", ident[:32], exc)
            return None
        try:
            return ident, P.decode(frames[1:])
        except P.ProtocolError as exc:
            self.router.send_multipart([ident] + P.encode(
                P.ERROR, {"code": P.ERR_MALFORMED, "message": str(exc)}, req_id))
            return None

    def _events(self, batch: list) -> list:
        """Turn decoded messages into state-machine events, merging FORWARD runs."""
        events: list = []
        for ident, msg in batch:
            name = msg.name
            if name in _PEER_TYPES:
                sender = ident.decode("utf-8", "replace")
                last = events[-1] if events else None
                if (name == "FORWARD" and isinstance(last, C.PeerMessage)
                        and last.msg.name == "FORWARD" and last.sender == sender
                        and last.msg.get("epoch") == msg.get("epoch")
                        and isinstance(msg["entries"], list) and "sync" not in last.msg.body
                        and len(last.msg["entries"]) < C.CATCHUP_CHUNK):
                    # (bounded: a joiner's catch-up arrives as many full chunks, and one
                    # merged event would hold the loop, and its heartbeats, for seconds)
                    last.msg.body["entries"] = list(last.msg["entries"]) + msg["entries"]
                    if "sync" in msg.body:
                        last.msg.body["sync"] = msg["sync"]
                    continue
                events.append(C.PeerMessage(sender, msg))
            elif name == "WRITE":
                write = C.ClientWrite(ident, msg.req_id, msg["cid"], msg["ops"], msg["epoch"])
                if events and isinstance(events[-1], C.ClientWrites):
                    events[-1].writes.append(write)
                else:
                    events.append(C.ClientWrites([write]))
            elif name in _READ_TYPES:
                events.append(C.ClientRead(ident, msg.req_id, msg))
            elif name == "PING":
                self.router.send_multipart([ident] + P.encode(P.PONG, {"sender": self.rid},
                                                              msg.req_id))
            else:
                self.router.send_multipart([ident] + P.encode(P.ERROR, {
                    "code": P.ERR_UNKNOWN_TYPE, "message": f"a replica does not serve {name}"},
                    msg.req_id))
        return events

    def _handle(self, event) -> None:
        try:
            self._run(self.machine.handle(event))
        except Exception as exc:  # a hostile or corrupt message must not stop the replica
            log.exception("replica %s could not handle %s", self.rid, type(event).__name__)
            for ev in getattr(event, "writes", [event]):
                if getattr(ev, "client", None) is not None:
                    self.router.send_multipart([ev.client] + P.encode(P.ERROR, {
                        "code": P.ERR_MALFORMED, "message": f"{type(exc).__name__}: {exc}"},
                        ev.req_id))

    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.coord, zmq.POLLIN)
        now = time.monotonic() * 1000
        next_hb = next_compact = next_register = now
        idle_trim = IdleTrim()
        while self.running:
            events = dict(poller.poll(POLL_INTERVAL_MS))
            if self.router in events:  # (the coordinator's heartbeats are not work)
                idle_trim.worked(time.monotonic())
            else:
                idle_trim.tick(time.monotonic())
            if self.coord in events:
                while True:
                    try:
                        frames = self.coord.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        msg = P.decode(frames)
                    except P.ProtocolError as exc:
                        log.warning("bad frame from the coordinator: %s", exc)
                        continue
                    if msg.name == "CONFIG":
                        self._on_config(msg)
            if self.router in events:
                batch = []
                for _ in range(DRAIN_MAX):
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK, copy=True)
                    except zmq.Again:
                        break
                    decoded = self._decode(frames)
                    if decoded is not None:
                        batch.append(decoded)
                for event in self._events(batch):
                    self._handle(event)
                    next_hb = self._heartbeat_if_due(next_hb)
            for rid, peer in list(self.peers.items()):
                if self.peers.get(rid) is peer and peer.poll_events():
                    self.coord.send_multipart(P.encode(P.REPORT_FAILURE, {
                        "replica_id": rid, "reason": f"connection from {self.rid} closed"}))
            next_hb = self._heartbeat_if_due(next_hb)
            now = time.monotonic() * 1000
            if not self.registered and now >= next_register:
                next_register = now + REREGISTER_MS
                self._register()
            # Compact when the log holds twice what is kept, or on a slow timer: bounded
            # work (one DELETE and a WAL checkpoint) at most once per keep_log_entries writes.
            if now >= next_compact or \
                    self.store.last_seq - self.store.first_seq >= 2 * self.keep_log_entries:
                next_compact = now + COMPACT_EVERY_MS
                bound = self.machine.compaction_bound(self.keep_log_entries)
                if bound - self.store.first_seq >= self.keep_log_entries // 2:
                    self.store.compact(bound)

    def _heartbeat_if_due(self, next_hb: float) -> float:
        """Heartbeat (and beacon) when due; the next due time. Also called between the
        events of one long batch: a catch-up must not look like a dead replica."""
        now = time.monotonic() * 1000
        if now < next_hb:
            return next_hb
        if self.registered:
            self.coord.send_multipart(P.encode(P.HEARTBEAT, {
                "replica_id": self.rid, "epoch": self.machine.epoch,
                "ready": self.machine.ready}))
        self._beacon()
        if self.parent_pid and os.getppid() != self.parent_pid:
            log.warning("parent %d is gone: exiting", self.parent_pid)
            self.running = False
        return now + HEARTBEAT_INTERVAL_MS

    def close(self) -> None:
        for peer in self.peers.values():
            peer.close()
        for sock in (self.router, self.pub, self.coord):
            sock.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        self.store.close()
