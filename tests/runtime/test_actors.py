"""Actors on one node: creation, ordered calls, handles passed around, names, failures.

(Restarts, checkpoints, async/threaded actors and ActorPool come with the actors issue.)
"""

from __future__ import annotations

import os
import time

import pytest

from zactor import exceptions as zx


def test_counter_calls_run_in_order_and_keep_state(cluster):
    @cluster.remote
    class Counter:
        def __init__(self, start=0):
            self.n = start

        def incr(self, k=1):
            self.n += k
            return self.n

    c = Counter.remote(10)
    assert cluster.get([c.incr.remote() for _ in range(1000)]) == list(range(11, 1011))
    assert cluster.get(c.incr.remote(k=5)) == 1015


def test_method_options_num_returns_and_ref_arguments(cluster):
    @cluster.remote
    class Box:
        def __init__(self):
            self.items = []

        def add(self, x):
            self.items.append(x)
            return len(self.items)

        @cluster.method(num_returns=2)
        def pair(self):
            return self.items[0], self.items[-1]

    @cluster.remote
    def slow_value():
        time.sleep(0.3)
        return "late"

    b = Box.remote()
    b.add.remote("first")
    b.add.remote(slow_value.remote())  # the call waits for its argument; order is kept
    b.add.remote("last")
    first, last = b.pair.remote()
    assert cluster.get([first, last]) == ["first", "last"]
    one, two = b.pair.options(num_returns=2).remote()
    assert cluster.get(two) == "last"


def test_handles_work_inside_tasks_and_other_actors(cluster):
    @cluster.remote
    class Store:
        def __init__(self):
            self.d = {}

        def set(self, k, v):
            self.d[k] = v

        def get(self, k):
            return self.d.get(k)

    @cluster.remote
    class Writer:
        def __init__(self, store):
            self.store = store

        def write(self, k, v):
            return cluster.get(self.store.set.remote(k, v))

    @cluster.remote
    def read(store, k):
        return cluster.get(store.get.remote(k))

    s = Store.remote()
    w = Writer.remote(s)
    cluster.get(w.write.remote("a", 1))
    assert cluster.get(read.remote(s, "a")) == 1


def test_named_actors(cluster):
    @cluster.remote
    class Named:
        def ping(self):
            return "pong"

    a = Named.options(name="svc").remote()
    assert cluster.get(cluster.get_actor("svc").ping.remote()) == "pong"
    with pytest.raises(ValueError, match="already taken"):
        Named.options(name="svc").remote()
    again = Named.options(name="svc", get_if_exists=True).remote()
    assert again == a
    with pytest.raises(ValueError, match="Failed to look up actor"):
        cluster.get_actor("nobody")
    with pytest.raises(ValueError, match="Failed to look up actor"):
        cluster.get_actor("svc", namespace="elsewhere")
    cluster.kill(a)
    with pytest.raises(ValueError):
        cluster.get_actor("svc")


def test_errors_in_methods_leave_the_actor_alive(cluster):
    @cluster.remote
    class Fragile:
        def __init__(self):
            self.calls = 0

        def maybe(self, fail):
            self.calls += 1
            if fail:
                raise KeyError("boom")
            return self.calls

    f = Fragile.remote()
    with pytest.raises(KeyError):
        cluster.get(f.maybe.remote(True))
    assert cluster.get(f.maybe.remote(False)) == 2


def test_init_failure_fails_every_call_with_the_cause(cluster):
    @cluster.remote
    class Broken:
        def __init__(self):
            raise ValueError("bad config")

        def f(self):
            return 1

    b = Broken.remote()
    for _ in range(2):
        with pytest.raises(zx.RayActorError, match="bad config") as info:
            cluster.get(b.f.remote(), timeout=30)
        assert isinstance(info.value.cause, ValueError)


def test_killed_or_crashed_actor_fails_calls_instead_of_hanging(cluster):
    @cluster.remote
    class Victim:
        def pid(self):
            return os.getpid()

        def crash(self):
            os._exit(7)

        def sleep(self):
            time.sleep(60)

    v = Victim.remote()
    assert cluster.get(v.pid.remote()) > 0
    pending = v.sleep.remote()
    queued = v.pid.remote()
    cluster.kill(v)
    for ref in (pending, queued, v.pid.remote()):
        with pytest.raises(zx.ActorDiedError, match="killed"):
            cluster.get(ref, timeout=30)

    w = Victim.remote()
    with pytest.raises(zx.ActorDiedError, match="exit code 7"):
        cluster.get(w.crash.remote(), timeout=30)
    with pytest.raises(zx.RayActorError):  # ActorDiedError is a RayActorError
        cluster.get(w.pid.remote(), timeout=30)


def test_many_actors_on_two_cpus_and_direct_calls_refused(cluster):
    @cluster.remote
    class Tiny:
        def __init__(self, i):
            self.i = i

        def who(self):
            return self.i

    actors = [Tiny.remote(i) for i in range(50)]  # actors hold no CPU by default, as in Ray
    assert cluster.get([a.who.remote() for a in actors], timeout=120) == list(range(50))
    assert cluster.available_resources()["CPU"] == 2
    with pytest.raises(TypeError, match="Tiny.remote"):
        Tiny(1)
    with pytest.raises(TypeError, match="who.remote"):
        actors[0].who()
    with pytest.raises(AttributeError, match="no method"):
        _ = actors[0].nope
    for a in actors:
        cluster.kill(a)


def test_restarted_actor_runs_init_again_and_retries_calls(cluster, tmp_path):
    import numpy as np

    @cluster.remote(max_restarts=1, max_task_retries=1)
    class Phoenix:
        def __init__(self, weights):
            self.weights = weights  # a large argument: kept for the restart
            self.calls = 0

        def call(self):
            self.calls += 1
            return self.calls, os.getpid(), float(self.weights.sum())

        def die_once(self, marker):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return "second life"

    p = Phoenix.remote(np.ones(100_000))
    calls, pid1, total = cluster.get(p.call.remote())
    assert (calls, total) == (1, 100_000.0)
    # the call that kills the worker is retried on the restarted actor (max_task_retries=1)
    assert cluster.get(p.die_once.remote(str(tmp_path / "m")), timeout=60) == "second life"
    calls, pid2, total = cluster.get(p.call.remote(), timeout=60)
    assert pid2 != pid1 and calls == 1 and total == 100_000.0  # fresh state after restart
    p.die_once.remote(str(tmp_path / "m2"))  # restarts are spent now
    with pytest.raises(zx.ActorDiedError):
        cluster.get(p.call.remote(), timeout=60)


def test_a_process_death_inside_init_is_a_restart_not_an_init_failure(cluster, tmp_path):
    """A worker killed while __init__ runs (the chaos harness's kill-worker) costs one
    restart, as in Ray; an exception raised by __init__ does not (previous tests)."""

    @cluster.remote(max_restarts=1)
    class Fragile:
        def __init__(self, marker):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            self.pid = os.getpid()

        def pid_of(self):
            return self.pid

    a = Fragile.remote(str(tmp_path / "first"))
    assert cluster.get(a.pid_of.remote(), timeout=60) > 0

    b = Fragile.options(max_restarts=0).remote(str(tmp_path / "second"))
    with pytest.raises(zx.RayActorError, match="SIGKILL|exit code 1|died"):
        cluster.get(b.pid_of.remote(), timeout=60)


def test_actor_pool_map_and_unordered(cluster):
    from zactor.util import ActorPool

    @cluster.remote
    class Doubler:
        def double(self, x):
            time.sleep(0.01 * (x % 3))
            return 2 * x

    pool = ActorPool([Doubler.remote() for _ in range(3)])
    assert list(pool.map(lambda a, v: a.double.remote(v), range(10))) == \
        [2 * i for i in range(10)]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(10))) == \
        [2 * i for i in range(10)]
    pool.submit(lambda a, v: a.double.remote(v), 21)
    assert pool.has_next() and pool.get_next() == 42 and not pool.has_next()
    extra = Doubler.remote()
    pool.push(extra)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(extra)
    assert pool.pop_idle() is not None


def test_threaded_and_async_actors_run_calls_concurrently(cluster):
    import asyncio

    @cluster.remote(max_concurrency=4)
    class Threaded:
        def __init__(self):
            import threading

            self.barrier = threading.Barrier(4)

        def meet(self):
            # only passes when 4 calls run at the same time (sequential calls would time out)
            self.barrier.wait(timeout=20)
            return 1

    @cluster.remote
    class AsyncActor:
        def __init__(self):
            self.event = None

        async def wait_for_go(self):
            if self.event is None:
                self.event = asyncio.Event()
            await self.event.wait()
            return "released"

        async def go(self):
            if self.event is None:
                self.event = asyncio.Event()
            self.event.set()
            return "go"

    t = Threaded.remote()
    assert sum(cluster.get([t.meet.remote() for _ in range(4)], timeout=60)) == 4

    a = AsyncActor.remote()
    waiting = [a.wait_for_go.remote() for _ in range(3)]  # would deadlock one at a time
    assert cluster.get(a.go.remote(), timeout=30) == "go"
    assert cluster.get(waiting, timeout=30) == ["released"] * 3


@pytest.mark.parametrize("interval", [7, 1000])  # with a checkpoint, and replay from creation
def test_checkpointed_counter_killed_mid_stream_ends_exact(cluster, tmp_path, interval):
    @cluster.remote(max_restarts=-1, checkpoint_interval=interval)
    class Counter:
        def __init__(self):
            self.total = 0
            self.seen = []

        def add(self, k, crash_marker=None):
            if crash_marker is not None and not os.path.exists(crash_marker):
                open(crash_marker, "w").close()
                os._exit(9)  # dies in the middle of the stream, once
            self.total += k
            self.seen.append(k)
            return self.total

        def state(self):
            return self.total, list(self.seen)

        def __zactor_checkpoint__(self):
            return {"total": self.total, "seen": list(self.seen)}

        def __zactor_restore__(self, state):
            self.total, self.seen = state["total"], list(state["seen"])

    c = Counter.remote()
    refs = [c.add.remote(k) for k in range(1, 21)]
    refs.append(c.add.remote(100, str(tmp_path / f"crash-{interval}")))
    refs += [c.add.remote(k) for k in range(21, 31)]
    values = cluster.get(refs, timeout=120)
    expected = sum(range(1, 31)) + 100
    assert values[-1] == expected  # every call applied exactly once, in order
    total, seen = cluster.get(c.state.remote(), timeout=60)
    assert total == expected and seen == list(range(1, 21)) + [100] + list(range(21, 31))


def test_actor_ends_when_its_last_handle_is_gone(cluster):
    import gc

    @cluster.remote
    class Ephemeral:
        def pid(self):
            return os.getpid()

    @cluster.remote
    def use(handle):
        return cluster.get(handle.pid.remote())

    handle = Ephemeral.remote()
    pid = cluster.get(use.remote(handle))  # a copy of the handle lived in a task meanwhile
    del handle
    gc.collect()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        cluster.available_resources()  # any call sends the released reference
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the actor's worker is still running after its last handle went away")

    named = Ephemeral.options(name="kept").remote()  # named actors are not ended this way
    npid = cluster.get(named.pid.remote())
    del named
    gc.collect()
    cluster.available_resources()
    assert cluster.get(cluster.get_actor("kept").pid.remote()) == npid
    cluster.kill(cluster.get_actor("kept"))


def test_ten_async_calls_are_in_flight_at_once(cluster):
    import asyncio

    @cluster.remote
    class Sleeper:
        def __init__(self):
            self.in_flight = 0
            self.most = 0

        async def nap(self):
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0.5)
            self.in_flight -= 1
            return 1

        async def most_at_once(self):
            return self.most

    s = Sleeper.remote()
    assert sum(cluster.get([s.nap.remote() for _ in range(10)], timeout=60)) == 10
    assert cluster.get(s.most_at_once.remote()) == 10


def test_a_burst_of_async_calls_runs_each_once_within_max_concurrency(cluster):
    import asyncio

    # calls reach the actor's loop in batches (one wake-up per batch): every call still
    # runs exactly once, and never more than max_concurrency at a time
    @cluster.remote(max_concurrency=3)
    class Recorder:
        def __init__(self):
            self.started, self.in_flight, self.most = [], 0, 0

        async def call(self, i):
            self.started.append(i)
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0.001 * (i % 3))
            self.in_flight -= 1
            return i * 2

        async def seen(self):
            return self.started, self.most

    r = Recorder.remote()
    assert cluster.get([r.call.remote(i) for i in range(500)], timeout=120) == \
        [i * 2 for i in range(500)]
    started, most = cluster.get(r.seen.remote(), timeout=60)
    assert sorted(started) == list(range(500))
    assert most == 3


@pytest.mark.parametrize("restarts", [0, 1])
def test_sigkill_of_the_actor_process(cluster, restarts):
    import signal

    # max_task_retries: a call that reaches the dead worker before its death is seen runs again
    @cluster.remote(max_restarts=restarts, max_task_retries=restarts)
    class Target:
        def __init__(self):
            self.calls = 0

        def pid(self):
            self.calls += 1
            return os.getpid(), self.calls

    t = Target.remote()
    pid, _ = cluster.get(t.pid.remote())
    os.kill(pid, signal.SIGKILL)
    if restarts == 0:
        with pytest.raises(zx.ActorDiedError, match="SIGKILL"):
            cluster.get(t.pid.remote(), timeout=60)
    else:
        new_pid, calls = cluster.get(t.pid.remote(), timeout=60)
        assert new_pid != pid and calls == 1  # a fresh instance (no checkpoint methods)
