"""Start and stop the cluster under test with the real CLI, and find its processes.

Loopback: ``zactor start --head`` then N-1 ``zactor start --address`` on 127.0.0.1.
``--netns``: each node in its own network namespace of a :class:`HostNetwork` (node i on
host i), the driver in the root namespace reaching the head through the gateway.

Every CLI call runs with TMPDIR set to a directory of this run: the supervisors' session
records live there, so another ``zactor stop`` on the same machine (a test run, a person)
cannot stop this cluster, and this run's ``zactor stop`` cannot stop anyone else's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil

CLI_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ChaosCluster:
    def __init__(self, nodes: int, *, netns: bool = False, port: int = 0,
                 death_timeout_s: float = 3.0, cpus_per_node: float = 1.0,
                 store_bytes: int = 256 << 20, gcs_replicas: int = 2, log=print):
        self.n = nodes
        self.netns = netns
        self.death_timeout_s = death_timeout_s
        self.cpus = cpus_per_node
        self.store_bytes = store_bytes
        self.gcs_replicas = gcs_replicas
        self.log = log
        self.net = None
        # short: ipc socket paths live under it and must fit in 107 bytes
        self.tmpdir = tempfile.mkdtemp(prefix="zc", dir="/tmp")
        self.env = dict(os.environ, TMPDIR=self.tmpdir)
        # workers import chaos.workloads by name: the repository root must be on their path
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)
        if port == 0:
            from zactor.net.sockets import free_port

            port = free_port()
        self.port = port
        self.address = None
        self.supervisors = {}   # node index -> supervisor pid (current incarnation)
        self.seen = set()       # every process of the cluster ever observed (leak check)
        self.lock = threading.Lock()
        self.restarts = 0       # nodes started again after a kill or a fence
        self.logs_dir = None

    # ---- start ----------------------------------------------------------------------
    def start(self) -> "ChaosCluster":
        if self.netns:
            from zactor.testing.netns import HostNetwork

            self.net = HostNetwork(self.n, prefix="zc").start()
            self.address = f"{self.net.hosts[0].address}:{self.port}"
        else:
            self.address = f"127.0.0.1:{self.port}"
        self.env["ZACTOR_ADDRESS"] = self.address
        self.start_node(0)
        for i in range(1, self.n):
            self.start_node(i)
        return self

    def _cli(self, i: int, argv: list) -> subprocess.CompletedProcess:
        full = [sys.executable, "-m", "zactor.cli", *argv]
        if self.net is not None:
            return self.net.hosts[i].run(full, timeout=CLI_TIMEOUT_S, env=self.env)
        return subprocess.run(full, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                              env=self.env)

    def start_node(self, i: int) -> int:
        """Start node ``i`` (0: the head); its supervisor's pid."""
        host = self.net.hosts[i].address if self.net is not None else "127.0.0.1"
        argv = ["start", "--host", host, "--num-cpus", str(self.cpus),
                "--object-store-memory", str(self.store_bytes)]
        if i == 0:
            argv += ["--head", "--port", str(self.port), "--node-death-timeout",
                     str(self.death_timeout_s), "--gcs-replicas", str(self.gcs_replicas)]
        else:
            argv += ["--address", self.address]
        before = {int(r["pid"]) for r in self.records()}
        out = self._cli(i, argv)
        if out.returncode != 0:
            raise RuntimeError(f"zactor start of node {i} failed (exit {out.returncode}): "
                               f"{(out.stdout or '') + (out.stderr or '')}")
        pid = next(int(r["pid"]) for r in self.records() if int(r["pid"]) not in before)
        with self.lock:
            self.supervisors[i] = pid
        self.observe()
        return pid

    # ---- processes ------------------------------------------------------------------
    def records(self) -> list:
        """Session records of this cluster's live supervisors (from our TMPDIR)."""
        import json

        d = os.path.join(self.tmpdir, f"zactor-{os.getuid()}", "supervisors")
        out = []
        for name in os.listdir(d) if os.path.isdir(d) else []:
            try:
                with open(os.path.join(d, name)) as f:
                    r = json.load(f)
                if psutil.pid_exists(int(r["pid"])):
                    out.append(r)
            except (OSError, ValueError, KeyError):
                continue
        return out

    def tree(self, i: int) -> list:
        pid = self.supervisors.get(i)
        try:
            p = psutil.Process(pid)
            return [p] + p.children(recursive=True)
        except (psutil.NoSuchProcess, TypeError):
            return []

    def observe(self) -> None:
        """Remember every process of the cluster now alive: stop() checks they all went."""
        for i in list(self.supervisors):
            for p in self.tree(i):
                try:
                    self.seen.add((p.pid, p.create_time()))
                except psutil.NoSuchProcess:
                    pass

    def node_manager(self, i: int):
        for p in self.tree(i)[:1]:
            try:
                children = p.children()
            except psutil.Error:
                return None
            for c in children:
                if "zactor.runtime.node_main" in _cmdline(c):
                    return c
        return None

    def workers(self, i: int) -> list:
        """Worker processes of node i: children of its zygote (the node manager's child)."""
        nm = self.node_manager(i)
        if nm is None:
            return []
        try:
            return [w for z in nm.children() for w in z.children()
                    if "zactor.runtime.node_main" in _cmdline(w)]
        except psutil.NoSuchProcess:
            return []

    def head_children(self, needle: str, exclude: str = "") -> list:
        procs = self.tree(0)[:1]
        if not procs:
            return []
        try:
            return [c for c in procs[0].children() if needle in _cmdline(c)
                    and not (exclude and exclude in _cmdline(c))]
        except psutil.NoSuchProcess:
            return []

    def alive(self, i: int) -> bool:
        return any(_running(p) for p in self.tree(i)[:1])

    # ---- stop -----------------------------------------------------------------------
    def stop(self) -> list:
        """``zactor stop --address`` this cluster, close the network, and return the
        processes still running afterwards (there should be none)."""
        self.observe()
        problems = []
        if self.address is not None:
            try:
                out = subprocess.run([sys.executable, "-m", "zactor.cli", "stop", "--address",
                                      self.address, "--grace", "20"], capture_output=True,
                                     text=True, timeout=STOP_TIMEOUT_S, env=self.env)
                if out.returncode != 0:
                    problems.append(f"zactor stop exit {out.returncode}: {out.stderr}")
            except subprocess.TimeoutExpired:
                problems.append("zactor stop timed out")
        left = self._wait_gone(30.0)
        for p in left:  # only processes of this cluster (pid and start time both match)
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if self.net is not None:
            try:
                self.net.close()
            except Exception as exc:  # noqa: BLE001 - report it, keep cleaning up
                problems.append(f"closing the network: {exc}")
        # the supervisors' logs (scheduler and control-store warnings: who declared whom
        # dead, and when) outlive the run: the report names where they are
        logs = os.path.join(self.tmpdir, f"zactor-{os.getuid()}", "logs")
        self.logs_dir = f"/tmp/chaos-logs-{self.port}"
        try:
            shutil.rmtree(self.logs_dir, ignore_errors=True)
            shutil.copytree(logs, self.logs_dir)
        except OSError:
            self.logs_dir = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        return [f"{p.pid} {' '.join(_cmd(p))[:100]}" for p in left] + problems

    def _wait_gone(self, timeout_s: float) -> list:
        deadline = time.monotonic() + timeout_s
        while True:
            left = []
            for pid, created in self.seen:
                try:
                    p = psutil.Process(pid)
                    if p.create_time() == created and _running(p):
                        left.append(p)
                except psutil.NoSuchProcess:
                    pass
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)  # polling for exits, with a deadline


def _cmdline(p) -> str:
    """A process's command line, "" once it is gone or a zombie (a killed process its
    parent has not reaped yet: the faults make many)."""
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _cmd(p) -> list:
    try:
        return p.cmdline()
    except psutil.NoSuchProcess:
        return ["(gone)"]
