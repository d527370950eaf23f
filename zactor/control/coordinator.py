"""The chain coordinator: the cluster's well-known address and the owner of chain membership.

Runs on the head node as ``zactor gcs --coordinator-mode`` (default port 6380). Two layers:

* ``CoordinatorState`` -- sans-IO: events (a replica registers, heartbeats, is found dead, a
  timer tick) in, instructions (push a configuration to a replica, publish it, persist it) out.
  The property tests drive it together with the chain replicas.
* ``CoordinatorProcess`` -- the ZeroMQ loop: a ROUTER for requests (REGISTER, HEARTBEAT,
  GET_CONFIG, REPORT_FAILURE), a PUB that pushes every new configuration to clients, and one
  monitored DEALER per member so a killed replica is seen within milliseconds
  (EVENT_DISCONNECTED); a hung one is found by HEARTBEAT_LIVENESS missed heartbeats.

Membership rules: a new replica joins the shard with the fewest members, at its tail, and starts
from an empty state (``wipe``) it then copies from its predecessor; the only exception is a
shard left with no live member, which a replica from its last membership restarts with its own
data (all acknowledged writes are in every member's log). A dead replica is removed and the
shard's epoch incremented; the chain's own NEED_FROM rule resends what successors lack. The
configuration is persisted (SQLite) before it is announced, so a restarted coordinator resumes
it, giving members a grace period to heartbeat before it declares them dead.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass

import msgpack
import sqlite_utils
import zmq

from zactor import protocol as P
from zactor.net.liveness import COORDINATOR_STARTUP_GRACE_MS, DEAD_AFTER_MS, POLL_INTERVAL_MS
from zactor.net.security import curve_server, keys_from, start_authenticator
from zactor.net.sockets import MonitoredPeer, bind_endpoint, make_socket

log = logging.getLogger(__name__)
REPORT_TRUST_MS = 300  # a failure report is acted on when the replica is also this quiet
#: a learner (a joiner still copying state, chain.py) may be silent this long: installing a
#: large snapshot holds its loop, and nothing waits for it meanwhile (a killed one is seen at
#: once, by its connection). Removed at DEAD_AFTER_MS, a learner with a large state to copy
#: never finished: it was removed, joined again and copied from the start, over and over.
LEARNER_DEAD_AFTER_MS = 30_000


@dataclass
class Tell:  # send CONFIG to one replica (its place, and whether to wipe its state)
    replica_id: str
    body: dict


@dataclass
class Announce:  # the configuration changed: persist it, push it to members, publish it
    shards: list


class CoordinatorState:
    def __init__(self, num_shards: int, replicas_per_shard: int, saved: dict | None = None):
        self.num_shards = num_shards
        self.replicas_per_shard = replicas_per_shard
        saved = saved or {}
        self.epochs = saved.get("epochs", [0] * num_shards)
        self.chains = saved.get("chains", [[] for _ in range(num_shards)])
        self.last_members = saved.get("last_members", [[] for _ in range(num_shards)])
        self.replicas = saved.get("replicas", {})  # id -> [addr, pub_addr, shard]
        self.last_seen: dict = {}
        self.kept_silent: set = set()  # silent last caught-up members, kept (see tick)
        # Members known to hold every acknowledged write of their chain: those that started
        # it, and joiners once they report being caught up. A chain whose last such member
        # dies has lost its data (until a former member restarts with it).
        self.ready = set(saved.get("ready", ()))

    def saved(self) -> dict:
        return {"epochs": self.epochs, "chains": self.chains, "last_members": self.last_members,
                "replicas": self.replicas, "num_shards": self.num_shards,
                "ready": sorted(self.ready),
                "replicas_per_shard": self.replicas_per_shard}

    def config(self) -> list:
        return [[self.epochs[s], [[r, *self.replicas[r][:2], r in self.ready]
                                  for r in self.chains[s]]]
                for s in range(self.num_shards)]

    def _changed(self, shard: int) -> list:
        self.epochs[shard] += 1
        if self.chains[shard]:
            self.last_members[shard] = list(self.chains[shard])
        return [Announce(self.config())]

    def start(self, now_ms: float) -> None:
        """After a (re)start: every persisted member gets a grace period to heartbeat."""
        for chain in self.chains:
            for r in chain:
                self.last_seen[r] = now_ms + COORDINATOR_STARTUP_GRACE_MS - DEAD_AFTER_MS

    def register(self, rid: str, addr: str, pub_addr: str, now_ms: float,
                 incarnation: str = "") -> list:
        out: list = []
        known = self.replicas.get(rid)
        member = any(rid in chain for chain in self.chains)
        if member and known is not None and known[3:4] == [incarnation] and incarnation:
            # A repeated REGISTER of the same process: answer again, change nothing.
            return [Tell(rid, {"shards": self.config(), "shard": known[2], "assign": True})]
        if member:  # it restarted: out of the chain, back in below
            out += self.remove(rid)
        if known is not None and 0 <= known[2] < self.num_shards:
            shard = known[2]
        else:
            shard = min(range(self.num_shards), key=lambda s: len(self.chains[s]))
        chain = self.chains[shard]
        if not chain and self.last_members[shard] and rid not in self.last_members[shard]:
            # Only a former member holds this shard's data: wait for one to come back.
            return out + [Tell(rid, {"shards": self.config(), "shard": -1, "assign": True})]
        wipe = bool(chain) or not self.last_members[shard]
        self.replicas[rid] = [addr, pub_addr, shard, incarnation]
        if chain:
            self.ready.discard(rid)
        else:
            self.ready.add(rid)  # it starts the chain: what it has is the chain's state
        chain.append(rid)
        self.last_seen[rid] = now_ms
        changed = self._changed(shard)
        # The joiner hears of its place before the announcement reaches it.
        return out + [Tell(rid, {"shards": self.config(), "shard": shard, "wipe": wipe,
                                 "assign": True})] + changed

    def heartbeat(self, rid: str, now_ms: float, ready: bool = False, epoch: int = -1) -> list:
        shard = next((s for s, c in enumerate(self.chains) if rid in c), None)
        if shard is not None:
            self.last_seen[rid] = now_ms
            if ready and rid not in self.ready:
                # caught up: from a learner to the chain's tail (chain.py), in a new epoch
                self.ready.add(rid)
                return self._changed(shard)
            if 0 <= epoch < self.epochs[shard]:
                # It missed a push (pushes to a replica not yet reconnected are dropped).
                return [Tell(rid, {"shards": self.config()})]
            return []
        return [Tell(rid, {"shards": self.config(), "shard": -1, "assign": True})]

    def remove(self, rid: str) -> list:
        for s, chain in enumerate(self.chains):
            if rid in chain:
                self.last_members[s] = [r for r in chain if r in self.ready]
                chain.remove(rid)
                self.last_seen.pop(rid, None)
                self.ready.discard(rid)
                if chain and not any(r in self.ready for r in chain):
                    log.error("shard %d lost its last caught-up replica %s: it waits for a "
                              "former member to restart", s, rid)
                    for r in chain:
                        self.last_seen.pop(r, None)
                    chain.clear()
                self.epochs[s] += 1
                return [Announce(self.config())]
        return []

    def tick(self, now_ms: float) -> list:
        out: list = []
        for rid, seen in list(self.last_seen.items()):
            if now_ms - seen > (DEAD_AFTER_MS if rid in self.ready else LEARNER_DEAD_AFTER_MS):
                if self._last_caught_up(rid):
                    # Removing it cannot help: no other member can serve the shard, and it
                    # would have to wait for a former member to restart. A silent member may
                    # only be slow (a loaded machine); a dead one is removed when its
                    # connection closes. So it stays, and is looked at again later.
                    if rid not in self.kept_silent:
                        self.kept_silent.add(rid)
                        log.warning("replica %s missed its heartbeats but is its shard's last "
                                    "caught-up member: kept", rid)
                    continue
                log.warning("replica %s missed its heartbeats: removing it", rid)
                out += self.remove(rid)
            else:
                self.kept_silent.discard(rid)
        return out

    def reported_failed(self, rid: str, now_ms: float) -> list:
        """A client or a peer reports ``rid`` failing (a request timed out, a connection
        closed): removed if it is also quiet for REPORT_TRUST_MS, unless it is its shard's
        last caught-up member - the same rule as ``tick``: removing that one empties the
        chain until a former member restarts (in a 10-minute chaos run, client timeouts
        under load removed the last caught-up member again and again until the shard
        stopped answering). A dead one is removed when its connection closes."""
        if self.quiet_ms(rid, now_ms) <= REPORT_TRUST_MS:
            return []
        if self._last_caught_up(rid):
            if rid not in self.kept_silent:
                self.kept_silent.add(rid)
                log.warning("replica %s reported failing but is its shard's last caught-up "
                            "member: kept", rid)
            return []
        return self.remove(rid)

    def _last_caught_up(self, rid: str) -> bool:
        chain = next((c for c in self.chains if rid in c), ())
        return rid in self.ready and not any(r in self.ready for r in chain if r != rid)

    def quiet_ms(self, rid: str, now_ms: float) -> float:
        return now_ms - self.last_seen.get(rid, -1e18)


class CoordinatorProcess:
    def __init__(self, data_dir: str, port: int = 0, host: str = "127.0.0.1",
                 shards: int = 1, replicas: int = 1, keys=None, ipc_dir: str | None = None):
        # keys (ClusterKeys or key file path): CURVE on both sockets, only the cluster's key
        # admitted (zactor/net/security.py); None keeps the loopback-only, keyless setup.
        # ipc_dir: bind ipc sockets there instead of TCP (a local session: no port at all)
        self.keys = keys_from(keys)
        os.makedirs(data_dir, exist_ok=True)
        conn = sqlite3.connect(os.path.join(data_dir, "coordinator.sqlite"),
                               isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db["state"].create({"name": str, "value": bytes}, pk="name", if_not_exists=True)
        row = self.db.execute("SELECT value FROM state WHERE name='config'").fetchone()
        saved = msgpack.unpackb(row[0], raw=False) if row else None
        if saved:
            shards, replicas = saved["num_shards"], saved["replicas_per_shard"]
        self.state = CoordinatorState(shards, replicas, saved)
        self.ctx = zmq.Context()
        self.auth = start_authenticator(self.ctx, self.keys)
        self.router = curve_server(make_socket(self.ctx, zmq.ROUTER), self.keys)
        self.addr = bind_endpoint(self.router, "gcs", host, port, ipc_dir)
        self.pub = curve_server(make_socket(self.ctx, zmq.PUB), self.keys)
        if ipc_dir is not None:  # a fixed name: a restart rebinds the same endpoint anyway
            self.pub_addr = bind_endpoint(self.pub, "gcs-pub", ipc_dir=ipc_dir)
        else:
            self.pub_addr = self._rebind_pub_port(host)
        self.peers: dict = {}  # replica id -> MonitoredPeer (death detection)
        self.running = True

    def _rebind_pub_port(self, host: str) -> str:
        """Rebind the PUB port of a previous run so subscribed clients reconnect by
        themselves; a new one if that port was taken meanwhile."""
        row = self.db.execute("SELECT value FROM state WHERE name='pub_port'").fetchone()
        try:
            addr = bind_endpoint(self.pub, "gcs-pub", host, int(row[0]) if row else 0)
        except zmq.ZMQError:
            addr = bind_endpoint(self.pub, "gcs-pub", host, 0)
        self.db.execute("INSERT OR REPLACE INTO state VALUES ('pub_port', ?)",
                        (int(addr.rsplit(":", 1)[1]),))
        return addr

    def _now_ms(self) -> float:
        return time.monotonic() * 1000.0

    def _persist(self) -> None:
        blob = msgpack.packb(self.state.saved(), use_bin_type=True)
        self.db.execute("INSERT OR REPLACE INTO state VALUES ('config', ?)", (blob,))

    def _config_body(self) -> dict:
        return {"shards": self.state.config(), "pub_addr": self.pub_addr}

    def _run_instructions(self, out: list) -> None:
        for ins in out:
            if isinstance(ins, Announce):
                self._persist()  # before anyone hears of it: a restart resumes from here
                self._sync_peers()
                body = self._config_body()
                frames = P.encode(P.CONFIG, body)
                self.pub.send_multipart([b"config"] + frames)
                for chain in self.state.chains:
                    for rid in chain:
                        self.router.send_multipart([rid.encode()] + frames)
            elif isinstance(ins, Tell):
                body = dict(self._config_body(), **ins.body)
                self.router.send_multipart([ins.replica_id.encode()] + P.encode(P.CONFIG, body))

    def _sync_peers(self) -> None:
        members = {r for c in self.state.chains for r in c}
        for rid in list(self.peers):
            if rid not in members:
                self.peers.pop(rid).close()
        for rid in members:
            addr = self.state.replicas[rid][0]
            peer = self.peers.get(rid)
            if peer is not None and peer.addr != addr:
                self.peers.pop(rid).close()
                peer = None
            if peer is None:
                self.peers[rid] = MonitoredPeer(self.ctx, addr, identity=b"coordinator",
                                                keys=self.keys)

    def _on_message(self, ident: bytes, frames: list) -> None:
        try:
            mtype, req_id = P.decode_header(frames[0]) if frames else (None, 0)
        except P.ProtocolError as exc:
            log.warning("dropping a malformed frame from %r: %s", ident, exc)
            return
        try:
            msg = P.decode(frames)
        except P.ProtocolError as exc:
            self.router.send_multipart([ident] + P.encode(
                P.ERROR, {"code": P.ERR_MALFORMED, "message": str(exc)}, req_id))
            return
        now = self._now_ms()
        name = msg.name
        try:
            if name == "REGISTER":
                rid = msg["replica_id"]
                if not isinstance(rid, str) or rid.encode() != ident:
                    raise P.ProtocolError("replica_id must match the sender's identity")
                self._run_instructions(self.state.register(
                    rid, str(msg["addr"]), str(msg["pub_addr"]), now, str(msg["incarnation"])))
            elif name == "HEARTBEAT":
                self._run_instructions(self.state.heartbeat(
                    str(msg["replica_id"]), now, bool(msg["ready"]), int(msg["epoch"])))
            elif name == "GET_CONFIG":
                self.router.send_multipart([ident] + P.encode(P.CONFIG, self._config_body(),
                                                              req_id))
            elif name == "REPORT_FAILURE":
                rid = str(msg["replica_id"])
                self._run_instructions(self.state.reported_failed(rid, now))
                self.router.send_multipart([ident] + P.encode(P.OK, {}, req_id))
            elif name == "PING":
                self.router.send_multipart([ident] + P.encode(P.PONG, {}, req_id))
            else:
                raise P.ProtocolError(f"the coordinator does not serve {name}")
        except (P.ProtocolError, KeyError, TypeError, ValueError) as exc:
            self.router.send_multipart([ident] + P.encode(
                P.ERROR, {"code": P.ERR_MALFORMED, "message": str(exc)}, req_id))

    def serve(self) -> None:
        self.state.start(self._now_ms())
        self._sync_peers()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        next_tick = 0.0
        while self.running:
            for peer in self.peers.values():
                poller.register(peer.monitor, zmq.POLLIN)
            events = dict(poller.poll(POLL_INTERVAL_MS))
            for peer in list(self.peers.values()):
                poller.unregister(peer.monitor)
            if self.router in events:
                for _ in range(1000):
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_message(frames[0], frames[1:])
            for rid, peer in list(self.peers.items()):
                # A removal closes the peers of the members it removes: skip those.
                if self.peers.get(rid) is peer and peer.poll_events():
                    log.warning("replica %s disconnected: removing it", rid)
                    self._run_instructions(self.state.remove(rid))
            now = self._now_ms()
            if now >= next_tick:
                next_tick = now + POLL_INTERVAL_MS
                self._run_instructions(self.state.tick(now))

    def close(self) -> None:
        for peer in self.peers.values():
            peer.close()
        self.router.close(0)
        self.pub.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        self.db.close()
