"""Subscriber side of the control store's pub-sub: gap detection and repair (the Clone pattern).

Runs inside ``GcsClient``'s IO thread. The tail publishes every committed update with its
per-table, per-shard sequence number ``tseq``, and a BEACON with each table's latest tseq every
heartbeat. ZeroMQ PUB/SUB may drop messages (a slow subscriber past its high-water mark, a
reconnect to a new tail), so delivery is never trusted: a ``Feed`` (one per shard and table)
delivers tseq ``last + 1`` only; any larger tseq, or a beacon ahead of ``last``, starts a
repair that re-reads the missing updates from the tail's log (LOG_READ); if the log was
compacted past that point, the table is re-read whole (SCAN) and delivered as ``resync`` puts.
So every update is delivered exactly once, in order, per shard and table.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any, NamedTuple

import zmq

from zactor import protocol as P
from zactor.control.schema import OP_ARCHIVE, OP_DELETE, OP_PUT, topic
from zactor.net.security import curve_client
from zactor.net.sockets import make_socket

log = logging.getLogger(__name__)

OP_NAMES = {OP_PUT: "put", OP_DELETE: "delete", OP_ARCHIVE: "archive"}
REPAIR_CHUNK = 10_000
#: a shard's tail publishes a BEACON every heartbeat (100 ms): a SUB that hears nothing this
#: long is on a tail that died or stopped being the tail, and the configuration push that
#: said so was lost (the coordinator's PUB drops, e.g. before the SUB's connection is up;
#: a client asks for the configuration itself only when a request fails)
FEED_SILENT_S = 1.0


class Update(NamedTuple):
    table: str
    key: bytes
    value: Any      # the stored value (None for delete)
    op: str         # "put", "delete", "archive"; after a gap the log no longer covers:
                    # "resync_begin" then "resync" for each current row of the shard
    shard: int
    tseq: int


class Subscription:
    """Updates of one table (optionally only keys starting with ``prefix``).

    With a ``callback`` each update is passed to it from the client's IO thread (keep it
    short); without one they are put on ``self.queue`` (a ``queue.Queue`` of ``Update``).
    """

    def __init__(self, client, table: str, prefix: bytes, callback=None):
        self._client = client
        self.table = table
        self.prefix = prefix
        self.callback = callback
        self.queue: queue.Queue = queue.Queue()
        self.closed = False

    def deliver(self, update: Update) -> None:
        if self.closed or not (update.key.startswith(self.prefix) or
                               update.op == "resync_begin"):
            return
        if self.callback is not None:
            self.callback(update)
        else:
            self.queue.put(update)

    def get(self, timeout_s: float | None = None) -> Update:
        """The next update; raises ``queue.Empty`` after ``timeout_s``."""
        return self.queue.get(timeout=timeout_s)

    def close(self) -> None:
        self.closed = True
        self._client._unsubscribe(self)


class Feed:
    """Ordering state of one (shard, table): what was delivered, whether a repair runs."""

    def __init__(self, shard: int, table: str):
        self.shard = shard
        self.table = table
        self.last: int | None = None   # None until the starting tseq is known
        self.repairing = False
        self.subs: list = []
        self.delivered = 0
        self.repairs = 0

    def _deliver(self, tseq, op_name, key, raw) -> None:
        value = None if raw is None else P.unpack_value(raw)
        update = Update(self.table, key, value, op_name, self.shard, tseq)
        self.delivered += 1
        for sub in self.subs:
            sub.deliver(update)

    def on_update(self, tseq: int, op: int, key: bytes, raw) -> bool:
        """An UPDATE arrived; returns True when a repair should start."""
        if self.last is None or self.repairing or tseq <= self.last:
            return False
        if tseq != self.last + 1:
            return True
        self.last = tseq
        self._deliver(tseq, OP_NAMES.get(op, "put"), key, raw)
        return False

    def on_beacon(self, tseq: int) -> bool:
        return self.last is not None and not self.repairing and tseq > self.last

    def on_log_rows(self, rows: list, limit: int) -> bool:
        """Rows from LOG_READ; returns True when more must be read."""
        for tseq, op, key, raw in rows:
            if tseq == self.last + 1:
                self.last = tseq
                self._deliver(tseq, OP_NAMES.get(op, "put"), key, raw)
        return len(rows) >= limit

    def on_resync(self, rows: list, tseq: int) -> None:
        """The table re-read whole: a ``resync_begin`` marker (key b"", so every prefix
        matches: a mirror should drop this shard's keys), then every row as ``resync``."""
        self._deliver(tseq, "resync_begin", b"", None)
        for key, raw in rows:
            self._deliver(tseq, "resync", key, raw)
        self.last = tseq


class SubscriberIO:
    """The subscription half of the client's IO thread (mixed into ``ClientIO``): one SUB
    socket per shard on its tail, the feeds, and their repairs. Runs in that thread only."""

    def add_subscription(self, shard: int, sub, tseq: int) -> None:
        feed = self.feeds.get((shard, sub.table))
        if feed is None:
            feed = self.feeds[(shard, sub.table)] = Feed(shard, sub.table)
            feed.last = tseq
            self.resubscribe(shard, time.monotonic(), repair=False)
        feed.subs.append(sub)

    def resubscribe(self, shard: int, now: float, repair: bool = True) -> None:
        """(Re)connect the shard's SUB to its tail; with ``repair``, re-read what may be lost."""
        tables = [t for (s, t) in self.feeds if s == shard]
        if not tables:
            return
        tail = self._end(shard, -1)
        current = self.subsocks.get(shard)
        if tail is not None and (current is None or current[0] != tail[2]):
            if current is not None:
                current[1].close(0)
            sock = curve_client(make_socket(self.c._ctx, zmq.SUB, hwm=1_000_000), self.c.keys)
            sock.connect(tail[2])
            self.subsocks[shard] = (tail[2], sock)
            self.heard[shard] = now
            self.sockets_changed = True
        if shard in self.subsocks:
            for table in tables:
                self.subsocks[shard][1].setsockopt(zmq.SUBSCRIBE, topic(table))
        if repair:
            for table in tables:
                self.repair(self.feeds[(shard, table)], now)

    def check_feeds(self, now: float) -> None:
        """A silent feed (FEED_SILENT_S): ask for the configuration and re-read what may be
        lost. The repair goes to the tail we know; a stale one refuses it or does not answer,
        and either way the request is retried once the new configuration has moved it (and
        ``on_config`` has moved the SUB). Without this a node manager's view of the nodes
        stayed without a node that joined right after a learner's promotion, for good."""
        for shard in list(self.subsocks):
            if now - self.heard.get(shard, now) <= FEED_SILENT_S:
                continue
            self.heard[shard] = now
            log.info("control store: no publication from shard %d's tail for %.1f s: asking "
                     "for the configuration", shard, FEED_SILENT_S)
            self.ask_config(now, force=True)
            for (s, _table), feed in list(self.feeds.items()):
                if s == shard:
                    self.repair(feed, now)

    def repair(self, feed: Feed, now: float) -> None:
        if feed.repairing or feed.last is None:
            return
        feed.repairing = True
        feed.repairs += 1

        def on_rows(reply, error):
            if error is not None:
                feed.repairing = False
                if P.ERR_LOG_TRUNCATED in str(error):
                    self.resync(feed, time.monotonic())
                return
            more = feed.on_log_rows(reply["rows"], REPAIR_CHUNK)
            feed.repairing = False
            if more:
                self.repair(feed, time.monotonic())

        self.internal_call(feed.shard, P.LOG_READ, {"table": feed.table, "after": feed.last,
                                                    "limit": REPAIR_CHUNK}, on_rows, now)

    def resync(self, feed: Feed, now: float) -> None:
        feed.repairing = True

        def on_rows(reply, error):
            feed.repairing = False
            if error is None:
                feed.on_resync(reply["rows"], reply["tseq"])

        self.internal_call(feed.shard, P.SCAN, {"table": feed.table, "prefix": b"", "limit": 0},
                           on_rows, now)

    def internal_call(self, shard, mtype, body, on_result, now) -> None:
        from zactor.control.client import _Request
        self.new_call(_Request(shard, now + self.c.timeout_s, mtype=mtype, body=body,
                               on_result=on_result), now)

    def on_published(self, shard: int, frames: list, now: float) -> None:
        try:
            msg = P.decode(frames[1:])
            feed = self.feeds.get((shard, msg["table"]))
            if feed is None:
                return
            if msg.name == "UPDATE":
                gap = False
                for tseq, op, key, raw in msg["updates"]:
                    gap = feed.on_update(tseq, op, key, raw) or gap
                    if gap:
                        break
            else:
                gap = feed.on_beacon(msg["tseq"])
        except (P.ProtocolError, KeyError, TypeError, ValueError) as exc:
            log.warning("dropping a bad notification: %s", exc)
            return
        if gap:
            self.repair(feed, now)
