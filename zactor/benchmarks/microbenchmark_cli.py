"""``zactor microbenchmark``: the cases of microbenchmark.py on zactor (see compare.py for
the side-by-side run with Ray and multiprocessing)."""

from zactor.benchmarks.microbenchmark import add_arguments, run_cli


def run(args) -> int:
    return run_cli(args)


__all__ = ["add_arguments", "run"]
