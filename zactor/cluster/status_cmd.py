"""``zactor status``: the cluster's nodes, their resources (total / used) and object stores.

Reads the control store's ``nodes`` table through the head's coordinator (``--address``, or
the cluster started on this machine, as ``zactor.init(address="auto")`` finds it).
"""

from __future__ import annotations

import time


def add_arguments(parser) -> None:
    parser.add_argument("--address", default="auto",
                        help="the head's coordinator HOST:PORT (default: this machine's)")
    parser.add_argument("--all", action="store_true", help="list dead nodes too")


def _amount(value: float) -> str:
    return f"{value:g}"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def format_status(address: str, rows: list, scheduler, show_dead: bool = False) -> str:
    alive = [r for r in rows if r.get("state") == "alive"]
    dead = [r for r in rows if r.get("state") != "alive"]
    lines = [f"zactor cluster at {address}",
             f"  nodes: {len(alive)} alive, {len(dead)} dead",
             "  global scheduler: " + (f"{scheduler['host']}:{scheduler['port']} "
                                       f"(pid {scheduler.get('pid')})" if scheduler
                                       else "not running")]
    totals: dict = {}
    used: dict = {}
    for r in alive:
        for name, amount in r.get("resources_total", {}).items():
            totals[name] = totals.get(name, 0) + amount
            used[name] = used.get(name, 0) + amount - r.get("resources_available", {}).get(
                name, 0)
    lines.append("Resources (used / total):")
    for name in sorted(totals):
        if name == "memory":
            lines.append(f"  {_bytes(used[name])} / {_bytes(totals[name])} memory")
        elif totals[name]:
            lines.append(f"  {_amount(used[name])} / {_amount(totals[name])} {name}")
    lines.append("Nodes:")
    now = time.time()
    for r in alive + (dead if show_dead else []):
        res = r.get("resources_total", {})
        avail = r.get("resources_available", {})
        cpus = f"{_amount(res.get('CPU', 0) - avail.get('CPU', 0))}/{_amount(res.get('CPU', 0))} CPU"
        store = f"store {_bytes(r.get('store_used', 0))} / {_bytes(r.get('store_capacity', 0))}"
        spill = r.get("spill") or {}
        if spill.get("spilled_objects"):  # (runtime/spilling.py)
            store += (f" (spilled {_bytes(spill['on_disk_bytes'])} in "
                      f"{spill['on_disk_objects']} objects on disk, restored "
                      f"{spill['restored_objects']})")
        age = now - r.get("heartbeat_at", now)
        state = r.get("state", "?")
        extra = f" ({r.get('reason')})" if state != "alive" and r.get("reason") else ""
        lines.append(f"  {r['node_id'].hex()[:16]}  {r.get('host')}  {state}{extra}  {cpus}  "
                     f"{store}  queue {r.get('queue_len', 0)}  heartbeat {age:.1f}s ago")
    return "\n".join(lines)


def run(args) -> int:
    from zactor.cluster.discovery import resolve_address
    from zactor.control.client import GcsClient

    try:
        address = resolve_address(args.address)
        from zactor.cluster.discovery import key_file_for

        with GcsClient.connect(address, timeout_s=10.0, keys=key_file_for(address)) as gcs:
            rows = [row for _k, row in gcs.scan("nodes", timeout_s=10.0)
                    if isinstance(row, dict) and "node_id" in row]
            scheduler = gcs.get("kv", b"cluster:scheduler", timeout_s=10.0)
    except Exception as exc:  # noqa: BLE001 - tell the operator, do not trace back
        print(f"zactor status: {exc}")
        return 1
    print(format_status(address, rows, scheduler, args.all))
    return 0
