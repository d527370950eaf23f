"""Ring allreduce across actors: ``python examples/allreduce.py [--small] [--plot PATH]``.

N ``Worker`` actors each hold a numpy array of the same size; after an allreduce every one
holds the element-wise sum of all of them. The ring algorithm splits each array into N chunks
and runs in two phases of N - 1 steps; in every step each worker sends one chunk to the next
worker on the ring:

  reduce-scatter: the receiver adds the chunk to its own; after N - 1 steps worker i holds
                  the complete sum of chunk (i + 1) mod N;
  all-gather:     the receiver replaces its chunk with the complete one it gets.

Each worker sends and receives 2 (N - 1) / N of the array in all, whatever N is. The driver
never touches the data: it submits actor calls whose arguments are the ObjectRefs returned by
other actors' calls, and calls from one caller to one actor run in the order they were made.

The arrays hold small integers (as float32), so the sum is exact and is checked with ``==``
against numpy's sum. The time per allreduce is printed for each size (1 MB to 256 MB;
``--small``: 1 and 4 MB). The last line reads ``RESULT allreduce workers=N sizes_mb=... exact=True``.
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


def initial_data(rank, n_elements):
    """What worker ``rank`` starts with: small integers, so float32 sums are exact."""
    return ((np.arange(n_elements, dtype=np.int64) * (rank + 1)) % 251).astype(np.float32)


@zactor.remote
class Worker:
    def __init__(self, rank, n_workers):
        self.rank, self.n = rank, n_workers

    def load(self, n_elements):
        # the data is made where it lives: nothing is sent to set it up
        self.data = initial_data(self.rank, n_elements)
        self.chunks = np.array_split(self.data, self.n)  # views into self.data
        return n_elements

    def chunk(self, index):
        # returning a large array puts it in the object store; the next worker reads it
        # there without a copy, and this call's ObjectRef is all that the driver handles
        return self.chunks[index]

    def add_chunk(self, index, incoming):
        self.chunks[index] += incoming  # incoming: a read-only view of the store's memory

    def set_chunk(self, index, incoming):
        self.chunks[index][:] = incoming

    def done(self):
        return True  # runs after every call submitted before it: a barrier

    def result(self):
        return self.data


def ring_allreduce(workers):
    """Submits the 2 (N - 1) steps and returns at once; the calls run as their inputs arrive."""
    n = len(workers)
    for step in range(n - 1):  # reduce-scatter
        for i, worker in enumerate(workers):
            index = (i - step) % n
            sent = worker.chunk.remote(index)               # an ObjectRef, not the data
            workers[(i + 1) % n].add_chunk.remote(index, sent)
    for step in range(n - 1):  # all-gather: pass along the chunks that are complete
        for i, worker in enumerate(workers):
            index = (i + 1 - step) % n
            sent = worker.chunk.remote(index)
            workers[(i + 1) % n].set_chunk.remote(index, sent)


def plot(path, sizes_mb, seconds, n_workers):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'zactor[examples]')")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(sizes_mb, [s * 1e3 for s in seconds], "o-")
    ax.set(xlabel="array size (MB)", ylabel="time per allreduce (ms)",
           title=f"ring allreduce over {n_workers} actors")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="1 MB and 4 MB only")
    parser.add_argument("--address", help="a running cluster to join (default: start one)")
    parser.add_argument("--workers", type=int, help="actors on the ring (default: CPUs, >= 2)")
    parser.add_argument("--repeat", type=int, default=3, help="allreduces timed per size")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of time against size")
    args = parser.parse_args(argv)
    sizes_mb = [1, 4] if args.small else [1, 4, 16, 64, 256]

    zactor.init(address=args.address)
    n = args.workers or max(2, int(zactor.cluster_resources()["CPU"]))
    workers = [Worker.remote(rank, n) for rank in range(n)]
    print(f"allreduce: {n} actors on a ring, sizes {sizes_mb} MB, best of {args.repeat}")

    exact, seconds = True, []
    for size_mb in sizes_mb:
        n_elements = size_mb * 2**20 // 4  # float32
        expected = sum(initial_data(rank, n_elements) for rank in range(n))
        best = float("inf")
        for _ in range(args.repeat):
            zactor.get([w.load.remote(n_elements) for w in workers])
            start = time.perf_counter()
            ring_allreduce(workers)
            zactor.get([w.done.remote() for w in workers])  # waits for the last step
            best = min(best, time.perf_counter() - start)
            results = zactor.get([w.result.remote() for w in workers])
            # every worker must hold exactly the sum (the values are integers)
            exact = exact and all(np.array_equal(r, expected) for r in results)
            del results
        seconds.append(best)
        print(f"  {size_mb:4d} MB: {best * 1e3:8.1f} ms per allreduce, "
              f"{size_mb / best:7.0f} MB/s of array; exact: {exact}")
    zactor.shutdown()

    if args.plot:
        plot(args.plot, sizes_mb, seconds, n)
    print(f"RESULT allreduce workers={n} sizes_mb={','.join(map(str, sizes_mb))} "
          f"exact={exact}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
