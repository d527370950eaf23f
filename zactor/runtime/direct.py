"""Direct actor calls: the caller's side of the path that skips the node manager.

Runs in every process that calls actors (the driver, workers). Once an actor is placed, the
node manager tells each process that calls it where the actor's worker listens (ACTOR_ROUTE:
the worker's Unix socket in the session directory, net/stream.py, and the actor's
incarnation). From then on
the caller sends calls straight to that worker (DIRECT_CALLS, batched per flush) and the
worker sends the results straight back (DIRECT_RESULTS): two messages per round trip instead
of four, and no third process on the critical path.

The node manager still learns of every call, off the critical path: the call's spec rides in
the caller's next SUBMIT as a *record* (``spec["direct"]``), and the worker reports the call's
results in its batched TASK_DONE with the TASK_DIRECT flag. Either may arrive first; the node
manager (node_manager.py, ``on_submit`` / ``on_task_done``) joins them. So reference counts,
other holders of the result refs (their SUBSCRIBE is answered from the worker's report), lineage,
kills, restarts and retries work as for calls routed through the node manager: a call whose
worker died is retried on the next incarnation (``max_task_retries``) or failed with
``ActorDiedError`` by the node manager, and the error reaches the caller in OBJECTS.

A call goes direct only when it is safe to:
- the caller has a route to the actor's current incarnation;
- every top-level ObjectRef argument has a value here already (it travels resolved, as the
  node manager would send it); otherwise the call goes through the node manager, which waits;
- no call of this caller to this actor routed through the node manager is still unanswered
  (so a direct call never overtakes an earlier one: per-caller order is kept). A call routed
  through the node manager after direct ones carries ``after`` = the last direct call, and
  the worker holds it until that call has arrived.
Checkpointed actors that replay their calls after a restart get no route: their replay log
needs the node manager to see the order calls run in.

Tasks (drivers only). A driver *leases* workers from the node manager for a resource shape
(LEASE_REQUEST, answered by LEASE_GRANTED once the local scheduler has an idle worker and the
resources; at most as many leases as the shape fits in the node's CPUs). While it holds a lease
it pushes tasks whose arguments are already resolved here straight to that worker (the least
loaded of the shape's leases), and gets the results back from it; the records and reports
work as for actor calls. A lease with nothing in flight for ``LEASE_IDLE_S`` is given back
(LEASE_RETURN) by the flusher thread; at once when a task of its shape has to go through
the node manager (unresolved arguments), which then needs the workers; and when the node
manager says it has tasks waiting for a worker (LEASES_WANTED, sent at most every 0.1 s). The node manager
re-runs (``max_retries``) or fails the tasks of a lease whose worker died, as it does for the
tasks it dispatched; a leased worker that blocks in ``get`` lends its CPU like any other and
hands back the direct tasks queued behind the blocked one (the node manager schedules them),
and ``cancel`` reaches a direct task through the node manager. Tasks with custom resources or
GPUs, ``num_returns=0``, and tasks submitted by workers (nested tasks) go through the node
manager.
"""

from __future__ import annotations

import time

from zactor import protocol
from zactor.net.stream import StreamConn
from zactor.runtime import messages as m

LEASE_IDLE_S = 1.0
REBALANCE_S = 0.1  # a backstop: the node manager asks for idle leases when it needs them


class _Lease:
    __slots__ = ("lid", "key", "addr", "inflight", "idle_since", "progress")

    def __init__(self, lid, key):
        self.lid, self.key, self.addr = lid, key, None
        self.inflight: set = set()
        self.idle_since = time.monotonic()
        self.progress = 0.0  # when a result last came back (or the last bounce)


class DirectCalls:
    def __init__(self, client):
        self.client = client
        self.routes: dict = {}       # actor id -> (address, incarnation)
        self.conns: dict = {}        # address -> StreamConn (net/stream.py)
        self.out: dict = {}          # address -> [[spec, resolved]...] not yet sent
        self.nm_pending: dict = {}   # actor id -> calls routed through the NM, unanswered
        self.nm_oid: dict = {}       # first return of such a call -> actor id
        self.nm_only: set = set()    # actors this process calls through the NM for good
        self.last_direct: dict = {}  # actor id -> [task id, incarnation] of the last direct
        self.sent = 0                # counters (tests, benchmarks)
        self.refused = 0
        # task leases (drivers only)
        self.leasing = client.kind == "driver"
        self.leases: dict = {}       # shape key -> [granted _Lease...]
        self.lease_by_id: dict = {}  # lease id -> _Lease (requested or granted)
        self.task_lease: dict = {}   # first return of a direct task -> its _Lease
        self.max_leases = 0          # set from the node's CPUs (CoreClient)
        self.tasks_sent = 0
        self.last_submit = 0.0       # when a task last came to submit_task
        self.requests: list = []     # LEASE_REQUESTs for the next flush
        self.next_rebalance = 0.0
        self.fn_sent: set = set()    # (worker address, function id) sent with a task
        self.fn_out: dict = {}       # address -> [[fid, blob]...] for the next DIRECT_CALLS

    # ---- routing ----------------------------------------------------------------------

    def on_route(self, aid: bytes, addr: str, inc: int) -> None:
        old = self.routes.pop(aid, None)
        if addr and aid not in self.nm_only:
            self.routes[aid] = (addr, inc)
        if old is not None and old[0] != addr and \
                not any(r[0] == old[0] for r in self.routes.values()):
            self._close(old[0])

    def _close(self, addr: str) -> None:
        self.out.pop(addr, None)
        self.fn_out.pop(addr, None)
        self.fn_sent = {x for x in self.fn_sent if x[0] != addr}
        conn = self.conns.pop(addr, None)
        if conn is not None:
            self.client.streams.drop(conn)

    def _connected(self, addr: str) -> bool:
        """Whether a connection to that worker is up (made now if need be). Asked before a
        call is marked direct: a call that could not be sent must go through the node
        manager, never be lost. A worker that has exited refuses the connection; its node
        manager tells the callers (a new route, a dropped lease)."""
        conn = self.conns.get(addr)
        if conn is not None and not conn.closed:
            return True
        if conn is not None:
            self._close(addr)
        try:
            conn = StreamConn.connect(addr)
        except OSError:
            return False
        self.conns[addr] = conn
        self.client.streams.add(conn, self._on_message)
        return True

    def submit(self, spec: dict) -> bool:
        """Route an actor call: True if it goes direct (queued for the next flush). Caller
        holds the client's lock."""
        actor = spec["actor"]
        aid = actor["aid"]
        route = self.routes.get(aid)
        if route is None or self.nm_pending.get(aid):
            return self._via_node(spec, aid)
        results, args = self.client._results, self.client._arg_objects
        resolved = []
        for oid in _deps(spec):
            value = results.get(oid) or args.get(oid)
            if value is None or value[0] == m.OBJ_ERROR:
                return self._via_node(spec, aid)
            resolved.append([oid, value[0], value[1]])
        addr, inc = route
        if not self._connected(addr):
            self.on_route(aid, "", 0)
            return self._via_node(spec, aid)
        actor["inc"] = inc
        actor["to"] = addr  # the node manager tells a refusal coming from a lost call
        spec["direct"] = 1
        self.out.setdefault(addr, []).append([spec, resolved])
        self.last_direct[aid] = [spec["id"], inc]
        self.sent += 1
        return True

    # ---- tasks on leased workers ----------------------------------------------------------

    def submit_task(self, spec: dict, function_blob) -> bool:
        """Route a task: True if it goes to a leased worker. Caller holds the lock."""
        if not self.leasing or not spec["nret"]:
            return False
        self.last_submit = time.monotonic()
        res = spec["res"]
        cpu = res.get("CPU", 0)
        if cpu <= 0 or res.get("GPU") or any(k != "CPU" and k != "GPU" for k in res):
            return False
        key = cpu
        results, args = self.client._results, self.client._arg_objects
        resolved = []
        for oid in _deps(spec):
            value = results.get(oid) or args.get(oid)
            if value is None or value[0] == m.OBJ_ERROR:
                self._return_idle(key, 0.0)  # the node manager needs the workers now
                return False
            resolved.append([oid, value[0], value[1]])
        granted = self.leases.get(key)
        lease = min(granted, key=lambda x: len(x.inflight)) if granted else None
        if lease is None or len(lease.inflight) > 1:
            self._want_lease(key, cpu)
        if lease is None:
            return False
        if not self._connected(lease.addr):
            self._drop_lease(lease)  # its worker is gone: the node manager says so soon
            self.client._raw_send(m.LEASE_RETURN, {"lid": lease.lid})
            return False
        spec["direct"] = lease.lid
        fid = spec["fid"]
        if (lease.addr, fid) not in self.fn_sent:  # the worker may not have the function
            self.fn_sent.add((lease.addr, fid))
            self.fn_out.setdefault(lease.addr, []).append([fid, function_blob()])
        self.out.setdefault(lease.addr, []).append([spec, resolved])
        oid = spec["id"] + (1).to_bytes(4, "little")
        if not lease.inflight:
            lease.progress = time.monotonic()
        lease.inflight.add(oid)
        self.task_lease[oid] = lease
        self.tasks_sent += 1
        return True

    def _want_lease(self, key, cpu) -> None:
        have = sum(1 for x in self.lease_by_id.values() if x.key == key)
        if have >= max(1, int(self.max_leases // cpu)):
            return
        if any(x.addr is None and x.key == key for x in self.lease_by_id.values()):
            return  # requests are out already
        # all it may hold at once: tasks submitted before a grant arrives all go to the
        # leases held then (a burst would otherwise pile onto the first one)
        for _ in range(max(1, int(self.max_leases // cpu)) - have):
            lid = self.client.new_task_id()
            self.lease_by_id[lid] = _Lease(lid, key)
            # sent after the SUBMIT that carries the task which asked for it: that task
            # gets a worker first (else the lease would take it, and the node manager would
            # ask for the idle lease back to run the task: a loop)
            self.requests.append({"lid": lid, "res": {"CPU": cpu}})

    def on_lease(self, lid: bytes, addr: str) -> None:
        lease = self.lease_by_id.get(lid)
        if lease is None:
            if addr:  # no longer wanted
                self.client._raw_send(m.LEASE_RETURN, {"lid": lid})
            return
        if addr:
            lease.addr = addr
            lease.idle_since = time.monotonic()
            self.leases.setdefault(lease.key, []).append(lease)
            return
        self._drop_lease(lease)  # its worker died: the node manager re-runs its tasks

    def _drop_lease(self, lease) -> None:
        self.lease_by_id.pop(lease.lid, None)
        granted = self.leases.get(lease.key)
        if granted and lease in granted:
            granted.remove(lease)
            if not granted:
                del self.leases[lease.key]
        for oid in lease.inflight:
            self.task_lease.pop(oid, None)
        lease.inflight.clear()
        if lease.addr and not any(x.addr == lease.addr for x in self.lease_by_id.values()):
            self._close(lease.addr)

    def _return_idle(self, key, idle_s: float) -> None:
        granted = self.leases.get(key)
        if not granted:
            return
        now = time.monotonic()
        for lease in list(granted):
            if not lease.inflight and lease.idle_since <= now - idle_s:
                self._drop_lease(lease)
                self.client._raw_send(m.LEASE_RETURN, {"lid": lease.lid})

    def return_idle(self) -> None:
        """LEASES_WANTED: give back every lease with nothing in flight."""
        for key in list(self.leases):
            self._return_idle(key, 0.0)

    def rebalance(self) -> None:
        """Tasks queued on a lease behind one that has run for REBALANCE_S while another
        lease of the shape sits idle are handed back (DIRECT_BOUNCE): the node manager runs
        them (a lease's worker runs its tasks in order, like the node manager's pipelining,
        whose ``rebalance`` does the same)."""
        now = time.monotonic()
        if now < self.next_rebalance:
            return
        self.next_rebalance = now + REBALANCE_S
        for granted in self.leases.values():
            if len(granted) < 2 or all(x.inflight for x in granted):
                continue
            for lease in granted:
                if len(lease.inflight) > 1 and lease.progress < now - REBALANCE_S:
                    lease.progress = now
                    self._send(lease.addr, protocol.encode(m.DIRECT_BOUNCE))

    def tick(self) -> None:
        """Give back leases idle for LEASE_IDLE_S, unless tasks are still being submitted
        (the flusher thread, under the lock)."""
        if self.last_submit > time.monotonic() - LEASE_IDLE_S:
            return
        for key in list(self.leases):
            self._return_idle(key, LEASE_IDLE_S)

    # ---- calls through the node manager -------------------------------------------------

    def _via_node(self, spec: dict, aid: bytes) -> bool:
        last = self.last_direct.get(aid)
        if last is not None:
            spec["actor"]["after"] = last
        if spec["nret"]:
            self.nm_pending[aid] = self.nm_pending.get(aid, 0) + 1
            self.nm_oid[spec["id"] + (1).to_bytes(4, "little")] = aid
        else:  # no result will tell us when it ran: keep this actor on the NM path
            self.nm_only.add(aid)
            self.on_route(aid, "", 0)
        return False

    def answered(self, oid: bytes) -> None:
        """A result arrived (called for every object the client stores)."""
        if self.task_lease:
            lease = self.task_lease.pop(oid, None)
            if lease is not None:
                lease.inflight.discard(oid)
                lease.progress = now = time.monotonic()
                if not lease.inflight:
                    lease.idle_since = now
                return
        aid = self.nm_oid.pop(oid, None)
        if aid is not None:
            left = self.nm_pending.get(aid, 1) - 1
            if left > 0:
                self.nm_pending[aid] = left
            else:
                self.nm_pending.pop(aid, None)

    # ---- sending and receiving ----------------------------------------------------------

    def _send(self, addr: str, frames) -> None:
        conn = self.conns.get(addr)
        if conn is not None:  # else the worker is gone and the node manager handles its calls
            self.client.streams.send(conn, frames)

    def flush(self) -> None:
        if not self.out:
            return
        out, self.out = self.out, {}
        for addr, calls in out.items():
            body = {"calls": calls}
            if self.fn_out:
                functions = self.fn_out.pop(addr, None)
                if functions:
                    body["functions"] = functions
            self._send(addr, protocol.encode(m.DIRECT_CALLS, body))

    def flush_requests(self) -> None:
        requests, self.requests = self.requests, []
        for body in requests:
            self.client._raw_send(m.LEASE_REQUEST, body)

    def _on_message(self, conn, frames) -> None:
        """A worker's answer (StreamSet handler; runs in pump, under the lock)."""
        try:
            msg = protocol.decode(frames)
        except protocol.ProtocolError as exc:
            conn.abort(str(exc))  # its calls are the node manager's
            return
        if msg.mtype is not m.DIRECT_RESULTS:
            return
        body = msg.body
        self.client._store_results(body["objects"])
        if body["refused"]:
            # the node manager re-queues refused calls; drop the stale route
            self.refused += len(body["refused"])
            for task_id in body["refused"]:
                oid = task_id + (1).to_bytes(4, "little")
                lease = self.task_lease.pop(oid, None)
                if lease is not None:  # a leased worker blocked: not in flight here
                    lease.inflight.discard(oid)
            for aid in [aid for aid, (addr, _) in self.routes.items()
                        if self.conns.get(addr) is conn]:
                self.on_route(aid, "", 0)

    def close(self) -> None:
        for addr in list(self.conns):
            self._close(addr)


def _deps(spec: dict):
    for a in spec["args"]:
        if a[0] == 1:
            yield a[1]
    for a in spec["kwargs"]:
        if a[1] == 1:
            yield a[2]
