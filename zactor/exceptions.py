"""Every exception zactor raises, in one module (Ray's public name: ``ray.exceptions``).

The names and the hierarchy follow Ray's so that ``except ray.exceptions.X`` code works with
``import zactor as ray``. Exceptions Ray has no name for (the store's and the control store's
own conditions) are ours, and say whose fault the condition is: a caller's mistake
(``ValueError``/``TypeError`` subclasses), a resource limit, or something broken outside.
Causes are chained with ``raise ... from``.
"""

from __future__ import annotations

import os


class RayError(Exception):
    """Base class of every zactor error (Ray's name, kept for drop-in compatibility)."""


ZactorError = RayError


class RaySystemError(RayError):
    """An internal component failed in a way the program cannot be blamed for."""

    def __init__(self, client_exc, traceback_str=None):
        self.client_exc = client_exc
        self.traceback_str = traceback_str
        super().__init__(client_exc)

    def __str__(self):
        out = f"System error: {self.client_exc}"
        if self.traceback_str:
            out += f"\ntraceback: {self.traceback_str}"
        return out


class RayTaskError(RayError):
    """A task or actor method raised: carries the remote traceback and the original exception.

    ``get`` raises ``as_instanceof_cause()`` of it, an instance of both this class and the
    cause's class, so ``except ZeroDivisionError`` catches a remote ``1 / 0`` as in Ray.
    """

    def __init__(self, function_name, traceback_str, cause, proctitle=None, pid=None, ip=None,
                 actor_repr=None, actor_id=None):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle or "zactor::worker"
        self.pid = pid if pid is not None else os.getpid()
        self.ip = ip or _local_ip()
        self.actor_repr = actor_repr
        self.actor_id = actor_id
        RayError.__init__(self, function_name, traceback_str, cause)

    def __str__(self):
        lines = [f"{type(self.cause).__name__}: {self.function_name}() failed "
                 f"(pid={self.pid}, ip={self.ip})"]
        if self.actor_repr:
            lines.append(f"  actor: {self.actor_repr}")
        if self.traceback_str:
            lines.append(self.traceback_str.rstrip())
        return "\n".join(lines)

    def __reduce__(self):
        return (RayTaskError, (self.function_name, self.traceback_str,
                               _PortableException(self.cause), self.proctitle, self.pid,
                               self.ip, self.actor_repr, self.actor_id))

    def as_instanceof_cause(self):
        """Return an error that is also an instance of the cause's class (Ray's behaviour).

        Falls back to ``self`` when the cause's class cannot be subclassed (final classes,
        classes with incompatible layouts or constructors).
        """
        cause_cls = type(self.cause)
        if issubclass(cause_cls, RayTaskError) or not isinstance(self.cause, BaseException):
            return self
        try:
            dual = _dual_class(cause_cls)
            err = dual.__new__(dual)
            RayTaskError.__init__(err, self.function_name, self.traceback_str, self.cause,
                                  self.proctitle, self.pid, self.ip, self.actor_repr,
                                  self.actor_id)
            err.args = getattr(self.cause, "args", ())
            try:  # keep the cause's own attributes (errno, filename, custom fields...)
                err.__dict__.update({k: v for k, v in vars(self.cause).items()
                                     if k not in err.__dict__})
            except TypeError:
                pass
            err.__cause__ = self.cause
            return err
        except TypeError:
            return self


_dual_classes: dict = {}


class _PortableException:
    """Pickles an exception without calling its ``__init__`` on the way back, so exception
    classes whose constructor takes other arguments than ``args`` (a common cause of "remote
    exceptions lose their type" in Ray) keep their class and their attributes."""

    def __init__(self, exc):
        self.exc = exc

    def __reduce__(self):
        exc = self.exc
        if not isinstance(exc, BaseException) or _round_trips(exc):
            return (_identity, (exc,))  # its own pickling works: use it
        state = dict(getattr(exc, "__dict__", {}))
        return (_rebuild_exception, (type(exc), exc.args, state, str(exc)))


def _round_trips(exc) -> bool:
    import pickle

    import cloudpickle

    try:
        back = pickle.loads(cloudpickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure means: rebuild it another way
        return False
    return type(back) is type(exc)


def _identity(x):
    return x


def _rebuild_exception(cls, args, state, text):
    try:
        exc = cls.__new__(cls, *args)
        exc.args = args
        exc.__dict__.update(state)
        return exc
    except Exception:  # noqa: BLE001 - a class that cannot be rebuilt: keep its words
        return RaySystemError(f"{cls.__module__}.{cls.__qualname__}: {text}")


def _dual_class(cause_cls):
    dual = _dual_classes.get(cause_cls)
    if dual is None:
        def __str__(self):
            return RayTaskError.__str__(self)

        def __reduce__(self):
            return RayTaskError.__reduce__(self)

        dual = type(f"RayTaskError({cause_cls.__name__})", (RayTaskError, cause_cls),
                    {"__str__": __str__, "__reduce__": __reduce__,
                     "__module__": __name__})
        _dual_classes[cause_cls] = dual
    return dual


def _local_ip():
    import socket  # (here: ``import zactor`` stays light, ~15 ms less at a process's start)

    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class RayActorError(RayError):
    """An actor cannot run the call: it died, failed in ``__init__``, or was killed."""

    def __init__(self, cause=None, actor_id=None, error_msg=None):
        self.actor_id = actor_id
        self.error_msg = error_msg or (str(cause) if cause is not None
                                       else "The actor died unexpectedly before finishing "
                                            "this task.")
        self.cause = cause
        super().__init__(self.error_msg)

    def __str__(self):
        return self.error_msg

    def __reduce__(self):
        return (type(self), (self.cause, self.actor_id, self.error_msg))


class ActorDiedError(RayActorError):
    """The actor's process died (or was killed) and will not be restarted for this call."""


class ActorUnavailableError(RayActorError):
    """The actor is restarting or unreachable; the call may succeed if retried."""


class ActorUnschedulableError(RayError):
    """The actor cannot be placed (e.g. its placement group was removed)."""


class TaskCancelledError(RayError):
    """The task was cancelled with ``zactor.cancel``."""

    def __init__(self, task_id=None, error_message=None):
        self.task_id = task_id
        self.error_message = error_message
        super().__init__(task_id, error_message)

    def __str__(self):
        return self.error_message or f"Task {self.task_id} was cancelled"


class TaskUnschedulableError(RayError):
    """The task can never be placed (e.g. its placement group was removed)."""


class WorkerCrashedError(RayError):
    """The worker running the task died (a segfault, ``os._exit``, SIGKILL, OOM...)."""

    def __init__(self, msg=None):
        self.msg = msg or ("The worker died unexpectedly while executing this task. "
                           "Check the worker's output for the cause.")
        super().__init__(self.msg)

    def __str__(self):
        return self.msg


class LocalRayletDiedError(RayError):
    """The node manager this process was attached to died."""


class NodeDiedError(RayError):
    """A node died while it held the task or the object."""


class ObjectLostError(RayError):
    """The object's every copy is gone and it cannot be (or could not be) re-created."""

    def __init__(self, object_ref_hex="", owner_address="", call_site="", reason=""):
        self.object_ref_hex = object_ref_hex
        self.owner_address = owner_address
        self.call_site = call_site
        self.reason = reason
        super().__init__(object_ref_hex, owner_address, call_site, reason)

    def __str__(self):
        out = f"Failed to retrieve object {self.object_ref_hex}."
        if self.reason:
            out += f" {self.reason}"
        return out


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching the object from a remote node timed out."""


class ReferenceCountingAssertionError(ObjectLostError):
    """The object was freed although a reference to it still existed (a bug)."""


class OwnerDiedError(ObjectLostError):
    """Kept for Ray compatibility: zactor keeps objects reachable when their creator exits."""


class ObjectReconstructionFailedError(ObjectLostError):
    """Re-creating a lost object from its lineage failed."""


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectReconstructionFailedError):
    """Re-creating a lost object failed: the task's retries are spent."""


class ObjectReconstructionFailedLineageEvictedError(ObjectReconstructionFailedError):
    """Re-creating a lost object failed: its lineage was no longer kept."""


class GetTimeoutError(RayError, TimeoutError):
    """``get`` (or another blocking call) passed its ``timeout``."""


class PlasmaObjectNotAvailable(RayError):
    """Kept for Ray compatibility: the object is not (yet) in the local store."""


class ObjectStoreFullError(RayError, MemoryError):
    """The object store cannot make room: everything left is pinned or unevictable."""


class OutOfDiskError(RayError):
    """The local disk is full (spilling failed)."""


class OutOfMemoryError(RayError):
    """A worker was killed because the node ran out of memory."""


class RuntimeEnvSetupError(RayError):
    """The runtime environment could not be set up."""


class TaskPlacementGroupRemoved(RayError):
    """The task's placement group was removed."""


class ActorPlacementGroupRemoved(RayError):
    """The actor's placement group was removed."""


class PendingCallsLimitExceeded(RayError):
    """Too many calls are pending on an actor handle."""


class CrossLanguageError(RayError):
    """Kept for Ray compatibility; zactor is Python only."""


class AsyncioActorExit(RayError):
    """Raised inside an async actor to make it exit."""


# ---- zactor's own conditions (Ray has no public name for these) ----------------------------

class ObjectStoreError(RayError):
    """Base class of the shared-memory object store's errors."""


class ObjectExistsError(ObjectStoreError, ValueError):
    """An object with this id was already created in this store."""


class ObjectNotFoundError(ObjectStoreError, KeyError):
    """No object with this id is in this store (or it is not sealed yet)."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "object not found"


class ObjectStateError(ObjectStoreError):
    """The operation does not fit the object's state (seal twice, abort a sealed object...)."""


class StoreSegmentError(ObjectStoreError):
    """The shared-memory segment is missing, corrupt, or of another layout version."""


class ControlStoreError(RayError):
    """Base class of the control store's (GCS) errors."""


class ControlStoreUnavailableError(ControlStoreError, ConnectionError):
    """No replica of the control store answered before the deadline."""


class ProtocolError(RayError, ValueError):
    """A message on the wire could not be decoded (wrong version, garbage, missing fields)."""
