"""The direct paths (runtime/direct.py, runtime/direct_node.py): actor calls sent straight to
the actor's worker, tasks pushed to leased workers, and what the node manager still does for
them (other holders of the results, restarts, retries, cancel). No timing assertions: the
counters say which path a call took."""

from __future__ import annotations

import os
import time

import pytest

from zactor import exceptions as zx
from zactor.runtime import context


def _direct():
    return context.client().direct


def _settle(cluster, handle, method="get"):
    """Make one call answered through the node manager, so the route is known."""
    return cluster.get(getattr(handle, method).remote())


def test_actor_calls_go_direct_and_keep_their_order(cluster):
    @cluster.remote
    class Log:
        def __init__(self):
            self.items = []

        def add(self, x):
            self.items.append(x)
            return len(self.items)

        def get(self):
            return list(self.items)

    @cluster.remote
    def slow(x):
        time.sleep(0.2)
        return x

    log = Log.remote()
    _settle(cluster, log)
    sent = _direct().sent
    refs = []
    for i in range(300):
        # every 50th call waits for an argument: it goes through the node manager, the calls
        # after it wait for it, and the direct calls before it are not overtaken
        refs.append(log.add.remote(slow.remote(i) if i % 50 == 25 else i))
    assert cluster.get(refs) == list(range(1, 301))
    assert cluster.get(log.get.remote()) == list(range(300))
    # the calls after the first that went through the node manager follow it there until
    # its result is read here (no overtaking): at least the first 25 went direct
    assert _direct().sent >= sent + 25


def test_direct_results_are_visible_to_other_processes(cluster):
    @cluster.remote
    class Maker:
        def make(self, n):
            return list(range(n))

        def big(self):
            return bytes(300_000)  # through the store

    @cluster.remote
    def total(box):
        return sum(cluster.get(box[0]))  # a ref nested in a value: the worker asks the node

    @cluster.remote
    def size(value):
        return len(value)

    maker = Maker.remote()
    cluster.get(maker.make.remote(1))
    sent = _direct().sent
    small, big = maker.make.remote(100), maker.big.remote()
    assert cluster.get(total.remote([small])) == sum(range(100))
    assert cluster.get(size.remote(big)) == 300_000
    assert _direct().sent == sent + 2
    del big
    assert cluster.get(total.remote([small])) == sum(range(100))


def test_a_held_report_reaches_the_node_while_the_actor_runs_a_long_call(cluster):
    """The worker holds the report of an answered direct call for a few ms so that one
    TASK_DONE carries several (CoreClient._report_done); a long call right after must not
    hold it for its whole length: another process asking the node for the result gets it
    while that call still runs."""
    @cluster.remote
    class Slow:
        def quick(self):
            return 7

        def sleep(self, seconds):
            time.sleep(seconds)
            return seconds

    @cluster.remote
    def unbox(box):
        return cluster.get(box[0])  # a ref nested in a value: the worker asks the node

    actor = Slow.remote()
    cluster.get(actor.quick.remote())
    sent = _direct().sent
    answer = actor.quick.remote()
    assert cluster.get(answer) == 7
    long_call = actor.sleep.remote(20)  # runs right after: the held report must not wait
    assert _direct().sent == sent + 2
    # ~0.1 s here; the get's deadline is far below the 20 s the long call runs
    assert cluster.get(unbox.remote([answer]), timeout=10) == 7
    cluster.kill(actor)
    del long_call


def test_calls_after_a_restart_reach_the_new_incarnation(cluster):
    @cluster.remote(max_restarts=1, max_task_retries=0)
    class Fragile:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

        def pid(self):
            return os.getpid()

        def get(self):
            return self.n

        def die(self):
            os._exit(1)

    a = Fragile.remote()
    _settle(cluster, a)
    assert cluster.get([a.incr.remote() for _ in range(5)]) == [1, 2, 3, 4, 5]
    first_pid = cluster.get(a.pid.remote())
    route = _direct().routes[a._actor_id]
    assert route[1] == 0
    with pytest.raises(zx.RayActorError):
        cluster.get(a.die.remote(), timeout=30)
    # the restarted actor has fresh state; calls reach it (through the node manager until
    # the new route arrives, then directly)
    deadline = time.monotonic() + 30
    while cluster.get(a.pid.remote(), timeout=30) == first_pid:
        assert time.monotonic() < deadline
    assert cluster.get([a.incr.remote() for _ in range(20)], timeout=30) == list(range(1, 21))
    new = _direct().routes.get(a._actor_id)
    assert new is not None and new[1] == 1 and new[0] != route[0]


def test_a_call_for_an_old_incarnation_is_refused_and_requeued(cluster):
    @cluster.remote(max_restarts=1)
    class Fragile:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

        def get(self):
            return self.n

        def die(self):
            os._exit(1)

    a = Fragile.remote()
    _settle(cluster, a)
    with pytest.raises(zx.RayActorError):
        cluster.get(a.die.remote(), timeout=30)
    deadline = time.monotonic() + 30
    while _direct().routes.get(a._actor_id, ("", 0))[1] != 1:
        cluster.get(a.get.remote(), timeout=30)
        assert time.monotonic() < deadline
    addr, _ = _direct().routes[a._actor_id]
    _direct().routes[a._actor_id] = (addr, 0)  # as if this caller still knew incarnation 0
    refused = _direct().refused
    assert cluster.get(a.incr.remote(), timeout=30) == 1  # refused by the worker, re-queued
    assert _direct().refused == refused + 1
    assert cluster.get(a.incr.remote(), timeout=30) == 2


def test_in_flight_direct_calls_fail_when_the_actor_dies(cluster):
    @cluster.remote
    class Sleeper:
        def nap(self, s):
            time.sleep(s)
            return s

        def get(self):
            return 0

    s = Sleeper.remote()
    _settle(cluster, s)
    refs = [s.nap.remote(0.05) for _ in range(20)]
    time.sleep(0.2)
    cluster.kill(s)
    outcomes = []
    for ref in refs:
        try:
            outcomes.append(cluster.get(ref, timeout=30))
        except zx.RayActorError as err:  # ActorDiedError is one
            outcomes.append(type(err).__name__)
    assert "ActorDiedError" in outcomes
    with pytest.raises(zx.RayActorError):
        cluster.get(s.nap.remote(0), timeout=30)


def test_tasks_go_to_leased_workers(cluster):
    @cluster.remote
    def square(x):
        return x * x

    cluster.get([square.remote(i) for i in range(10)])
    sent = _direct().tasks_sent
    assert cluster.get([square.remote(i) for i in range(500)]) == [i * i for i in range(500)]
    for i in range(50):
        assert cluster.get(square.remote(i)) == i * i
    assert _direct().tasks_sent > sent + 400
    # a dependent task goes through the node manager and still sees a direct result
    ref = square.remote(3)
    assert cluster.get(square.remote(ref)) == 81


def test_direct_task_crash_is_retried_and_cancel_works(cluster, tmp_path):
    marker = tmp_path / "crashed"

    @cluster.remote(max_retries=2)
    def crash_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        return "ok"

    @cluster.remote
    def sleeper(s):
        time.sleep(s)
        return s

    cluster.get([sleeper.remote(0) for _ in range(10)])
    sent = _direct().tasks_sent
    assert cluster.get(crash_once.remote(str(marker)), timeout=60) == "ok"
    running = sleeper.remote(30)
    queued = [sleeper.remote(30) for _ in range(3)]
    assert _direct().tasks_sent > sent
    time.sleep(0.5)
    for ref in queued + [running]:
        cluster.cancel(ref)
    for ref in queued + [running]:
        with pytest.raises(zx.TaskCancelledError):
            cluster.get(ref, timeout=30)
    assert cluster.get(sleeper.remote(0), timeout=30) == 0


def test_nested_tasks_from_leased_workers_do_not_deadlock(cluster):
    @cluster.remote
    def leaf(x):
        return x + 1

    @cluster.remote
    def parent(x):
        return sum(cluster.get([leaf.remote(x + i) for i in range(3)]))

    cluster.get([leaf.remote(0) for _ in range(10)])  # leases held by the driver
    assert cluster.get([parent.remote(i) for i in range(6)], timeout=60) == \
        [3 * i + 6 for i in range(6)]
