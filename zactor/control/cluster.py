"""Start and stop a control store (coordinator + replicas) as child processes.

Used by the local cluster, the tests and the benchmark; runs in the driver process. Children
are started with ``--parent-pid`` so they exit if this process dies, and ``stop`` ends each with
SIGTERM, then SIGKILL after a deadline, and waits for it: nothing is left behind.

    with start_control_store(data_dir, shards=1, replicas=3) as store:
        client = GcsClient.connect(store.address)
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import zmq

from zactor import protocol as P
from zactor.exceptions import ControlStoreUnavailableError
from zactor.net.security import curve_client, keys_from
from zactor.net.sockets import display_address, endpoint, ipc_endpoint, make_socket

STOP_GRACE_S = 5.0
TRANSPORTS = ("tcp", "ipc")
# the longest socket name a member binds (a replica's PUB: "<replica id>-pub"), checked
# before any child starts so that a too long directory fails at once, by name
_LONGEST_IPC_NAME = "r-0123456789ab-pub"


class _Child:
    def __init__(self, argv: list, timeout_s: float):
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=env)
        deadline = time.monotonic() + timeout_s
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop(0)
                raise ControlStoreUnavailableError(f"{argv[3:]} did not start")
            if select.select([fd], [], [], min(left, 0.1))[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                line += chunk
        self.info = json.loads(line.decode())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait()
            self.proc.stdout.close()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.wait()
        if not self.proc.stdout.closed:
            self.proc.stdout.close()


class LocalControlStore:
    """A coordinator and ``shards`` x ``replicas`` replica processes under ``data_dir``."""

    def __init__(self, data_dir: str, shards: int = 1, replicas: int = 1, port: int = 0,
                 keep_log_entries: int | None = None, log_level: str = "WARNING", keys=None,
                 host: str = "127.0.0.1", transport: str = "tcp"):
        # keys: ClusterKeys (from a file: children get its path, never the secret) or a path
        self.keys = keys_from(keys)
        if self.keys is not None and not self.keys.path:
            raise ValueError("keys for a control store must come from a key file")
        # transport "ipc": every member binds ipc sockets in data_dir (made mode 0700), none
        # a TCP port; a local session's store, reachable by this user's processes only
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self.ipc_dir = data_dir if transport == "ipc" else None
        if self.ipc_dir is not None:
            ipc_endpoint(self.ipc_dir, _LONGEST_IPC_NAME)
        self.data_dir = data_dir
        self.host = host  # the interface every process binds (a cluster's head: its address)
        self.shards = shards
        self.replicas_per_shard = replicas
        self.port = port
        self.keep_log_entries = keep_log_entries
        self.log_level = log_level
        self.coordinator: _Child | None = None
        self.replicas: dict = {}  # replica id -> _Child
        self._n_started = 0
        self._ctx = zmq.Context()

    # ---- lifecycle --------------------------------------------------------------------------
    def _argv(self, *extra) -> list:
        keys = ["--key-file", self.keys.path] if self.keys is not None else []
        ipc = ["--ipc-dir", self.ipc_dir] if self.ipc_dir is not None else []
        return [sys.executable, "-m", "zactor.control.replica_main", "--parent-pid",
                str(os.getpid()), "--log-level", self.log_level, "--host", self.host, *keys,
                *ipc, *extra]

    def start(self, timeout_s: float = 30.0) -> "LocalControlStore":
        deadline = time.monotonic() + timeout_s
        try:
            self.start_coordinator(timeout_s)
            for _ in range(self.shards * self.replicas_per_shard):
                self.start_replica(deadline - time.monotonic())
            self.wait_for(lambda cfg: all(len(m) == self.replicas_per_shard and
                                          all(member[3] for member in m) for _e, m in cfg),
                          deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise
        return self

    def start_coordinator(self, timeout_s: float = 30.0) -> None:
        """Start (or restart, on the same address and data) the coordinator."""
        port = self.port
        if self.coordinator is not None and self.ipc_dir is None:
            port = int(self.address.rsplit(":", 1)[1])  # ipc: the same file name anyway
        self.coordinator = _Child(self._argv(
            "--coordinator-mode", "--port", str(port), "--shards", str(self.shards),
            "--replicas", str(self.replicas_per_shard),
            "--data-dir", os.path.join(self.data_dir, "coordinator")), timeout_s)
        # "host:port" for TCP, as users give it to `zactor start --address`; ipc:// kept
        self.address = display_address(self.coordinator.info["addr"])

    def start_replica(self, timeout_s: float = 30.0, data_dir: str | None = None) -> str:
        """Start one more replica (it joins the shard with the fewest members); its id."""
        if data_dir is None:
            data_dir = os.path.join(self.data_dir, f"replica-{self._n_started}")
            self._n_started += 1
        extra = ["--keep-log", str(self.keep_log_entries)] if self.keep_log_entries else []
        child = _Child(self._argv("--coordinator", self.address, "--data-dir", data_dir,
                                  *extra), timeout_s)
        child.data_dir = data_dir
        self.replicas[child.info["id"]] = child
        return child.info["id"]

    def kill_replica(self, replica_id: str, sig=signal.SIGKILL) -> None:
        self.replicas[replica_id].kill(sig)

    def restart_replica(self, replica_id: str, timeout_s: float = 30.0) -> str:
        child = self.replicas.pop(replica_id)
        child.stop()
        return self.start_replica(timeout_s, data_dir=child.data_dir)

    def stop(self) -> None:
        for child in list(self.replicas.values()):
            child.stop()
        if self.coordinator is not None:
            self.coordinator.stop()
        self._ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- introspection ----------------------------------------------------------------------
    def config(self, timeout_s: float = 5.0) -> list:
        """The coordinator's current configuration: [[epoch, [[id, addr, pub], ...]], ...]."""
        sock = curve_client(make_socket(self._ctx, zmq.DEALER), self.keys)
        try:
            sock.connect(endpoint(self.address))
            sock.send_multipart(P.encode(P.GET_CONFIG, {}))
            if not sock.poll(int(timeout_s * 1000)):
                raise ControlStoreUnavailableError(f"coordinator {self.address} did not answer")
            return P.decode(sock.recv_multipart())["shards"]
        finally:
            sock.close(0)

    def chain(self, shard: int = 0) -> list:
        """Replica ids of one shard, head first."""
        return [m[0] for m in self.config()[shard][1]]

    def wait_for(self, predicate, timeout_s: float = 10.0) -> list:
        """Poll the configuration until ``predicate(config)`` holds; returns it."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                cfg = self.config(max(0.1, min(1.0, deadline - time.monotonic())))
                if predicate(cfg):
                    return cfg
            except ControlStoreUnavailableError:
                pass
            if time.monotonic() > deadline:
                raise ControlStoreUnavailableError("the control store did not reach the "
                                                   "expected configuration in time")
            time.sleep(0.005)  # polling a condition with a deadline, not synchronising by sleep


def start_control_store(data_dir: str, shards: int = 1, replicas: int = 1, port: int = 0,
                        timeout_s: float = 30.0, **kwargs) -> LocalControlStore:
    """Start a coordinator and ``shards`` x ``replicas`` replicas; returns the running store."""
    return LocalControlStore(data_dir, shards, replicas, port, **kwargs).start(timeout_s)
