"""``zactor start``: start this machine's part of a cluster (the head, or a node that joins).

    zactor start --head [--port 6380] [--num-cpus N] [--resources JSON] [--gcs-replicas N]
                 [--gcs-shards N] [--host IP]
    zactor start --address HEAD:6380 [--num-cpus N] [--host IP]

It launches a supervisor (zactor/cluster/supervisor.py) in its own session, waits until its
processes are up, prints the address to give other nodes and drivers, and returns; ``zactor
stop`` ends it. ``--block`` keeps the command in the foreground instead (for containers and
process managers), stopping everything on ^C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time

from zactor.net.sockets import DEFAULT_COORDINATOR_PORT

START_TIMEOUT_S = 90.0
JOIN_CHECK_TIMEOUT_S = 10.0


def add_arguments(parser) -> None:
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--head", action="store_true",
                      help="start the head: control store, global scheduler and a node")
    role.add_argument("--address", metavar="HOST:PORT",
                      help="join the cluster whose head's coordinator listens there")
    parser.add_argument("--port", type=int, default=DEFAULT_COORDINATOR_PORT,
                        help=f"head: the coordinator's port (default {DEFAULT_COORDINATOR_PORT})")
    parser.add_argument("--host", default=None,
                        help="this machine's address that other nodes reach (default: the "
                             "head: 127.0.0.1; a joining node: the interface that routes "
                             "to the head)")
    parser.add_argument("--num-cpus", type=float, default=None)
    parser.add_argument("--num-gpus", type=float, default=None)
    parser.add_argument("--resources", default=None, help='custom resources, JSON: {"A": 2}')
    parser.add_argument("--object-store-memory", type=int, default=None, help="bytes")
    parser.add_argument("--gcs-replicas", type=int, default=1,
                        help="head: control-store replicas per chain")
    parser.add_argument("--gcs-shards", type=int, default=1,
                        help="head: control-store chains (shards)")
    parser.add_argument("--node-death-timeout", type=float, default=None, metavar="S",
                        help="head: declare a node dead after S seconds without a heartbeat "
                             "(raise it on busy machines)")
    parser.add_argument("--transfer-encryption", choices=("on", "off"), default="on",
                        help="head: encrypt object bytes between nodes (default on); 'off' "
                             "sends them in the clear, still authenticated (trusted "
                             "networks; about 5x faster here), for every node that joins")
    parser.add_argument("--system-config", default=None,
                        help="JSON runtime settings (e.g. heartbeat limits)")
    parser.add_argument("--key-file", default=None, metavar="PATH",
                        help="the cluster's CURVE key file (default $ZACTOR_KEY_FILE or "
                             "~/.zactor/cluster.key); the head creates it if missing, a "
                             "joining node needs a copy of the head's")
    parser.add_argument("--block", action="store_true",
                        help="stay in the foreground until stopped")


def _route_address(head: str) -> str:
    """The local address the kernel would use to reach ``head`` (a UDP connect sends
    nothing; it only picks the route)."""
    host = head.rsplit(":", 1)[0].replace("tcp://", "")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _cluster_key_file(args) -> str:
    """The key file every TCP socket of the cluster authenticates with: the head makes one
    (mode 0600) when there is none; a joining node must be given the head's."""
    from zactor.net.security import KeyFileError, default_key_path, generate_keys, load_keys

    path = os.path.abspath(args.key_file or default_key_path())
    if not os.path.exists(path):
        if not args.head:
            raise SystemExit(f"zactor start: no cluster key file at {path}: copy the head's "
                             f"key file (made by `zactor start --head`, default "
                             f"~/.zactor/cluster.key, mode 0600) to this machine, or pass "
                             f"--key-file")
        generate_keys(path)
    try:
        load_keys(path)
    except KeyFileError as exc:
        raise SystemExit(f"zactor start: {exc}") from None
    return path


def _check_reachable(address: str, key_file: str) -> dict:
    """A joining node first proves it can talk to the cluster (its address, its keys);
    returns the cluster's settings every node follows (kv ``cluster:config``)."""
    from zactor.control.client import GcsClient

    try:
        with GcsClient.connect(address, timeout_s=JOIN_CHECK_TIMEOUT_S, keys=key_file) as g:
            settings = g.get("kv", b"cluster:config", timeout_s=JOIN_CHECK_TIMEOUT_S)
            return settings if isinstance(settings, dict) else {}
    except Exception as exc:  # noqa: BLE001 - say what failed, not a traceback
        raise SystemExit(f"zactor start: cannot reach the cluster at {address} with the key "
                         f"file {key_file} ({exc}); check the address and that the key "
                         f"file is a copy of the head's") from None


def _resources(args) -> tuple:
    from zactor.api import node_resources

    try:
        custom = json.loads(args.resources) if args.resources else {}
    except json.JSONDecodeError as exc:
        raise SystemExit(f"zactor start: --resources is not JSON ({exc}): {args.resources!r}") from None
    if not isinstance(custom, dict) or not all(
            isinstance(v, (int, float)) and v >= 0 for v in custom.values()):
        raise SystemExit("zactor start: --resources must be a JSON object of non-negative "
                         f"numbers, got {args.resources!r}")
    return node_resources(args.num_cpus, args.num_gpus, custom, args.object_store_memory)


def run(args) -> int:
    if args.system_config:
        try:
            json.loads(args.system_config)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"zactor start: --system-config is not JSON ({exc})") from None
    host = args.host or ("127.0.0.1" if args.head else _route_address(args.address))
    res, store_bytes = _resources(args)
    key_file = _cluster_key_file(args)
    system_config = json.loads(args.system_config or "{}")
    if args.head:
        system_config["transfer_encrypt"] = args.transfer_encryption == "on"
    else:
        system_config.update(_check_reachable(args.address, key_file))
    from zactor.runtime.local_cluster import check_shm_room

    check_shm_room(store_bytes)
    argv = [sys.executable, "-m", "zactor.cluster.supervisor", "--host", host,
            "--resources", json.dumps(res), "--store-bytes", str(store_bytes),
            "--system-config", json.dumps(system_config), "--key-file", key_file]
    if args.head:
        argv += ["--head", "--port", str(args.port), "--gcs-replicas",
                 str(args.gcs_replicas), "--gcs-shards", str(args.gcs_shards)]
        if args.node_death_timeout is not None:
            argv += ["--node-death-timeout", str(args.node_death_timeout)]
    else:
        argv += ["--address", args.address]
    ready_r, ready_w = os.pipe()
    env = dict(os.environ)
    path = [os.getcwd()] + [p for p in sys.path if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    # the supervisor outlives this command: its output goes to a log file, not to our
    # stdout (a caller reading our output to its end would wait for the cluster to stop)
    from zactor.cluster.supervisor import runtime_dir

    log_dir = os.path.join(runtime_dir(), "logs")
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    log_path = os.path.join(log_dir, f"supervisor-{time.strftime('%Y%m%d-%H%M%S')}-"
                                     f"{os.getpid()}.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv + ["--ready-fd", str(ready_w)], pass_fds=(ready_w,),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    os.close(ready_w)
    line = _read_line(ready_r, proc, START_TIMEOUT_S)
    os.close(ready_r)
    if not line.startswith("READY "):
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        why = line[7:] if line.startswith("FAILED ") else line or "no answer in time"
        print(f"zactor start: failed: {why} (log: {log_path})", file=sys.stderr)
        return 1
    info = json.loads(line[6:])
    role = "head" if args.head else "node"
    print(f"zactor: started the {role} (supervisor pid {info['pid']}).\n"
          f"  Cluster address: {info['address']}\n"
          f"  Join another machine:  zactor start --address {info['address']}\n"
          f"  Connect a driver:      zactor.init(address=\"auto\") on this machine, or "
          f"zactor.init(address=\"{info['address']}\")\n"
          f"  Stop:                  zactor stop\n"
          f"  Logs:                  {log_path}")
    if args.block:
        try:
            proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(30)
    return 0


def _read_line(fd: int, proc, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    buf = b""
    while b"\n" not in buf and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
        elif proc.poll() is not None:
            break
    return buf.decode(errors="replace").strip()
