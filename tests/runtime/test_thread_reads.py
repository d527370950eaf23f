"""ThreadReads (zactor/runtime/thread_reads.py): a read runs in its own thread, its answer
runs on the thread that calls answer_all (the node manager's loop), a failed read answers
None, and the loop is woken for each."""

from __future__ import annotations

import threading
import time

from zactor.runtime.thread_reads import ThreadReads


def test_reads_are_answered_on_the_loop_thread_and_failures_answer_none():
    woken = threading.Semaphore(0)
    reads = ThreadReads(woken.release)
    answers = []
    loop_thread = threading.get_ident()
    read_threads = []

    def read_ok():
        read_threads.append(threading.get_ident())
        return {"row": 1}

    def read_fails():
        raise TimeoutError("the store did not answer")

    reads.start("t-ok", read_ok, lambda v: answers.append(("ok", v, threading.get_ident())))
    reads.start("t-bad", read_fails, lambda v: answers.append(("bad", v, threading.get_ident())))
    for _ in range(2):
        assert woken.acquire(timeout=10)  # each finished read wakes the loop
    assert answers == []  # nothing runs outside the loop
    reads.answer_all()
    assert sorted(a[:2] for a in answers) == [("bad", None), ("ok", {"row": 1})]
    assert {a[2] for a in answers} == {loop_thread} and read_threads[0] != loop_thread
    reads.answer_all()
    assert len(answers) == 2  # each answered once


def test_a_slow_read_does_not_hold_the_loop():
    reads = ThreadReads(lambda: None)
    release = threading.Event()
    reads.start("t-slow", lambda: release.wait(10) and "late", lambda v: None)
    t = time.monotonic()
    reads.answer_all()  # returns at once: the read is still running
    assert time.monotonic() - t < 1.0
    release.set()
