"""The ``ip`` commands under zactor.testing.netns: each with a timeout, failing with an error
that names the command and carries its stderr."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Iterable, Sequence

IP_TIMEOUT_S = 15.0


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message names it and carries its stderr."""


def _run(argv: Sequence[str], *, input: str | None = None, timeout: float = IP_TIMEOUT_S,
         check: bool = True) -> subprocess.CompletedProcess:
    try:
        cp = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                            timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"`{' '.join(argv)}` timed out after {timeout} s") from exc
    if check and cp.returncode != 0:
        detail = f"\nbatch:\n{input}" if input else ""
        raise NetnsError(f"`{' '.join(argv)}` failed (exit {cp.returncode}): "
                         f"{cp.stderr.strip()}{detail}")
    return cp


def _batch(netns: str | None, lines: Iterable[str]) -> None:
    """Many ``ip`` commands in one process (``ip -batch``): setting up a network is ~100
    commands and a process start each would dominate a test's setup time."""
    lines = list(lines)
    if lines:
        argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
        _run(argv, input="\n".join(lines) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_names() -> list[str]:
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _root_links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"]).stdout
    # "12: name@ifN: <...>" -> name
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _kill_netns_processes(netns: str, timeout: float = 10.0) -> None:
    """SIGKILL every process inside ``netns`` and wait until none is left: a namespace lives
    as long as a process in it, and with it its veths."""
    deadline = time.monotonic() + timeout
    while True:
        cp = _run(["ip", "netns", "pids", netns], check=False)
        pids = [int(p) for p in cp.stdout.split()] if cp.returncode == 0 else []
        if not pids:
            return
        if time.monotonic() > deadline:
            raise NetnsError(f"processes {pids} in namespace {netns} survived SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        time.sleep(0.02)  # polling for the kernel to finish exiting them, not synchronising


def _wait_links_up(links: Iterable[tuple[str | None, str]], timeout: float = 10.0) -> None:
    """Wait until each (namespace, interface) is operationally up, and forwarding where it is
    a bridge port: the kernel applies carrier changes later (linkwatch, up to ~1 s), and
    until then it drops what the interface is given, which would make the first packets
    after a start or a link_up vanish."""
    deadline = time.monotonic() + timeout
    for netns, dev in links:
        argv = ["ip"] + (["-n", netns] if netns else []) + ["-d", "-o", "link", "show", "dev", dev]
        while True:
            out = _run(argv).stdout
            if "state UP" in out and ("bridge_slave" not in out or "state forwarding" in out):
                break
            if time.monotonic() > deadline:
                raise NetnsError(f"{dev} in namespace {netns or 'root'} not up after "
                                 f"{timeout} s: {out.strip()}")
            time.sleep(0.01)  # polling a kernel state, with a deadline
