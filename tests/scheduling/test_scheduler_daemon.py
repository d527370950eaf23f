"""The global scheduler daemon as a real process against a real control store, with fake node
managers: a ROUTER on node_port (for RESERVE_BUNDLES), a DEALER to the scheduler (SPILL,
CREATE_PG), and a thread writing the node's row as its heartbeat. Conditions are polled with
generous deadlines; nothing is timed."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import zmq

from zactor import protocol as P
from zactor.cluster import messages as M
from zactor.control import GcsClient, start_control_store
from zactor.net.sockets import bind_free, make_socket
from zactor.scheduling.scheduler_main import start_scheduler

DEADLINE_S = 30.0
MB = 1 << 20


def poll_until(predicate, what, timeout_s=DEADLINE_S, step=None):
    deadline = time.monotonic() + timeout_s
    while True:
        if step is not None:
            step()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling a condition with a deadline


class Peer:
    """A DEALER to the scheduler: requests matched to replies by request id; anything else
    (an unsolicited PLACE) lands in ``inbox``."""

    def __init__(self, ctx, addr, identity):
        self.sock = make_socket(ctx, zmq.DEALER, identity)
        self.sock.connect(addr)
        self.inbox = []

    def request(self, mtype, body, timeout_s=DEADLINE_S, resend_s=2.0):
        """Send; re-send after ``resend_s`` without an answer (what an origin does when a
        scheduler restarts), until ``timeout_s``."""
        req = P.next_request_id()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sock.send_multipart(P.encode(mtype, body, req))
            resend = time.monotonic() + resend_s
            while time.monotonic() < min(resend, deadline):
                if not self.sock.poll(50):
                    continue
                msg = P.decode(self.sock.recv_multipart())
                if msg.req_id == req:
                    return msg
                self.inbox.append(msg)
        raise AssertionError(f"no answer to {mtype.name}")

    def ok(self, mtype, body, **kw):
        reply = self.request(mtype, body, **kw)
        assert reply.name == "OK", reply.body
        return reply["value"]

    def drain(self):
        while self.sock.poll(0):
            self.inbox.append(P.decode(self.sock.recv_multipart()))
        return self.inbox


class FakeNode:
    def __init__(self, cluster, nid, cpus=4, resources=None, bandwidth=None):
        self.nid = nid
        self.gcs = cluster.gcs
        self.router = make_socket(cluster.ctx, zmq.ROUTER)
        port = int(bind_free(self.router).rsplit(":", 1)[1])
        total = {"CPU": cpus, **(resources or {})}
        self.row = {"node_id": nid, "incarnation": 1, "host": "127.0.0.1", "node_port": port,
                    "transfer_port": 0, "ipc_address": "", "resources_total": total,
                    "resources_available": dict(total), "queue_len": 0, "store_used": 0,
                    "store_capacity": 1 << 30, "state": "alive", "started_at": time.time()}
        if bandwidth:
            self.row["bandwidth"] = bandwidth
        self.lock = threading.Lock()
        self.received = []   # messages the scheduler sent to this node
        self.reserved = {}   # (pg_id, index) -> {res}
        self.peer = Peer(cluster.ctx, cluster.sched_addr, nid.encode())
        self.beating = threading.Event()
        self.beating.set()
        self.stopped = threading.Event()
        self.gcs.put("nodes", nid, self.row)
        self.thread = threading.Thread(target=self._heartbeat, daemon=True)
        self.thread.start()

    def _heartbeat(self):
        while not self.stopped.wait(M.HEARTBEAT_INTERVAL_S):
            if self.beating.is_set():
                with self.lock:
                    row = dict(self.row)
                self.gcs.put_async("nodes", self.nid, row)

    def pump(self):
        while self.router.poll(0):
            frames = self.router.recv_multipart()
            msg = P.decode(frames[1:])
            self.received.append(msg)
            if msg.mtype is M.RESERVE_BUNDLES:
                with self.lock:
                    avail = self.row["resources_available"]
                    for index, res in msg["bundles"]:
                        key = (msg["pg_id"], index)
                        sign = -1 if msg["release"] else 1
                        if msg["release"] != (key in self.reserved):
                            continue  # a repeated reservation is a no-op
                        for name, amount in res.items():
                            avail[name] = avail.get(name, 0) - sign * amount
                        if msg["release"]:
                            del self.reserved[key]
                        else:
                            self.reserved[key] = res

    def reservations(self, pg_id):
        self.pump()
        return sorted(i for (p, i) in self.reserved if p == pg_id)

    def close(self):
        self.stopped.set()
        self.thread.join()
        self.router.close(0)
        self.peer.sock.close(0)


class Cluster:
    def __init__(self, tmp_path, death_timeout_s=5.0):
        self.store = start_control_store(str(tmp_path / "gcs"))
        self.gcs = GcsClient.connect(self.store.address)
        self.ctx = zmq.Context()
        self.death_timeout_s = death_timeout_s
        self.nodes = {}
        self.sched = None
        self.start_scheduler()

    def start_scheduler(self, port=0):
        self.sched = start_scheduler(self.store.address, port=port,
                                     node_death_timeout_s=self.death_timeout_s)
        info = self.gcs.get("kv", b"cluster:scheduler")
        assert info["pid"] == self.sched.pid and info["port"] == self.sched.info["port"]
        self.sched_addr = f"tcp://{info['host']}:{info['port']}"
        return self.sched

    def add(self, nid, **kw):
        node = self.nodes[nid] = FakeNode(self, nid, **kw)
        return node

    def pg_row(self, pg_id):
        return self.gcs.get("kv", b"pg:" + pg_id)

    def close(self):
        for node in self.nodes.values():
            node.close()
        if self.sched is not None:
            self.sched.stop()
        self.gcs.close()
        self.ctx.term()
        self.store.stop()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def spill(node, *tasks, **kw):
    reply = node.peer.request(M.SPILL, {"tasks": list(tasks)}, **kw)
    assert reply.name == "PLACE", reply.body
    return reply["decisions"]


def task(tid, cpus=1, strategy=None, deps=(), origin="a", **res):
    return {"task_id": tid, "resources": {"CPU": cpus, **res}, "strategy": strategy,
            "deps": [list(d) for d in deps], "origin": origin}


def wait_known(cluster, *nids):
    """Until the scheduler places hard-affinity tasks on each node: it has their rows."""
    a = next(iter(cluster.nodes.values()))
    for nid in nids:
        poll_until(lambda nid=nid: spill(a, task(b"probe", 0, ["node", nid, False]))[0][1]
                   == nid, f"the scheduler to know {nid}")


def test_spill_placed_on_a_fitting_node_with_locality(cluster):
    a, b = cluster.add("a", cpus=1), cluster.add("b", cpus=8)
    wait_known(cluster, "a", "b")
    [[tid, node, reason]] = spill(a, task(b"t1", cpus=4))
    assert (tid, node) == (b"t1", "b") and reason.startswith("placed")
    # the 100 MB input lives on b: b even though a has the shorter queue
    cluster.add("c", cpus=8)
    wait_known(cluster, "c")
    [[_, node, _]] = spill(a, task(b"t2", deps=[(b"obj", 100 * MB, ["c"])]))
    assert node == "c"
    [[_, node, _]] = spill(b, task(b"t3", deps=[(b"obj", 100 * MB, ["b"])]))
    assert node == "b"


def test_spread_and_node_affinity(cluster):
    for n in "abc":
        cluster.add(n)
    wait_known(cluster, "a", "b", "c")
    a = cluster.nodes["a"]
    placed = spill(a, *(task(i, strategy="SPREAD") for i in range(6)))
    assert sorted(d[1] for d in placed) == sorted("aabbcc")
    assert spill(a, task(1, strategy=["node", "c", False]))[0][1] == "c"
    assert spill(a, task(1, strategy=["node", "c", True]))[0][1] == "c"
    [[_, node, reason]] = spill(a, task(1, strategy=["node", "zz", False]))
    assert node is None and reason.startswith("failed")
    assert spill(a, task(1, strategy=["node", "zz", True]))[0][1] in "abc"


def test_infeasible_then_placed_when_a_node_joins(cluster):
    a = cluster.add("a")
    wait_known(cluster, "a")
    [[tid, node, reason]] = spill(a, task(b"gpu", GPU=1))
    assert node is None and reason.startswith("infeasible")
    cluster.add("g", resources={"GPU": 2})
    msgs = poll_until(lambda: [m for m in a.peer.drain() if m.name == "PLACE"],
                      "a PLACE for the waiting task")
    assert msgs[0]["decisions"] == [[b"gpu", "g", msgs[0]["decisions"][0][2]]]


def test_silent_node_is_declared_dead(cluster):
    a, b = cluster.add("a"), cluster.add("b")
    wait_known(cluster, "a", "b")
    b.beating.clear()
    row = poll_until(lambda: (r := cluster.gcs.get("nodes", "b")) and r["state"] == "dead"
                     and r, "b's row to say dead")
    assert "heartbeat" in row["reason"]
    assert cluster.gcs.get("nodes", "a")["state"] == "alive"
    poll_until(lambda: spill(a, task(1, strategy=["node", "b", False]))[0][2]
               .startswith("failed"), "affinity to the dead node to fail")
    # a dead node that keeps writing rows is fenced: told so, and its row restored to dead
    b.beating.set()
    poll_until(lambda: any(m.mtype is M.FENCED for m in b.received), "FENCED", step=b.pump)
    poll_until(lambda: cluster.gcs.get("nodes", "b")["state"] == "dead", "dead row")


def test_placement_group_strategies(cluster):
    for n in "abc":
        cluster.add(n)
    wait_known(cluster, "a", "b", "c")
    a = cluster.nodes["a"]
    expect = {"STRICT_PACK": 1, "STRICT_SPREAD": 3, "PACK": 1, "SPREAD": 3}
    for strategy, n_nodes in expect.items():
        pg_id = strategy.encode()
        bundles = [{"CPU": 1}] * 3
        row = a.peer.ok(M.CREATE_PG, {"pg_id": pg_id, "bundles": bundles,
                                      "strategy": strategy})
        assert row["state"] == "created" and len(set(row["nodes"])) == n_nodes
        assert cluster.pg_row(pg_id)["nodes"] == row["nodes"]
        for nid in "abc":
            want = [i for i, n in enumerate(row["nodes"]) if n == nid]
            poll_until(lambda nid=nid, want=want, pg_id=pg_id: cluster.nodes[nid].reservations(pg_id)
                       == want, f"{strategy} reservations on {nid}")
        # tasks of the group go to the bundle's node
        d = spill(a, task(1, strategy=["pg", pg_id, 2]))
        assert d[0][1] == row["nodes"][2]
        a.peer.ok(M.REMOVE_PG, {"pg_id": pg_id})
        for nid in "abc":
            poll_until(lambda nid=nid, pg_id=pg_id: cluster.nodes[nid].reservations(pg_id) == [],
                       "released")
        assert cluster.pg_row(pg_id)["state"] == "removed"
    assert a.peer.request(M.REMOVE_PG, {"pg_id": b"nope"}).name == "ERROR"


def test_pending_pg_placed_when_a_node_joins_and_bundles_move_off_dead_nodes(cluster):
    a, _ = cluster.add("a"), cluster.add("b")
    wait_known(cluster, "a", "b")
    row = a.peer.ok(M.CREATE_PG, {"pg_id": b"pg", "bundles": [{"CPU": 1}] * 3,
                                  "strategy": "STRICT_SPREAD"})
    assert row["state"] == "pending" and "cannot be reserved" in row["reason"]
    assert spill(a, task(1, strategy=["pg", b"pg", 0]))[0][2].startswith("infeasible")
    cluster.add("c")
    row = poll_until(lambda: (r := a.peer.ok(M.GET_PG, {"pg_id": b"pg"}))["state"]
                     == "created" and r, "the pending group to be placed")
    assert sorted(row["nodes"]) == ["a", "b", "c"]
    # the node holding bundle 0 dies; a new node takes it, the others keep theirs
    victim = row["nodes"][0]
    cluster.add("d")
    cluster.nodes[victim].beating.clear()
    new = poll_until(lambda: (r := cluster.pg_row(b"pg"))["state"] == "created"
                     and r["nodes"][0] == "d" and r, "bundle 0 to move to d")
    assert new["nodes"][1:] == row["nodes"][1:]
    poll_until(lambda: cluster.nodes["d"].reservations(b"pg") == [0], "d reserves bundle 0")


def test_restart_after_sigkill_rebuilds_from_the_control_store(cluster):
    a, _ = cluster.add("a"), cluster.add("b", cpus=8)
    wait_known(cluster, "a", "b")
    row = a.peer.ok(M.CREATE_PG, {"pg_id": b"keep", "bundles": [{"CPU": 2}],
                                  "strategy": "STRICT_PACK"})
    old = cluster.sched
    old.kill(signal.SIGKILL)
    # a task spilled while no scheduler runs: the origin re-sends it until one answers
    during = []
    origin = threading.Thread(target=lambda: during.append(
        spill(a, task(b"during", cpus=6), resend_s=M.SPILL_RESEND_S)))
    origin.start()
    try:
        cluster.start_scheduler(port=old.info["port"])
    finally:
        origin.join(DEADLINE_S + 5)
    assert during and during[0][0][:2] == [b"during", "b"]
    assert cluster.sched.pid != old.pid
    # the same DEALERs reach the new process; its state came from the rows
    assert a.peer.ok(M.GET_PG, {"pg_id": b"keep"})["nodes"] == row["nodes"]
    poll_until(lambda: spill(a, task(b"t", cpus=6))[0][1] == "b", "b known again")
    assert spill(a, task(1, strategy=["pg", b"keep", 0]))[0][1] == row["nodes"][0]
    # and it still watches heartbeats
    a.beating.clear()
    poll_until(lambda: cluster.gcs.get("nodes", "a")["state"] == "dead", "a declared dead")


def test_garbage_never_crashes_it(cluster):
    a = cluster.add("a")
    wait_known(cluster, "a")
    raw = make_socket(cluster.ctx, zmq.DEALER)
    raw.connect(cluster.sched_addr)
    try:
        for frames in ([b"x"], [b"\x00" * 10, b"junk"], [b"short", b"\x80"],
                       [P.encode(M.SPILL, {"tasks": []})[0], b"\xc1not msgpack"]):
            raw.send_multipart(frames)
        hdr = P.encode(M.SPILL, {"tasks": []}, 7)[0]
        raw.send_multipart([hdr, b"\xc1"])
        assert P.decode(raw.recv_multipart())["code"] == P.ERR_MALFORMED
        peer = Peer.__new__(Peer)
        peer.sock, peer.inbox = raw, []
        # a malformed entry fails alone; the others in its SPILL are placed
        reply = peer.request(M.SPILL, {"tasks": [
            {"task_id": 1, "strategy": "WHAT"}, {"task_id": 2, "resources": {"CPU": -1}},
            {"task_id": 3, "deps": [[b"o", "big"]]}, {"task_id": 4}]})
        assert [d[1] for d in reply["decisions"]] == [None, None, None, "a"]
        assert all(d[2].startswith("failed: malformed") for d in reply["decisions"][:3])
        bad = [(M.SPILL, {"tasks": "no"}), (M.SPILL, {"tasks": [{"no_task_id": 1}]}),
               (M.SPILL, {"tasks": [[1, 2]]}),
               (M.CREATE_PG, {"pg_id": b"p", "bundles": [], "strategy": "PACK"}),
               (M.CREATE_PG, {"pg_id": b"p", "bundles": [{"CPU": 0}], "strategy": "PACK"}),
               (M.CREATE_PG, {"pg_id": b"p", "bundles": [{"CPU": 1}], "strategy": "BEST"}),
               (M.CREATE_PG, {"pg_id": 5, "bundles": [{"CPU": 1}], "strategy": "PACK"}),
               (P.READ, {"table": "nodes", "key": b"a"})]
        for mtype, body in bad:
            reply = peer.request(mtype, body)
            assert reply.name == "ERROR", (mtype.name, body, reply.body)
        assert peer.request(P.PING, {}).name == "PONG"
    finally:
        raw.close(0)
    assert spill(a, task(1))[0][1] == "a"
    assert cluster.sched.alive()


def test_cli_help_and_refused_options():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "zactor", "scheduler", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--node-death-timeout" in out.stdout
    out = subprocess.run([sys.executable, "-m", "zactor", "scheduler", "--address",
                          "127.0.0.1:1", "--node-death-timeout", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "node-death-timeout" in out.stderr


def test_affinity_to_a_node_the_feed_has_not_delivered_reads_the_table(tmp_path):
    """A node joined a moment ago: its row is in the control store, not yet in the
    scheduler's view (the subscription lags). A SPILL naming it re-reads the nodes table
    rather than let a soft affinity fall back elsewhere (CI: an actor meant for a node that
    had just joined landed on another one). In-process, without ``start``: no feed at all."""
    from zactor.scheduling.scheduler_daemon import SchedulerDaemon

    store = start_control_store(str(tmp_path / "gcs"))
    daemon = None
    try:
        gcs = GcsClient.connect(store.address)
        row = {"node_id": "c", "incarnation": 1, "host": "127.0.0.1", "node_port": 1,
               "transfer_port": 0, "ipc_address": "", "resources_total": {"CPU": 1},
               "resources_available": {"CPU": 1}, "queue_len": 0, "store_used": 0,
               "store_capacity": 1 << 30, "state": "alive", "started_at": time.time()}
        gcs.put("nodes", "c", row)
        gcs.close()
        daemon = SchedulerDaemon(store.address)
        msg = P.decode(P.encode(M.SPILL, {"tasks": [task(b"soft", 0, ["node", "c", True]),
                                                    task(b"hard", 0, ["node", "c", False])]}))
        decisions = daemon.on_spill(b"origin", msg)
        assert [(d[0], d[1]) for d in decisions] == [(b"soft", "c"), (b"hard", "c")], decisions
        # a node that exists nowhere: soft falls back (here: no node fits), hard fails
        msg = P.decode(P.encode(M.SPILL, {"tasks": [task(b"x", 0, ["node", "zz", False])]}))
        [[_, node, reason]] = daemon.on_spill(b"origin", msg)
        assert node is None and reason.startswith("failed"), reason
    finally:
        if daemon is not None:
            daemon.close()
        store.stop()
