"""How a driver finds its cluster: ``zactor.init(address="auto" | "HOST:PORT")``.

``"auto"`` means the ZACTOR_ADDRESS environment variable, else the newest head started on
this machine by ``zactor start --head`` (its supervisor's session record). The address names
the head's coordinator; the driver reads the ``nodes`` table there and connects to the node
that runs on its own machine (the node's ipc socket; shared memory needs the same machine,
as Ray's drivers need a local raylet).
"""

from __future__ import annotations

import os

from zactor.exceptions import RaySystemError

DISCOVERY_TIMEOUT_S = 10.0


def resolve_address(address: str) -> str:
    """The coordinator's ``host:port`` that ``address`` means."""
    if address != "auto":
        return address.replace("tcp://", "").replace("zactor://", "")
    env = os.environ.get("ZACTOR_ADDRESS")
    if env:
        return env
    from zactor.cluster.supervisor import session_files

    heads = [r for r in session_files() if r.get("head")]
    if not heads:
        raise ConnectionError(
            "init(address='auto'): no zactor cluster was started on this machine (no "
            "`zactor start --head` is running and ZACTOR_ADDRESS is not set); start one "
            "with `zactor start --head`, or pass address='HOST:PORT'")
    return heads[0]["address"]


def local_addresses() -> set:
    import psutil

    return {a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family.name == "AF_INET"}


def key_file_for(coordinator: str):
    """The cluster key file to use with the cluster at ``coordinator``: $ZACTOR_KEY_FILE,
    else the one its supervisor on this machine uses, else ~/.zactor/cluster.key if any."""
    from zactor.cluster.supervisor import session_files
    from zactor.net.security import KEY_FILE_ENV, default_key_path

    if os.environ.get(KEY_FILE_ENV):
        return os.environ[KEY_FILE_ENV]
    for record in session_files():
        if record.get("address") == coordinator and record.get("key_file"):
            return record["key_file"]
    path = default_key_path()
    return path if os.path.exists(path) else None


def find_local_node(coordinator: str, timeout_s: float = DISCOVERY_TIMEOUT_S) -> dict:
    """The row of an alive node of the cluster at ``coordinator`` that runs on this machine
    (its ipc socket is reachable from here), preferring one whose host address is ours."""
    from zactor.control.client import GcsClient

    try:
        with GcsClient.connect(coordinator, timeout_s=timeout_s,
                               keys=key_file_for(coordinator)) as gcs:
            rows = [row for _key, row in gcs.scan("nodes", timeout_s=timeout_s)]
    except Exception as exc:  # noqa: BLE001 - say which address failed and why
        raise ConnectionError(f"cannot reach the zactor cluster at {coordinator}: {exc}") \
            from exc
    mine = local_addresses()
    candidates = [r for r in rows if isinstance(r, dict) and r.get("state") == "alive"
                  and _ipc_exists(r.get("ipc_address", ""))]
    if not candidates:
        raise ConnectionError(
            f"the zactor cluster at {coordinator} has no node on this machine "
            f"({len(rows)} node(s) known); start one here with "
            f"`zactor start --address {coordinator}`, then connect")
    # the oldest node on this machine: the head, when this is the head machine
    candidates.sort(key=lambda r: (r.get("host") not in mine, r.get("started_at", 0)))
    return candidates[0]


def _ipc_exists(address: str) -> bool:
    return address.startswith("ipc://") and os.path.exists(address[len("ipc://"):])


def node_liveness(pid: int):
    """A driver's check of a node it did not start: None while the process lives."""
    def check():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            pass
        return None
    return check


def join(address: str, timeout_s: float = DISCOVERY_TIMEOUT_S):
    """Connect this process as a driver of the cluster at ``address``; its CoreClient."""
    from zactor.runtime.core_client import CoreClient

    coordinator = resolve_address(address)
    row = find_local_node(coordinator, timeout_s)
    try:
        return CoreClient(row["ipc_address"], "driver", liveness=node_liveness(row["pid"]))
    except RaySystemError as exc:
        raise ConnectionError(f"cannot connect to the node at {row['ipc_address']} of the "
                              f"cluster at {coordinator}: {exc}") from exc
