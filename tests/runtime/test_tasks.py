"""Remote functions, objects and futures on a real local cluster (one per module)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from zactor import exceptions as zx


def test_task_args_kwargs_and_returns(cluster):
    @cluster.remote
    def f(a, b=2, *, c=3):
        return a + b + c

    assert cluster.get(f.remote(1)) == 6
    assert cluster.get(f.remote(1, 10, c=100)) == 111

    @cluster.remote(num_returns=3)
    def three():
        return 1, 2, 3

    refs = three.remote()
    assert cluster.get(refs) == [1, 2, 3]
    assert cluster.get(f.options(num_cpus=0.5, name="custom").remote(0, 0, c=0)) == 0


def test_direct_call_is_refused(cluster):
    @cluster.remote
    def f():
        return 1

    with pytest.raises(TypeError, match=r"try 'f.remote\(\)'"):
        f()


def test_refs_as_arguments_are_resolved_and_nested_refs_stay_refs(cluster):
    @cluster.remote
    def inc(x):
        return x + 1

    @cluster.remote
    def peek(box):
        assert isinstance(box[0], cluster.ObjectRef)
        return cluster.get(box[0])

    a = inc.remote(1)
    b = inc.remote(a)  # top-level ref: the task sees the value
    assert cluster.get(b) == 3
    assert cluster.get(peek.remote([a])) == 2  # nested ref: the task sees a ref


def test_put_get_numpy_is_zero_copy_and_read_only(cluster):
    arr = np.arange(1_000_000, dtype=np.float64)
    ref = cluster.put(arr)
    out = cluster.get(ref)
    assert not out.flags.writeable
    assert np.array_equal(out, arr)
    again = cluster.get(ref)
    assert np.shares_memory(out, again)  # both views are the same store memory
    with pytest.raises(ValueError):
        out[0] = 1


def test_large_argument_goes_through_the_store(cluster):
    @cluster.remote
    def total(x):
        return float(x.sum()), x.flags.writeable

    arr = np.ones(2_000_000)
    assert cluster.get(total.remote(arr)) == (2_000_000.0, False)


def test_put_of_an_object_ref_is_refused(cluster):
    ref = cluster.put(1)
    with pytest.raises(TypeError, match="ObjectRef"):
        cluster.put(ref)


def test_get_timeout_and_bad_arguments(cluster):
    @cluster.remote
    def slow():
        time.sleep(5)

    ref = slow.remote()
    t0 = time.monotonic()
    with pytest.raises(zx.GetTimeoutError):
        cluster.get(ref, timeout=0.2)
    assert time.monotonic() - t0 < 3
    with pytest.raises(TimeoutError):  # GetTimeoutError is also a TimeoutError, as in Ray
        cluster.get(ref, timeout=0)
    cluster.cancel(ref, force=True)
    with pytest.raises(ValueError, match="ObjectRef or a list"):
        cluster.get(123)
    with pytest.raises(ValueError, match="timeout"):
        cluster.get(cluster.put(1), timeout=-1)


def test_wait_keeps_order_and_rejects_duplicates(cluster):
    @cluster.remote
    def sleep_then(x, s):
        time.sleep(s)
        return x

    fast = [sleep_then.remote(i, 0) for i in range(3)]
    slow = sleep_then.remote(99, 3)
    refs = [slow] + fast
    ready, not_ready = cluster.wait(refs, num_returns=3, timeout=10)
    assert ready == fast and not_ready == [slow]
    ready, not_ready = cluster.wait(refs, num_returns=4, timeout=0.1)
    assert slow in not_ready and len(ready) == 3
    with pytest.raises(ValueError, match="unique"):
        cluster.wait([fast[0], fast[0]])
    with pytest.raises(ValueError, match="num_returns"):
        cluster.wait(fast, num_returns=5)
    with pytest.raises(TypeError):
        cluster.wait(fast[0])
    cluster.cancel(slow, force=True)


def test_exception_surfaces_as_task_error_and_cause(cluster):
    class Custom(Exception):
        def __init__(self, msg, code):
            super().__init__(msg)
            self.code = code

    @cluster.remote
    def fail():
        raise Custom("bad thing", 7)

    @cluster.remote
    def dependent(x):
        return x

    with pytest.raises(Custom) as info:
        cluster.get(fail.remote())
    assert isinstance(info.value, zx.RayTaskError)
    assert info.value.code == 7
    assert "bad thing" in str(info.value) and "fail" in str(info.value)
    with pytest.raises(Custom):  # a dependent task fails with the same error
        cluster.get(dependent.remote(fail.remote()))


def test_nested_tasks_three_levels_on_two_cpus(cluster):
    @cluster.remote
    def tree(depth):
        if depth == 0:
            return 1
        return sum(cluster.get([tree.remote(depth - 1) for _ in range(2)]))

    assert cluster.get(tree.remote(3), timeout=60) == 8


def test_ten_thousand_tiny_tasks(cluster):
    @cluster.remote
    def tiny(i):
        return i

    refs = [tiny.remote(i) for i in range(10_000)]
    assert cluster.get(refs, timeout=120) == list(range(10_000))


def test_worker_crash_is_retried_then_reported(cluster, tmp_path):
    marker = tmp_path / "crashed-once"

    @cluster.remote(max_retries=2)
    def crash_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(3)
        return "survived"

    assert cluster.get(crash_once.remote(str(marker)), timeout=60) == "survived"

    @cluster.remote(max_retries=0)
    def crash_always():
        os._exit(3)

    with pytest.raises(zx.WorkerCrashedError, match="exit code 3"):
        cluster.get(crash_always.remote(), timeout=60)


def test_retry_exceptions(cluster, tmp_path):
    counter = tmp_path / "attempts"

    @cluster.remote(max_retries=3, retry_exceptions=[ValueError])
    def flaky(path):
        n = int(open(path).read()) if os.path.exists(path) else 0
        open(path, "w").write(str(n + 1))
        if n < 2:
            raise ValueError(f"attempt {n}")
        return n

    assert cluster.get(flaky.remote(str(counter)), timeout=60) == 2

    @cluster.remote(max_retries=3, retry_exceptions=[KeyError])
    def other():
        raise ValueError("not retried")

    with pytest.raises(ValueError, match="not retried"):
        cluster.get(other.remote(), timeout=60)


def test_cancel_running_and_queued_tasks(cluster):
    @cluster.remote
    def sleeper(s):
        time.sleep(s)
        return s

    running = [sleeper.remote(30) for _ in range(2)]
    queued = sleeper.remote(30)
    time.sleep(0.5)
    cluster.cancel(queued)
    with pytest.raises(zx.TaskCancelledError):
        cluster.get(queued, timeout=30)
    cluster.cancel(running[0])
    cluster.cancel(running[1], force=True)
    for ref in running:
        with pytest.raises(zx.TaskCancelledError):
            cluster.get(ref, timeout=30)
    assert cluster.get(sleeper.remote(0), timeout=30) == 0  # the pool still works


def test_cancelled_tasks_queued_in_workers_never_run(cluster, tmp_path):
    """Tasks pipelined behind a running one are dropped by their worker when cancelled, and
    an interrupt never hits the task after the one meant (a cancelled task that ran anyway
    would hold its worker for its whole length)."""
    @cluster.remote
    def mark(path, s):
        open(path, "w").close()
        time.sleep(s)
        return s

    first = [mark.remote(str(tmp_path / f"first{i}"), 30) for i in range(2)]
    queued = [mark.remote(str(tmp_path / f"queued{i}"), 30) for i in range(6)]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"first{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline, "the first tasks never started"
        time.sleep(0.05)
    for ref in queued + first:
        cluster.cancel(ref)
    for ref in queued + first:
        with pytest.raises(zx.TaskCancelledError):
            cluster.get(ref, timeout=30)
    # both workers are free again: two tasks that meet run at the same time
    assert cluster.get([mark.remote(str(tmp_path / f"after{i}"), 0) for i in range(2)],
                       timeout=20) == [0, 0]
    started = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("queued"))
    assert started == [], f"cancelled tasks ran: {started}"


def test_unpicklable_argument_and_result_are_named(cluster):
    @cluster.remote
    def echo(x):
        return x

    @cluster.remote
    def make_lock():
        return threading.Lock()

    with pytest.raises(TypeError, match=r"cannot serialize value\['lock'\]"):
        echo.remote({"lock": threading.Lock()})
    with pytest.raises(zx.RayTaskError, match="lock"):
        cluster.get(make_lock.remote(), timeout=30)


def test_objects_are_freed_when_unreferenced(cluster):
    from zactor.runtime import context

    store = context.client().store
    before = store.stats()["object_count"]
    ref = cluster.put(np.ones(1_000_000))
    assert store.stats()["object_count"] == before + 1
    del ref
    cluster.put(0)  # any call flushes the reference change
    deadline = time.monotonic() + 10
    while store.stats()["object_count"] > before and time.monotonic() < deadline:
        time.sleep(0.02)
        cluster.available_resources()
    assert store.stats()["object_count"] == before


def test_introspection(cluster):
    assert cluster.is_initialized()
    assert cluster.cluster_resources()["CPU"] == 2
    (node,) = cluster.nodes()
    assert node["Alive"] and node["Resources"]["CPU"] == 2
    ctx = cluster.get_runtime_context()
    assert len(ctx.get_job_id()) == 8 and ctx.get_task_id() is None

    @cluster.remote
    def where():
        c = cluster.get_runtime_context()
        return c.get_task_id(), c.get_node_id()

    task_id, node_id = cluster.get(where.remote())
    assert task_id is not None and node_id == ctx.get_node_id()


def test_object_ref_futures(cluster):
    import asyncio

    @cluster.remote
    def f(x):
        return x * 2

    assert f.remote(4).future().result(timeout=30) == 8

    async def main():
        return await f.remote(5)

    assert asyncio.run(main()) == 10


def test_refs_inside_objects_keep_their_targets_alive(cluster):
    inner = cluster.put(np.arange(300_000))  # in the store
    inner_id = inner.binary()
    outer = cluster.put({"inner": inner})
    del inner
    cluster.put(0)  # flushes the release of `inner`
    got = cluster.get(outer)["inner"]
    assert got.binary() == inner_id
    assert cluster.get(got)[-1] == 299_999


def test_objects_outlive_the_worker_that_created_them(cluster):
    @cluster.remote
    def make():
        return [cluster.put(np.full(200_000, 7.0)), os.getpid()]

    ref, pid = cluster.get(make.remote())
    os.kill(pid, 9)  # the creator of the object is gone (Ray would raise OwnerDiedError)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    assert float(cluster.get(ref, timeout=30)[0]) == 7.0


def test_garbage_frames_never_stop_the_node_manager(cluster):
    import zmq

    from zactor import protocol
    from zactor.runtime import messages as m

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.api._node.address)
    try:
        sock.send_multipart([b"\x00garbage"])  # no valid header: logged and dropped
        sock.send_multipart([b"x" * 10, b"y"])  # wrong version: dropped
        header = protocol.encode(m.SUBMIT, {"tasks": []})[0]
        sock.send_multipart([header, b"\xc1not msgpack"])  # header parses: ERROR reply
        assert sock.poll(10_000), "no error reply"
        reply = protocol.decode(sock.recv_multipart())
        assert reply.mtype is protocol.ERROR and reply["code"] == protocol.ERR_MALFORMED
        sock.send_multipart(protocol.encode(m.SUBMIT, {"tasks": [{"id": b"bad"}]}))  # no HELLO
    finally:
        sock.close(0)
        ctx.term()

    @cluster.remote
    def still_works():
        return "yes"

    assert cluster.get(still_works.remote(), timeout=30) == "yes"


def test_results_the_driver_let_go_of_are_not_sent_to_it(cluster):
    from zactor.runtime import context

    @cluster.remote
    def inc(x):
        return x + 1

    client = context.client()
    received = []
    store_results = client._store_results

    def counting(objects):
        received.extend(o[0] for o in objects)
        return store_results(objects)

    client._store_results = counting
    try:
        ref = inc.remote(0)
        for _ in range(49):
            ref = inc.remote(ref)  # the previous ref is dropped: only the task holds it
        assert cluster.get(ref, timeout=60) == 50
    finally:
        del client._store_results
    # the last result, and at most the few whose release had not reached the node manager
    # when they were made (the driver once received all 50, one message per hop)
    assert ref.binary() in received
    assert len(received) < 10, len(received)
