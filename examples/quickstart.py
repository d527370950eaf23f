"""A first tour of zactor: run ``python examples/quickstart.py`` (``--small`` for a quicker run).

``zactor.init()`` starts a one-machine cluster by itself (a node manager, its workers and a
shared-memory object store); this script then shows, in order:

  1. tasks: ``@zactor.remote`` functions called with ``.remote()`` return ObjectRefs at once;
  2. ObjectRefs passed to other tasks: the task waits for them and receives the values;
  3. ``wait`` for the first results, and ``cancel`` for a task not worth waiting for;
  4. tasks that submit tasks (a recursive sum);
  5. an error raised in a task, caught in the driver as the original exception class;
  6. ``put`` of a numpy array read back without a copy: every ``get`` maps the same
     read-only memory of the object store;
  7. an actor: a stateful worker whose method calls run in order, its handle passed to a task.

The last line reads ``quickstart OK: ...``; the exit status is 0 when every check passed.
``--address`` is passed to ``zactor.init(address=...)`` to join a running cluster instead of
starting one (that part of zactor lands with the multi-node cluster issue).
"""

import argparse
import os
import sys
import time

import numpy as np

try:
    import zactor
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import zactor

from zactor.exceptions import RayTaskError, TaskCancelledError  # noqa: E402


@zactor.remote
def square(x):
    return x * x


@zactor.remote
def add(a, b):
    return a + b


@zactor.remote
def sleepy(seconds):
    time.sleep(seconds)
    return seconds


@zactor.remote
def tree_sum(lo, hi, leaf):
    """Sum of lo..hi-1: halves the range in two child tasks until it is ``leaf`` long."""
    if hi - lo <= leaf:
        return sum(range(lo, hi))
    mid = (lo + hi) // 2
    return sum(zactor.get([tree_sum.remote(lo, mid, leaf), tree_sum.remote(mid, hi, leaf)]))


@zactor.remote
def divide(a, b):
    return a / b


@zactor.remote
class Accumulator:
    """An actor: its state lives in one worker; calls from one caller run in order."""

    def __init__(self):
        self.total = 0

    def add(self, x):
        self.total += x
        return self.total


@zactor.remote
def add_through(acc, x):
    return zactor.get(acc.add.remote(x))  # an actor handle works inside a task too


@zactor.remote
def column_means(matrix):
    # ``matrix`` arrives as a read-only view of the store's memory, not a copy
    return matrix.mean(axis=0), matrix.flags.writeable


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer tasks, smaller arrays")
    parser.add_argument("--address", help="a running cluster to join (default: start one)")
    args = parser.parse_args(argv)

    n_tasks = 20 if args.small else 200
    rows = 1_000 if args.small else 100_000  # x 100 float64 columns: 0.8 MB or 80 MB

    if args.address:
        zactor.init(address=args.address)  # join a running cluster
    else:
        zactor.init(object_store_memory=512 * 1024 * 1024)  # start one on this machine
    try:
        print("cluster:", zactor.cluster_resources())

        # 1. Tasks: .remote() returns an ObjectRef at once; get() waits for the value.
        refs = [square.remote(i) for i in range(n_tasks)]
        squares = zactor.get(refs)
        print(f"1. {n_tasks} tasks: sum of squares = {sum(squares)}")
        assert sum(squares) == sum(i * i for i in range(n_tasks))

        # 2. ObjectRefs as arguments: add runs once both squares are ready, on their values.
        chained = zactor.get(add.remote(square.remote(3), square.remote(4)))
        print(f"2. add(square(3), square(4)) = {chained}")
        assert chained == 25

        # 3. wait() returns the refs that are ready; cancel() stops the one still running.
        slow = sleepy.remote(30)
        fast = [sleepy.remote(0.01 * i) for i in range(3)]
        ready, not_ready = zactor.wait([slow, *fast], num_returns=len(fast), timeout=20)
        print(f"3. wait: {len(ready)} ready, {len(not_ready)} still running")
        assert set(ready) == set(fast) and not_ready == [slow]
        zactor.cancel(slow)
        try:
            zactor.get(slow, timeout=20)
            raise AssertionError("the cancelled task returned a value")
        except TaskCancelledError:
            print("   cancel: the slow task raised TaskCancelledError")

        # 4. Tasks can submit tasks and wait for them.
        hi = 64 if args.small else 4096
        nested = zactor.get(tree_sum.remote(0, hi, hi // 4))
        print(f"4. nested tasks: sum(range({hi})) = {nested}")
        assert nested == sum(range(hi))

        # 5. An exception in a task is raised by get() as its original class.
        try:
            zactor.get(divide.remote(1, 0))
            raise AssertionError("1 / 0 returned a value")
        except ZeroDivisionError as err:
            # it is also a RayTaskError, whose text carries the remote traceback
            assert isinstance(err, RayTaskError)
            print(f"5. error: caught {type(err.cause).__name__} from the task: "
                  f"{str(err).splitlines()[0]}")
            error_name = type(err.cause).__name__

        # 6. put() a numpy array once; every get() reads the store's memory in place.
        matrix = np.arange(rows * 100, dtype=np.float64).reshape(rows, 100)
        ref = zactor.put(matrix)
        first, second = zactor.get(ref), zactor.get(ref)
        shared = np.shares_memory(first, second)
        print(f"6. put {matrix.nbytes / 1e6:.1f} MB: two gets share memory: {shared}, "
              f"writeable: {first.flags.writeable}")
        assert shared and not first.flags.writeable
        try:
            first[0, 0] = -1.0
            raise AssertionError("a stored array was writeable")
        except ValueError:
            pass  # objects are immutable: copy (first.copy()) to modify
        means, writeable_in_task = zactor.get(column_means.remote(ref))
        assert np.allclose(means, matrix.mean(axis=0)) and not writeable_in_task
        print(f"   a task read it in place too (read-only there as well): "
              f"column means {means[0]:.1f} .. {means[-1]:.1f}")

        acc = Accumulator.remote()
        running = zactor.get([acc.add.remote(i) for i in range(1, 11)])
        actor_total = zactor.get(add_through.remote(acc, 45))
        assert running == [sum(range(1, i + 1)) for i in range(1, 11)] and actor_total == 100
        print(f"7. actor: running totals {running[:3]}..{running[-1]}, "
              f"then 45 added from a task: {actor_total}")
    finally:
        zactor.shutdown()

    print(f"quickstart OK: tasks={n_tasks} sum_squares={sum(squares)} chained={chained} "
          f"nested={nested} error={error_name} zero_copy={shared} actor={actor_total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
