"""Calls carry the actor incarnation their caller believes in; the actor's home refuses a call
for another one, and a copy whose actor-table row has moved on stops serving
(zactor/cluster/actor_incarnations.py). A driver on the head calls an actor on node B."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.cluster import test_actor_failover
from tests.cluster.test_actor_failover import PRELUDE

pytestmark = pytest.mark.timeout(300)
head_and_b = test_actor_failover.head_and_b  # the fixture: a head and one node B

HELPERS = """
import psutil

@zactor.remote
class Tally:
    def __init__(self):
        self.n = 0
    def inc(self):
        self.n += 1
        return self.n
    def pid(self):
        return os.getpid()
    def where(self):
        return zactor.get_runtime_context().get_node_id()
    def __zactor_checkpoint__(self):
        return self.n
    def __zactor_restore__(self, n):
        self.n = n

def node_row(node):
    return next((n for n in zactor.nodes() if n["NodeID"] == node), None)

def node_table():
    # every row of the control store's nodes table (dead ones too), for failure messages
    from zactor.api import context
    from zactor.control.client import GcsClient

    client = context.client()
    with GcsClient.connect(client.config["gcs_address"], timeout_s=30,
                           keys=client.config.get("key_file")) as gcs:
        return [(bytes(r.get("node_id") or b"").hex()[:12], r.get("state"), r.get("reason"))
                for _k, r in gcs.scan("nodes", timeout_s=30) if isinstance(r, dict)]

def check_on(actor, node):
    # the soft affinity put the actor on `node` (it falls back to another node only if
    # `node` is dead or full: the message says which)
    home = zactor.get(actor.where.remote(), timeout=60)
    assert home == node, f"placed on {home[:12]}, not on {node[:12]}: nodes {node_table()}"

def wait_for(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)  # polling with a deadline
"""


def _drive(cluster, body: str, on_step=None) -> str:
    """Run a driver; each line it prints as ``STEP name args...`` is handed to
    ``on_step(name, args)`` and the driver goes on when the test answers."""
    code = PRELUDE + HELPERS + textwrap.dedent(body)
    proc = subprocess.Popen([sys.executable, "-c", code], env=cluster.env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if line.startswith("STEP"):
                _, name, *args = line.split()
                on_step(name, args)
                proc.stdin.write("go\n")
                proc.stdin.flush()
        proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, "".join(out) + err + cluster.logs()
    return "".join(out)


def test_a_call_for_an_older_incarnation_is_refused_and_sent_again(head_and_b):
    """B restarts the actor itself (its worker killed): the head's next call still names
    incarnation 0, B refuses it, the head re-sends it to incarnation 1, which answers (the
    count is exact: restored from B's checkpoint and log)."""
    out = _drive(head_and_b, """
        B = OTHERS[0]
        c = Tally.options(max_restarts=1, scheduling_strategy=On(B, soft=True)).remote()
        assert [zactor.get(c.inc.remote(), timeout=60) for _ in range(3)] == [1, 2, 3]
        os.kill(zactor.get(c.pid.remote(), timeout=60), 9)
        time.sleep(3)  # B sees its worker die and starts incarnation 1
        print("AFTER", zactor.get(c.inc.remote(), timeout=60), flush=True)
        wait_for("B reports the refusal", lambda: node_row(B)["ActorIncarnations"].get(
            "calls_refused", 0) >= 1)
        print("REFUSED", node_row(B)["ActorIncarnations"], flush=True)
    """)
    assert "AFTER 4" in out, out
    assert "REFUSED {'calls_refused': 1," in out, out  # one call refused, then sent again


def test_a_copy_whose_row_moved_on_stops_serving(head_and_b):
    """The actor table says the actor's incarnation 1 is dead (as a node that restarted it
    elsewhere and lost it would leave it): B's copy, incarnation 0, stops serving (its worker
    exits) without a node death, and the head's next call is refused there and fails with the
    row's reason."""
    out = _drive(head_and_b, """
        from zactor.api import context
        from zactor.control.client import GcsClient
        B = OTHERS[0]
        c = Tally.options(scheduling_strategy=On(B, soft=True)).remote()
        assert zactor.get(c.inc.remote(), timeout=60) == 1
        check_on(c, B)
        pid = zactor.get(c.pid.remote(), timeout=60)
        client = context.client()
        with GcsClient.connect(client.config["gcs_address"], timeout_s=30,
                               keys=client.config.get("key_file")) as gcs:
            def b_row():  # the node writes the actor's row asynchronously, off the call path
                return next((k for k, row in gcs.scan("actors", timeout_s=30)
                             if row.get("node") == bytes.fromhex(B) and
                             row.get("class") == "Tally"), None)
            wait_for("the actor's row names B", lambda: b_row() is not None)
            aid = b_row()
            row = gcs.get("actors", aid, timeout_s=30)
            gcs.put("actors", aid, {**row, "incarnation": 1, "state": "DEAD",
                                    "death": "superseded in this test"}, timeout_s=30)
        wait_for("the stale copy's worker exits", lambda: not psutil.pid_exists(pid))
        try:
            print("ANSWERED", zactor.get(c.inc.remote(), timeout=60), flush=True)
        except ActorDiedError as e:
            print("DIED", "superseded in this test" in str(e), flush=True)
        # the counts reach the node's row with its next heartbeat
        wait_for("B reports the retired copy", lambda: node_row(B)["ActorIncarnations"].get(
            "copies_retired", 0) >= 1)
        print("STATS", node_row(B)["ActorIncarnations"], flush=True)
    """)
    assert "DIED True" in out, out
    assert "'copies_retired': 1" in out, out


def test_a_paused_node_resumed_serves_nothing(head_and_b):
    """B's node manager is SIGSTOPped until B is declared dead; the checkpointed actor
    restarts on the head; B resumes. Every call is answered by the new incarnation (the
    count stays exact) and B's copy is gone."""
    node_pids = {}

    def on_step(name, args):
        if name == "pause":
            record = head_and_b.record(head_and_b.nodes[0])
            node_pids["b"] = int(record["node_pid"])
            os.kill(node_pids["b"], signal.SIGSTOP)
        elif name == "resume":
            os.kill(node_pids["b"], signal.SIGCONT)

    out = _drive(head_and_b, """
        B = OTHERS[0]
        c = Tally.options(max_restarts=-1, checkpoint_interval=5,
                          scheduling_strategy=On(B, soft=True)).remote()
        assert [zactor.get(c.inc.remote(), timeout=60) for _ in range(7)] == list(range(1, 8))
        check_on(c, B)
        old = zactor.get(c.pid.remote(), timeout=60)
        print("STEP pause", flush=True)
        sys.stdin.readline()
        wait_for("B declared dead", lambda: node_row(B) is None, timeout=120)
        values = [zactor.get(c.inc.remote(), timeout=120) for _ in range(3)]
        print("STEP resume", flush=True)
        sys.stdin.readline()
        time.sleep(3)  # B wakes up: fenced, or its copy retires
        values += [zactor.get(c.inc.remote(), timeout=120) for _ in range(3)]
        print("VALUES", values, zactor.get(c.where.remote(), timeout=60) == HEAD, flush=True)
        wait_for("the old copy is gone", lambda: not psutil.pid_exists(old) or
                 psutil.Process(old).status() == psutil.STATUS_ZOMBIE)
        print("OLD GONE", flush=True)
    """, on_step)
    assert f"VALUES {list(range(8, 14))} True" in out, out
    assert "OLD GONE" in out, out
