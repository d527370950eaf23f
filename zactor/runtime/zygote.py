"""The worker factory: a process forked from the node manager before it opens any socket,
that forks worker processes on request.

Why: starting a Python interpreter and importing zactor costs ~150 ms here; forking a process
that already has them imported costs a few milliseconds, so a task never waits long for a new
worker. The zygote has no ZeroMQ context and no threads, so forking it is safe.

Protocol (text lines over two pipes):
    node manager -> zygote   ``SPAWN <worker id hex>``
    zygote -> node manager   ``STARTED <worker id hex> <pid>``  /  ``EXIT <pid> <wait status>``

The zygote reaps its children and reports each exit with its raw wait status (the node manager
turns it into "exit code 3" or "killed by SIGKILL" for error messages). When its pipe from the
node manager closes (the node manager died or shut down) it SIGKILLs every worker and exits, so
no worker outlives its node.
"""

from __future__ import annotations

import os
import select
import signal
import sys

REAP_INTERVAL_S = 0.05


def describe_status(status: int) -> str:
    """A wait status in words: 'exit code 3', 'killed by signal SIGKILL (9)'."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by signal {name} ({sig})"
    if os.WIFEXITED(status):
        return f"exit code {os.WEXITSTATUS(status)}"
    return f"wait status {status}"


def start(worker_main, close_in_child=()) -> tuple[int, int, int]:
    """Fork the zygote; returns (pid, fd to write SPAWN lines, fd to read reports).

    ``worker_main(worker_id: bytes)`` runs in each forked worker and must not return.
    ``close_in_child``: descriptors of the node manager the zygote must not keep open.
    """
    to_zygote_r, to_zygote_w = os.pipe()
    from_zygote_r, from_zygote_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(to_zygote_r)
        os.close(from_zygote_w)
        return pid, to_zygote_w, from_zygote_r
    os.close(to_zygote_w)
    os.close(from_zygote_r)
    for fd in close_in_child:
        os.close(fd)
    try:
        _serve(to_zygote_r, from_zygote_w, worker_main)
    finally:
        os._exit(0)


def _serve(cmd_fd: int, report_fd: int, worker_main) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the driver; it stops us
    if sys.flags.no_site:
        # The node manager starts with ``python -S`` (local_cluster.py: its site set-up,
        # ~60 ms here, is not on the path to the first task); workers run user code, which
        # may need what site-packages' .pth files set up (editable installs, namespace
        # packages, sitecustomize): done here, while the node manager goes on starting.
        import site

        site.main()
    signal.signal(signal.SIGTERM, lambda *_: _kill_all_and_exit(children))
    children: set = set()
    buf = b""
    while True:
        ready, _, _ = select.select([cmd_fd], [], [], REAP_INTERVAL_S)
        if ready:
            chunk = os.read(cmd_fd, 65536)
            if not chunk:
                _kill_all_and_exit(children)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                parts = line.decode().split()
                if len(parts) == 2 and parts[0] == "SPAWN":
                    wid = bytes.fromhex(parts[1])
                    pid = os.fork()
                    if pid == 0:
                        os.close(cmd_fd)
                        os.close(report_fd)
                        signal.signal(signal.SIGTERM, signal.SIG_DFL)
                        signal.signal(signal.SIGINT, signal.SIG_IGN)
                        try:
                            worker_main(wid)
                        except BaseException:  # noqa: BLE001 - report and die
                            import traceback

                            traceback.print_exc()
                            os._exit(1)
                        os._exit(0)
                    children.add(pid)
                    os.write(report_fd, f"STARTED {parts[1]} {pid}\n".encode())
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            try:
                os.write(report_fd, f"EXIT {pid} {status}\n".encode())
            except BrokenPipeError:
                _kill_all_and_exit(children)


def _kill_all_and_exit(children) -> None:
    for pid in list(children):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in list(children):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    sys.stdout.flush()
    os._exit(0)
