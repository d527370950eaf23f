"""The local scheduler state machine, without processes: unit cases and a hypothesis model."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zactor.scheduling.local_scheduler import (
    DedicatedWorkerDied,
    Dispatch,
    FailTask,
    Infeasible,
    Interrupt,
    KillWorker,
    LocalScheduler,
    Recall,
    Spill,
    StartWorkers,
    TaskRequest,
    spill_when_queue_long,
)
from zactor.scheduling.resources import NodeResources, ResourceSet

ONE_CPU = ResourceSet.of(num_cpus=1)


def tid(n: int) -> bytes:
    return n.to_bytes(24, "little")


def of(kind, instructions):
    return [i for i in instructions if isinstance(i, kind)]


def test_task_waits_for_worker_then_runs():
    s = LocalScheduler(ResourceSet.of(num_cpus=2))
    out = s.submit(TaskRequest(tid(1), ONE_CPU))
    assert of(StartWorkers, out) == [StartWorkers(1)]
    out = s.worker_registered(b"w1")
    (d,) = of(Dispatch, out)
    assert (d.task_id, d.worker_id, d.attempt) == (tid(1), b"w1", 0)
    assert s.resources.available == ResourceSet.of(num_cpus=1)
    s.task_finished(tid(1), b"w1")
    assert s.resources.available == s.resources.total
    assert s.check() == []


def test_dependencies_hold_a_task_back():
    s = LocalScheduler(ResourceSet.of(num_cpus=1))
    s.worker_registered(b"w")
    assert of(Dispatch, s.submit(TaskRequest(tid(1), ONE_CPU, deps=frozenset({b"o1", b"o2"})))) \
        == []
    assert of(Dispatch, s.object_local(b"o1")) == []
    assert len(of(Dispatch, s.object_local(b"o2"))) == 1


def test_blocked_worker_lends_its_cpu_so_nested_tasks_run():
    s = LocalScheduler(ResourceSet.of(num_cpus=1))
    s.worker_registered(b"parent")
    s.submit(TaskRequest(tid(1), ONE_CPU))
    assert of(StartWorkers, s.submit(TaskRequest(tid(2), ONE_CPU))) == []  # no CPU left
    out = s.worker_blocked(b"parent")  # the parent waits for the child in get()
    assert of(StartWorkers, out) == [StartWorkers(1)]
    (d,) = of(Dispatch, s.worker_registered(b"child"))
    assert d.task_id == tid(2)
    s.worker_unblocked(b"parent")  # over-commits until the child finishes
    assert s.resources.available.get("CPU") == -1
    s.task_finished(tid(2), b"child")
    s.task_finished(tid(1), b"parent")
    assert s.resources.available == s.resources.total and s.check() == []


def test_pipelining_and_recall_on_block():
    s = LocalScheduler(ResourceSet.of(num_cpus=1), pipeline_depth=3)
    s.worker_registered(b"w")
    for i in range(1, 6):
        s.submit(TaskRequest(tid(i), ONE_CPU))
    assert len(s.workers[b"w"].in_flight) == 3
    (r,) = of(Recall, s.worker_blocked(b"w"))
    assert r.task_ids == (tid(2), tid(3))
    s.tasks_returned(b"w", r.task_ids)
    assert s.check() == []
    s.worker_unblocked(b"w")
    out = s.task_finished(tid(1), b"w")
    assert [d.task_id for d in of(Dispatch, out)] == [tid(2), tid(3), tid(4)]


def chain_scheduler(depth=3):
    s = LocalScheduler(ResourceSet.of(num_cpus=2), pipeline_depth=depth,
                       producer_of=lambda oid: oid[1:] if oid.startswith(b"r") else None)
    s.worker_registered(b"w1")
    s.worker_registered(b"w2")
    return s


def test_a_chain_of_dependent_tasks_is_queued_at_the_worker_making_each_argument():
    s = chain_scheduler()
    out = s.submit(TaskRequest(tid(1), ONE_CPU))
    for i in range(2, 6):  # each needs the previous one's result
        out += s.submit(TaskRequest(tid(i), ONE_CPU, deps=frozenset({b"r" + tid(i - 1)})))
    sent = of(Dispatch, out)
    assert [(d.task_id, d.pending) for d in sent] == [
        (tid(1), frozenset()), (tid(2), {b"r" + tid(1)}), (tid(3), {b"r" + tid(2)})]
    assert {d.worker_id for d in sent} == {sent[0].worker_id}  # one worker, pipeline full
    w = sent[0].worker_id
    s.object_local(b"r" + tid(1))
    (d,) = of(Dispatch, s.task_finished(tid(1), w))  # room again: the next link follows
    assert (d.task_id, d.worker_id, d.pending) == (tid(4), w, {b"r" + tid(3)})
    assert of(Recall, s.rebalance()) == []  # chained tasks cannot run anywhere else
    assert s.check() == []
    # the worker hands t3 back (t2's result is to be retried): it waits like any task
    assert of(Dispatch, s.tasks_returned(w, [tid(3)])) == []
    (d,) = of(Dispatch, s.object_local(b"r" + tid(2)))
    assert d.task_id == tid(3) and d.pending == frozenset() and d.worker_id != w
    assert s.check() == []


def test_a_task_that_also_needs_another_workers_result_is_not_chained():
    s = chain_scheduler()
    out = s.submit(TaskRequest(tid(1), ONE_CPU)) + s.submit(TaskRequest(tid(2), ONE_CPU))
    assert len({d.worker_id for d in of(Dispatch, out)}) == 2
    both = frozenset({b"r" + tid(1), b"r" + tid(2)})
    assert of(Dispatch, s.submit(TaskRequest(tid(3), ONE_CPU, deps=both))) == []
    # a chained task's worker dies: it waits for its producer's retry, not dispatched blind
    out = s.submit(TaskRequest(tid(4), ONE_CPU, deps=frozenset({b"r" + tid(1)})))
    (d,) = of(Dispatch, out)
    assert d.pending == {b"r" + tid(1)}
    out = s.worker_died(d.worker_id, "SIGKILL")
    assert of(Dispatch, out) == [] and s.check() == []


def test_worker_death_retries_then_fails():
    s = LocalScheduler(ResourceSet.of(num_cpus=1))
    s.worker_registered(b"w1")
    s.submit(TaskRequest(tid(1), ONE_CPU, max_retries=1))
    out = s.worker_died(b"w1", "exit code -9")
    assert of(FailTask, out) == [] and of(StartWorkers, out) == [StartWorkers(1)]
    (d,) = of(Dispatch, s.worker_registered(b"w2"))
    assert d.attempt == 1
    (f,) = of(FailTask, s.worker_died(b"w2", "exit code -9"))
    assert f.kind == "worker_crashed" and "-9" in f.detail
    assert s.resources.available == s.resources.total and s.check() == []


def test_infeasible_warns_once_and_spills_when_it_can():
    s = LocalScheduler(ResourceSet.of(num_cpus=1))
    big = ResourceSet.of(num_cpus=4)
    out = s.submit(TaskRequest(tid(1), big))
    assert len(of(Infeasible, out)) == 1
    assert of(Infeasible, s.submit(TaskRequest(tid(2), ONE_CPU))) == []
    c = LocalScheduler(ResourceSet.of(num_cpus=1), can_spill=True)
    assert of(Spill, c.submit(TaskRequest(tid(1), big)))[0].reason == "does not fit on this node"
    p = LocalScheduler(ResourceSet.of(num_cpus=1), can_spill=True,
                       spill_policy=spill_when_queue_long(threshold=1))
    p.submit(TaskRequest(tid(1), ONE_CPU))
    p.submit(TaskRequest(tid(2), ONE_CPU))
    assert of(Spill, p.submit(TaskRequest(tid(3), ONE_CPU)))


def test_cancel_queued_running_and_forced():
    s = LocalScheduler(ResourceSet.of(num_cpus=1))
    s.worker_registered(b"w")
    s.submit(TaskRequest(tid(1), ONE_CPU))
    s.submit(TaskRequest(tid(2), ONE_CPU))
    assert of(FailTask, s.cancel(tid(2)))[0].kind == "cancelled"
    assert of(Interrupt, s.cancel(tid(1))) == [Interrupt(b"w", tid(1))]
    assert of(KillWorker, s.cancel(tid(1), force=True))
    (f,) = of(FailTask, s.worker_died(b"w", "killed"))
    assert f.kind == "cancelled"  # a cancelled task is never retried
    assert s.check() == []


def test_cancel_of_a_task_queued_in_a_worker_asks_the_worker():
    # pipelined behind a running task: only the worker knows whether it has started it
    s = LocalScheduler(ResourceSet.of(num_cpus=1), pipeline_depth=4)
    s.worker_registered(b"w")
    s.submit(TaskRequest(tid(1), ONE_CPU))
    s.submit(TaskRequest(tid(2), ONE_CPU))
    assert list(s.workers[b"w"].in_flight) == [tid(1), tid(2)]
    assert s.cancel(tid(2)) == [Interrupt(b"w", tid(2))]
    # handed back by a recall while the interrupt was on its way: failed, never re-run
    (f,) = of(FailTask, s.tasks_returned(b"w", [tid(2)]))
    assert (f.task_id, f.kind) == (tid(2), "cancelled")
    assert s.check() == []


def test_dedicated_worker_keeps_its_lease_until_released():
    s = LocalScheduler(ResourceSet.of(num_cpus=2))
    s.worker_registered(b"a")
    s.submit(TaskRequest(tid(1), ONE_CPU, dedicated=True))
    s.task_finished(tid(1), b"a")
    assert s.resources.available.get("CPU") == 1
    (dead,) = of(DedicatedWorkerDied, s.worker_died(b"a", "SIGKILL"))
    assert dead.task_id == tid(1)
    assert s.resources.available == s.resources.total


def test_gpu_ids_are_distinct_for_whole_gpus():
    n = NodeResources(ResourceSet.of(num_cpus=4, num_gpus=2))
    assert n.acquire(ResourceSet.of(num_gpus=1)) == [0]
    assert n.acquire(ResourceSet.of(num_gpus=1)) == [1]
    assert not n.can_fit_now(ResourceSet.of(num_gpus=0.5))


class SchedulerModel(RuleBasedStateMachine):
    """Random events against the scheduler; every task must end exactly once, and the
    scheduler's invariants must hold after every step. At the end everything is made
    available and the system must drain (liveness: nothing is stuck). Each task makes an
    object (``r<n>``) later tasks may need, so chains form: a chained task must be queued
    behind its producers on one worker."""

    def __init__(self):
        super().__init__()
        self.s = LocalScheduler(ResourceSet.of(num_cpus=2, num_gpus=1), pipeline_depth=2,
                                producer_of=self.producer_of)
        self.pending: dict = {}  # chained task -> objects its worker was to make first
        self.next_task = 1
        self.next_worker = 1
        self.pending_starts = 0
        self.live_tasks: set = set()
        self.ended: dict = {}
        self.running: dict = {}  # worker -> tasks it was sent, in order
        self.blocked: set = set()
        self.objects = [b"o%d" % i for i in range(4)]

    def apply(self, instructions):
        for ins in instructions:
            if isinstance(ins, Dispatch):
                assert ins.task_id in self.live_tasks
                req = self.s.tasks[ins.task_id].request
                before = self.running.get(ins.worker_id, [])
                for o in req.deps:
                    if o in ins.pending:
                        assert self.producer_of(o) in before, "chained behind nothing"
                    else:
                        assert o in self.s.local_objects, "dispatched too early"
                self.pending[ins.task_id] = ins.pending
                self.running.setdefault(ins.worker_id, []).append(ins.task_id)
            elif isinstance(ins, StartWorkers):
                self.pending_starts += ins.count
            elif isinstance(ins, FailTask):
                self.end(ins.task_id, ins.kind)
                for tasks in self.running.values():
                    if ins.task_id in tasks:
                        tasks.remove(ins.task_id)
            elif isinstance(ins, Recall):
                returned = [t for t in ins.task_ids if t in self.running.get(ins.worker_id, [])]
                for t in returned:
                    self.running[ins.worker_id].remove(t)
                self.apply(self.s.tasks_returned(ins.worker_id, returned))
            elif isinstance(ins, KillWorker):
                self.kill(ins.worker_id)
            elif isinstance(ins, (Interrupt, Infeasible, DedicatedWorkerDied)):
                pass
            else:
                raise AssertionError(f"unexpected instruction {ins}")

    def end(self, task_id, how):
        assert task_id not in self.ended, f"task ended twice: {self.ended[task_id]}, {how}"
        assert task_id in self.live_tasks
        self.live_tasks.discard(task_id)
        self.ended[task_id] = how
        # its result (or error) is now an object of the node, as the node manager reports
        self.apply(self.s.object_local(b"r" + task_id))

    @staticmethod
    def producer_of(oid):
        return oid[1:] if oid.startswith(b"r") else None

    def run_head(self, w):
        """The worker takes its next task: runs it, or hands a chained one back whose
        producer's result it does not have (recalled, failed, cancelled before it)."""
        t = self.running[w].pop(0)
        if all(o in self.s.local_objects for o in self.pending.get(t, ())):
            self.end(t, "finished")
            self.apply(self.s.task_finished(t, w))
        else:
            self.apply(self.s.tasks_returned(w, [t]))

    def kill(self, worker_id):
        self.running.pop(worker_id, None)
        self.blocked.discard(worker_id)
        self.apply(self.s.worker_died(worker_id, "SIGKILL"))

    @rule(cpus=st.sampled_from([0, 0.5, 1, 2]), gpus=st.sampled_from([0, 0, 0.5, 1]),
          deps=st.sets(st.integers(0, 3), max_size=2), retries=st.integers(0, 2),
          after=st.sets(st.integers(1, 3), max_size=2))
    def submit(self, cpus, gpus, deps, retries, after):
        t = tid(self.next_task)
        made_before = {b"r" + tid(self.next_task - k) for k in after if self.next_task > k}
        self.next_task += 1
        self.live_tasks.add(t)
        self.apply(self.s.submit(TaskRequest(
            t, ResourceSet.of(num_cpus=cpus, num_gpus=gpus),
            deps=frozenset(self.objects[d] for d in deps) | made_before,
            max_retries=retries)))

    @rule(i=st.integers(0, 3))
    def object_arrives(self, i):
        self.apply(self.s.object_local(self.objects[i]))

    @precondition(lambda self: self.pending_starts > 0)
    @rule()
    def worker_starts(self):
        self.pending_starts -= 1
        w = b"w%d" % self.next_worker
        self.next_worker += 1
        self.apply(self.s.worker_registered(w))

    @precondition(lambda self: any(self.running.values()))
    @rule(data=st.data())
    def finish(self, data):
        w = data.draw(st.sampled_from(sorted(k for k, v in self.running.items() if v)))
        if w in self.blocked:
            self.blocked.discard(w)
            self.apply(self.s.worker_unblocked(w))
        self.run_head(w)

    @precondition(lambda self: any(self.running.values()))
    @rule(data=st.data())
    def block(self, data):
        w = data.draw(st.sampled_from(sorted(k for k, v in self.running.items() if v)))
        self.blocked.add(w)
        self.apply(self.s.worker_blocked(w))

    @precondition(lambda self: bool(self.blocked))
    @rule(data=st.data())
    def unblock(self, data):
        w = data.draw(st.sampled_from(sorted(self.blocked)))
        self.blocked.discard(w)
        self.apply(self.s.worker_unblocked(w))

    @precondition(lambda self: bool(self.s.workers))
    @rule(data=st.data())
    def crash(self, data):
        self.kill(data.draw(st.sampled_from(sorted(self.s.workers))))

    @precondition(lambda self: bool(self.live_tasks))
    @rule(data=st.data(), force=st.booleans())
    def cancel(self, data, force):
        self.apply(self.s.cancel(data.draw(st.sampled_from(sorted(self.live_tasks))), force))

    @invariant()
    def consistent(self):
        assert self.s.check() == []
        for name in self.s.resources.total.names():
            assert self.s.resources.available.units(name) <= self.s.resources.total.units(name)

    def teardown(self):
        # Liveness: make every object local, start every worker, run everything to the end.
        for o in self.objects:
            self.apply(self.s.object_local(o))
        for w in sorted(self.blocked):
            self.blocked.discard(w)
            self.apply(self.s.worker_unblocked(w))
        for _ in range(10_000):
            if self.pending_starts:
                self.worker_starts()
            elif any(self.running.values()):
                w = next(k for k, v in sorted(self.running.items()) if v)
                self.run_head(w)
            else:
                break
        assert not self.live_tasks, f"{len(self.live_tasks)} tasks never ran"
        assert self.s.resources.available == self.s.resources.total
        assert self.s.check() == []


TestSchedulerModel = SchedulerModel.TestCase
TestSchedulerModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
