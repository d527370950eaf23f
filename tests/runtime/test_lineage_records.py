"""The lineage kept by a task's origin (zactor/runtime/lineage.py), without processes: a
record lives while one of its returns has an entry or a kept record depends on it, and goes
with the last of them, so memory stays bounded by what is referenced."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from zactor.runtime.lineage import SPEC_OVERHEAD_BYTES, Lineage
from zactor.runtime.node_tasks import Task


def _task(args=(), nret=1, actor=None):
    spec = {"id": os.urandom(24), "nret": nret, "retries": 3, "kwargs": [],
            "args": [[1, oid] for oid in args]}
    if actor:
        spec["actor"] = actor
    return Task(spec, b"driver")


def test_a_chain_is_kept_while_its_last_object_is_referenced():
    lineage = Lineage(nm=None)
    a = _task()
    b = _task(args=a.returns)
    c = _task(args=b.returns)
    for task in (a, b, c):
        lineage.task_finished(task)
    lineage.object_freed(a.returns[0])  # consumed by b: a is still needed to rebuild b
    lineage.object_freed(b.returns[0])
    assert set(lineage.records) == {a.spec["id"], b.spec["id"], c.spec["id"]}
    lineage.object_freed(c.returns[0])  # the last reference: the whole chain goes
    assert lineage.records == {} and lineage.producer == {}


def test_a_record_stays_while_any_of_its_returns_lives():
    lineage = Lineage(nm=None)
    t = _task(nret=2)
    lineage.task_finished(t)
    lineage.object_freed(t.returns[0])
    assert t.spec["id"] in lineage.records
    lineage.object_freed(t.returns[1])
    assert lineage.records == {}


def test_actor_tasks_and_unknown_objects_keep_nothing():
    lineage = Lineage(nm=None)
    lineage.task_finished(_task(actor={"op": "call", "aid": b"x" * 16}))
    lineage.object_freed(os.urandom(28))
    assert lineage.records == {}


def test_a_re_run_keeps_the_record_and_its_attempts():
    lineage = Lineage(nm=None)
    t = _task()
    lineage.task_finished(t)
    t.attempt = 2
    lineage.task_finished(t)  # the rebuilt task finished: same record
    assert lineage.records[t.spec["id"]].attempt == 2
    assert lineage.records[t.spec["id"]].live_returns == 1


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_dags_free_everything_once_every_object_is_gone(data):
    """Tasks over earlier tasks' returns, objects freed in any order: records only go once
    nothing depends on them, and all go at the end (also past a byte cap, which drops the
    oldest records early)."""
    cap = data.draw(st.sampled_from([None, 0, 500, 1000]))
    lineage = Lineage(nm=None, max_bytes=cap)
    tasks, returns = [], []
    for _ in range(data.draw(st.integers(1, 8))):
        args = data.draw(st.lists(st.sampled_from(returns), max_size=3)) if returns else []
        t = _task(args=args, nret=data.draw(st.integers(1, 2)))
        lineage.task_finished(t)
        tasks.append(t)
        returns.extend(t.returns)
    for oid in data.draw(st.permutations(returns)):
        lineage.object_freed(oid)
        for t in tasks if cap is None else ():  # a record that is gone is never needed
            if t.spec["id"] in lineage.records:     # by a kept one (unless evicted)
                continue
            for other in tasks:
                if other.spec["id"] in lineage.records:
                    assert not set(other.deps) & set(t.returns)
        assert lineage.bytes == sum(r.size_bytes for r in lineage.records.values())
        assert lineage.bytes <= lineage.max_bytes
    assert lineage.records == {} and lineage.producer == {} and lineage.bytes == 0
    assert not lineage.evicted  # remembered only while the object lives


def test_past_the_byte_cap_the_oldest_records_are_evicted_and_remembered():
    a, b, c = _task(), _task(), _task()
    for t in (a, b, c):
        t.spec["args"] = [[0, b"v" * 100]]  # an inline argument: 100 bytes of the spec
    lineage = Lineage(nm=None, max_bytes=2 * (SPEC_OVERHEAD_BYTES + 100))
    for t in (a, b, c):
        lineage.task_finished(t)
    assert list(lineage.records) == [b.spec["id"], c.spec["id"]]
    assert lineage.bytes == 2 * (SPEC_OVERHEAD_BYTES + 100)
    assert list(lineage.evicted) == a.returns and a.returns[0] not in lineage.producer
    lineage.object_freed(a.returns[0])
    assert not lineage.evicted


def test_a_bad_cap_is_refused_with_its_name():
    for bad in (-1, "1GB", 1.5, True):
        try:
            Lineage(nm=None, max_bytes=bad)
        except ValueError as exc:
            assert "max_lineage_bytes" in str(exc) and repr(bad) in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
