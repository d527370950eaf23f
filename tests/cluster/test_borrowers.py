"""Borrowers ask the owner (zactor/cluster/borrowed_objects.py): node C uses an object that the
driver's node A owns and that node B made; B is SIGKILLed; C's task, ``get`` or actor call
gets the value A re-makes by lineage (or A's ObjectLostError when it cannot), never
C's own "no lineage here". Every run of a task is checked for real: the tasks append a line
(tag, node id) to a file."""

from __future__ import annotations

import os
import signal
import textwrap

import pytest

from tests.cluster.helpers import run_driver
from tests.cluster.test_cluster_faults import _wait
from tests.cluster.test_lineage import (
    DRIVER_START,
    _alive,
    head,  # noqa: F401 - the same head node
    kill_nodes,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def driver(head, tmp_path):  # noqa: F811 - head: the fixture imported above
    """Nodes B (2 CPUs, the holder, killed by the test) and C (2 CPUs, the borrower) next to
    the head A; ``driver(body)`` runs a driver program on A with B, C, ran(), kill_b()..."""
    b = head.add_node(2)
    c = head.add_node(2)
    _wait(lambda: "nodes: 3 alive" in _alive(head), what="nodes B and C registered")
    b_pid, c_pid = (int(head.record(s)["node_pid"]) for s in (b, c))

    def run(body: str) -> str:
        out = run_driver(PRELUDE.format(pid=b_pid, runs=str(tmp_path / "runs.txt"),
                                        go=str(tmp_path / "go")) + textwrap.dedent(body),
                         env=head.env, timeout=240)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    yield run
    kill_nodes(head, [b_pid, c_pid])


PRELUDE = DRIVER_START + """
B_PID, RUNS, GO = {pid}, {runs!r}, {go!r}

def on(node, soft=False):
    return NodeAffinitySchedulingStrategy(node, soft=soft)

@zactor.remote
def under_b():
    return B_PID in [p.pid for p in psutil.Process().parents()]

me = zactor.get_runtime_context().get_node_id()
others = [n["NodeID"] for n in zactor.nodes() if n["NodeID"] != me]
found = {{n: zactor.get(under_b.options(scheduling_strategy=on(n)).remote(), timeout=60)
         for n in others}}
B = next(n for n in others if found[n])
C = next(n for n in others if not found[n])

def wait_for(predicate, what):  # polling a file with a deadline
    deadline = time.monotonic() + 60
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)

def outer_started():  # in a task on C: says it runs, then waits until B was killed
    ran("outer")
    wait_for(lambda: os.path.exists(GO), "go")

def kill_b():  # B held the objects; C is told to go on at once (before B is declared dead)
    os.kill(B_PID, signal.SIGKILL)
    open(GO, "w").close()

def across_b_death(outer, refs):  # outer(refs) starts on C, B dies, outer goes on
    before = len(runs())
    ref = outer.options(scheduling_strategy=on(C)).remote(refs)
    wait_for(lambda: len(runs()) == before + 1, "outer started")
    kill_b()
    return zactor.get(ref, timeout=150)

N = 400_000
EXPECT = N * (N - 1) // 2
open(RUNS, "w").close()

def made_on_b():  # x, made on B, its REMOTE_DONE at A (not asked for: no copy at A)
    x = make_array.options(scheduling_strategy=on(B, soft=True)).remote(N)
    wait_for(lambda: len(runs()) == 1, "make ran")
    time.sleep(1.0)
    assert runs()[0][1] == B, runs()
    return x

def remade_elsewhere():
    makes = [node for tag, node in runs() if tag == "make"]
    assert len(makes) == 2 and makes[1] != B, runs()
"""


def test_a_task_submitted_on_the_borrower_gets_the_rebuilt_argument(driver):
    """C's own task (submitted by a task running on C) takes x, which A owns: C asks A."""
    out = driver("""
        @zactor.remote
        def outer(refs):
            outer_started()
            here = zactor.get_runtime_context().get_node_id()
            return zactor.get(total.options(scheduling_strategy=on(here)).remote(refs[0]),
                              timeout=120)

        x = made_on_b()
        assert across_b_death(outer, [x]) == EXPECT
        remade_elsewhere()
        assert [node for tag, node in runs() if tag == "total"] == [C], runs()
        print("BORROWED TASK OK")
    """)
    assert "BORROWED TASK OK" in out


def test_a_ref_nested_in_a_list_is_rebuilt_for_a_get_on_the_borrower(driver):
    out = driver("""
        @zactor.remote
        def outer(refs):
            outer_started()
            return int(zactor.get(refs[0], timeout=120).sum())

        x = made_on_b()
        assert across_b_death(outer, [x]) == EXPECT
        remade_elsewhere()
        print("NESTED OK")
    """)
    assert "NESTED OK" in out


def test_an_actor_call_on_the_borrower_waits_for_its_rebuilt_argument(driver):
    """The call whose argument is lost waits for it; the caller's next call queues behind."""
    out = driver("""
        @zactor.remote
        class Summer:
            def __init__(self):
                self.calls = []

            def add(self, x):
                self.calls.append(int(x.sum()))
                return self.calls[-1]

            def log(self, tag):
                self.calls.append(tag)
                return list(self.calls)

        actor = Summer.options(scheduling_strategy=on(C)).remote()
        assert zactor.get(actor.log.remote("ready"), timeout=60) == ["ready"]
        x = made_on_b()
        kill_b()
        first = actor.add.remote(x)     # sent to C naming B as x's holder, or held at A
        second = actor.log.remote("after")
        assert zactor.get(first, timeout=150) == EXPECT
        assert zactor.get(second, timeout=60) == ["ready", EXPECT, "after"]
        remade_elsewhere()
        print("ACTOR OK")
    """)
    assert "ACTOR OK" in out


def test_a_put_object_lost_with_its_node_is_an_error_for_the_borrower(driver):
    """No lineage for a put: A answers C with ObjectLostError naming the object and B."""
    out = driver("""
        @zactor.remote
        def putter():
            ran("putter")
            return [zactor.put(np.ones(200_000))]

        @zactor.remote
        def outer(refs):
            outer_started()
            try:
                zactor.get(refs[0], timeout=120)
            except ObjectLostError as exc:
                return str(exc)
            return "not lost"

        inner = zactor.get(putter.options(scheduling_strategy=on(B, soft=True)).remote(),
                           timeout=60)[0]
        assert runs()[0][1] == B, runs()
        text = across_b_death(outer, [inner])
        assert inner.hex() in text and B[:16] in text and "no lineage" in text, text
        assert [tag for tag, _ in runs()] == ["putter", "outer"], runs()
        print("PUT LOST OK")
    """)
    assert "PUT LOST OK" in out


def test_a_borrower_of_a_borrower_reaches_the_owner_through_it(head, driver):  # noqa: F811
    """A's x goes to C nested in a list, C passes it on to D the same way: D's source is C,
    C's is A. B dies: D asks C, C asks A, A re-makes x, the answers come back down."""
    d = head.add_node(1)
    try:
        _wait(lambda: "nodes: 4 alive" in _alive(head), what="node D registered")
        out = driver("""
            D = next(n for n in others if n not in (B, C))

            @zactor.remote
            def inner(refs):
                outer_started()
                return int(zactor.get(refs[0], timeout=120).sum())

            @zactor.remote
            def middle(refs):
                ran("middle")
                return zactor.get(inner.options(scheduling_strategy=on(D)).remote(refs),
                                  timeout=150)

            x = made_on_b()
            ref = middle.options(scheduling_strategy=on(C)).remote([x])
            wait_for(lambda: [tag for tag, _ in runs()] == ["make", "middle", "outer"],
                     "inner started on D")
            kill_b()
            assert zactor.get(ref, timeout=150) == EXPECT
            remade_elsewhere()
            assert [node for tag, node in runs() if tag == "outer"] == [D], runs()
            print("CHAIN OK")
        """)
        assert "CHAIN OK" in out
    finally:
        os.kill(int(head.record(d)["node_pid"]), signal.SIGKILL)
