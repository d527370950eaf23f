"""The core client: one per process (the driver, each worker), its link to the node manager.

It submits tasks, creates objects (``put``), resolves ObjectRefs (``get``/``wait``) and keeps
the process's reference counts. It owns one DEALER socket to its node manager (and the direct
paths' Unix sockets, net/stream.py). Calls run in the caller's thread
under one lock; messages that arrive meanwhile wait in ZeroMQ's queue until a call reads them.

Batching. A message costs a send, thread wake-ups and a decode in two processes (a bare ZeroMQ
round trip between two Python processes: ``python -m zactor.benchmarks.transport``), so the
per-task path sends as little as it can: submitted tasks and reference changes are buffered
and go out together as one SUBMIT, when the caller blocks (``get``/``wait``), when the buffer
is full, or at the latest when the background flusher wakes (it is woken by the first buffered
task, and otherwise every ``FLUSH_INTERVAL_S`` for dropped references).

Reference counting. Each ObjectRef created or destroyed appends an event to a deque (safe from
``__del__`` in any thread). Events are folded into per-object counts; the 0 -> 1 and 1 -> 0
transitions are what the node manager hears (``deltas``). The node manager applies a SUBMIT's
+1s, then its tasks, then its -1s: moving increments earlier and decrements later can only
keep an object alive longer, never free it early, so batching cannot lose an object that a
task in the same batch needs. The refs a process gets from its own ``put`` and from the
returns of its own tasks are counted by the node manager when it receives the PUT / SUBMIT,
so they start at 1 here without a delta.

Results of tasks this process submitted are pushed to it by the node manager; objects it only
borrowed (refs that arrived inside values or arguments) are asked for with SUBSCRIBE.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque

import zmq

from zactor import protocol
from zactor.exceptions import (
    GetTimeoutError,
    LocalRayletDiedError,
    RaySystemError,
)
from zactor.ids import JobID, ObjectID, TaskID
from zactor.net.fd_poller import FdPoller
from zactor.net.frames import has_input, recv_frames, send_frames
from zactor.net.sockets import make_socket
from zactor.net.stream import StreamSet
from zactor.object_ref import ObjectRef
from zactor.runtime import messages as m
from zactor.runtime import output_relay
from zactor.runtime.client_lock import ClientLock
from zactor.runtime.client_values import ClientValues
from zactor.runtime.client_wait import ClientWaits
from zactor.runtime.direct import DirectCalls
from zactor.store import ObjectStore

# Task ids need uniqueness, not secrecy: a seeded generator is ~100x cheaper than urandom
# here. Forked children (workers) must not share the parent's sequence, hence the re-seed.
_fast_random = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _fast_random.seed(os.urandom(16)))

DEFAULT_INLINE_THRESHOLD_BYTES = m.DEFAULT_INLINE_THRESHOLD_BYTES
CONNECT_TIMEOUT_S = 30.0
FLUSH_INTERVAL_S = 0.1
BATCH_DELAY_S = 0.0005
#: how long a direct call's or task's record may wait for later ones while the caller waits
#: for results (flush(lazy=True)): a synchronous loop then sends the node manager one SUBMIT
#: per few calls instead of one per call (the record is off the critical path: direct.py)
RECORD_DELAY_S = 0.005
SUBMIT_BATCH_MAX = 512
#: results the node manager settles (retry, stray interrupt) are not sent straight back
_NM_DECIDES = m.TASK_RETRYABLE | m.TASK_CANCELLED


class CoreClient(ClientValues, ClientWaits):
    def __init__(self, node_address: str, kind: str, *, worker_id: bytes = b"",
                 job_id: int = 0, timeout_s: float = CONNECT_TIMEOUT_S, liveness=None,
                 direct_address: str = ""):
        self.kind = kind
        #: () -> None while the node manager lives, else its exit status (a driver's check)
        self._liveness = liveness
        self._dead_reason = None
        self.worker_id = worker_id
        self._lock = ClientLock()
        self._ctx = zmq.Context()
        self._sock = make_socket(self._ctx, zmq.DEALER, hwm=0)
        self._sock.connect(node_address)
        self._ref_events: deque = deque()
        self._refs: dict = {}
        self._deltas: list = []
        self._submits: list = []
        self._nm_submits = 0  # of those, tasks the node manager must act on (not records)
        self._records_since = 0.0  # when the oldest direct record among them was made
        self._puts: list = []
        self._functions: list = []
        self._arg_objects: dict = {}  # objects made for the next task's arguments (put_arg)
        # finished tasks' reports with what they keep alive, appended by any thread (the
        # threads and event loop of a concurrent actor too: deque appends need no lock)
        self._done: deque = deque()
        # reports of direct calls and tasks whose callers have their results already, held
        # for up to RECORD_DELAY_S so that one TASK_DONE carries several (see flush)
        self._held: list = []
        self._held_since = 0.0
        #: lines a worker's tasks printed, for their driver (output_relay.py), any thread
        self.output: deque = deque()
        self.output_dropped = 0
        # other threads wake the thread blocked in pump() through this pipe
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # plain descriptors, the DEALER by its ZMQ_FD (net/fd_poller.py says why and what
        # that asks of pump): True while a message may wait on the DEALER unannounced
        self._poller = FdPoller()
        self._zmq_unchecked = True
        self._results: dict = {}
        self._arrivals: dict = {}  # id -> _Waiter, one per thread waiting in wait_ready
        self._expected: set = set()
        self._subscribed: set = set()
        self._cluster = False  # set from WELCOME
        self._spare_waiters: list = []  # Waiters of finished waits, for the next ones
        self._functions_sent: set = set()
        self._put_counter = 0
        self._closed = False
        self._wake = threading.Event()
        self._flusher = None
        #: messages that are not for the client itself (EXECUTE, RECALL... in a worker)
        self.on_message = None
        self.blocked_hook = None
        #: read incoming messages from the flusher thread too (workers; see _flush_loop)
        self.pump_in_background = False
        #: the Unix-socket connections of the direct paths (net/stream.py): a caller's to the
        #: workers it calls, a worker's listener and the connections of its callers
        self.streams = StreamSet(self._poller)
        self.direct = DirectCalls(self)
        #: a worker's handler of direct calls: ``on_direct(connection, message)``
        self.on_direct = None
        if direct_address:
            self.streams.listen(direct_address, self._on_stream_message)
        self._raw_send(m.HELLO, {"kind": kind, "pid": os.getpid(), "worker_id": worker_id,
                                 "job_id": job_id, "address": direct_address})
        welcome = self._recv_one(timeout_s)
        if welcome is None or welcome.mtype is not m.WELCOME:
            self._close_sockets()
            if welcome is None:
                raise RaySystemError(f"the node manager at {node_address} did not answer "
                                     f"within {timeout_s:.0f} s")
            raise RaySystemError(f"the node manager at {node_address} answered HELLO with "
                                 f"{welcome.name} {welcome.body}")
        self.node_id = welcome["node_id"]
        self.job_id = JobID.from_int(welcome["job_id"])
        self.session_dir = welcome["session_dir"]
        self.config = welcome["config"]
        self.inline_threshold = self.config.get("inline_threshold",
                                                DEFAULT_INLINE_THRESHOLD_BYTES)
        self.store = ObjectStore.attach(welcome["store_path"])
        self.direct.max_leases = welcome["resources"].get("CPU", 0)
        self._cluster = bool(self.config.get("cluster"))
        if self._cluster:
            # a cluster's tasks go through the node manager, whose scheduler can move them
            # to other nodes (bottom-up scheduling); a leased worker would pin them here
            self.direct.leasing = False
        self.driver_task_id = TaskID.for_driver(self.job_id).binary()
        self._task_id_suffix = b"\xff" * 12 + self.job_id.binary()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._owner_thread = threading.get_ident()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                         name="zactor-flusher")
        self._flusher.start()

    # ---- sending ------------------------------------------------------------------------

    def _raw_send(self, mtype, body=None) -> None:
        self._zmq_unchecked = True  # (a send may take the DEALER's signal of an arrival)
        send_frames(self._sock, protocol.encode(mtype, body))

    def send(self, mtype, body=None) -> None:
        """Send one message after everything buffered (order on the socket is kept)."""
        with self._lock:
            self.flush()
            self._raw_send(mtype, body)

    def flush(self, lazy: bool = False) -> None:
        """Send buffered tasks, reference changes and task results. Caller holds the lock.
        ``lazy``: a SUBMIT holding only direct records (and reference changes) younger than
        RECORD_DELAY_S is kept for later (a waiting caller's flush; see RECORD_DELAY_S)."""
        if self._ref_events:
            self._fold_refs()
        if self.direct.out:
            self.direct.flush()  # the critical path first; the records follow in SUBMIT
        if (self._submits or self._deltas or self._puts) and not (
                lazy and self._records_since and not self._nm_submits and not self._puts
                and not self._functions
                and time.monotonic() - self._records_since < RECORD_DELAY_S):
            self._nm_submits, self._records_since = 0, 0.0
            body = {"tasks": self._submits, "deltas": self._deltas}
            if self._functions:
                body["functions"] = self._functions
                self._functions = []
            if self._puts:
                body["objects"] = self._puts
                self._puts = []
            self._submits, self._deltas = [], []
            self._raw_send(m.SUBMIT, body)
        if self.direct.requests:
            self.direct.flush_requests()
        if self.output:  # before TASK_DONE: a task's lines reach its driver before its result
            self._raw_send(m.WORKER_OUTPUT, {"lines": output_relay.take_queued(self)})
        if self._done or self._held:
            self._report_done(lazy)

    def _report_done(self, lazy: bool) -> None:
        """Results of direct calls and tasks go to their callers at once (DIRECT_RESULTS);
        the reports go to the node manager in TASK_DONE. A lazy flush (the worker's run
        loop between tasks) holds reports the node manager only records (every item direct,
        answered already, and marked deferrable by the worker) for up to RECORD_DELAY_S
        (longer only while a long call runs right after: until the flusher's next turn): a
        synchronous caller's loop then costs the worker one send per call, not two, and the
        node manager one wake-up per few calls. Anything else in the batch, or an older
        held report, sends them all, in order."""
        done = self._done
        items = []
        while done:  # until empty (task_done relies on it); only lock holders take from it
            items.append(done.popleft())
        replies: dict = {}
        deferrable = True
        for item in items:  # (entry, keep_alive, reply_to[, True if deferrable])
            entry, reply_to = item[0], item[2]
            if reply_to is not None and not entry[2] & _NM_DECIDES:
                objects = [r[:3] for r in entry[1]]
                earlier = replies.get(reply_to)
                if earlier is None:
                    replies[reply_to] = objects
                else:
                    earlier.extend(objects)
                if len(item) == 3:
                    deferrable = False
            else:
                deferrable = False
        for caller, objects in replies.items():  # direct calls' callers first
            self.streams.send(caller, protocol.encode(m.DIRECT_RESULTS, {"objects": objects}))
        held = self._held
        now = time.monotonic()
        if items and not held:
            self._held_since = now
        held.extend(items)
        if lazy and deferrable and now - self._held_since < RECORD_DELAY_S:
            # sent by the worker's loop within ~RECORD_DELAY_S while it is idle, by its next
            # flush, or by the flusher's FLUSH_INTERVAL_S turn while a long call runs (waking
            # the flusher for each batch cost the worker ~30 us of CPU per call, its lock
            # taken against the loop's)
            return
        self._held = []
        self._raw_send(m.TASK_DONE, {"done": [item[0] for item in held]})
        # only now may the refs inside those results be released: a release sent before
        # the TASK_DONE that holds them could free their objects (see task_done)
        del held, items

    def holds_reports(self) -> bool:
        return bool(self._held)

    def _flush_loop(self) -> None:
        next_tick = 0.0
        while not self._closed:
            if self._wake.wait(FLUSH_INTERVAL_S):
                # woken by the first buffered item: give the caller a moment to add more,
                # so a burst of submissions (or of finished tiny tasks) goes out as one message
                time.sleep(BATCH_DELAY_S)
            self._wake.clear()
            if self._closed:
                return
            busy = self._submits or self._ref_events or self._done or self._puts or \
                self._held
            self._check_node()
            if self._dead_reason is not None:
                return
            if self.direct.leases and time.monotonic() >= next_tick:
                # read results, so that idle leases are seen and returned; at most every
                # FLUSH_INTERVAL_S, and never waiting for the lock: a thread that holds it
                # is reading them anyway (a handoff per call would slow synchronous loops)
                next_tick = time.monotonic() + FLUSH_INTERVAL_S
                if self._lock.acquire(blocking=False):
                    try:
                        if self._closed:
                            return
                        self.pump(0)
                        self.direct.rebalance()
                        self.direct.tick()
                    except (zmq.ZMQError, LocalRayletDiedError):
                        return
                    finally:
                        self._lock.release()
            if self._reads_output_idle():
                # a cluster driver prints its tasks' output while it waits for nothing
                # (while it waits, the waiting thread holds the lock and reads it)
                if self._lock.acquire(blocking=False):
                    try:
                        if self._closed:
                            return
                        self.pump(0)
                    except (zmq.ZMQError, LocalRayletDiedError):
                        return
                    finally:
                        self._lock.release()
            if busy or self.pump_in_background or self.streams.unsent:
                with self._lock:
                    if self._closed:
                        return
                    try:
                        if self.streams.unsent:  # no thread may be polling for it
                            self.streams.write_pending()
                        self.flush()
                        if self.pump_in_background:
                            # a worker whose main thread runs user code still answers
                            # RECALL and takes EXECUTEs (worker.py)
                            self.pump(0)
                    except (zmq.ZMQError, LocalRayletDiedError):
                        return

    def _reads_output_idle(self) -> bool:
        return self.kind == "driver" and bool(self.config.get("cluster"))

    def _check_node(self) -> None:
        if self._liveness is None or self._dead_reason is not None:
            return
        status = self._liveness()
        if status is not None:
            self._dead_reason = (f"the node manager exited (exit status {status}): its "
                                 f"objects and tasks are lost")

    def check_alive(self) -> None:
        """Raise LocalRayletDiedError once the node manager is known to be dead."""
        if self._dead_reason is not None:
            raise LocalRayletDiedError(self._dead_reason)

    # ---- receiving ----------------------------------------------------------------------

    def _recv_one(self, timeout_s):
        self._zmq_unchecked = True
        if self._sock.poll(int(timeout_s * 1000)):
            return protocol.decode(self._sock.recv_multipart(copy=True))
        return None

    def pump(self, timeout_ms: int) -> bool:
        """Read every message waiting (up to ``timeout_ms`` for the first); True if any.
        Caller holds the lock."""
        got = False
        sock = self._sock
        check = self._zmq_unchecked
        if check and has_input(sock):
            timeout_ms = 0  # a message waits already (its descriptor may not say so)
        for key, flags in self._poller.poll(timeout_ms):
            if key is sock:
                check = True
            elif key == self._wake_r:  # another thread has something to send: return
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                got = True
            else:
                got = self.streams.service(key, flags) or got
        if not check:
            return got
        # asking the socket whether a message waits costs ~2 us; ending a drain on zmq.Again
        # (an exception object with its strerror) ~10 us, on every read. Until the drain
        # ends on a check that finds nothing, a message may wait unannounced (a handler
        # that raises leaves the rest for the next pump)
        self._zmq_unchecked = True
        while has_input(sock):
            frames = recv_frames(sock)
            got = True
            msg = protocol.decode(frames)
            if msg.mtype is m.OBJECTS:
                self._store_results(msg["objects"])
            elif msg.mtype is m.ACTOR_ROUTE:
                self.direct.on_route(msg["aid"], msg["addr"], msg["inc"])
            elif msg.mtype is m.LEASE_GRANTED:
                self.direct.on_lease(msg["lid"], msg["addr"])
            elif msg.mtype is m.LEASES_WANTED:
                self.direct.return_idle()
            elif msg.mtype is m.WORKER_OUTPUT:
                if self.config.get("log_to_driver", True):
                    output_relay.print_lines(msg["lines"])
            elif msg.mtype is m.SHUTDOWN:
                self._closed = True
                raise LocalRayletDiedError(f"the node manager shut down: {msg['reason']}")
            elif self.on_message is not None:
                self.on_message(msg)
        self._zmq_unchecked = False
        return got

    def _on_stream_message(self, conn, frames) -> None:
        try:
            msg = protocol.decode(frames)
        except protocol.ProtocolError as exc:  # a caller's bug or garbage: drop the caller
            conn.abort(str(exc))
            return
        self.on_direct(conn, msg)

    def direct_refused(self, conn, task_ids) -> None:
        """A worker's answer to direct calls it will not run. Caller holds the lock."""
        self.streams.send(conn, protocol.encode(
            m.DIRECT_RESULTS, {"objects": [], "refused": list(task_ids)}))

    def _store_results(self, objects) -> None:
        if self._ref_events:  # so that _refs says exactly which objects are still wanted
            self._fold_refs()
        arrivals = self._arrivals
        answered = self.direct.answered
        for oid, state, data in objects:
            self._expected.discard(oid)
            self._subscribed.discard(oid)
            answered(oid)
            if oid in self._refs and oid not in self._results:  # objects are immutable
                self._results[oid] = (state, data)
                for waiter in arrivals.values():
                    waiter.arrived.append(oid)
        for waiter in arrivals.values():
            if waiter.arrived and waiter.may_sleep:
                # wakes a thread that waits while another one reads; one that may not sleep
                # yet looks at its arrivals before it does (or is this thread), and one
                # that set may_sleep after this check is woken by the lock's release
                waiter.event.set()

    # ---- reference counting -------------------------------------------------------------

    def add_local_ref(self, oid: bytes) -> None:
        self._ref_events.append((oid, 1))

    def remove_local_ref(self, oid: bytes) -> None:
        self._ref_events.append((oid, -1))

    def note_borrowed(self, oid: bytes) -> None:
        """A ref that arrived from elsewhere (nothing to do: get() subscribes as needed)."""

    def _owned_ref(self, oid: bytes) -> ObjectRef:
        """A ref the node manager already counts for this process (own put / own return)."""
        self._refs[oid] = self._refs.get(oid, 0) + 1
        return ObjectRef._counted(oid, self)

    def _fold_refs(self) -> None:
        events, counts, deltas = self._ref_events, self._refs, self._deltas
        while events:  # other threads only append; only lock holders take from it
            oid, d = events.popleft()
            before = counts.get(oid, 0)
            after = before + d
            if after > 0:
                counts[oid] = after
                if before == 0:
                    deltas.append([oid, 1])
            else:
                counts.pop(oid, None)
                self._results.pop(oid, None)
                # no longer sent to us (the node manager stops pushing a task's result to a
                # submitter that let go of it); a later ref to it asks with SUBSCRIBE
                self._expected.discard(oid)
                if before > 0:
                    deltas.append([oid, -1])

    def adopt_job(self, task_id: bytes) -> None:
        """A worker runs a task (or creates an actor) of the job in ``task_id``'s last bytes:
        what it submits, creates or puts from now on belongs to that job, as in Ray (so a
        driver's death also ends the actors its tasks created)."""
        job = task_id[-JobID.SIZE:]
        if job != self._task_id_suffix[-JobID.SIZE:] and job != b"\x00" * JobID.SIZE:
            self.job_id = JobID(job)
            self._task_id_suffix = b"\xff" * 12 + job

    def new_task_id(self) -> bytes:
        """A fresh TaskID for a normal task of this job (ids.py's layout), without a system
        call: 8 random bytes from the process's generator, re-seeded in forked children."""
        return _fast_random.getrandbits(64).to_bytes(8, "little") + self._task_id_suffix

    def next_put_id(self, task_id: bytes) -> bytes:
        self._put_counter += 1
        return ObjectID.for_put(TaskID(task_id), self._put_counter).binary()

    def put(self, value, task_id: bytes) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError("Calling 'put' on an ObjectRef is not allowed. If you really "
                            "want to do this, you can wrap the ObjectRef in a list and call "
                            "'put' on it.")
        self.check_alive()
        with self._lock:
            oid = self.next_put_id(task_id)
            state, data, contained, _ = self.encode_value(value, oid)
            self._buffer_put([oid, state, data, contained, True])
            self._results[oid] = (state, data)
            return self._owned_ref(oid)

    def put_arg(self, oid: bytes, state: int, data, contained) -> None:
        """Announce an object made for one task's argument (held by that task only)."""
        with self._lock:
            self._arg_objects[oid] = (state, data)
            self._buffer_put([oid, state, data, contained, False])

    def _buffer_put(self, entry) -> None:
        self._fold_refs()
        self._puts.append(entry)
        if entry[1] == m.OBJ_STORE or len(self._puts) >= SUBMIT_BATCH_MAX:
            # a store object goes out at once, with the releases before it: the node
            # manager then frees dropped objects promptly and their warm blocks get reused
            self.flush()
        elif len(self._puts) == 1:
            self._wake.set()

    # ---- tasks --------------------------------------------------------------------------

    def submit(self, spec: dict, function_blob) -> list:
        """Buffer a task; returns the ObjectRefs of its returns."""
        if self._dead_reason is not None:
            self.check_alive()
        with self._lock:
            fid = spec["fid"]
            if fid and fid not in self._functions_sent:  # actor calls carry no function
                self._functions.append([fid, function_blob()])
                self._functions_sent.add(fid)
            if self._ref_events:
                self._fold_refs()  # earlier ref changes go before this task (module doc)
            actor = spec.get("actor")
            if actor is None:
                self.direct.submit_task(spec, function_blob)  # to a leased worker, if it can
            elif actor["op"] == "call":
                self.direct.submit(spec)  # straight to the actor's worker, if it can
            if self._arg_objects:
                self._arg_objects.clear()
            self._submits.append(spec)  # (a direct call's record for the node manager)
            refs = []
            for i in range(1, spec["nret"] + 1):
                oid = spec["id"] + i.to_bytes(4, "little")
                self._expected.add(oid)
                refs.append(self._owned_ref(oid))
            if len(self._submits) >= SUBMIT_BATCH_MAX:
                self.flush()
            elif "direct" in spec:
                # a record: sent by the caller's next wait (lazily), by the next flush, or
                # by the flusher's FLUSH_INTERVAL_S turn; waking the flusher for it cost a
                # thread wake-up per synchronous call
                if not self._records_since:
                    self._records_since = time.monotonic()
            else:
                self._nm_submits += 1
                if self._nm_submits == 1:
                    self._wake.set()
            return refs

    def task_done(self, entry, keep_alive=None, reply_to=None, wake: bool = True,
                  defer: bool = False) -> None:
        """Buffer a finished task's report (a worker's); sent with the next flush, which the
        flusher makes within ~BATCH_DELAY_S even while the next task runs for long.

        ``keep_alive`` (the return values) is held until the report is sent: ObjectRefs
        inside them must not be released (a -1 to the node manager) before the report that
        makes the results hold their targets, or those objects could be freed in between.
        ``reply_to``: the caller of a direct call, sent the results at the same flush.
        ``wake=False``: the worker's main thread flushes it itself at once (no task is queued
        behind this one), so the flusher is not woken for it (a thread wake-up per task).
        ``defer``: the node manager only records this report (the caller has the results):
        a lazy flush may hold it (``_report_done``)."""
        self._done.append((entry, keep_alive, reply_to, True) if defer else
                          (entry, keep_alive, reply_to))
        if len(self._done) != 1:
            # not the first since the last flush took them all (it takes until the deque is
            # empty): the wake-ups below were made for the first and it goes out with it
            return
        if threading.get_ident() != self._owner_thread:
            try:  # wake the worker's main thread out of pump() to send it
                os.write(self._wake_w, b"!")
            except BlockingIOError:
                pass  # the pipe is full: a wake-up is pending anyway
        elif not wake:
            return
        self._wake.set()

    def cancel(self, task_id: bytes, force: bool, recursive: bool) -> None:
        self.send(m.CANCEL, {"task_id": task_id, "force": force, "recursive": recursive})

    def request(self, mtype, body, reply_type, timeout_s=10.0, match=None):
        """A request answered by one message of ``reply_type`` (for which ``match(msg)`` is
        true, if given: a late answer to an earlier request is skipped); others are
        dispatched."""
        with self._lock:
            self.flush()
            self._raw_send(mtype, body)
            deadline = time.monotonic() + timeout_s
            saved = self.on_message
            box = []

            def catch(msg):
                if msg.mtype is reply_type and (match is None or match(msg)):
                    if not box:
                        box.append(msg)
                elif msg.mtype is reply_type:
                    pass  # the late answer to an earlier request that timed out
                elif saved is not None:
                    saved(msg)

            self.on_message = catch
            try:
                while not box:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise GetTimeoutError(f"no {reply_type.name} from the node manager "
                                              f"within {timeout_s} s")
                    self.pump(int(left * 1000))
            finally:
                self.on_message = saved
            return box[0]

    # ---- shutdown -----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                try:
                    if self._reads_output_idle():
                        self.pump(0)  # output already delivered is printed before leaving
                    self.flush()
                    self._raw_send(m.BYE)
                except (zmq.ZMQError, LocalRayletDiedError):
                    pass
            self._closed = True
            self._wake.set()
            self._refs.clear()
            self._results.clear()
            try:
                self.store.close()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
            self._close_sockets()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=1.0)

    def _close_sockets(self) -> None:
        self.direct.close()
        self.streams.close()
        self._sock.close(0)
        self._ctx.term()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
