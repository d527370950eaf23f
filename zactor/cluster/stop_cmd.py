"""``zactor stop``: stop every cluster process this machine started with ``zactor start``.

Each supervisor gets SIGTERM and stops its children (node manager and its workers, control
store, scheduler daemon) itself; one that does not exit within ``--grace`` seconds is killed
with SIGKILL, and its children follow it (they watch their parent).
"""

from __future__ import annotations

import os
import signal
import time

STOP_GRACE_S = 20.0


def add_arguments(parser) -> None:
    parser.add_argument("--grace", type=float, default=STOP_GRACE_S,
                        help="seconds to wait for a clean stop before SIGKILL")
    parser.add_argument("--address", default=None,
                        help="stop only the processes of the cluster at this HOST:PORT")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (already exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_all(grace_s: float = STOP_GRACE_S, address: str | None = None) -> list:
    """Stop every supervisor on this machine (of the cluster at ``address`` only, if given);
    returns the records of those stopped."""
    from zactor.cluster.supervisor import _unlink, session_files

    records = [r for r in session_files() if address is None or r.get("address") == address]
    for record in records:
        try:
            os.kill(int(record["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    for record in records:
        pid = int(record["pid"])
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the exit, with a deadline
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        _unlink(record["file"])
    return records


def run(args) -> int:
    records = stop_all(args.grace, args.address)
    if not records:
        print("zactor stop: no zactor cluster processes started on this machine")
        return 0
    for record in records:
        role = "head" if record.get("head") else "node"
        print(f"zactor stop: stopped the {role} supervised by pid {record['pid']} "
              f"(cluster {record.get('address')})")
    return 0
