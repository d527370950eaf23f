"""``@zactor.remote`` on a function: the RemoteFunction handle and the task spec it submits.

A task spec is a msgpack map (its fields are the node manager's and worker's contract):

    id        24-byte TaskID          fid    20-byte function id (sha1 of the pickled function)
    name      "module.qualname"       nret   number of return objects
    args      [[0, value bytes] | [1, object id]]   (1: a top-level ObjectRef, resolved first)
    kwargs    [[name, 0|1, bytes]]    res    {"CPU": 1.0, "GPU": 0, custom...}
    retries   max_retries (-1: forever)           retry_exc  False | True | pickled classes
    parent    the submitting task's id (b"" from a driver), for recursive cancel
    held      ids of ObjectRefs nested inside the arguments (kept alive until the task ends)

The function is pickled once per RemoteFunction (cloudpickle, so closures and functions of
``__main__`` work) and sent to the node manager with its first task only.
"""

from __future__ import annotations

import functools
import hashlib

from zactor import serialization as ser
from zactor.object_ref import ObjectRef
from zactor.runtime import context
from zactor.runtime import messages as m
from zactor.runtime.execution import function_name
from zactor.runtime.options import TASK_DEFAULTS, merged, validate_task_options


def encode_args(client, args, kwargs, parent_task_id: bytes):
    """(args, kwargs, held refs) in spec form; large values go to the store first."""
    held: list = []
    if not args and not kwargs:
        return [], [], held

    def one(value) -> list:
        if isinstance(value, ObjectRef):
            return [1, value.binary()]
        state, data, contained, oid = client.encode_value(
            value, lambda: client.next_put_id(parent_task_id))
        held.extend(contained)
        if state == m.OBJ_STORE:
            client.put_arg(oid, state, data, contained)
            return [1, oid]
        return [0, data]

    enc_args = [one(a) for a in args]
    enc_kwargs = [[k, *one(v)] for k, v in kwargs.items()]
    return enc_args, enc_kwargs, held


class Exported:
    """A function or class pickled once (cloudpickle), with its id: the sha1 of the bytes.
    Remote functions and actor classes both send their definition this way."""

    def __init__(self, obj):
        self._obj = obj
        self._blob = None
        self.fid = None

    def blob(self) -> bytes:
        if self._blob is None:
            self._blob = ser.dumps(self._obj)
            self.fid = hashlib.sha1(self._blob).digest()
        return self._blob


def resources_of(opts) -> dict:
    res = {"CPU": opts["num_cpus"] if opts["num_cpus"] is not None else 1,
           "GPU": opts["num_gpus"] or 0}
    if opts.get("memory"):
        res["memory"] = opts["memory"]
    res.update(opts.get("resources") or {})
    return res


def attach_runtime_env(client, spec: dict, task_env, parent: bytes) -> None:
    """Put the task's runtime_env (its own over its job's) in its spec
    (runtime/runtime_env.py)."""
    job_env = client.config.get("runtime_env")
    if not job_env and not task_env:
        return
    from zactor.runtime import runtime_env

    env = runtime_env.merge(job_env or {}, runtime_env.validate(task_env))
    spec["env"] = runtime_env.encode(env, client)


class RemoteFunction:
    """What ``@zactor.remote`` makes of a function: call ``.remote(...)`` to run it."""

    def __init__(self, fn, options: dict):
        validate_task_options(options)
        self._function = fn
        self._options = options
        self._name = function_name(fn)
        self._exported = Exported(fn)
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args, **kwargs):
        short = getattr(self._function, "__name__", "f")
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{short}()', try '{short}.remote()'.")

    def options(self, **options) -> "_OptionsView":
        validate_task_options(options)
        return _OptionsView(self, {**self._options, **options})

    def remote(self, *args, **kwargs):
        return self._remote(args, kwargs, self._options)

    def _remote(self, args, kwargs, options):
        client = context.client()
        opts = merged(TASK_DEFAULTS, options)
        self._exported.blob()
        parent = context.current_task_id() or client.driver_task_id
        task_id = client.new_task_id()
        nret = opts["num_returns"]
        enc_args, enc_kwargs, held = encode_args(client, args, kwargs, parent)
        retry = opts["retry_exceptions"]
        spec = {
            "id": task_id, "fid": self._exported.fid, "name": opts.get("name") or self._name,
            "args": enc_args, "kwargs": enc_kwargs, "nret": nret, "res": resources_of(opts),
            "retries": opts["max_retries"],
            "retry_exc": retry if isinstance(retry, bool) else ser.dumps(list(retry)),
            "parent": context.current_task_id() or b"", "held": held,
        }
        attach_runtime_env(client, spec, opts.get("runtime_env"), parent)
        strategy = opts.get("scheduling_strategy")
        if strategy not in (None, "DEFAULT"):
            from zactor.util.scheduling_strategies import strategy_to_wire

            spec["strategy"] = strategy_to_wire(strategy)
        refs = client.submit(spec, self._exported.blob)
        if nret == 1:
            return refs[0]
        if nret == 0:
            return None
        return refs


class _OptionsView:
    """``f.options(...)``: the same function with other options, for ``.remote`` calls."""

    def __init__(self, fn: RemoteFunction, options: dict):
        self._fn = fn
        self._options_dict = options

    def remote(self, *args, **kwargs):
        return self._fn._remote(args, kwargs, self._options_dict)

    def options(self, **options):
        validate_task_options(options)
        return _OptionsView(self._fn, {**self._options_dict, **options})
