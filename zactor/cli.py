"""The ``zactor`` console script: one entry point, one subcommand per job.

Each subcommand lives in the module that owns its job and registers itself here through
``SUBCOMMANDS``: (name, module, help). The module provides ``add_arguments(parser)`` and
``run(args) -> int``; it is imported only when its subcommand runs, so ``zactor --help`` stays
fast and a broken optional piece cannot break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = [
    ("microbenchmark", "zactor.benchmarks.microbenchmark_cli",
     "benchmark tasks, objects and the cluster (like `ray microbenchmark`)"),
    ("store-bench", "zactor.benchmarks.store", "benchmark the shared-memory object store"),
    ("gcs", "zactor.control.replica_main", "run one control-store replica (or coordinator)"),
    ("gcs-bench", "zactor.benchmarks.control", "benchmark the control store"),
]


def build_parser() -> argparse.ArgumentParser:
    from zactor import __version__

    parser = argparse.ArgumentParser(prog="zactor", description="zactor cluster tools")
    parser.add_argument("--version", action="version", version=f"zactor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        p.set_defaults(_configured=False)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    # Re-parse with the subcommand's own arguments now that its module is loaded.
    parser = argparse.ArgumentParser(prog=f"zactor {args.command}")
    module.add_arguments(parser)
    sub_args = parser.parse_args(argv[argv.index(args.command) + 1:])
    return int(module.run(sub_args) or 0)


if __name__ == "__main__":
    sys.exit(main())
