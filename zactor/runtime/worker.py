"""The worker process: runs tasks the node manager sends it, one after another.

Forked by the zygote (zactor/runtime/zygote.py). It connects to the node manager with its own
CoreClient (so tasks can submit tasks and ``get`` their results), then loops: receive EXECUTE,
load the function (cached by id), turn the arguments into values (inline bytes, or zero-copy
reads of the store), run it (zactor/runtime/execution.py), store the returns (small ones inline
in the reply, large ones in the store), report TASK_DONE.

While a task waits in ``get`` the worker tells the node manager it is blocked (its CPU is lent
to other tasks) and answers RECALL by handing back the tasks queued behind the running one.
A non-forced ``cancel`` arrives as SIGUSR1: if user code is running, KeyboardInterrupt is raised
in it; a stray interrupt that hits the next task instead is reported as such and that task is
run again by the node manager.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections import OrderedDict, deque

from zactor import serialization as ser
from zactor.exceptions import (
    LocalRayletDiedError,
    RayTaskError,
    RuntimeEnvSetupError,
    TaskCancelledError,
)
from zactor.runtime import context, execution
from zactor.runtime import messages as m
from zactor.runtime.core_client import CoreClient
from zactor.runtime.output_relay import RelayedStream
from zactor.runtime.worker_direct import DirectWorker

PARENT_CHECK_EVERY_MS = 1000
#: results of this worker's latest tasks kept for the chained tasks queued behind them
#: (scheduling/local_scheduler.py, *Chains*): the node manager chains a task only onto a
#: producer it believes in flight here, which at most a pipeline's depth of tasks can pass
MADE_KEPT = 32


class _PrefixedStream:
    """Prefix each line a task prints with ``(function pid=N)`` as Ray's log_to_driver does."""

    def __init__(self, stream, pid):
        self._stream = stream
        self._pid = pid
        self._at_line_start = True

    def write(self, text):
        if not text:
            return 0
        name = context.current_task_name() or "worker"
        prefix = f"({name} pid={self._pid}) "
        out = []
        for piece in text.splitlines(keepends=True):
            if self._at_line_start:
                out.append(prefix)
            out.append(piece)
            self._at_line_start = piece.endswith("\n")
        self._stream.write("".join(out))
        return len(text)

    def flush(self):
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


#: how long the idle loop waits for work while it holds reports (CoreClient._report_done)
HELD_REPORT_POLL_MS = 2


class Worker(DirectWorker):
    def __init__(self, node_address: str, worker_id: bytes, config: dict):
        self.worker_id = worker_id
        self.config = config
        # direct calls from callers (runtime/direct.py) arrive on this worker's own Unix
        # socket (net/stream.py) in the session directory (mode 0700, like the node's socket)
        session_dir = os.path.dirname(node_address[len("ipc://"):])
        direct = os.path.join(session_dir, f"w-{worker_id.hex()[:20]}.sock")
        self.client = CoreClient(node_address, "worker", worker_id=worker_id,
                                 direct_address=direct)
        self.client.on_message = self._on_message
        self.client.on_direct = self._on_direct
        self.actor_id = None
        self.incarnation = 0
        self.seen_direct: OrderedDict = OrderedDict()
        self.parked: dict = {}  # direct call id -> [(time, entry)...] that come after it
        self.is_blocked = False  # the running task waits in get(): direct tasks are refused
        self.cancelled_direct: set = set()  # direct tasks cancelled before they arrived
        self.client.blocked_hook = self._blocked
        self.functions: dict = {}
        self.blobs: dict = {}
        self.queue: deque = deque()
        self.made: OrderedDict = OrderedDict()  # oid -> (state, data, flags, contained)
        self.queue_lock = threading.Lock()
        self._main_thread = threading.get_ident()  # runs the loop (run), set up here
        self._unflushed = False  # a report the run loop must send (it did not wake the flusher)
        self.client.pump_in_background = True
        self.in_user_code = False
        self.current_task = None
        self.actor_instance = None
        self.concurrency = None  # ActorConcurrency for threaded and async actors
        self.checkpoint_every = 0  # calls between checkpoints (checkpointable actors)
        #: reports of answered direct calls may wait RECORD_DELAY_S (CoreClient.task_done):
        #: calls of an actor without task retries, and direct tasks without retries
        self.reports_deferrable = True
        self.calls_since_checkpoint = 0
        self.parent = os.getppid()
        context.set_client(self.client, "worker")
        signal.signal(signal.SIGUSR1, self._on_interrupt_signal)
        if config.get("log_to_driver", True) and config.get("cluster"):
            # the inherited terminal is the node's: lines also go to the job's driver
            sys.stdout = RelayedStream(sys.stdout, self.client, is_stderr=False)
            sys.stderr = RelayedStream(sys.stderr, self.client, is_stderr=True)
        elif config.get("log_to_driver", True):  # a local node: the driver's terminal
            sys.stdout = _PrefixedStream(sys.stdout, os.getpid())
            sys.stderr = _PrefixedStream(sys.stderr, os.getpid())
        else:  # as Ray: the output goes to log files only, not to the driver's terminal
            _redirect_output(os.path.join(self.client.session_dir, "logs"))

    # ---- messages -------------------------------------------------------------------------

    def _on_message(self, msg) -> None:
        if msg.mtype is m.EXECUTE:
            for fid, blob in msg["functions"]:
                self.blobs[fid] = blob
            for entry in msg["tasks"]:
                after = entry[0].get("actor", {}).get("after")
                if after and after[1] == self.incarnation and \
                        after[0] not in self.seen_direct:
                    # a call of a caller whose earlier direct call has not arrived yet
                    self.parked.setdefault(after[0], []).append((time.monotonic(), entry))
                else:
                    self.queue.append(entry)
        elif msg.mtype is m.INTERRUPT:
            self._cancel_task(msg["task_id"], msg["force"], msg["direct"])
        elif msg.mtype is m.RECALL:
            wanted = set(msg["task_ids"])
            with self.queue_lock:
                keep, back = deque(), []
                for t in self.queue:
                    (back if t[0]["id"] in wanted else keep).append(t)
                self.queue = keep
            self.client.send(m.RETURNED, {"task_ids": [t[0]["id"] for t in back]})

    def _blocked(self, blocked: bool) -> None:
        if self.current_task is not None and self.actor_id is None:
            self.is_blocked = blocked
            if blocked:  # direct tasks queued behind this one go back (they may be awaited)
                self._bounce_direct()
        if self.current_task is not None:
            self.client.send(m.BLOCKED if blocked else m.UNBLOCKED)

    def _on_interrupt_signal(self, signum, frame) -> None:
        if self.in_user_code:
            raise KeyboardInterrupt

    # ---- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        client = self.client
        idle_ms = 0
        while True:
            while True:
                with self.queue_lock:  # RECALL may be answered from the flusher thread
                    task = self.queue.popleft() if self.queue else None
                if task is None:
                    break
                if self.concurrency is not None and task[0].get("actor", {}).get("op") == \
                        "call":
                    self.concurrency.submit(self, task)  # threaded / async actor
                else:
                    self._execute(*task)
                if self._unflushed and self.queue:
                    # reported without waking the flusher, and more work came meanwhile:
                    # send it before running that (with the queue empty, the flush below
                    # sends it; reports the node manager only records may wait a few ms
                    # for the next ones: CoreClient._report_done)
                    self._unflushed = False
                    with client._lock:
                        client.flush(lazy=True)
            with client._lock:
                self._unflushed = False
                client.flush(lazy=True)  # results of the batch just run go out in one message
                wait_ms = HELD_REPORT_POLL_MS if client.holds_reports() else 100
                got = client.pump(wait_ms)
            if got:
                idle_ms = 0
                continue
            idle_ms += wait_ms
            if self.parked:
                self._release_parked(time.monotonic())
            if idle_ms >= PARENT_CHECK_EVERY_MS:
                idle_ms = 0
                if os.getppid() != self.parent:
                    os._exit(0)  # the zygote (and so the node) is gone

    def _function(self, fid: bytes):
        fn = self.functions.get(fid)
        if fn is None:
            fn = self.functions[fid] = ser.deserialize(self.blobs.pop(fid))
        return fn

    def _execute(self, spec, resolved, gpu_ids, attempt, reply_to=None) -> None:
        """Run one task (or actor call) here, on this thread, and report it."""
        returns, results, flags = None, None, 0
        actor = spec.get("actor")
        if resolved and any(r[1] == m.OBJ_PENDING for r in resolved):
            resolved = self._chained_arguments(spec, resolved)
            if resolved is None:
                return
        self.current_task = spec["id"]
        if actor is None or actor.get("op") == "create":
            self.client.adopt_job(spec["id"])
        try:
            env = spec.get("env")
            if env:
                with self._runtime_env(env, spec, actor):
                    returns = self._run(spec, resolved, gpu_ids, actor)
            else:
                returns = self._run(spec, resolved, gpu_ids, actor)
            returns, results = self._encode_returns(spec, actor, returns)
        except (RayTaskError, TaskCancelledError, RuntimeEnvSetupError) as err:
            results, flags = self._error_results(spec, err)
        finally:
            self.current_task = None
            context.set_current_task(None)
        self._report(spec, actor, results, flags, returns, reply_to)

    def _run(self, spec, resolved, gpu_ids, actor) -> list:
        """The task's return values (its arguments are let go on return, before the values
        are encoded)."""
        fn, args, kwargs = self._prepare(spec, resolved, gpu_ids, actor)
        self.in_user_code = True
        try:
            return execution.run_task(fn, args, kwargs, spec["nret"], task_id=spec["id"])
        finally:
            self.in_user_code = False

    def _chained_arguments(self, spec, resolved):
        """A chained task's arguments, from the results of the tasks run before it here;
        None when it was handed back or failed without running (its argument's error)."""
        out = []
        for oid, state, data in resolved:
            if state == m.OBJ_PENDING:
                made = self.made.get(oid)
                if made is None or made[2] or made[3]:
                    # not made here (recalled), to be made again (a retry, a cancel), or
                    # holding refs the node manager must learn of first: the node manager
                    # runs it once the value is in its object table
                    self.client.send(m.RETURNED, {"task_ids": [spec["id"]]})
                    return None
                state, data = made[0], made[1]
                if state == m.OBJ_ERROR:  # as the node manager does: the same error
                    self._report(spec, None, [[spec["id"] + i.to_bytes(4, "little"),
                                               m.OBJ_ERROR, data]
                                              for i in range(1, spec["nret"] + 1)], 0, None)
                    return None
            out.append([oid, state, data])
        return out

    async def execute_async(self, spec, resolved, reply_to=None) -> None:
        """An async actor's call: the same steps, awaited on the actor's event loop."""
        returns, results, flags = None, None, 0
        actor = spec.get("actor")
        try:
            fn, args, kwargs = self._prepare(spec, resolved, [], actor, adapt=False)
            returns = await execution.run_task_async(fn, args, kwargs, spec["nret"],
                                                     task_id=spec["id"])
            del args, kwargs
            returns, results = self._encode_returns(spec, actor, returns)
        except (RayTaskError, TaskCancelledError) as err:
            results, flags = self._error_results(spec, err)
        self._report(spec, actor, results, flags, returns, reply_to)

    def _runtime_env(self, env, spec, actor):
        """The task's runtime_env ``env`` (env_vars, working_dir) for its duration; an
        actor's creation keeps it for the actor's life (Ray runs an actor in its
        environment)."""
        from zactor.runtime import runtime_env

        ctx = runtime_env.applied(env, self.client.session_dir, self.client.config)
        try:
            ctx.__enter__()
        except RuntimeEnvSetupError:
            raise  # as Ray: the task's error is the environment's, not a user exception
        except Exception as exc:  # noqa: BLE001 - the task fails with the reason
            raise RayTaskError(spec["name"], execution.user_traceback(exc), exc) from exc
        if actor is not None and actor.get("op") == "create":
            # never left: the worker is the actor's for good (kept referenced: a collected
            # generator-based context would run its restoring ``finally``)
            self._actor_env = ctx
            return contextlib.nullcontext()
        return _Leave(ctx)

    def _prepare(self, spec, resolved, gpu_ids, actor, adapt=True):
        """(callable, args, kwargs) for a task; RayTaskError when they cannot be had."""
        if gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
        name = spec["name"]
        context.set_current_task(spec["id"], name.rsplit(".", 1)[-1])
        values = {oid: (state, data) for oid, state, data in resolved}
        try:
            fn = self._callable(spec, actor)
            if adapt and self.concurrency is not None and actor is not None:
                fn = self.concurrency.adapt(fn)
            args = [self._arg(kind, data, values) for kind, data in spec["args"]]
            kwargs = {k: self._arg(kind, data, values) for k, kind, data in spec["kwargs"]}
        except Exception as exc:  # noqa: BLE001 - reported as the task's error
            raise RayTaskError(name, execution.user_traceback(exc), exc) from exc
        return fn, args, kwargs

    def _encode_returns(self, spec, actor, returns):
        """(returns to keep alive, results for TASK_DONE); large values go to the store."""
        task_id = spec["id"]
        if actor is not None and actor["op"] == "create":
            self.actor_instance = returns[0]  # lives here; the caller gets None
            self.actor_id, self.incarnation = actor["aid"], actor.get("inc", 0)
            from zactor.runtime.actor_concurrency import ActorConcurrency  # asyncio: lazily

            self.concurrency = ActorConcurrency.for_actor(returns[0],
                                                          actor.get("max_concurrency"))
            if actor.get("checkpointable"):
                self.checkpoint_every = actor.get("checkpoint_interval") or 100
            # a call is re-run after this worker dies only with task retries: then the node
            # manager must hear of an answered call at once (it would run it a second time)
            self.reports_deferrable = not actor.get("max_task_retries")
            returns = [None]
        results = []
        try:
            for i, value in enumerate(returns, start=1):
                oid = task_id + i.to_bytes(4, "little")
                state, data, contained, _ = self.client.encode_value(value, oid)
                results.append([oid, state, data, contained])
        except Exception as exc:  # noqa: BLE001 - unpicklable value, store full...
            raise RayTaskError(spec["name"], execution.user_traceback(exc), exc) from exc
        return returns, results

    @staticmethod
    def _error_results(spec, err):
        flags = 0
        if isinstance(err, TaskCancelledError):
            flags |= m.TASK_CANCELLED
        elif isinstance(err, RayTaskError) and _retryable(spec, err.cause):
            flags |= m.TASK_RETRYABLE
        data = ser.dumps(err)
        return [[spec["id"] + i.to_bytes(4, "little"), m.OBJ_ERROR, data]
                for i in range(1, spec["nret"] + 1)], flags

    def _report(self, spec, actor, results, flags, returns, reply_to=None) -> None:
        if reply_to is not None:
            flags |= m.TASK_DIRECT  # the caller gets the results straight from here
        entry = [spec["id"], results, flags]
        if actor is None and reply_to is None:  # for chained tasks queued behind this one
            made = self.made
            for result in results:
                made[result[0]] = (result[1], result[2], flags,
                                   result[3] if len(result) > 3 else ())
            while len(made) > MADE_KEPT:
                made.popitem(last=False)
        if actor is not None and actor["op"] == "call" and self.checkpoint_every:
            checkpoint = self._maybe_checkpoint(actor["aid"])
            if checkpoint is not None:
                entry.append(checkpoint)
        # on the main thread with nothing queued behind it, the run loop flushes it at once;
        # otherwise the flusher sends it within BATCH_DELAY_S (a long next task must not hold
        # this result back)
        flush_here = threading.get_ident() == self._main_thread and not self.queue
        self._unflushed = self._unflushed or flush_here
        # a report may wait only where no retry would run an answered call or task again
        # should this worker die before it is sent
        defer = reply_to is not None and len(entry) == 3 and (
            self.reports_deferrable if actor is not None else spec.get("retries") == 0)
        self.client.task_done(entry, returns, reply_to, wake=not flush_here,  # thread-safe
                              defer=defer)

    def _maybe_checkpoint(self, actor_id: bytes):
        """Every ``checkpoint_interval`` calls: the actor's state, for its TASK_DONE."""
        self.calls_since_checkpoint += 1
        if self.calls_since_checkpoint < self.checkpoint_every:
            return None
        self.calls_since_checkpoint = 0
        try:
            state = ser.dumps(self.actor_instance.__zactor_checkpoint__())
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint must not fail a call
            print(f"zactor: checkpoint of {type(self.actor_instance).__name__} failed "
                  f"(the previous one stays in use): {exc!r}", file=sys.stderr)
            return None
        return {"aid": actor_id, "state": state}

    def _callable(self, spec, actor):
        """The function a task runs: a remote function, an actor class (creation), or a
        bound method of the actor this worker hosts."""
        if actor is None or actor["op"] == "create":
            return self._function(spec["fid"])
        if self.actor_instance is None:
            raise RuntimeError(f"this worker hosts no actor (call {spec['name']})")
        if actor["op"] == "restore":  # after a restart: back to the last checkpoint
            self.calls_since_checkpoint = 0
            return functools.partial(self.actor_instance.__zactor_restore__,
                                     ser.deserialize(actor["state"]))
        method = getattr(self.actor_instance, actor["method"], None)
        if method is None:
            raise AttributeError(f"{type(self.actor_instance).__name__!r} object has no "
                                 f"method {actor['method']!r}")
        return method

    def _arg(self, kind, data, values):
        if kind == 0:
            return ser.deserialize(data)
        state, payload = values[data]
        return self.client.decode_value(data, state, payload)


class _Leave:
    """Leaves an entered context manager when this one is left."""

    def __init__(self, ctx):
        self.ctx = ctx

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


def _redirect_output(log_dir: str) -> None:
    """Point fds 1 and 2 (and so print and C-level writes) at per-worker log files."""
    os.makedirs(log_dir, exist_ok=True)
    for fd, suffix in ((1, "out"), (2, "err")):
        path = os.path.join(log_dir, f"worker-{os.getpid()}.{suffix}")
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(target, fd)
        os.close(target)


def _retryable(spec, cause) -> bool:
    rule = spec.get("retry_exc")
    if not rule:
        return False
    if rule is True:
        return True
    classes = ser.deserialize(rule)
    return isinstance(cause, tuple(classes))


def main(node_address: str, worker_id: bytes, config: dict) -> None:
    """Entry point in a freshly forked worker; never returns."""
    code = 0
    try:
        Worker(node_address, worker_id, config).run()
    except LocalRayletDiedError:
        pass  # the node is shutting down: leave quietly
    except BaseException:  # noqa: BLE001 - say why the worker died, then die
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
