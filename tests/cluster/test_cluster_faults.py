"""A cluster of nodes on loopback (``zactor start`` twice on this machine): placement groups,
node death, fencing of a paused node, and the scheduler daemon killed mid-workload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.cluster.helpers import CliCluster, run_driver, zactor_cli

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def two_nodes():
    cluster = CliCluster(num_cpus=1, extra=("--node-death-timeout", "2"))
    try:
        cluster.add_node(2)
        _wait(lambda: "nodes: 2 alive" in zactor_cli("status", "--address",
                                                     cluster.address).stdout,
              what="both nodes registered")
        yield cluster
    finally:
        cluster.stop()


def _wait(predicate, timeout_s=60.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)  # polling a condition with a deadline
    raise AssertionError(f"{what} not reached within {timeout_s} s")


def test_placement_groups_place_bundles_and_their_tasks(two_nodes):
    out = run_driver("""
        import collections, zactor
        from zactor.util.placement_group import placement_group, remove_placement_group
        from zactor.util.scheduling_strategies import PlacementGroupSchedulingStrategy as In
        zactor.init(address="auto")

        @zactor.remote
        def where():
            return zactor.get_runtime_context().get_node_id()

        pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
        assert zactor.get(pg.ready(), timeout=60) == pg  # Ray's idiom: an ObjectRef
        homes = [set(zactor.get([where.options(scheduling_strategy=In(pg, i)).remote()
                                 for _ in range(4)], timeout=60)) for i in (0, 1)]
        assert all(len(h) == 1 for h in homes) and homes[0] != homes[1], homes
        print("SPREAD OK")
        remove_placement_group(pg)
        packed = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
        assert packed.wait(30)
        nodes = set(zactor.get([where.options(scheduling_strategy=In(packed, i)).remote()
                                for i in (0, 1)], timeout=60))
        assert len(nodes) == 1, nodes
        print("PACK OK")
        too_big = placement_group([{"CPU": 8}], strategy="STRICT_PACK")
        print("TOO BIG READY", too_big.wait(1))
        remove_placement_group(packed)
        remove_placement_group(too_big)
    """, env=two_nodes.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SPREAD OK" in out.stdout and "PACK OK" in out.stdout
    assert "TOO BIG READY False" in out.stdout


def test_a_killed_node_is_declared_dead(two_nodes):
    node = two_nodes.record(two_nodes.nodes[0])
    os.kill(int(node["node_pid"]), signal.SIGKILL)
    status = _wait(lambda: (s := zactor_cli("status", "--address", two_nodes.address,
                                            "--all")).stdout.count("nodes: 1 alive") and s,
                   what="the node's death")
    assert "1 dead" in status.stdout and "no heartbeat" in status.stdout


def test_a_paused_node_declared_dead_is_fenced_when_it_resumes(two_nodes):
    node = two_nodes.record(two_nodes.nodes[0])
    nm = psutil.Process(int(node["node_pid"]))
    nm.suspend()
    try:
        _wait(lambda: "nodes: 1 alive" in zactor_cli("status", "--address",
                                                     two_nodes.address).stdout,
              what="the paused node declared dead")
    finally:
        nm.resume()
    # it learns it was declared dead and stops (its workers with it): nothing runs twice
    _wait(lambda: not nm.is_running() or nm.status() == psutil.STATUS_ZOMBIE,
          what="the fenced node manager's exit")


def test_scheduler_killed_mid_workload_loses_no_task(two_nodes):
    code = textwrap.dedent("""
        import sys, time, zactor
        zactor.init(address="auto")

        @zactor.remote
        def work(i):
            time.sleep(0.05)
            return i * i

        refs = [work.remote(i) for i in range(40)]
        print("SUBMITTED", flush=True)
        sys.stdin.readline()
        refs += [work.remote(i) for i in range(40, 80)]
        print("RESULT", zactor.get(refs, timeout=120) == [i * i for i in range(80)], flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=two_nodes.env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "SUBMITTED"
        head = psutil.Process(two_nodes.supervisor_pid)
        schedulers = [p for p in head.children() if "scheduler" in " ".join(p.cmdline())]
        assert schedulers, [p.cmdline() for p in head.children()]
        schedulers[0].kill()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "RESULT True" in out, out + err
    # the head's supervisor started a new scheduler
    _wait(lambda: [p for p in psutil.Process(two_nodes.supervisor_pid).children()
                   if "scheduler" in " ".join(p.cmdline()) and p.pid != schedulers[0].pid],
          what="a restarted scheduler")


def test_an_actor_is_called_from_a_task_on_another_node(two_nodes):
    out = run_driver("""
        import zactor
        from zactor.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
        zactor.init(address="auto")
        here = zactor.get_runtime_context().get_node_id()
        other = next(n["NodeID"] for n in zactor.nodes() if n["NodeID"] != here)

        @zactor.remote
        class Counter:
            def __init__(self):
                self.n = 0
            def inc(self, k=1):
                self.n += k
                return self.n

        counter = Counter.remote()

        @zactor.remote
        def use(c, k):
            node = zactor.get_runtime_context().get_node_id()
            return zactor.get([c.inc.remote(k) for _ in range(5)]), node

        values, node = zactor.get(use.options(scheduling_strategy=On(other, soft=False))
                                  .remote(counter, 2), timeout=60)
        assert node == other and values == [2, 4, 6, 8, 10], (node, values)
        assert zactor.get(counter.inc.remote(), timeout=30) == 11
        named = Counter.options(name="shared", namespace="team").remote()
        assert zactor.get(named.inc.remote(), timeout=30) == 1

        @zactor.remote
        def by_name():  # a named actor of another node, found through the control store
            return zactor.get(zactor.get_actor("shared", namespace="team").inc.remote())

        assert zactor.get(by_name.options(scheduling_strategy=On(other, soft=False))
                          .remote(), timeout=60) == 2
        print("REMOTE ACTOR OK")
    """, env=two_nodes.env)
    assert "REMOTE ACTOR OK" in out.stdout, out.stdout + out.stderr


def test_an_actor_on_another_node_ends_with_kill_and_with_its_last_handle(two_nodes):
    out = run_driver("""
        import os, signal, time, zactor
        from zactor import exceptions as zx
        from zactor.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
        zactor.init(address="auto")
        here = zactor.get_runtime_context().get_node_id()
        other = next(n["NodeID"] for n in zactor.nodes() if n["NodeID"] != here)

        @zactor.remote
        class Box:
            def where(self):
                return zactor.get_runtime_context().get_node_id(), os.getpid()

        def gone(pid, deadline_s=30):
            deadline = time.monotonic() + deadline_s
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return True
                time.sleep(0.05)
            return False

        # zactor.kill of a handle whose actor lives on the other node
        a = Box.options(scheduling_strategy=On(other, soft=False)).remote()
        node, pid = zactor.get(a.where.remote(), timeout=60)
        assert node == other
        zactor.kill(a)
        try:
            zactor.get(a.where.remote(), timeout=30)
            print("ANSWERED AFTER KILL")
        except zx.RayActorError as exc:
            print("KILLED", type(exc).__name__)
        print("KILL EXITED", gone(pid))

        # the last handle goes: the actor ends on its node, after the calls already sent
        b = Box.options(scheduling_strategy=On(other, soft=False)).remote()
        node, pid = zactor.get(b.where.remote(), timeout=60)
        last = b.where.remote()
        del b
        print("LAST CALL RAN", zactor.get(last, timeout=30)[1] == pid)
        print("SCOPE EXITED", gone(pid))
    """, env=two_nodes.env, timeout=240)
    assert "KILLED" in out.stdout and "KILL EXITED True" in out.stdout, out.stdout + out.stderr
    assert "LAST CALL RAN True" in out.stdout and "SCOPE EXITED True" in out.stdout, \
        out.stdout + out.stderr
