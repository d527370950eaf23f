"""``zactor gcs``: run one control-store replica, or (``--coordinator-mode``) the coordinator.

    zactor gcs --coordinator-mode --port 6380 --data-dir /var/zactor/gcs-coord --shards 2 --replicas 3
    zactor gcs --coordinator HEAD:6380 --data-dir /var/zactor/gcs-r1 [--port 0]
    zactor gcs --coordinator-mode --ipc-dir /run/user/1000/gcs --data-dir ...  (no TCP port)

Once its sockets are bound the process prints one JSON line on stdout
(``{"role", "id", "addr", "pub_addr", "pid"}``) so a parent can learn its ports; logs go to
stderr. SIGTERM/SIGINT stop it cleanly; with ``--parent-pid`` it also exits when that process
dies (PR_SET_PDEATHSIG on Linux, plus a poll of getppid()).
"""

from __future__ import annotations

import ctypes
import json
import logging
import signal
import sys

from zactor.net.sockets import DEFAULT_COORDINATOR_PORT

PR_SET_PDEATHSIG = 1


def add_arguments(parser) -> None:
    parser.add_argument("--coordinator", metavar="ADDRESS",
                        help="the coordinator to register with, HOST:PORT or ipc://PATH "
                             "(runs a replica)")
    parser.add_argument("--coordinator-mode", action="store_true",
                        help="run the coordinator itself (the cluster's well-known address)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=None,
                        help=f"port to bind (coordinator default {DEFAULT_COORDINATOR_PORT}; "
                             "replica default 0 = any free port)")
    parser.add_argument("--ipc-dir", default=None,
                        help="bind ipc sockets in this directory (owned by you, mode 0700) "
                             "instead of TCP: only this user's processes on this machine "
                             "can connect (--host and --port are then unused)")
    parser.add_argument("--data-dir", required=True, help="where the SQLite state lives")
    parser.add_argument("--shards", type=int, default=1, help="coordinator: number of chains")
    parser.add_argument("--replicas", type=int, default=1,
                        help="coordinator: replicas wanted per chain")
    parser.add_argument("--keep-log", type=int, default=None,
                        help="replica: log entries kept after compaction")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process dies")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--key-file", default=None,
                        help="cluster key file (zactor.net.security): CURVE on every socket, "
                             "only holders of the key may connect (default: no keys)")


def _die_with_parent(parent_pid) -> None:
    if not parent_pid:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the getppid() poll in the loop still covers it
    import os
    if os.getppid() != parent_pid:
        sys.exit(1)


def run(args) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    _die_with_parent(args.parent_pid)
    try:
        proc, info = _make(args)
    except (ValueError, PermissionError) as exc:  # e.g. an unsafe or too long --ipc-dir
        print(f"zactor gcs: {exc}", file=sys.stderr)
        return 2
    if proc is None:
        print("zactor gcs: give --coordinator ADDRESS or --coordinator-mode", file=sys.stderr)
        return 2

    def stop(_signum, _frame):
        proc.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    import os
    info["pid"] = os.getpid()
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    try:
        proc.serve()
    finally:
        proc.close()
    return 0


def _make(args):
    """The coordinator or replica the arguments ask for, and its start-up line; (None, None)
    when they ask for neither."""
    if args.coordinator_mode:
        from zactor.control.coordinator import CoordinatorProcess
        port = DEFAULT_COORDINATOR_PORT if args.port is None else args.port
        proc = CoordinatorProcess(args.data_dir, port, args.host, args.shards, args.replicas,
                                  keys=args.key_file, ipc_dir=args.ipc_dir)
        info = {"role": "coordinator", "id": "coordinator", "addr": proc.addr,
                "pub_addr": proc.pub_addr}
    elif args.coordinator:
        from zactor.control.replica import KEEP_LOG_ENTRIES, ReplicaProcess
        proc = ReplicaProcess(args.coordinator, args.data_dir, args.port or 0, args.host,
                              args.keep_log or KEEP_LOG_ENTRIES, args.parent_pid,
                              keys=args.key_file, ipc_dir=args.ipc_dir)
        info = {"role": "replica", "id": proc.rid, "addr": proc.addr, "pub_addr": proc.pub_addr}
    else:
        return None, None
    return proc, info


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="zactor gcs")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
