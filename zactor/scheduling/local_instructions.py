"""The local scheduler's vocabulary: the task requests the node manager gives it, the
instructions it returns (dispatch, start workers, recall, spill, fail, interrupt, kill), and
the spill-policy hook. Plain data, no behaviour: the state machine is local_scheduler.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

from zactor.scheduling.resources import ResourceSet

if TYPE_CHECKING:
    from zactor.scheduling.local_scheduler import LocalScheduler

# ---- what the node manager tells the scheduler about a task --------------------------------


class TaskRequest(NamedTuple):
    """What the scheduler needs to know of a task; ``payload`` is opaque to it (the spec)."""

    task_id: bytes
    demand: ResourceSet
    deps: frozenset = frozenset()
    max_retries: int = 0
    payload: Any = None
    #: an actor-creation task keeps its worker (and its resources) for the actor's lifetime
    dedicated: bool = False
    #: placed here by the cluster (or run for another node): never spilled again
    local_only: bool = False
    #: not a task but a *direct lease*: the worker is handed to a submitter that pushes its
    #: tasks straight to it (runtime/direct.py) until it gives it back (``task_finished``).
    #: It is dispatched only to an idle worker, which gets no other task meanwhile; blocking
    #: lends its CPU as for any lease; its worker's death fails it (``FailTask``).
    lease: bool = False


# ---- instructions the scheduler returns ------------------------------------------------------


class Dispatch(NamedTuple):
    task_id: bytes
    worker_id: bytes
    gpu_ids: tuple
    attempt: int
    payload: Any
    #: objects the task needs that tasks queued before it on the same worker will make
    pending: frozenset = frozenset()


class StartWorkers(NamedTuple):
    count: int


class Recall(NamedTuple):
    """Ask a blocked worker to hand back the tasks it has not started."""

    worker_id: bytes
    task_ids: tuple


class Spill(NamedTuple):
    task_id: bytes
    payload: Any
    reason: str


class Infeasible(NamedTuple):
    task_id: bytes
    demand: ResourceSet
    total: ResourceSet


class FailTask(NamedTuple):
    task_id: bytes
    payload: Any
    kind: str  # "worker_crashed" | "cancelled"
    detail: str


class Interrupt(NamedTuple):
    """Cancel a running task without force: the worker raises KeyboardInterrupt in it."""

    worker_id: bytes
    task_id: bytes


class KillWorker(NamedTuple):
    worker_id: bytes
    reason: str


class DedicatedWorkerDied(NamedTuple):
    """The worker of an actor died: the actor manager decides on a restart."""

    task_id: bytes
    worker_id: bytes
    detail: str


# ---- the policy hook -------------------------------------------------------------------------

#: (request, scheduler) -> a reason string to spill the task to the global scheduler, or None.
SpillPolicy = Callable[[TaskRequest, "LocalScheduler"], Optional[str]]


def spill_when_queue_long(threshold: int = 1000) -> SpillPolicy:
    """The paper's rule: keep a task unless the local queue is past a threshold."""

    def policy(request, scheduler):
        if scheduler.queue_length() > threshold:
            return f"local queue longer than {threshold}"
        return None

    return policy
