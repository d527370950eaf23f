"""Start and stop clusters with the real CLI (``zactor start`` / ``zactor stop``) in tests,
and run driver programs against them as separate processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import psutil

from zactor.net.sockets import free_port

CLI_TIMEOUT_S = 120


def zactor_cli(*args, env=None, timeout=CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zactor.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def run_driver(code: str, *, env=None, timeout=CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def cluster_processes(supervisor_pid: int) -> list:
    try:
        parent = psutil.Process(supervisor_pid)
        return [parent] + parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


class NetnsCluster:
    """A head on ``net.hosts[0]`` and a node on each other host, started with the CLI inside
    their namespaces; a driver in the root namespace reaches the head through the gateway."""

    def __init__(self, net, cpus=(1, 1, 1), resources=None, death_timeout_s=3.0,
                 port=6390):
        self.net = net
        head = net.hosts[0]
        self.address = f"{head.address}:{port}"
        self.env = dict(os.environ, ZACTOR_ADDRESS=self.address)
        self.start_node(0, cpus[0], head=True, death_timeout_s=death_timeout_s,
                        resources=(resources or {}).get(0))
        for i in range(1, len(cpus)):
            self.start_node(i, cpus[i], resources=(resources or {}).get(i))

    def start_node(self, i, cpus, head=False, death_timeout_s=3.0, resources=None):
        host = self.net.hosts[i]
        argv = [sys.executable, "-m", "zactor.cli", "start", "--host", host.address,
                "--num-cpus", str(cpus), "--object-store-memory", str(512 << 20)]
        if head:
            argv += ["--head", "--port", self.address.rsplit(":", 1)[1],
                     "--node-death-timeout", str(death_timeout_s)]
        else:
            argv += ["--address", self.address]
        if resources:
            import json

            argv += ["--resources", json.dumps(resources)]
        out = host.run(argv, timeout=CLI_TIMEOUT_S)
        assert out.returncode == 0, out.stdout + out.stderr

    def supervisors(self) -> list:
        from zactor.cluster.supervisor import session_files

        return [r for r in session_files() if r["address"] == self.address]

    def stop(self) -> None:
        processes = [p for r in self.supervisors() for p in cluster_processes(int(r["pid"]))]
        out = zactor_cli("stop", "--address", self.address)
        assert out.returncode == 0, out.stdout + out.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_running(p) for p in processes):
            time.sleep(0.05)  # polling for exits with a deadline
        assert not any(_running(p) for p in processes), "processes left after zactor stop"


class CliCluster:
    """A head started with ``zactor start --head`` on a free port; ``stop`` checks that
    every process it started is gone."""

    def __init__(self, num_cpus: int = 2, extra=()):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes = []  # supervisor pids of the nodes added
        out = zactor_cli("start", "--head", "--port", str(self.port), "--num-cpus",
                         str(num_cpus), "--object-store-memory", str(256 << 20), *extra)
        assert out.returncode == 0, out.stdout + out.stderr
        self.start_output = out.stdout
        self.log_paths = [_log_path(out.stdout)]
        from zactor.cluster.supervisor import session_files

        record = next(r for r in session_files() if r["address"] == self.address)
        self.supervisor_pid = int(record["pid"])
        self.processes = cluster_processes(self.supervisor_pid)
        self.env = dict(os.environ, ZACTOR_ADDRESS=self.address)

    def add_node(self, num_cpus: int = 1, *extra) -> int:
        """Start a node that joins (same machine, loopback); its supervisor's pid."""
        from zactor.cluster.supervisor import session_files

        before = {int(r["pid"]) for r in session_files()}
        out = zactor_cli("start", "--address", self.address, "--num-cpus", str(num_cpus),
                         "--object-store-memory", str(256 << 20), *extra)
        assert out.returncode == 0, out.stdout + out.stderr
        self.log_paths.append(_log_path(out.stdout))
        pid = next(int(r["pid"]) for r in session_files()
                   if r["address"] == self.address and int(r["pid"]) not in before)
        self.nodes.append(pid)
        self.processes += cluster_processes(pid)
        return pid

    def logs(self, tail: int = 3000) -> str:
        """The last ``tail`` characters of each node's supervisor log (its node manager's and
        scheduler's stderr), for failure messages."""
        out = []
        for path in self.log_paths:
            try:
                with open(path, errors="replace") as f:
                    out.append(f"--- {path}:\n{f.read()[-tail:]}")
            except (OSError, TypeError):
                out.append(f"--- {path}: not readable")
        return "\n".join(out)

    def record(self, supervisor_pid: int) -> dict:
        from zactor.cluster.supervisor import session_files

        return next(r for r in session_files() if int(r["pid"]) == supervisor_pid)

    def stop(self) -> None:
        out = zactor_cli("stop", "--address", self.address)
        assert out.returncode == 0, out.stdout + out.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = [p for p in self.processes if _running(p)]
            if not alive:
                return
            time.sleep(0.05)  # polling for exits with a deadline
        raise AssertionError(f"processes left after zactor stop: {alive}")


def _log_path(start_output: str):
    """The supervisor log ``zactor start`` printed ("Logs: <path>")."""
    for line in start_output.splitlines():
        if line.strip().startswith("Logs:"):
            return line.split("Logs:", 1)[1].strip()
    return None


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
