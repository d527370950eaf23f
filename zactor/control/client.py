"""``GcsClient``: how every zactor component reads, writes and watches the control store.

Runs in drivers, workers, schedulers and node managers. One background IO thread owns every
socket (pyzmq sockets are not thread-safe): a DEALER to the coordinator plus a SUB for its
configuration pushes, a DEALER per replica in use, a SUB per shard's tail for subscriptions.
Callers hand it work through lock-protected queues and an inproc wake-up socket.

Writes are batched and pipelined: ``put_async`` appends to the shard's open batch; the IO thread
sends a batch as soon as fewer than ``max_inflight`` are outstanding, so a lone write goes out
at once and a stream of writes packs itself into batches (one SQLite transaction each at every
replica). Each write carries (client id, per-shard sequence number) so a resend after a
failover is applied once. On a configuration change, an error reply (not head / not tail /
not ready) or an attempt timeout, the outstanding requests of that shard are resent, in order,
to the new head or tail. Every blocking call has ``timeout_s`` and raises
``ControlStoreUnavailableError`` when it passes; when the client closes, every waiter fails.
"""

from __future__ import annotations

import collections
import os
import threading
import time

import zmq

from zactor import protocol as P
from zactor.control.pubsub import Subscription
from zactor.control.schema import (
    OP_ARCHIVE,
    OP_DELETE,
    OP_PUT,
    OP_PUT_IF,
    check_table,
    key_bytes,
    shard_of,
)
from zactor.exceptions import ControlStoreError, ControlStoreUnavailableError
from zactor.net.liveness import CLIENT_DEFAULT_TIMEOUT_S
from zactor.net.security import keys_from
from zactor.net.sockets import endpoint, make_socket

READ_MANY_CHUNK = 1000


class _Request:
    """A write batch (``ops``) or a read call (``mtype``/``body``); completes once."""

    __slots__ = ("shard", "ops", "mtype", "body", "req_id", "deadline", "retry_at", "event",
                 "value", "error", "on_result", "done_at", "sent_to", "refused")

    def __init__(self, shard, deadline, ops=None, mtype=None, body=None, on_result=None):
        self.shard, self.ops, self.mtype, self.body = shard, ops, mtype, body
        self.deadline, self.retry_at, self.req_id = deadline, 0.0, 0
        self.event = threading.Event()
        self.value = self.error = self.done_at = self.sent_to = None
        self.refused = False  # the last attempt was answered with a retryable error
        self.on_result = on_result

    def finish(self, value=None, error=None) -> None:
        if not self.event.is_set():
            self.value, self.error = value, error
            self.done_at = time.monotonic()
            self.event.set()

    def wait(self, timeout_s):
        if not self.event.wait(timeout_s):
            raise ControlStoreUnavailableError(
                f"the control store did not answer within {timeout_s:.3g} s")
        if self.error is not None:
            raise self.error
        return self.value


class WriteFuture:
    """The outcome of one ``put_async``/``delete_async``: ``result(timeout_s)`` waits for the
    write to be logged by the tail of its chain."""

    __slots__ = ("_batch",)

    def __init__(self, batch: _Request):
        self._batch = batch

    def done(self) -> bool:
        return self._batch.event.is_set()

    @property
    def done_at(self):
        """``time.monotonic()`` when the write was acknowledged (or failed); None before."""
        return self._batch.done_at

    def result(self, timeout_s: float | None = CLIENT_DEFAULT_TIMEOUT_S) -> None:
        self._batch.wait(timeout_s)


class GcsClient:
    def __init__(self, address: str, timeout_s: float = CLIENT_DEFAULT_TIMEOUT_S,
                 max_batch: int = 2000, max_inflight: int = 4, keys=None):
        # keys (ClusterKeys or key file path): connect as a CURVE client of a keyed store
        self.keys = keys_from(keys)
        self.address = endpoint(address)  # host:port (TCP), tcp:// or ipc://
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.cid = os.urandom(12)
        self._lock = threading.Lock()
        self._open: dict = {}                          # shard -> batch being filled
        self._queued = collections.defaultdict(collections.deque)  # shard -> sealed batches
        self._calls: collections.deque = collections.deque()       # reads, subscriptions
        self._cseq = collections.defaultdict(int)
        self._shards: list = []                        # [[epoch, [[id, addr, pub], ...]], ...]
        self._have_config = threading.Event()
        self._closed = False
        self._ctx = zmq.Context()
        self._wake_addr = f"inproc://gcs-client-{id(self)}"
        self._wake_rx = make_socket(self._ctx, zmq.PAIR)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = make_socket(self._ctx, zmq.PAIR)
        self._wake_tx.connect(self._wake_addr)
        from zactor.control._client_io import ClientIO
        self._io = ClientIO(self)
        self._thread = threading.Thread(target=self._io.run, name="gcs-client-io", daemon=True)
        self._thread.start()

    @classmethod
    def connect(cls, address: str, timeout_s: float = CLIENT_DEFAULT_TIMEOUT_S,
                **kwargs) -> "GcsClient":
        """A client whose coordinator answered within ``timeout_s``."""
        client = cls(address, timeout_s=timeout_s, **kwargs)
        if not client._have_config.wait(timeout_s):
            client.close()
            hint = "" if client.keys is not None else (
                " (if that control store runs with cluster keys, pass keys=)")
            raise ControlStoreUnavailableError(
                f"no control-store coordinator answered at {address} within {timeout_s} s"
                f"{hint}")
        return client

    # ---- plumbing ---------------------------------------------------------------------------
    def _wake(self) -> None:  # caller holds self._lock
        try:
            self._wake_tx.send(b"", zmq.NOBLOCK)
        except zmq.Again:
            pass  # the IO thread has wake-ups queued already

    def _check_open(self) -> None:
        if self._closed:
            raise ControlStoreError("this GcsClient is closed")

    def _num_shards(self) -> int:
        if not self._have_config.wait(self.timeout_s):
            raise ControlStoreUnavailableError("no configuration from the coordinator yet")
        return len(self._shards)

    def _write(self, op: int, table: str, key, value) -> WriteFuture:
        check_table(table)
        key = key_bytes(key)
        raw = None if value is None and op != OP_PUT else P.pack_value(value)
        shard = shard_of(table, key, self._num_shards())
        with self._lock:
            self._check_open()
            batch = self._open.get(shard)
            if batch is None:
                batch = _Request(shard, time.monotonic() + self.timeout_s, ops=[])
                self._open[shard] = batch
                self._wake()
            self._cseq[shard] += 1
            batch.ops.append([self._cseq[shard], op, table, key, raw])
            if len(batch.ops) >= self.max_batch:
                self._queued[shard].append(self._open.pop(shard))
                self._wake()
        return WriteFuture(batch)

    def _call(self, shard, mtype, body, timeout_s, on_result=None) -> _Request:
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        req = _Request(shard, time.monotonic() + timeout_s, mtype=mtype, body=body,
                       on_result=on_result)
        with self._lock:
            self._check_open()
            self._calls.append(req)
            self._wake()
        return req

    # ---- writes -----------------------------------------------------------------------------
    def put_async(self, table: str, key, value) -> WriteFuture:
        """Queue a write of ``value`` (bytes or anything msgpack can hold) under (table, key)."""
        return self._write(OP_PUT, table, key, value)

    def delete_async(self, table: str, key) -> WriteFuture:
        return self._write(OP_DELETE, table, key, None)

    def archive_task_async(self, task_key, value=None) -> WriteFuture:
        """Move a finished task's lineage to the replicas' disk-only archive (still readable
        with ``get('tasks', key)``, no longer in the live table or its subscriptions); with
        ``value``, write that lineage straight to the archive (one write instead of two)."""
        return self._write(OP_ARCHIVE, "tasks", task_key, value)

    def put(self, table: str, key, value, timeout_s: float | None = None) -> None:
        self.put_async(table, key, value).result(self._t(timeout_s))

    def put_if(self, table: str, key, expect, value, timeout_s: float | None = None) -> bool:
        """Compare-and-set: write ``value`` only if the row's fields equal ``expect`` (a dict;
        None: only if there is no row). True when the row read back after the write is
        ``value``: this write won (give ``value`` something unique to the writer, so that two
        writers never put equal rows)."""
        deadline = time.monotonic() + self._t(timeout_s)
        self._write(OP_PUT_IF, table, key, {"expect": expect, "row": value}).result(
            max(0.0, deadline - time.monotonic()))
        now = self.get(table, key, timeout_s=max(0.1, deadline - time.monotonic()))
        return now == P.unpack_value(P.pack_value(value))

    def put_not_above_async(self, table: str, key, ceiling: dict, value) -> WriteFuture:
        """Queue a write of ``value`` that applies unless the row's fields in ``ceiling`` are
        already greater (a writer that must not undo a newer one, e.g. an actor row of a
        later incarnation)."""
        return self._write(OP_PUT_IF, table, key, {"not_above": ceiling, "row": value})

    def delete(self, table: str, key, timeout_s: float | None = None) -> None:
        self.delete_async(table, key).result(self._t(timeout_s))

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every write issued so far is acknowledged (or raise)."""
        deadline = time.monotonic() + self._t(timeout_s)
        with self._lock:
            pending = list(self._open.values())
            for q in self._queued.values():
                pending += q
            pending += self._io.inflight_batches()
        for batch in pending:
            batch.wait(max(0.0, deadline - time.monotonic()))

    def _t(self, timeout_s):
        return self.timeout_s if timeout_s is None else timeout_s

    # ---- reads ------------------------------------------------------------------------------
    def get(self, table: str, key, default=None, timeout_s: float | None = None):
        """The value under (table, key), or ``default``; served by the tail."""
        check_table(table)
        key = key_bytes(key)
        shard = shard_of(table, key, self._num_shards())
        reply = self._call(shard, P.READ, {"table": table, "key": key},
                           timeout_s).wait(self._t(timeout_s))
        return P.unpack_value(reply["value"]) if reply["found"] else default

    def get_many(self, table: str, keys, default=None, timeout_s: float | None = None) -> list:
        """Values of many keys (``default`` where absent): READ_MANY requests of up to
        READ_MANY_CHUNK keys per shard, all in flight at once."""
        check_table(table)
        deadline = time.monotonic() + self._t(timeout_s)
        n = self._num_shards()
        keys = [key_bytes(k) for k in keys]
        by_shard: dict = {}
        for i, key in enumerate(keys):
            by_shard.setdefault(shard_of(table, key, n), []).append(i)
        reqs = []
        for shard, idx in by_shard.items():
            for c in range(0, len(idx), READ_MANY_CHUNK):
                part = idx[c:c + READ_MANY_CHUNK]
                reqs.append((part, self._call(shard, P.READ_MANY, {
                    "table": table, "keys": [keys[i] for i in part]}, timeout_s)))
        out = [default] * len(keys)
        for part, req in reqs:
            rows = req.wait(max(0.0, deadline - time.monotonic()))["rows"]
            for i, raw in zip(part, rows):
                if raw is not None:
                    out[i] = P.unpack_value(raw)
        return out

    def scan(self, table: str, prefix=b"", limit: int = 0,
             timeout_s: float | None = None) -> list:
        """[(key, value)] of ``table`` whose key starts with ``prefix``, from every shard."""
        check_table(table)
        deadline = time.monotonic() + self._t(timeout_s)
        body = {"table": table, "prefix": key_bytes(prefix), "limit": limit}
        reqs = [self._call(s, P.SCAN, body, timeout_s) for s in range(self._num_shards())]
        rows = []
        for req in reqs:
            rows += req.wait(max(0.0, deadline - time.monotonic()))["rows"]
        rows.sort()
        rows = rows[:limit] if limit else rows
        return [(k, P.unpack_value(v)) for k, v in rows]

    def config(self) -> list:
        self._num_shards()
        return self._shards

    # ---- subscriptions ----------------------------------------------------------------------
    def subscribe(self, table: str, callback=None, prefix=b"",
                  timeout_s: float | None = None) -> Subscription:
        """Every update of ``table`` (keys starting with ``prefix``) committed after this call
        returns, exactly once and in order per shard; see ``pubsub.Subscription``."""
        check_table(table)
        sub = Subscription(self, table, key_bytes(prefix), callback)
        deadline = time.monotonic() + self._t(timeout_s)
        reqs = []
        for shard in range(self._num_shards()):
            def started(reply, error, shard=shard):
                if error is None:
                    self._io.add_subscription(shard, sub, reply["tseq"])
            reqs.append(self._call(shard, P.LOG_READ, {"table": table, "after": 0, "limit": 0},
                                   timeout_s, on_result=started))
        for req in reqs:
            req.wait(max(0.0, deadline - time.monotonic()))
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._calls.append(("unsubscribe", sub))
            if not self._closed:
                self._wake()

    def feeds(self) -> list:
        """Each (shard, table) feed's counters: for tests and monitoring."""
        return list(self._io.feeds.values())

    def close(self) -> None:
        """Stop the IO thread; every pending call fails with ``ControlStoreError``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake()
        self._thread.join()
        self._wake_tx.close(0)
        self._wake_rx.close(0)
        self._ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["GcsClient", "WriteFuture"]
