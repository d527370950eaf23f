"""One chain replica as a sans-IO state machine: ``handle(event) -> [instruction, ...]``.

Run inside each replica process (``replica.py`` is the thin ZeroMQ loop around it) and, with an
in-memory store, by the property tests. No sockets, no clocks: events come in, instructions
(messages to send, notifications to publish) come out, and the only side effect is on the
store it is given (``SqliteLogStore`` or ``MemoryLogStore``, same interface).

Chain replication (van Renesse & Schneider, OSDI 2004), as done here:

* The head gives each write a sequence number ``seq`` (and a per-table ``tseq`` for
  subscribers), logs it (one store transaction per client batch), and forwards it to its
  successor; each replica logs and forwards in turn. The tail, having logged, sends ``ACK upto``
  back up the chain; the head answers the client once ``acked >= seq``. So an acknowledged write
  is logged at every replica, and every replica's log is a prefix of its predecessor's.
* Idempotence: each write carries (cid, cseq), cseqs numbered 1, 2, ... per client and shard;
  ``dedup`` keeps a client's highest cseq and the seq it got. The head applies a client's
  cseqs only in order (a batch that would skip one is refused with ``out_of_order`` and the
  client resends its window), so the applied set is exactly 1..highest and a retried write
  with cseq <= highest is known applied: it is answered once the original is acknowledged.
* Reconfiguration (from the coordinator, with a larger ``epoch``): a replica with a new
  predecessor sends it ``NEED_FROM(last_seq)``; the predecessor resends its log after that seq
  (or a snapshot when the log was compacted that far) and only then forwards new writes. This
  one rule covers a removed middle (the successor may lack what the dead one had), a new tail
  (a joiner copies state) and a restarted chain. A replica that becomes the tail acknowledges
  everything it has. Messages tagged with a future epoch are kept until that epoch's
  configuration arrives; messages of an old epoch are dropped.
* Reads are served by the tail, once it has caught up (a joiner answers ``not_ready`` until
  then).
* Joiners are *learners* until caught up: the coordinator appends a joiner after the tail and
  names it in ``Configure.learners``; the last member that is not a learner stays the tail
  (it acknowledges writes, publishes them, serves reads) and also forwards to the learner. So
  copying a large state to a joiner never holds up writes (it did: a joiner that was the
  tail acknowledged nothing before it had the whole log). Once the learner reports being
  caught up, the coordinator announces a new epoch without it among the learners, and it
  becomes the tail. An acknowledged write is thus logged at every member that is not a
  learner; a shard left with learners only has lost its state (coordinator.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zactor import protocol as P
from zactor.control.log_store import OP_ARCHIVE, LogTruncated
from zactor.control.schema import OP_DELETE, OP_PUT, OP_PUT_IF, TABLES

CATCHUP_CHUNK = 5000  # log entries per FORWARD while a successor catches up
EARLY_MAX = 10_000    # peer messages of a future epoch kept until its configuration arrives


# ---- events (each carries who caused it: a client routing id + request id, or a replica) -----
@dataclass
class ClientWrite:
    client: bytes
    req_id: int
    cid: bytes
    ops: list  # [[cseq, op, table, key, value], ...]
    epoch: int = 0  # the client's view of the shard's epoch


@dataclass
class ClientWrites:  # several client batches handled as one (one store transaction)
    writes: list


@dataclass
class ClientRead:
    client: bytes
    req_id: int
    msg: P.Message  # READ, SCAN or LOG_READ


@dataclass
class PeerMessage:
    sender: str  # replica id
    msg: P.Message  # FORWARD, ACK, NEED_FROM or SNAPSHOT


@dataclass
class Configure:
    epoch: int
    chain: list  # replica ids, head first
    learners: frozenset = frozenset()  # members still copying state (a suffix of ``chain``)


# ---- instructions --------------------------------------------------------------------------
@dataclass
class Send:
    to: str
    mtype: P.MessageType
    body: dict


@dataclass
class Reply:
    client: bytes
    req_id: int
    mtype: P.MessageType
    body: dict


@dataclass
class Publish:
    entries: list = field(default_factory=list)


def _valid_op(op) -> bool:
    return (isinstance(op, list) and len(op) == 5 and isinstance(op[0], int)
            and op[1] in (OP_PUT, OP_DELETE, OP_ARCHIVE, OP_PUT_IF) and op[2] in TABLES
            and isinstance(op[3], bytes) and (op[4] is None or isinstance(op[4], bytes)))


def _condition_holds(wanted: dict, now) -> bool:
    """OP_PUT_IF's conditions on the current row ``now`` (None: no row): ``expect``, fields
    equal (None: no row); ``not_above``, fields not greater (no row, or a row that is not a
    map, passes: a write that must not undo a newer one)."""
    if "expect" in wanted:
        expect = wanted["expect"]
        if expect is None and now is not None:
            return False
        if expect is not None and not (isinstance(now, dict) and all(
                now.get(k) == v for k, v in expect.items())):
            return False
    ceiling = wanted.get("not_above") or {}
    return not isinstance(now, dict) or all(
        not isinstance(now.get(k), (int, float)) or now.get(k) <= v for k, v in ceiling.items())


class ChainReplica:
    """The replica state machine. ``store`` is its log store; ``me`` its replica id."""

    def __init__(self, me: str, store):
        self.me = me
        self.store = store
        self.epoch = 0
        self.chain: list = []
        self.pred = self.succ = None
        self.tail = None            # the last member that is not a learner
        self.acked = 0              # every entry <= acked is logged at the tail
        self.succ_synced = False    # the successor told us where to resume (NEED_FROM)
        self.ready = False          # caught up: may serve reads as tail
        self.catchup_target = None
        self.pending_replies: list = []  # [(seq, client, req_id, upto_cseq)], seq ascending
        self._dedup_cache: dict = {}
        self._early: list = []      # peer messages of a future epoch
        self._parked: list = []     # client requests of a future epoch

    @property
    def is_head(self) -> bool:
        return bool(self.chain) and self.chain[0] == self.me

    @property
    def is_tail(self) -> bool:
        """The member that acknowledges, publishes and serves reads (learners follow it)."""
        return self.tail is not None and self.tail == self.me

    @property
    def _acks(self) -> bool:
        """Whether writes count as acknowledged once logged here: at the tail, and at the
        chain's last member (a learner's ACKs up to the tail change nothing there)."""
        return self.succ is None or self.is_tail

    def handle(self, event) -> list:
        if isinstance(event, ClientWrite):
            event = ClientWrites([event])
        if isinstance(event, ClientWrites):
            writes = [w for w in event.writes if not self._park(w, w.epoch)]
            return self._on_writes(writes) if writes else []
        if isinstance(event, ClientRead):
            if self._park(event, event.msg.get("epoch", 0)):
                return []
            return self._on_read(event)
        if isinstance(event, PeerMessage):
            return self._on_peer(event)
        if isinstance(event, Configure):
            return self._on_configure(event)
        raise TypeError(f"unknown event {event!r}")

    def _park(self, event, epoch) -> bool:
        """A client that already knows a newer configuration than ours: hold its request
        until ours arrives (answering not_head/not_tail now would only make it retry)."""
        if not isinstance(epoch, int) or epoch <= self.epoch:
            return False
        if len(self._parked) < EARLY_MAX:
            self._parked.append(event)
        return True

    # ---- configuration ----------------------------------------------------------------------
    def _on_configure(self, ev: Configure) -> list:
        if ev.epoch <= self.epoch:
            return []
        out: list = []
        old_pred, was_member, was_tail = self.pred, self.me in self.chain, self.is_tail
        self.epoch, self.chain = ev.epoch, list(ev.chain)
        self.tail = next((r for r in reversed(self.chain) if r not in ev.learners),
                         self.chain[-1] if self.chain else None)
        self._dedup_cache.clear()
        if self.me not in self.chain:
            self.pred = self.succ = None
            self.pending_replies.clear()
            parked, self._parked = self._parked, []
            for event in parked:
                out += self.handle(event)  # answered not_head / not_tail: clients move on
            return out
        i = self.chain.index(self.me)
        self.pred = self.chain[i - 1] if i > 0 else None
        self.succ = self.chain[i + 1] if i + 1 < len(self.chain) else None
        self.succ_synced = False
        if self.pred is None:
            self.ready = True  # a head needs nobody's state
        elif not was_member or (self.is_tail and not was_tail):
            # a joiner, or a learner promoted to tail: the old tail acknowledged writes this
            # one may not have yet; it serves reads once its predecessor's sync says it has
            # them all (else a read right after the promotion could miss an acknowledged
            # write: a placement group created a moment before was "not found" in CI)
            self.ready = False
            self.catchup_target = None
        if self.pred is not None:
            out.append(Send(self.pred, P.NEED_FROM,
                            {"epoch": self.epoch, "last_seq": self.store.last_seq}))
        if self._acks:
            self.acked = self.store.last_seq
            out += self._ack_upward()
        if old_pred is not None and self.pred is None:
            self.pending_replies.clear()  # a new head: clients retry at it
        early, self._early = self._early, []
        for msg in early:
            if msg.msg["epoch"] == self.epoch:
                out += self._on_peer(msg)
            elif msg.msg["epoch"] > self.epoch:
                self._early.append(msg)
        parked, self._parked = self._parked, []
        for event in parked:
            out += self.handle(event)  # parks again if still ahead of us
        return out

    # ---- writes -----------------------------------------------------------------------------
    def _dedup(self, cid: bytes):
        hit = self._dedup_cache.get(cid)
        if hit is None:
            hit = self.store.dedup(cid) or (0, 0)
            self._dedup_cache[cid] = hit
        return hit

    def _on_writes(self, writes: list) -> list:
        """Client batches drained together: one store transaction for all of them."""
        out: list = []
        entries: list = []
        waiting: list = []
        seq = self.store.last_seq
        tseqs = dict(self.store.tseqs)
        for ev in writes:
            refusal, seq, reply_seq, upto = self._admit(ev, seq, tseqs, entries)
            if refusal is not None:
                out.append(refusal)
            else:
                waiting.append((reply_seq, ev.client, ev.req_id, upto))
        try:
            out += self._log_and_pass(entries)
        except BaseException:
            self._dedup_cache.clear()  # it counted these entries as applied: forget it
            raise
        for item in waiting:  # after logging: at a lone replica the entries are acked now
            if item[0] <= self.acked:
                out.append(Reply(item[1], item[2], P.WRITE_ACK, {"upto": item[3]}))
            else:
                self.pending_replies.append(item)
        return out

    def _admit(self, ev: ClientWrite, seq: int, tseqs: dict, entries: list):
        """Check one client batch and number its new ops (appended to ``entries``).
        Returns (refusal reply or None, last seq used, seq to wait for, highest cseq)."""
        def refuse(code, text):
            return Reply(ev.client, ev.req_id, P.ERROR,
                         {"code": code, "message": text, "epoch": self.epoch}), seq, 0, 0

        if not self.is_head:
            return refuse(P.ERR_NOT_HEAD, f"{self.me} is not the head")
        if not isinstance(ev.cid, bytes) or not isinstance(ev.ops, list) or not all(
                _valid_op(op) for op in ev.ops):
            return refuse(P.ERR_MALFORMED, "bad WRITE ops")
        cseq_seen, seq_seen = self._dedup(ev.cid)
        fresh = [op[0] for op in ev.ops if op[0] > cseq_seen]
        if fresh and (fresh[0] != cseq_seen + 1 or fresh != list(range(fresh[0],
                                                                     fresh[-1] + 1))):
            # A client's applied seqs are always exactly 1..cseq_seen, so "seen" means
            # "applied"; a batch that would leave a hole (an earlier batch refused or lost
            # on the way) is refused whole, and the client resends its window in order.
            return refuse(P.ERR_OUT_OF_ORDER, f"expected client seq {cseq_seen + 1}")
        reply_seq = 0
        upto = 0
        for cseq, op, table, key, value in ev.ops:
            upto = max(upto, cseq)
            if cseq <= cseq_seen:
                reply_seq = max(reply_seq, seq_seen)  # a retry: answered with the original
                continue
            if op == OP_PUT_IF:
                op, value = self._decide_put_if(table, key, value, entries)
            seq += 1
            tseqs[table] += 1
            entries.append([seq, ev.cid, cseq, op, table, key, value, tseqs[table]])
            cseq_seen, seq_seen = cseq, seq
            reply_seq = seq
        self._dedup_cache[ev.cid] = (cseq_seen, seq_seen)
        return None, seq, reply_seq, upto

    def _decide_put_if(self, table: str, key: bytes, raw: bytes, entries: list):
        """A conditional put, decided here at the head against the row as it stands after
        every write numbered before it (this batch's included): the new row if the expected
        fields match, else the current row unchanged. Downstream sees an ordinary op, so every
        replica applies the same outcome."""
        current = next((e[6] for e in reversed(entries) if e[4] == table and e[5] == key),
                       self.store.get(table, key))
        try:
            wanted = P.unpack_value(raw)
            row = wanted["row"]
            now = None if current is None else P.unpack_value(current)
            holds = _condition_holds(wanted, now)
        except Exception:  # noqa: BLE001 - a malformed condition never applies
            row, holds = None, False
        if holds and row is not None:
            return OP_PUT, P.pack_value(row)
        return (OP_DELETE, None) if current is None else (OP_PUT, current)

    def _log_and_pass(self, entries: list) -> list:
        """Log entries (contiguous after last_seq), then forward them or, at the tail, ack."""
        if not entries:
            return []
        self.store.append(entries)
        out: list = []
        if self._acks:
            self.acked = self.store.last_seq
            out = [Publish(entries)] + self._ack_upward()
        if self.succ is not None and self.succ_synced:  # (else sent from the log once the
            # successor says where it stands)
            out.append(Send(self.succ, P.FORWARD, {"epoch": self.epoch, "entries": entries}))
        return out

    def _ack_upward(self) -> list:
        if self.pred is not None:
            return [Send(self.pred, P.ACK, {"epoch": self.epoch, "upto": self.acked})]
        out = []
        keep = []
        for item in self.pending_replies:
            if item[0] <= self.acked:
                out.append(Reply(item[1], item[2], P.WRITE_ACK, {"upto": item[3]}))
            else:
                keep.append(item)
        self.pending_replies = keep
        return out

    # ---- peers ------------------------------------------------------------------------------
    def _on_peer(self, ev: PeerMessage) -> list:
        msg = ev.msg
        epoch = msg.get("epoch")
        if not isinstance(epoch, int) or epoch < self.epoch:
            return []
        if epoch > self.epoch:
            if len(self._early) < EARLY_MAX:  # bounded: a bogus epoch cannot fill memory
                self._early.append(ev)
            return []
        name = msg.name
        if name == "FORWARD" and ev.sender == self.pred:
            return self._on_forward(msg)
        if name == "ACK" and ev.sender == self.succ:
            upto = msg["upto"]
            if isinstance(upto, int) and upto > self.acked:
                self.acked = min(upto, self.store.last_seq)
                return self._ack_upward()
            return []
        if name == "NEED_FROM" and ev.sender == self.succ:
            return self._on_need_from(msg["last_seq"])
        if name == "SNAPSHOT" and ev.sender == self.pred:
            self.store.install_snapshot(msg.body)
            self._dedup_cache.clear()
            out = []
            if self._acks:
                self.acked = self.store.last_seq
                out += self._ack_upward()
            if self.succ is not None and self.succ_synced:
                # our state changed wholesale: so must the successor's
                out.append(Send(self.succ, P.SNAPSHOT,
                                dict(self.store.snapshot(), epoch=self.epoch)))
            return out + self._check_ready()
        return []

    def _on_forward(self, msg: P.Message) -> list:
        sync = msg.get("sync")
        if isinstance(sync, int):
            self.catchup_target = sync
        last = self.store.last_seq
        entries = [e for e in msg["entries"] if e[0] > last]
        out: list = []
        if entries and entries[0][0] == last + 1:
            out = self._log_and_pass(entries)
        elif entries:  # a hole: should not happen on a FIFO link; ask again
            out = [Send(self.pred, P.NEED_FROM, {"epoch": self.epoch, "last_seq": last})]
        return out + self._check_ready()

    def _check_ready(self) -> list:
        if not self.ready and self.catchup_target is not None and \
                self.store.last_seq >= self.catchup_target:
            self.ready = True
            if self.succ is None:  # caught up as tail: acknowledge it all
                self.acked = self.store.last_seq
                return self._ack_upward()
            if self.succ_synced:  # the successor may now count itself caught up too
                return [Send(self.succ, P.FORWARD, {"epoch": self.epoch, "entries": [],
                                                    "sync": self.store.last_seq})]
        return []

    def _on_need_from(self, last_seq) -> list:
        if not isinstance(last_seq, int):
            return []
        out: list = []
        mine = self.store.last_seq
        try:
            after = last_seq
            while True:
                chunk = self.store.read_log(after, CATCHUP_CHUNK)
                if not chunk:
                    break
                out.append(Send(self.succ, P.FORWARD, {"epoch": self.epoch, "entries": chunk}))
                after = chunk[-1][0]
        except LogTruncated:
            snap = self.store.snapshot()
            out = [Send(self.succ, P.SNAPSHOT, dict(snap, epoch=self.epoch))]
        if self.ready:  # a successor is caught up when it has what a caught-up replica has
            out.append(Send(self.succ, P.FORWARD, {"epoch": self.epoch, "entries": [],
                                                   "sync": mine}))
        self.succ_synced = True
        return out

    # ---- reads ------------------------------------------------------------------------------
    def _on_read(self, ev: ClientRead) -> list:
        def error(code, text):
            return [Reply(ev.client, ev.req_id, P.ERROR,
                          {"code": code, "message": text, "epoch": self.epoch})]

        if not self.is_tail:
            return error(P.ERR_NOT_TAIL, f"{self.me} is not the tail")
        if not self.ready:
            return error(P.ERR_NOT_READY, f"{self.me} is still copying state")
        msg = ev.msg
        table = msg["table"]
        if table not in TABLES:
            return error(P.ERR_MALFORMED, f"unknown table {table!r}")
        tseq = self.store.tseqs[table]
        try:
            if msg.name == "READ":
                if not isinstance(msg["key"], bytes):
                    return error(P.ERR_MALFORMED, "key must be bytes")
                value = self.store.get(table, msg["key"])
                body = {"value": value, "found": value is not None, "tseq": tseq}
            elif msg.name == "READ_MANY":
                keys = msg["keys"]
                if not isinstance(keys, list) or not all(isinstance(k, bytes) for k in keys):
                    return error(P.ERR_MALFORMED, "keys must be a list of bytes")
                body = {"rows": [self.store.get(table, k) for k in keys], "tseq": tseq}
            elif msg.name == "SCAN":
                prefix, limit = msg["prefix"], msg["limit"]
                if not isinstance(prefix, bytes) or not isinstance(limit, int):
                    return error(P.ERR_MALFORMED, "prefix must be bytes, limit an int")
                body = {"rows": self.store.scan(table, prefix, limit), "tseq": tseq}
            else:
                after, limit = msg["after"], msg["limit"]
                if not isinstance(after, int) or not isinstance(limit, int):
                    return error(P.ERR_MALFORMED, "after and limit must be ints")
                rows = self.store.read_table_log(table, after, limit) if limit > 0 else []
                body = {"rows": rows, "tseq": tseq}
        except LogTruncated:
            return error(P.ERR_LOG_TRUNCATED, "the log was compacted past that point")
        return [Reply(ev.client, ev.req_id, P.READ_REPLY, body)]

    def compaction_bound(self, keep_entries: int) -> int:
        """The highest seq that may be compacted away: acknowledged everywhere (so no
        successor can need it) and older than the newest ``keep_entries``."""
        return min(self.acked, self.store.last_seq - keep_entries)
