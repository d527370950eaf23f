"""Monte Carlo estimate of pi with many small tasks: ``python examples/pi.py [--small]``.

Each task throws ``--samples`` random darts at the unit square and counts those that land
inside the quarter circle; pi is about 4 * inside / thrown. The driver submits every task at
once, then harvests results with ``zactor.wait`` as they finish (a progress bar shows it) and
prints the throughput in tasks per second.

Every task has its own seed, so the estimate is the same on every run and any number of CPUs.
The last line reads ``RESULT pi estimate=... tasks=... samples=... tasks_per_s=...``.
"""

import argparse
import math
import os
import sys
import time

import numpy as np

try:
    import zactor
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import zactor

try:
    from tqdm import tqdm
except ImportError:  # the progress bar is optional: pip install 'zactor[examples]'
    tqdm = None


@zactor.remote
def count_inside(samples, seed):
    """One small task: how many of ``samples`` random points fall inside the circle."""
    rng = np.random.default_rng(seed)
    x, y = rng.random(samples), rng.random(samples)
    return int(np.count_nonzero(x * x + y * y <= 1.0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick run (a few seconds)")
    parser.add_argument("--address", help="a running cluster to join (default: start one)")
    parser.add_argument("--tasks", type=int, help="number of tasks (default 20000, small 1000)")
    parser.add_argument("--samples", type=int, default=10_000, help="darts per task")
    args = parser.parse_args(argv)
    n_tasks = args.tasks or (1_000 if args.small else 20_000)

    zactor.init(address=args.address)
    print(f"pi: {n_tasks} tasks of {args.samples} samples on {zactor.cluster_resources()}")

    start = time.perf_counter()
    # .remote() returns at once: all the tasks are queued before the first one finishes
    pending = [count_inside.remote(args.samples, seed) for seed in range(n_tasks)]
    submitted = time.perf_counter() - start

    inside = 0
    bar = tqdm(total=n_tasks, unit="task") if tqdm else None
    while pending:
        # wait() hands back whichever refs are ready (up to 100 at a time), the rest stay
        ready, pending = zactor.wait(pending, num_returns=min(100, len(pending)))
        inside += sum(zactor.get(ready))
        if bar:
            bar.update(len(ready))
        elif len(pending) % 5_000 == 0:
            print(f"  {n_tasks - len(pending)} / {n_tasks} tasks done")
    if bar:
        bar.close()
    elapsed = time.perf_counter() - start

    thrown = n_tasks * args.samples
    estimate = 4.0 * inside / thrown
    print(f"submitted {n_tasks} tasks in {submitted:.2f} s; all done in {elapsed:.2f} s")
    print(f"pi ~ {estimate:.6f} (error {abs(estimate - math.pi):.2e}) from {thrown} samples")
    zactor.shutdown()
    print(f"RESULT pi estimate={estimate:.6f} tasks={n_tasks} samples={thrown} "
          f"tasks_per_s={n_tasks / elapsed:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
