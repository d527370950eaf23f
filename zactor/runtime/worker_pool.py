"""The node manager's worker processes: asking the zygote for workers, and its reports
(STARTED, EXIT) on the pipe; a worker's exit releases its store pins and references and
tells the local scheduler (which fails or re-runs what it ran). A mixin of NodeManager
(node_manager.py), split out to keep that module small."""

from __future__ import annotations

import os
import sys

from zactor.runtime import zygote


class WorkerPool:
    def _start_workers(self, count: int) -> None:
        for _ in range(count):
            wid = os.urandom(28)
            os.write(self.zygote_cmd_fd, f"SPAWN {wid.hex()}\n".encode())

    def _on_zygote_reports(self) -> None:
        chunk = os.read(self.zygote_report_fd, 65536)
        if not chunk:
            self.stop("the worker factory (zygote) died")
            return
        self._zygote_buf += chunk
        while b"\n" in self._zygote_buf:
            line, self._zygote_buf = self._zygote_buf.split(b"\n", 1)
            parts = line.decode().split()
            if parts[0] == "STARTED":
                wid, pid = bytes.fromhex(parts[1]), int(parts[2])
                self.worker_pid[wid] = pid
                self.pid_worker[pid] = wid
            elif parts[0] == "EXIT":
                try:
                    self._worker_exited(int(parts[1]), int(parts[2]))
                except Exception:  # noqa: BLE001 - a bug here must not take the node down
                    import traceback

                    print(f"zactor node manager: error handling the exit of worker "
                          f"{parts[1]}:", file=sys.stderr)
                    traceback.print_exc()

    def _worker_exited(self, pid: int, status: int) -> None:
        wid = self.pid_worker.pop(pid, None)
        if wid is None:
            return
        self.worker_pid.pop(wid, None)
        detail = f"worker pid {pid}: {zygote.describe_status(status)}"
        identity = self.worker_identity.pop(wid, None)
        for c in self.store.clients():
            if c["pid"] == pid:
                self.store.release_client(c["client"])
        if identity is not None:
            self._drop_client(identity)
        self._apply(self.scheduler.worker_died(wid, detail))
