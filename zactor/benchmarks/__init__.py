"""Benchmarks kept in the repository; each prints figures and asserts no timings.

Each module provides ``add_arguments(parser)`` and ``run(args) -> int`` for the ``zactor``
console script (see zactor/cli.py) and runs as ``python -m zactor.benchmarks.<name>``.
"""
