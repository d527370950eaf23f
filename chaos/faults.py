"""Inject one fault of the schedule into a :class:`ChaosCluster`, and undo the timed ones.

    kill-node       SIGKILL a non-head node's supervisor and every process under it
    kill-worker     SIGKILL one worker process (a child of a node manager's zygote)
    kill-gcs        SIGKILL one control-store replica of the head (its supervisor restarts it)
    kill-scheduler  SIGKILL the global scheduler daemon (its supervisor restarts it)
    pause-node      SIGSTOP a non-head node manager for hold_s, then SIGCONT
    partition       cut a non-head host off from every other host for hold_s, then heal
    link-down       set a non-head host's link down for hold_s, then up

A node that is gone (killed, or fenced after a pause or a partition) is started again by
the keeper (``keep_nodes``), as an operator's process manager would: the next faults need
nodes to hit, and recovery means the cluster gets its capacity back too.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import psutil

from chaos import NETNS_ONLY

KEEPER_INTERVAL_S = 0.5
NODE_FAULTS = ("kill-node", "pause-node", "partition", "link-down")


class Injector:
    def __init__(self, cluster, log=print):
        self.cluster = cluster
        self.log = log
        self.pending_undo = []   # (deadline, description, undo callable)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.last_fault = {}     # node -> (kind, time) of the latest fault aimed at it

    def inject(self, fault) -> dict:
        """Apply ``fault``; a record of what was done (``skipped``: why it was not)."""
        rec = {"kind": fault.kind, "node": fault.node, "scheduled_s": fault.at_s,
               "time": time.time(), "skipped": None, "target": None}
        try:
            if fault.kind in NETNS_ONLY and self.cluster.net is None:
                rec["skipped"] = "needs --netns (network namespaces)"
            elif fault.node != 0 and fault.node >= self.cluster.n:
                rec["skipped"] = "no such node"
            elif fault.kind in ("kill-node", "pause-node", "partition", "link-down") \
                    and fault.node == 0:
                rec["skipped"] = "needs a non-head node (--nodes >= 2)"
            else:
                if fault.kind in NODE_FAULTS:
                    fault = self._retarget(fault, rec)
                getattr(self, "_" + fault.kind.replace("-", "_"))(fault, rec)
                if fault.kind not in ("kill-gcs", "kill-scheduler") and not rec["skipped"]:
                    self.last_fault[fault.node] = (fault.kind, rec["time"])
        except psutil.NoSuchProcess as exc:
            rec["skipped"] = f"target exited first ({exc})"
        return rec

    def _retarget(self, fault, rec):
        """A fault aimed at a node that is down (killed or fenced, not restarted yet) goes
        to the next live non-head node instead, so that every scheduled fault hits
        something; the record says so. Deterministic given which nodes are up."""
        n = self.cluster.n
        for k in range(1, n):
            node = 1 + (fault.node - 1 + k - 1) % (n - 1)
            if self.cluster.node_manager(node) is not None:
                if node != fault.node:
                    rec["retargeted_from"] = fault.node
                    rec["node"] = node
                    return dataclasses.replace(fault, node=node)
                return fault
        return fault

    # ---- the faults -----------------------------------------------------------------
    def _kill_node(self, fault, rec):
        procs = self.cluster.tree(fault.node)
        if not procs:
            rec["skipped"] = f"node {fault.node} is down (being restarted)"
            return
        for p in procs:  # the supervisor first: it must not restart what dies next
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        rec["target"] = f"supervisor {procs[0].pid} and {len(procs) - 1} processes"

    def _kill_worker(self, fault, rec):
        workers = self.cluster.workers(fault.node) or [
            w for i in range(self.cluster.n) for w in self.cluster.workers(i)]
        if not workers:
            rec["skipped"] = "no worker process found"
            return
        # the seed picks the node and the rank (pid order) of the worker: an actor's worker
        # lives long and has a low pid, task workers come and go
        victim = _pick(workers, fault.pick)
        victim.send_signal(signal.SIGKILL)
        rec["target"] = f"worker {victim.pid}"

    def _kill_gcs(self, fault, rec):
        replicas = self.cluster.head_children("replica_main", exclude="--coordinator-mode")
        if not replicas:
            rec["skipped"] = "no control-store replica found"
            return
        victim = _pick(replicas, fault.pick)
        victim.send_signal(signal.SIGKILL)
        rec["target"] = f"control-store replica {victim.pid}"

    def _kill_scheduler(self, fault, rec):
        daemons = self.cluster.head_children(" scheduler ")
        if not daemons:
            rec["skipped"] = "no scheduler daemon found"
            return
        daemons[0].send_signal(signal.SIGKILL)
        rec["target"] = f"scheduler {daemons[0].pid}"

    def _pause_node(self, fault, rec):
        nm = self.cluster.node_manager(fault.node)
        if nm is None:
            rec["skipped"] = f"node {fault.node} has no node manager (down)"
            return
        nm.suspend()
        rec["target"] = f"node manager {nm.pid} for {fault.hold_s}s"
        self._later(fault.hold_s, f"SIGCONT {nm.pid}", lambda: _quiet(nm.resume))

    def _partition(self, fault, rec):
        net = self.cluster.net
        others = [h for h in range(self.cluster.n) if h != fault.node]
        net.partition([fault.node], others)
        rec["target"] = f"host {fault.node} cut from {others} for {fault.hold_s}s"
        self._later(fault.hold_s, "heal", net.heal)

    def _link_down(self, fault, rec):
        host = self.cluster.net.hosts[fault.node]
        host.link_down()
        rec["target"] = f"host {fault.node} link down for {fault.hold_s}s"
        self._later(fault.hold_s, f"link up {fault.node}", host.link_up)

    # ---- undo -----------------------------------------------------------------------
    def _later(self, delay_s, what, undo):
        with self.lock:
            self.pending_undo.append((time.monotonic() + delay_s, what, undo))

    def undo_due(self, force: bool = False) -> list:
        """Run the undos whose time has come (all of them with ``force``: cleanup)."""
        now = time.monotonic()
        with self.lock:
            due = [u for u in self.pending_undo if force or u[0] <= now]
            self.pending_undo = [u for u in self.pending_undo if u not in due]
        done = []
        for _t, what, undo in due:
            try:
                undo()
                done.append(what)
            except Exception as exc:  # noqa: BLE001 - cleanup goes on; say what failed
                self.log(f"chaos: undo {what} failed: {exc}")
        return done

    # ---- the keeper -----------------------------------------------------------------
    def keep_nodes(self, events: list) -> None:
        """Until stopped: run due undos, and start again any non-head node that is gone.
        Runs in its own thread; ``events`` gets a record per restart."""
        down_since, down_at, cause = {}, {}, {}
        while not self.stopping.wait(KEEPER_INTERVAL_S):
            self.undo_due()
            self.cluster.observe()
            if "head_lost" not in self.__dict__ and self.cluster.node_manager(0) is None:
                # the harness never restarts the head (drivers connect to it): the run
                # goes on, every round failing, and the report says when it happened
                self.head_lost = time.time()
                self.log("chaos: the head's node manager is gone: the cluster cannot "
                         "recover (drivers connect to it)")
            for i in range(1, self.cluster.n):
                if self.cluster.alive(i):
                    down_since.pop(i, None)
                    continue
                if i not in down_since:
                    down_since[i] = time.monotonic()
                    down_at[i] = time.time()
                    cause[i] = self.last_fault.get(i, (None, 0.0))
                first = down_since[i]
                # a paused or cut-off node may still come back by itself: wait until the
                # scheduler has had time to declare it dead before replacing it
                if time.monotonic() - first < self.cluster.death_timeout_s:
                    continue
                if self.stopping.is_set():
                    return
                t0 = time.time()
                try:
                    pid = self.cluster.start_node(i)
                    self.cluster.restarts += 1
                    kind, when = cause[i]
                    # what took it down, as far as the harness knows: the last fault aimed
                    # at it, or none (the node stopped by itself: fenced after missed
                    # heartbeats on a loaded machine, or crashed)
                    events.append({"node": i, "down_at": down_at[i], "time": t0,
                                   "supervisor": pid, "took_s": round(time.time() - t0, 2),
                                   "after_fault": kind if when and down_at[i] - when < 30
                                   else None})
                    self.log(f"chaos: node {i} started again (supervisor {pid})")
                except Exception as exc:  # noqa: BLE001 - try again next turn
                    self.log(f"chaos: restarting node {i} failed: {exc}")
                down_since.pop(i, None)


def _pick(procs, pick: float):
    procs = sorted(procs, key=lambda p: p.pid)
    return procs[min(len(procs) - 1, int(pick * len(procs)))]


def _quiet(fn):
    try:
        fn()
    except psutil.NoSuchProcess:
        pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
