"""``zactor scheduler``: the cluster's global scheduler daemon (bottom-up scheduling's top half).

    zactor scheduler --address GCS_HOST:PORT [--host 0.0.0.0] [--port P]
                     [--node-death-timeout S] [--key-file F]

Node managers spill the tasks they cannot (or should not) run to it; it answers where each one
goes (SPILL -> PLACE, see zactor/cluster/messages.py), places placement groups, and declares
silent nodes dead. It holds no state of its own (scheduler_daemon.py), so it can be killed and
restarted at any time. Once bound it writes kv[b"cluster:scheduler"] and prints one JSON line on
stdout (``{"role": "scheduler", "addr", "host", "port", "pid"}``) for a parent to read; logs go
to stderr. SIGTERM/SIGINT stop it; with ``--parent-pid`` it also exits when that process dies.

``start_scheduler`` runs it as a child process (tests, benchmarks, local clusters).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading

from zactor.cluster.messages import NODE_DEATH_TIMEOUT_S


def add_arguments(parser) -> None:
    parser.add_argument("--address", required=True, metavar="HOST:PORT",
                        help="the control store's coordinator")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (written to the control store for nodes)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    parser.add_argument("--node-death-timeout", type=float, default=NODE_DEATH_TIMEOUT_S,
                        metavar="S", help="declare a node dead after S seconds without a "
                                          f"heartbeat (default {NODE_DEATH_TIMEOUT_S})")
    parser.add_argument("--key-file", default=None, metavar="F",
                        help="CURVE key file of the cluster (encrypted, authenticated sockets)")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process dies")
    parser.add_argument("--log-level", default="WARNING")


def _watch_parent(parent_pid, daemon) -> None:
    """Stop the daemon when the parent dies (PR_SET_PDEATHSIG is set by replica_main's helper;
    this poll also covers non-Linux systems and a parent that died before it was set)."""
    def watch():
        while daemon.running:
            if os.getppid() != parent_pid:
                daemon.running = False
                return
            threading.Event().wait(0.2)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run(args) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    keys = None
    if args.key_file:
        from zactor.net.security import KeyFileError, load_keys

        try:
            keys = load_keys(args.key_file)
        except (OSError, KeyFileError, ValueError) as exc:
            print(f"zactor scheduler: cannot use the key file: {exc}", file=sys.stderr)
            return 2
    if args.node_death_timeout <= 0:
        print("zactor scheduler: --node-death-timeout must be > 0", file=sys.stderr)
        return 2
    from zactor.control.replica_main import _die_with_parent
    from zactor.scheduling.scheduler_daemon import SchedulerDaemon

    _die_with_parent(args.parent_pid)
    daemon = SchedulerDaemon(args.address, args.host, args.port, args.node_death_timeout,
                             keys=keys)

    def stop(_signum, _frame):
        daemon.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        daemon.start()
        if args.parent_pid:
            _watch_parent(args.parent_pid, daemon)
        sys.stdout.write(json.dumps({"role": "scheduler", "addr": daemon.addr,
                                     "host": daemon.host, "port": daemon.port,
                                     "pid": os.getpid()}) + "\n")
        sys.stdout.flush()
        daemon.serve()
    finally:
        daemon.close()
    return 0


def start_scheduler(gcs_address: str, port: int = 0, node_death_timeout_s: float | None = None,
                    timeout_s: float = 30.0, log_level: str = "WARNING"):
    """Start the daemon as a child process; returns a handle with ``.info`` (its JSON line:
    addr, host, port, pid), ``.pid``, ``.alive()``, ``.kill(sig)`` and ``.stop()``."""
    from zactor.control.cluster import _Child  # the same start/stop discipline as the store

    argv = [sys.executable, "-m", "zactor.scheduling.scheduler_main", "--address", gcs_address,
            "--port", str(port), "--parent-pid", str(os.getpid()), "--log-level", log_level]
    if node_death_timeout_s is not None:
        argv += ["--node-death-timeout", str(node_death_timeout_s)]
    return _Child(argv, timeout_s)


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="zactor scheduler")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
