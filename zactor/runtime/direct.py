"""Direct actor calls: the caller's side of the path that skips the node manager.

Runs in every process that calls actors (the driver, workers). Once an actor is placed, the
node manager tells each process that calls it where the actor's worker listens (ACTOR_ROUTE:
the worker's ipc ROUTER in the session directory, and the actor's incarnation). From then on
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
"""

from __future__ import annotations

import zmq

from zactor import protocol
from zactor.net.sockets import make_socket
from zactor.runtime import messages as m


class DirectCalls:
    def __init__(self, client):
        self.client = client
        self.routes: dict = {}       # actor id -> (address, incarnation)
        self.socks: dict = {}        # address -> DEALER
        self.out: dict = {}          # address -> [[spec, resolved]...] not yet sent
        self.nm_pending: dict = {}   # actor id -> calls routed through the NM, unanswered
        self.nm_oid: dict = {}       # first return of such a call -> actor id
        self.nm_only: set = set()    # actors this process calls through the NM for good
        self.last_direct: dict = {}  # actor id -> [task id, incarnation] of the last direct
        self.sent = 0                # counters (tests, benchmarks)
        self.refused = 0

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
        sock = self.socks.pop(addr, None)
        if sock is not None:
            self.client._poller.unregister(sock)
            sock.close(0)

    def _sock(self, addr: str):
        sock = self.socks.get(addr)
        if sock is None:
            sock = self.socks[addr] = make_socket(self.client._ctx, zmq.DEALER, hwm=0)
            sock.connect(addr)
            self.client._poller.register(sock, zmq.POLLIN)
        return sock

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
        actor["inc"] = inc
        spec["direct"] = 1
        self.out.setdefault(addr, []).append([spec, resolved])
        self.last_direct[aid] = [spec["id"], inc]
        self.sent += 1
        return True

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
        aid = self.nm_oid.pop(oid, None)
        if aid is not None:
            left = self.nm_pending.get(aid, 1) - 1
            if left > 0:
                self.nm_pending[aid] = left
            else:
                self.nm_pending.pop(aid, None)

    # ---- sending and receiving ----------------------------------------------------------

    def flush(self) -> None:
        if not self.out:
            return
        out, self.out = self.out, {}
        for addr, calls in out.items():
            self._sock(addr).send_multipart(protocol.encode(m.DIRECT_CALLS,
                                                            {"calls": calls}))

    def read(self, sock) -> bool:
        got = False
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return got
            got = True
            msg = protocol.decode(frames)
            if msg.mtype is m.DIRECT_RESULTS:
                self.client._store_results(msg["objects"])
                if msg["refused"]:
                    # the node manager re-queues refused calls; drop the stale route
                    self.refused += len(msg["refused"])
                    for aid, (addr, _) in list(self.routes.items()):
                        if self.socks.get(addr) is sock:
                            self.on_route(aid, "", 0)

    def close(self) -> None:
        for addr in list(self.socks):
            self._close(addr)


def _deps(spec: dict):
    for a in spec["args"]:
        if a[0] == 1:
            yield a[1]
    for a in spec["kwargs"]:
        if a[1] == 1:
            yield a[2]
