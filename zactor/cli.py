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
    ("start", "zactor.cluster.start_cmd",
     "start the head of a cluster, or a node that joins one, on this machine"),
    ("stop", "zactor.cluster.stop_cmd", "stop the cluster processes this machine started"),
    ("status", "zactor.cluster.status_cmd", "print the cluster's nodes, resources and stores"),
    ("microbenchmark", "zactor.benchmarks.microbenchmark_cli",
     "benchmark tasks, objects and the cluster (like `ray microbenchmark`)"),
    ("store-bench", "zactor.benchmarks.store", "benchmark the shared-memory object store"),
    ("gcs", "zactor.control.replica_main", "run one control-store replica (or coordinator)"),
    ("gcs-bench", "zactor.benchmarks.control", "benchmark the control store"),
    ("scheduler", "zactor.scheduling.scheduler_main",
     "run the cluster's global scheduler (spilled tasks, placement groups, node deaths)"),
    ("chaos", "chaos.cli", "run workloads on a real cluster under injected faults (harness)"),
]


def build_parser() -> argparse.ArgumentParser:
    from zactor import __version__

    parser = argparse.ArgumentParser(prog="zactor", description="zactor cluster tools")
    parser.add_argument("--version", action="version", version=f"zactor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, _module, help_text in SUBCOMMANDS:
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    modules = {name: (module, help_text) for name, module, help_text in SUBCOMMANDS}
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in modules:
        parser = build_parser()
        if command is not None:
            parser.error(f"unknown command {command!r} (choose from {', '.join(modules)})")
        parser.parse_args(argv)  # --help / --version exit here
        parser.print_help()
        return 2
    module_name, help_text = modules[command]
    module = importlib.import_module(module_name)
    # the subcommand's own parser, so `zactor NAME --help` lists NAME's options
    parser = argparse.ArgumentParser(prog=f"zactor {command}", description=help_text)
    module.add_arguments(parser)
    rest = argv[:argv.index(command)] + argv[argv.index(command) + 1:]
    return int(module.run(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
