"""The IO thread of ``GcsClient``: every socket, every resend, every deadline.

Runs in a daemon thread of the process that made the client; only this thread touches the
sockets. Requests move: client queues -> ``inflight`` (sent, awaiting a reply) -> finished.
Ordering rule for writes: a shard's batches are (re)sent in request-id order, which is
client-sequence order, so a head that applied batch k has applied every batch before it and
the replicas' (cid, highest cseq) deduplication is exact.
"""

from __future__ import annotations

import collections
import logging
import time

import zmq

from zactor import protocol as P
from zactor.control.pubsub import SubscriberIO
from zactor.exceptions import ControlStoreError, ControlStoreUnavailableError
from zactor.net.liveness import CLIENT_ATTEMPT_TIMEOUT_MS, POLL_INTERVAL_MS
from zactor.net.security import curve_client
from zactor.net.sockets import make_socket

log = logging.getLogger(__name__)
RETRY_BACKOFF_S = 0.02
CALL_WINDOW = 256  # reads in flight per shard
CONFIG_REFRESH_S = 0.05
#: how long an idle client's loop sleeps between timer checks (100 wake-ups a second kept a
#: node manager's control-store thread at ~2% of a CPU while nothing happened)
IDLE_POLL_MS = 250
_RETRYABLE = (P.ERR_NOT_HEAD, P.ERR_NOT_TAIL, P.ERR_NOT_READY, P.ERR_OUT_OF_ORDER)


class ClientIO(SubscriberIO):
    def __init__(self, client):
        self.c = client
        ctx = client._ctx
        self.ident = b"c-" + client.cid.hex().encode()
        self.coord = curve_client(make_socket(ctx, zmq.DEALER, self.ident), client.keys)
        self.coord.connect(client.address)
        self.coord_sub = curve_client(make_socket(ctx, zmq.SUB), client.keys)
        self.coord_sub.setsockopt(zmq.SUBSCRIBE, b"config")
        self.coord_pub = None
        self.dealers: dict = {}                  # replica address -> DEALER
        # shard -> {req_id: batch}; keys are added and removed only under the client's lock
        # (``flush`` reads it from the caller's thread).
        self.writes = collections.defaultdict(collections.OrderedDict)
        self.write_shard: dict = {}              # req_id -> shard
        self.calls: dict = {}                    # req_id -> read request (sent)
        self.call_queue = collections.defaultdict(collections.deque)  # shard -> not yet sent
        self.calls_out = collections.Counter()   # shard -> how many are sent
        self.next_timers = 0.0
        self.subsocks: dict = {}                 # shard -> (pub address, SUB)
        self.heard: dict = {}                    # shard -> when its SUB last got anything
        self.feeds: dict = {}                    # (shard, table) -> Feed
        self.next_req = 1
        self.config_asked = 0.0
        self.config_unsent = False  # the last GET_CONFIG could not be queued: ask again
        self.attempt_s = CLIENT_ATTEMPT_TIMEOUT_MS / 1000.0
        self.sockets_changed = True

    # ---- configuration ----------------------------------------------------------------------
    def ask_config(self, now: float, force: bool = False) -> None:
        if force or now - self.config_asked > CONFIG_REFRESH_S:
            self.config_asked = now
            self.config_unsent = not _send(self.coord, P.encode(P.GET_CONFIG, {}))

    def _end(self, shard, which):
        """The head (``which`` 0) or the tail (-1: the last member that is not a learner
        still copying state, control/chain.py) of a shard's chain, or None."""
        shards = self.c._shards
        if shard >= len(shards) or not shards[shard][1]:
            return None
        members = shards[shard][1]
        if which == 0:
            return members[0]
        return next((m for m in reversed(members) if len(m) < 4 or m[3]), members[-1])

    def on_config(self, msg: P.Message, now: float) -> None:
        new = msg["shards"]
        old = self.c._shards
        log.debug("client: configuration %s", [(e, [m[0] for m in ms]) for e, ms in new])
        if msg["pub_addr"] and msg["pub_addr"] != self.coord_pub:
            if self.coord_pub:
                self.coord_sub.disconnect(self.coord_pub)
            self.coord_pub = msg["pub_addr"]
            self.coord_sub.connect(self.coord_pub)
        merged = []
        for s, shard in enumerate(new):
            merged.append(old[s] if s < len(old) and old[s][0] > shard[0] else shard)
        self.c._shards = merged
        for s in range(len(merged)):
            before = [m[:3] for m in (old[s][1] if s < len(old) else [])]
            after = [m[:3] for m in merged[s][1]]
            if before[:1] != after[:1]:
                self.resend_writes(s, now)
            # the tail is the last member that is not a learner (chain.py): a learner's
            # promotion moves it without changing the member list
            if _tail(old[s][1] if s < len(old) else []) != _tail(merged[s][1]):
                for req in self.calls.values():
                    if req.shard == s:
                        self.send_call(req, now)
                self.resubscribe(s, now)
        live = {m[1] for _e, members in merged for m in members}
        for addr in list(self.dealers):
            if addr not in live:
                self.dealers.pop(addr).close(0)
                self.sockets_changed = True
        self.c._have_config.set()

    def dealer(self, addr: str) -> zmq.Socket:
        sock = self.dealers.get(addr)
        if sock is None:
            sock = curve_client(make_socket(self.c._ctx, zmq.DEALER, self.ident), self.c.keys)
            sock.connect(addr)
            self.dealers[addr] = sock
            self.sockets_changed = True
        return sock

    # ---- sending ----------------------------------------------------------------------------
    def send_write(self, batch, now: float) -> None:
        batch.retry_at = now + self.attempt_s
        batch.refused = False
        head = self._end(batch.shard, 0)
        if head is None:
            self.ask_config(now)
            return
        batch.sent_to = head[0]
        _send(self.dealer(head[1]), P.encode(
            P.WRITE, {"cid": self.c.cid, "ops": batch.ops,
                      "epoch": self.c._shards[batch.shard][0]}, batch.req_id))

    def resend_writes(self, shard: int, now: float) -> None:
        for batch in list(self.writes.get(shard, {}).values()):
            self.send_write(batch, now)

    def send_call(self, req, now: float) -> None:
        req.retry_at = now + self.attempt_s
        req.refused = False
        tail = self._end(req.shard, -1)
        if tail is None:
            self.ask_config(now)
            return
        req.sent_to = tail[0]
        req.body["epoch"] = self.c._shards[req.shard][0]
        _send(self.dealer(tail[1]), P.encode(req.mtype, req.body, req.req_id))

    def new_call(self, req, now: float) -> None:
        req.req_id = self.next_req
        self.next_req += 1
        self.call_queue[req.shard].append(req)
        self.pump_calls(req.shard, now)

    def pump_calls(self, shard: int, now: float) -> None:
        """Send queued reads while fewer than CALL_WINDOW are out: a bounded queue at the
        tail, so an unanswered read after the attempt timeout means trouble, not a backlog."""
        queue = self.call_queue[shard]
        while queue and self.calls_out[shard] < CALL_WINDOW:
            req = queue.popleft()
            self.calls[req.req_id] = req
            self.calls_out[shard] += 1
            self.send_call(req, now)

    def _call_done(self, req, now: float) -> None:
        if self.calls.pop(req.req_id, None) is not None:
            self.calls_out[req.shard] -= 1
            self.pump_calls(req.shard, now)

    def take_work(self, now: float) -> None:
        c = self.c
        to_send = []
        with c._lock:
            calls, c._calls = c._calls, collections.deque()
            for shard in set(c._open) | {s for s, q in c._queued.items() if q}:
                inflight = self.writes[shard]
                queued = c._queued[shard]
                while len(inflight) < c.max_inflight:
                    batch = queued.popleft() if queued else c._open.pop(shard, None)
                    if batch is None:
                        break
                    batch.req_id = self.next_req
                    self.next_req += 1
                    inflight[batch.req_id] = batch
                    self.write_shard[batch.req_id] = shard
                    to_send.append(batch)
        for batch in to_send:
            self.send_write(batch, now)
        for req in calls:
            if isinstance(req, tuple):  # ("unsubscribe", sub)
                for feed in self.feeds.values():
                    if req[1] in feed.subs:
                        feed.subs.remove(req[1])
            else:
                self.new_call(req, now)

    def inflight_batches(self) -> list:  # called with the client's lock held
        return [b for d in self.writes.values() for b in d.values()]

    # ---- replies ----------------------------------------------------------------------------
    def on_reply(self, msg: P.Message, now: float) -> None:
        rid = msg.req_id
        shard = self.write_shard.get(rid)
        if shard is not None:
            batch = self.writes[shard].get(rid)
            if msg.name == "WRITE_ACK":
                with self.c._lock:
                    self.writes[shard].pop(rid, None)
                del self.write_shard[rid]
                batch.finish()
            elif msg.name == "ERROR":
                self.on_error(batch, msg, now, shard_retry=True)
            return
        req = self.calls.get(rid)
        if req is None:
            return  # a late answer to a request already finished
        if msg.name == "READ_REPLY":
            self._call_done(req, now)
            req.finish(msg.body)
            if req.on_result is not None:
                req.on_result(msg.body, None)
        elif msg.name == "ERROR":
            self.on_error(req, msg, now)

    def on_error(self, req, msg, now, shard_retry=False) -> None:
        if msg["code"] in _RETRYABLE:
            req.retry_at = now + RETRY_BACKOFF_S
            req.refused = True
            self.ask_config(now)
            return
        err = ControlStoreError(f"control store refused the request: {msg['code']}: "
                                f"{msg['message']}")
        self.fail(req, err)

    def fail(self, req, err) -> None:
        if req.ops is not None:
            with self.c._lock:
                self.writes[req.shard].pop(req.req_id, None)
            self.write_shard.pop(req.req_id, None)
        else:
            if self.calls.get(req.req_id) is req:
                self._call_done(req, time.monotonic())
            else:
                try:
                    self.call_queue[req.shard].remove(req)
                except ValueError:
                    pass
            if req.on_result is not None:
                req.on_result(None, err)
        req.finish(error=err)

    # ---- timers -----------------------------------------------------------------------------
    def on_timers(self, now: float) -> None:
        if now < self.next_timers:
            return
        self.next_timers = now + POLL_INTERVAL_MS / 1000.0
        for req in [r for q in self.call_queue.values() for r in q if now > r.deadline]:
            self.fail(req, ControlStoreUnavailableError(
                f"no answer to {req.mtype.name} from the control store before the deadline"))
        for shard, inflight in list(self.writes.items()):
            due = False
            for batch in list(inflight.values()):
                if now > batch.deadline:
                    # The caller hears of the timeout, but the batch stays in the window and
                    # is still resent: later batches' client seqs follow it, and a head
                    # applies a client's seqs only in order.
                    batch.finish(error=ControlStoreUnavailableError(
                        "no acknowledgement from the control store before the deadline"))
                if now >= batch.retry_at:
                    due = True
                    self.suspect(batch)
            if due:  # resend the whole shard window, in order
                self.ask_config(now)
                self.resend_writes(shard, now)
        for req in list(self.calls.values()):
            if now > req.deadline:
                self.fail(req, ControlStoreUnavailableError(
                    f"no answer to {req.mtype.name} from the control store before the deadline"))
            elif now >= req.retry_at:
                self.suspect(req)
                self.ask_config(now)
                self.send_call(req, now)

    def suspect(self, req) -> None:
        """An attempt timed out (not refused): tell the coordinator, which removes the
        replica if it has also stopped heartbeating (a client alone cannot tell slow from
        dead)."""
        if not req.refused and req.sent_to is not None:
            _send(self.coord, P.encode(P.REPORT_FAILURE, {
                "replica_id": req.sent_to, "reason": "client request timed out"}))

    # ---- the loop ---------------------------------------------------------------------------
    def busy(self) -> bool:
        """Anything whose deadline or retry the timers must watch (or work not taken yet).
        New work wakes the loop through ``_wake_rx``, replies and publications through their
        sockets, so an idle client need not check its timers every POLL_INTERVAL_MS."""
        c = self.c
        return bool(any(self.writes.values()) or self.calls or any(self.call_queue.values())
                    or self.config_unsent or not c._have_config.is_set() or c._open
                    or any(c._queued.values()) or c._calls)

    def run(self) -> None:
        c = self.c
        poller = None
        self.ask_config(time.monotonic(), force=True)
        while not c._closed:
            if self.sockets_changed or poller is None:
                poller = zmq.Poller()
                for sock in [c._wake_rx, self.coord, self.coord_sub, *self.dealers.values(),
                             *(s for _a, s in self.subsocks.values())]:
                    poller.register(sock, zmq.POLLIN)
                self.sockets_changed = False
            ready = dict(poller.poll(POLL_INTERVAL_MS if self.busy() else IDLE_POLL_MS))
            now = time.monotonic()
            if c._wake_rx in ready:
                while c._wake_rx.poll(0):
                    c._wake_rx.recv()
            for sock in (self.coord, self.coord_sub):
                if sock in ready:
                    for frames in _drain(sock):
                        try:
                            msg = P.decode(frames[1:] if sock is self.coord_sub else frames)
                        except P.ProtocolError as exc:
                            log.warning("bad frame from the coordinator: %s", exc)
                            continue
                        if msg.name == "CONFIG":
                            self.on_config(msg, now)
            for sock in list(self.dealers.values()):
                if sock in ready:
                    for frames in _drain(sock):
                        try:
                            self.on_reply(P.decode(frames), now)
                        except P.ProtocolError as exc:
                            log.warning("bad reply from a replica: %s", exc)
            for shard, (_addr, sock) in list(self.subsocks.items()):
                if sock in ready:
                    self.heard[shard] = now
                    for frames in _drain(sock, 20_000):
                        self.on_published(shard, frames, now)
            self.check_feeds(now)
            if c._have_config.is_set():
                self.take_work(now)
            self.on_timers(now)
            if self.config_unsent:
                self.ask_config(now)
        self._shutdown()

    def _shutdown(self) -> None:
        err = ControlStoreError("the GcsClient was closed")
        c = self.c
        with c._lock:
            pending = list(c._open.values()) + [b for q in c._queued.values() for b in q]
            pending += [r for r in c._calls if not isinstance(r, tuple)]
            c._open.clear()
            c._queued.clear()
        pending += self.inflight_batches() + list(self.calls.values())
        pending += [r for q in self.call_queue.values() for r in q]
        for req in pending:
            req.finish(error=err)
        for sock in [self.coord, self.coord_sub, *self.dealers.values(),
                     *(s for _a, s in self.subsocks.values())]:
            sock.close(0)


def _send(sock, frames: list) -> bool:
    """Queue a message without blocking; False if it could not be. A DEALER left with no
    connection to queue on blocks a plain send forever, and this thread and ``close`` with it:
    ZeroMQ drops the connection for good when the server refuses the handshake (a keyless
    client of a keyed store). Every send here is retried (request attempts on their timers,
    GET_CONFIG by ``config_unsent``), so one that cannot go now is simply not sent."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
        return True
    except zmq.Again:
        return False


def _drain(sock, limit: int = 5000):
    for _ in range(limit):
        try:
            yield sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return


def _tail(members):
    """A configuration's tail (its address triple), or None: the last member that is not a
    learner still copying state."""
    tail = next((m for m in reversed(members) if len(m) < 4 or m[3]),
                members[-1] if members else None)
    return None if tail is None else list(tail[:3])
