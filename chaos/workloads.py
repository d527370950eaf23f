"""The workloads: each round computes something on the cluster and checks it exactly
against the same computation done locally. A round returns the number of tasks and actor
calls it made; a wrong value raises :class:`WrongResult`; anything else it raises is a
failure; zactor.get's timeout (the round's deadline) means a hang.

Module-level remote functions: the workers import this module by name (the cluster's
PYTHONPATH holds the repository root), so nothing is pickled by value.
"""

from __future__ import annotations

import collections
import os
import random
import time

import numpy as np

import zactor

RETRIES = 5  # max_retries of every task: a killed worker or node costs a retry, not the round


class WrongResult(AssertionError):
    pass


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def check(ok: bool, what: str) -> None:
    if not ok:
        raise WrongResult(what)


# ---- a tree of dependent tasks over numpy arrays ---------------------------------------
@zactor.remote(max_retries=RETRIES)
def leaf(seed: int, n: int):
    return np.random.default_rng(seed).integers(-1000, 1000, n, dtype=np.int64)


@zactor.remote(max_retries=RETRIES)
def combine(a, b, k: int):
    return (a + b * k) % 1_000_003


def _combine_local(a, b, k):
    return (a + b * k) % 1_000_003


class Tree:
    name = "tree"

    def __init__(self, seed, leaves=8, n=20_000):
        self.seed, self.leaves, self.n = seed, leaves, n

    def round(self, r: int, deadline: float) -> int:
        seeds = [self.seed * 1000 + r * 17 + i for i in range(self.leaves)]
        refs = [leaf.remote(s, self.n) for s in seeds]
        local = [np.random.default_rng(s).integers(-1000, 1000, self.n, dtype=np.int64)
                 for s in seeds]
        tasks, level = len(refs), 1
        while len(refs) > 1:
            refs = [combine.remote(refs[i], refs[i + 1], level + i)
                    for i in range(0, len(refs), 2)]
            local = [_combine_local(local[i], local[i + 1], level + i)
                     for i in range(0, len(local), 2)]
            tasks += len(refs)
            level += 1
        got = zactor.get(refs[0], timeout=_left(deadline))
        check(np.array_equal(got, local[0]), "tree: root array differs from the local one")
        return tasks


# ---- map-reduce: word count over seeded text -------------------------------------------
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]


def _text(seed: int, chunk: int, words: int) -> str:
    rng = random.Random(seed * 7919 + chunk)
    return " ".join(rng.choice(WORDS) for _ in range(words))


@zactor.remote(max_retries=RETRIES)
def count_words(seed: int, chunk: int, words: int):
    return dict(collections.Counter(_text(seed, chunk, words).split()))


@zactor.remote(max_retries=RETRIES)
def merge_counts(*parts):
    total = collections.Counter()
    for p in parts:
        total.update(p)
    return dict(total)


class MapReduce:
    name = "mapreduce"

    def __init__(self, seed, chunks=8, words=3000, reducers=2):
        self.seed, self.chunks, self.words, self.reducers = seed, chunks, words, reducers

    def round(self, r: int, deadline: float) -> int:
        seed = self.seed * 1000 + r
        maps = [count_words.remote(seed, c, self.words) for c in range(self.chunks)]
        groups = [maps[i::self.reducers] for i in range(self.reducers)]
        partial = [merge_counts.remote(*g) for g in groups]
        total = merge_counts.remote(*partial)
        got = zactor.get(total, timeout=_left(deadline))
        expect = collections.Counter()
        for c in range(self.chunks):
            expect.update(_text(seed, c, self.words).split())
        check(got == dict(expect), f"mapreduce: counts differ ({len(got)} words)")
        return len(maps) + len(partial) + 1


# ---- an actor with checkpoints ---------------------------------------------------------
@zactor.remote(max_restarts=-1, max_task_retries=-1, checkpoint_interval=5)
class Counter:
    def __init__(self):
        self.total = 0
        self.calls = 0

    def add(self, x: int):
        self.total += x
        self.calls += 1
        return os.getpid()

    def read(self):
        return self.total, self.calls, os.getpid()

    def __zactor_checkpoint__(self):
        return {"total": self.total, "calls": self.calls}

    def __zactor_restore__(self, state):
        self.total, self.calls = state["total"], state["calls"]


class Actors:
    """One counter kept across rounds (its state must survive restarts exactly); a round
    that fails drops it and starts a new one (expected totals start again)."""
    name = "actor"

    def __init__(self, seed, calls=20):
        self.seed, self.calls = seed, calls
        self.actor, self.expect, self.expect_calls = None, 0, 0
        self.pids = set()
        self.restarts_seen = 0

    def round(self, r: int, deadline: float) -> int:
        if self.actor is None:
            self.actor, self.expect, self.expect_calls, self.pids = Counter.remote(), 0, 0, set()
        actor = self.actor
        try:
            values = [(self.seed * 31 + r * 7 + i) % 97 for i in range(self.calls)]
            pids = zactor.get([actor.add.remote(v) for v in values], timeout=_left(deadline))
            total, calls, pid = zactor.get(actor.read.remote(), timeout=_left(deadline))
        except BaseException:
            self.actor = None
            raise
        new = set(pids) | {pid}
        if self.pids:
            self.restarts_seen += len(new - self.pids)
        self.pids |= new
        self.expect += sum(values)
        self.expect_calls += self.calls
        check((total, calls) == (self.expect, self.expect_calls),
              f"actor: state {(total, calls)} != expected {(self.expect, self.expect_calls)}")
        return self.calls + 1


# ---- a parameter server ----------------------------------------------------------------
DIM = 64


@zactor.remote(max_restarts=-1, max_task_retries=-1, checkpoint_interval=3)
class ParamServer:
    def __init__(self):
        self.w = np.zeros(DIM, dtype=np.int64)

    def weights(self):
        return self.w

    def apply(self, *grads):
        for g in grads:
            self.w = (self.w + g) % 65_521
        return self.w

    def __zactor_checkpoint__(self):
        return self.w.copy()

    def __zactor_restore__(self, state):
        self.w = np.array(state, dtype=np.int64)


def _grad(w, seed: int, worker: int, step: int):
    x = np.random.default_rng(seed * 100_003 + worker * 101 + step).integers(0, 50, DIM)
    return (x * (worker + 1) - w // 3) % 65_521


@zactor.remote(max_retries=RETRIES)
def grad_task(w, seed: int, worker: int, step: int):
    return _grad(w, seed, worker, step)


class ParameterServer:
    name = "paramserver"

    def __init__(self, seed, workers=3, steps=3):
        self.seed, self.workers, self.steps = seed, workers, steps

    def round(self, r: int, deadline: float) -> int:
        server = ParamServer.remote()  # one per round: a fresh, exactly known start
        seed = self.seed * 1000 + r
        w = np.zeros(DIM, dtype=np.int64)
        tasks = 0
        for step in range(self.steps):
            # the weights go to the workers as an object (Ray's synchronous parameter
            # server): passing the server's handle to tasks fails when they run on another
            # node (ActorDiedError "no such actor on this node", see docs/fault-tolerance.md)
            weights = server.weights.remote()
            grads = [grad_task.remote(weights, seed, k, step) for k in range(self.workers)]
            got = zactor.get(server.apply.remote(*grads), timeout=_left(deadline))
            # every grad task got the weights read before this step's apply
            start = w
            for k in range(self.workers):
                w = (w + _grad(start, seed, k, step)) % 65_521
            check(np.array_equal(got, w), f"paramserver: weights differ at step {step}")
            tasks += self.workers + 2
        zactor.kill(server)
        return tasks


# ---- nested tasks: a recursive sum ------------------------------------------------------
@zactor.remote(max_retries=RETRIES)
def rsum(lo: int, hi: int, leaf_size: int):
    if hi - lo <= leaf_size:
        return sum(i * i % 1009 for i in range(lo, hi)), 1
    mid = (lo + hi) // 2
    parts = zactor.get([rsum.remote(lo, mid, leaf_size), rsum.remote(mid, hi, leaf_size)],
                       timeout=120)
    return parts[0][0] + parts[1][0], parts[0][1] + parts[1][1] + 1


class Nested:
    name = "nested"

    def __init__(self, seed, size=4000, leaf_size=1000):
        self.seed, self.size, self.leaf_size = seed, size, leaf_size

    def round(self, r: int, deadline: float) -> int:
        lo = (self.seed * 7 + r) * 10
        total, tasks = zactor.get(rsum.remote(lo, lo + self.size, self.leaf_size),
                                  timeout=_left(deadline))
        check(total == sum(i * i % 1009 for i in range(lo, lo + self.size)),
              "nested: recursive sum differs")
        return tasks


ALL = {cls.name: cls for cls in (Tree, MapReduce, Actors, ParameterServer, Nested)}
