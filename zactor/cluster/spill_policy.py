"""When a node hands a task to the global scheduler: the paper's bottom-up rule, as the
LocalScheduler's spill hook on a cluster node (scheduling/local_scheduler.py calls it; the
node manager installs it, runtime/node_manager.py). Tasks that leave the node are then
RemoteTasks' (cluster/remote_tasks.py).
"""

from __future__ import annotations

from zactor.runtime import messages as m

#: a task whose inputs on other nodes exceed this goes to the global scheduler, which
#: weighs moving the task against moving the data (the paper's locality rule)
LOCALITY_THRESHOLD_BYTES = 100 * 1024


def cluster_spill_policy(nm, queue_threshold=None):
    """The paper's bottom-up rule, as a LocalScheduler hook: keep a task when it can run
    here now or the local queue is short; otherwise (or when its strategy names other nodes)
    hand it to the global scheduler. A lone node keeps everything."""
    threshold = queue_threshold if queue_threshold is not None else \
        2 * max(1, int(nm.resources.to_dict().get("CPU", 1)))

    def policy(request, scheduler):
        task = nm.tasks.get(request.payload)
        strategy = task.spec.get("strategy") if task is not None else None
        if request.dedicated and strategy is None:
            return None  # actors stay where they were created (calls route through here)
        if strategy is None and len(nm.link.alive_nodes()) <= 1:
            return None
        if strategy == "SPREAD":
            return "scheduling_strategy SPREAD"
        if isinstance(strategy, (list, tuple)) and strategy:
            if strategy[0] == "node" and strategy[1] == nm.node_id:
                return None
            return f"scheduling strategy {strategy[0]}"
        remote_bytes = sum(_remote_size(nm, oid) for oid in request.deps)
        if remote_bytes > LOCALITY_THRESHOLD_BYTES:
            return f"{remote_bytes} bytes of its inputs are on other nodes"
        # tasks here (waiting, queued or running) against what the node can run at once:
        # a batch is accepted before any of it is scheduled, so free resources alone
        # would keep a whole burst local
        if len(scheduler.tasks) >= threshold and len(nm.link.alive_nodes()) > 1:
            return f"{len(scheduler.tasks)} tasks here already"
        return None

    return policy


def _remote_size(nm, oid: bytes) -> int:
    """Bytes of ``oid`` on another node; an object still being made on another node counts
    as large (where the task should run is decided once its size and place are known)."""
    e = nm.objects.entries.get(oid)
    if e is None:
        return 0
    if e.state == m.OBJ_REMOTE:
        return int(e.data[2])
    if e.state is None and e.producer is not None:
        producer = nm.tasks.get(e.producer)
        # spilled (in this very batch, too: the scheduler did not keep it) or forwarded
        if producer is not None and not producer.spec.get("actor") and \
                e.producer not in nm.scheduler.tasks:
            return LOCALITY_THRESHOLD_BYTES + 1
    return 0
