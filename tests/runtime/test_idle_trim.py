"""IdleTrim (zactor/idle_trim.py): one collection and heap trim after a quiet second, none
while work comes in, none again until there was work."""

from __future__ import annotations

import gc

from zactor.idle_trim import IDLE_S, IdleTrim


def test_trims_once_after_work_and_a_quiet_period(monkeypatch):
    collected = []
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(1) or 0)
    trim = IdleTrim()
    assert not trim.tick(100.0)  # no work yet: nothing to give back
    trim.worked(100.0)
    assert not trim.tick(100.0 + IDLE_S / 2)  # still busy a moment ago
    trim.worked(100.0 + IDLE_S / 2)
    assert not trim.tick(100.0 + IDLE_S)
    assert trim.tick(100.0 + IDLE_S * 2) and collected == [1]
    assert not trim.tick(100.0 + IDLE_S * 10) and collected == [1]  # once per busy spell
    trim.worked(200.0)
    assert trim.tick(200.0 + IDLE_S) and collected == [1, 1]


def test_the_heap_trim_is_found_on_this_platform():
    trim = IdleTrim()
    trim.worked(0.0)
    assert trim.tick(IDLE_S) and trim._trim is not None  # glibc: CI and our machines
