"""The process ``zactor start`` leaves running on a machine: it starts this machine's part of
the cluster as its children and keeps the restartable ones running.

    zactor start --head      supervisor -> control store (coordinator + replicas),
                                           global scheduler daemon, node manager
    zactor start --address   supervisor -> node manager (joins the head's control store)

Why a supervisor and not detached daemons: every process it starts dies with it (the node
manager watches its parent; control-store processes use PR_SET_PDEATHSIG), so ``zactor stop``
is one SIGTERM per machine and nothing outlives it. It restarts the control-store replicas,
the coordinator and the scheduler daemon it started when they die (they keep their state in
SQLite / the control store); processes an operator started by hand are the operator's. A dead
node manager is a dead node (its workers and objects are gone): the supervisor of a worker
node then stops; a head keeps its control store and scheduler running for the other nodes.

Each supervisor writes ``<runtime dir>/supervisors/<pid>.json`` (what ``zactor stop``,
``zactor status`` and ``zactor.init(address="auto")`` read) and removes it when it stops.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

SUPERVISE_INTERVAL_S = 0.2
START_TIMEOUT_S = 60.0


def runtime_dir() -> str:
    """Where this machine's cluster processes keep their session files (mode 0700)."""
    from zactor.runtime.local_cluster import runtime_root

    return runtime_root()


def supervisors_dir() -> str:
    path = os.path.join(runtime_dir(), "supervisors")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def session_files() -> list:
    """The session records of supervisors running on this machine, newest first (records
    of dead supervisors are removed on the way)."""
    records = []
    for name in os.listdir(supervisors_dir()):
        path = os.path.join(supervisors_dir(), name)
        try:
            with open(path) as f:
                record = json.load(f)
            os.kill(int(record["pid"]), 0)
        except (OSError, ValueError, KeyError):
            _unlink(path)
            continue
        record["file"] = path
        records.append(record)
    records.sort(key=lambda r: r.get("started_at", 0), reverse=True)
    return records


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Supervisor:
    def __init__(self, args):
        self.args = args
        self.head = bool(args.head)
        self.host = args.host
        self.control = None          # LocalControlStore (head only)
        self.gcs_data_dir = ""       # its directory, removed when the head stops
        self.scheduler = None        # subprocess.Popen of the scheduler daemon (head only)
        self.node = None             # LocalNode
        self.address = args.address  # the coordinator's host:port
        self.running = True
        self.record_path = os.path.join(supervisors_dir(), f"{os.getpid()}.json")

    # ---- start ----------------------------------------------------------------------------

    def start(self) -> None:
        from zactor.runtime.local_cluster import LocalNode

        if self.head:
            from zactor.control.cluster import LocalControlStore

            data_dir = self.gcs_data_dir = os.path.join(runtime_dir(), f"gcs_{os.getpid()}")
            remove_stale_gcs_dirs()
            # named by our pid: one there already is a dead supervisor's, whose pid we reuse
            # (its nodes and actors showed up in this cluster's status and lookups in CI)
            shutil.rmtree(data_dir, ignore_errors=True)
            self.control = LocalControlStore(data_dir, self.args.gcs_shards,
                                             self.args.gcs_replicas, self.args.port,
                                             host=self.host, keys=self.args.key_file
                                             ).start(START_TIMEOUT_S)
            self.address = self.control.address
            self._publish_settings()
            self._start_scheduler()
        config = {"gcs_address": self.address, "cluster": True, "host": self.host,
                  "key_file": self.args.key_file,
                  "log_to_driver": True, **json.loads(self.args.system_config or "{}")}
        self.node = LocalNode.launch(
            resources=self.args.resources_dict, store_bytes=self.args.store_bytes,
            config=config, initial_workers=max(1, int(self.args.resources_dict["CPU"]))
        ).wait_ready(START_TIMEOUT_S)
        self._wait_registered(START_TIMEOUT_S)
        self._write_record()

    def _wait_registered(self, timeout_s: float) -> None:
        """Return once the node's row (and on the head, the scheduler's) is in the control
        store: after `zactor start` returns, `zactor status` and drivers see the node."""
        from zactor.control.client import GcsClient

        deadline = time.monotonic() + timeout_s
        with GcsClient.connect(self.address, timeout_s=timeout_s,
                               keys=self.args.key_file) as gcs:
            while time.monotonic() < deadline:
                rows = [row for _k, row in gcs.scan("nodes", timeout_s=timeout_s)]
                node_up = any(isinstance(r, dict) and r.get("ipc_address") == self.node.address
                              and r.get("state") == "alive" for r in rows)
                scheduler_up = self.scheduler is None or isinstance(
                    gcs.get("kv", b"cluster:scheduler", timeout_s=timeout_s), dict)
                if node_up and scheduler_up:
                    return
                if self.node.exit_status() is not None:
                    raise RuntimeError("the node manager exited while starting")
                time.sleep(0.05)  # polling the control store with a deadline
        raise RuntimeError(f"the node did not register in the control store at "
                           f"{self.address} within {timeout_s:.0f} s")

    def _publish_settings(self) -> None:
        """Settings every node of the cluster follows, read by joining nodes (start_cmd)."""
        from zactor.control.client import GcsClient

        settings = json.loads(self.args.system_config or "{}")
        with GcsClient.connect(self.address, timeout_s=START_TIMEOUT_S,
                               keys=self.args.key_file) as gcs:
            gcs.put("kv", b"cluster:config",
                    {"transfer_encrypt": settings.get("transfer_encrypt", True)},
                    timeout_s=START_TIMEOUT_S)

    def _start_scheduler(self) -> None:
        argv = [sys.executable, "-m", "zactor.cli", "scheduler", "--address", self.address,
                "--host", self.host, "--parent-pid", str(os.getpid())]
        if self.args.node_death_timeout is not None:
            argv += ["--node-death-timeout", str(self.args.node_death_timeout)]
        if self.args.key_file:
            argv += ["--key-file", self.args.key_file]
        try:
            import zactor.scheduling.scheduler_main  # noqa: F401 - is the daemon installed?
        except ImportError:
            print("zactor supervisor: no global scheduler daemon in this installation; "
                  "tasks stay on their own node", file=sys.stderr)
            return
        self.scheduler = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def _write_record(self) -> None:
        record = {"pid": os.getpid(), "head": self.head, "address": self.address,
                  "host": self.host, "node_address": self.node.address,
                  "key_file": self.args.key_file,
                  "node_pid": self.node.proc.pid, "session_dir": self.node.session_dir,
                  "started_at": time.time()}
        tmp = self.record_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, self.record_path)

    # ---- keep running ---------------------------------------------------------------------

    def serve(self) -> None:
        while self.running:
            time.sleep(SUPERVISE_INTERVAL_S)  # a poll interval, not synchronisation
            self.supervise_once()

    def supervise_once(self) -> None:
        if self.control is not None:
            coordinator = self.control.coordinator
            if coordinator is not None and not coordinator.alive():
                self._log(f"the coordinator (pid {coordinator.pid}) died "
                          f"({_exit_text(coordinator.proc.returncode)}); restarting it")
                coordinator.stop(0)
                self._retry(self.control.start_coordinator)
            for rid, child in list(self.control.replicas.items()):
                if not child.alive():
                    self._log(f"control-store replica {rid} (pid {child.pid}) died "
                              f"({_exit_text(child.proc.returncode)}); restarting it")
                    self._retry(lambda rid=rid: self.control.restart_replica(rid))
        if self.scheduler is not None and self.scheduler.poll() is not None:
            self._log(f"the scheduler daemon (pid {self.scheduler.pid}) died "
                      f"({_exit_text(self.scheduler.returncode)}); restarting it")
            self._start_scheduler()
        if self.node is not None and self.node.exit_status() is not None:
            self._log(f"the node manager (pid {self.node.proc.pid}) exited "
                      f"({_exit_text(self.node.proc.returncode)}): this node is gone")
            self.node.cleanup()
            self.node = None
            if not self.head:
                self.running = False

    def _retry(self, start) -> None:
        try:
            start()
        except Exception as exc:  # noqa: BLE001 - try again at the next round
            self._log(f"restart failed ({exc}); trying again")

    @staticmethod
    def _log(text: str) -> None:
        print(f"zactor supervisor {os.getpid()}: {text}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self.running = False

    def shutdown(self) -> None:
        _unlink(self.record_path)
        if self.node is not None:
            self.node.proc.send_signal(signal.SIGTERM)
            self.node.stop()
            self.node.cleanup()
        if self.scheduler is not None:
            from zactor.runtime.local_cluster import _stop_process

            _stop_process(self.scheduler, 5.0)
        if self.control is not None:
            self.control.stop()
            # the cluster's state ends with it: a new head starts empty (it never resumes a
            # stopped cluster's control store)
            shutil.rmtree(self.gcs_data_dir, ignore_errors=True)


def remove_stale_gcs_dirs() -> list:
    """Remove the control-store directories (``gcs_<pid>``) of head supervisors that are gone
    (SIGKILLed: they could not remove their own)."""
    removed = []
    root = runtime_dir()
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        if not name.startswith("gcs_") or not name[4:].isdigit():
            continue
        try:
            os.kill(int(name[4:]), 0)
            continue  # alive (or another user's): not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        removed.append(name)
    return removed


def _exit_text(code) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zactor-supervisor")
    parser.add_argument("--head", action="store_true")
    parser.add_argument("--address", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6380)
    parser.add_argument("--gcs-shards", type=int, default=1)
    parser.add_argument("--gcs-replicas", type=int, default=1)
    parser.add_argument("--resources", required=True, help="JSON, CPU and GPU included")
    parser.add_argument("--store-bytes", type=int, required=True)
    parser.add_argument("--system-config", default="{}")
    parser.add_argument("--node-death-timeout", type=float, default=None)
    parser.add_argument("--key-file", default=None)
    parser.add_argument("--ready-fd", type=int, default=None,
                        help="write 'READY <json>' or 'FAILED <why>' here once started")
    args = parser.parse_args(argv)
    args.resources_dict = json.loads(args.resources)
    os.setsid()  # not in the terminal's process group: ^C in the shell does not reach it
    sup = Supervisor(args)
    signal.signal(signal.SIGTERM, lambda *_: sup.stop())
    signal.signal(signal.SIGINT, lambda *_: sup.stop())
    try:
        sup.start()
    except BaseException as exc:
        if args.ready_fd is not None:
            os.write(args.ready_fd, f"FAILED {exc}\n".encode())
        sup.shutdown()
        return 1
    if args.ready_fd is not None:
        os.write(args.ready_fd, ("READY " + json.dumps(
            {"address": sup.address, "node_address": sup.node.address,
             "pid": os.getpid()}) + "\n").encode())
        os.close(args.ready_fd)
    try:
        sup.serve()
    finally:
        sup.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
