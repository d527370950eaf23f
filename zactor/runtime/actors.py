"""``@zactor.remote`` on a class: ActorClass, ActorHandle, ActorMethod, and ``@method``.

``Cls.remote(...)`` submits an actor-creation task (a task the local scheduler places on a
worker it then dedicates to the actor) and returns a handle at once; ``handle.m.remote(...)``
submits a call that the node manager queues for that actor (runtime/actor_manager.py) and
returns ObjectRefs. Handles are small (actor id, method table) and pickle into tasks, other
actors and stored objects, where they keep working: calls are routed by actor id.

A call spec is a task spec (runtime/remote_function.py) with ``actor = {op: "call", aid,
method}`` and no function id; a creation spec carries ``actor = {op: "create", aid, name, ns,
methods, cls}`` and the class as its function.
"""

from __future__ import annotations

import inspect

from zactor.ids import ActorID
from zactor.runtime import context
from zactor.runtime import messages as m
from zactor.runtime.options import (
    ACTOR_DEFAULTS,
    merged,
    validate_actor_options,
    validate_method_options,
)
from zactor.runtime.remote_function import Exported, encode_args, resources_of


def method(*args, **options):
    """``@zactor.method(num_returns=2)`` on an actor method (Ray's decorator)."""
    if args:
        raise TypeError("@zactor.method takes keyword arguments only, e.g. "
                        "@zactor.method(num_returns=2)")
    validate_method_options(options)

    def decorate(fn):
        fn.__zactor_method_options__ = options
        return fn

    return decorate


def _checkpointable(cls) -> bool:
    return callable(getattr(cls, "__zactor_checkpoint__", None)) and \
        callable(getattr(cls, "__zactor_restore__", None))


def _concurrent(cls, max_concurrency) -> bool:
    """Threaded or async: its calls do not run one at a time (actor_concurrency.py)."""
    from zactor.runtime.actor_concurrency import _is_async_class

    return _is_async_class(cls) or bool(max_concurrency and max_concurrency > 1)


def _method_table(cls) -> dict:
    table = {}
    for name, member in inspect.getmembers(cls, callable):
        if name.startswith("__") and name.endswith("__"):
            continue
        opts = getattr(member, "__zactor_method_options__", {})
        table[name] = opts.get("num_returns", 1)
    return table


class ActorClass:
    """What ``@zactor.remote`` makes of a class: ``Cls.remote(...)`` creates an actor."""

    def __init__(self, cls, options: dict):
        validate_actor_options(options)
        self._cls = cls
        self._options = options
        self._methods = _method_table(cls)
        self._exported = Exported(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actors cannot be instantiated directly. Instead of "
                        f"'{self._cls.__name__}()', use '{self._cls.__name__}.remote()'.")

    def options(self, **options) -> "_ActorOptionsView":
        validate_actor_options(options)
        return _ActorOptionsView(self, {**self._options, **options})

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._remote(args, kwargs, self._options)

    def _remote(self, args, kwargs, options) -> "ActorHandle":
        client = context.client()
        opts = merged(ACTOR_DEFAULTS, options)
        name = opts["name"]
        namespace = opts["namespace"] or client.config.get("namespace", "")
        if name:
            existing = _lookup(client, name, namespace)
            if existing is not None:
                if opts["get_if_exists"]:
                    return ActorHandle(existing["aid"], existing["methods"], existing["cls"])
                raise ValueError(f"The name {name} (namespace={namespace}) is already taken. "
                                 f"Please use a different name or get the existing actor "
                                 f"using zactor.get_actor({name!r}, namespace={namespace!r})")
        self._exported.blob()
        actor_id = ActorID.of(client.job_id).binary()
        parent = context.current_task_id() or client.driver_task_id
        task_id = client.new_task_id()
        enc_args, enc_kwargs, held = encode_args(client, args, kwargs, parent)
        res_opts = dict(opts)
        if res_opts["num_cpus"] is None:
            res_opts["num_cpus"] = 0  # as Ray: an actor holds no CPU while it lives by default
        spec = {
            "id": task_id, "fid": self._exported.fid, "name": self._cls.__qualname__,
            "args": enc_args, "kwargs": enc_kwargs, "nret": 1, "res": resources_of(res_opts),
            "retries": 0, "retry_exc": False, "parent": context.current_task_id() or b"",
            "held": held,
            "actor": {"op": "create", "aid": actor_id, "name": name, "ns": namespace,
                      "methods": self._methods, "cls": self._cls.__name__,
                      "max_restarts": opts["max_restarts"],
                      "max_concurrency": opts["max_concurrency"],
                      "checkpointable": _checkpointable(self._cls),
                      "checkpoint_interval": opts["checkpoint_interval"],
                      "concurrent": _concurrent(self._cls, opts["max_concurrency"]),
                      "max_task_retries": opts["max_task_retries"],
                      "detached": opts["lifetime"] == "detached"},
        }
        from zactor.runtime.remote_function import attach_runtime_env

        attach_runtime_env(client, spec, opts.get("runtime_env"), parent)
        strategy = opts.get("scheduling_strategy")
        if strategy not in (None, "DEFAULT"):
            from zactor.util.scheduling_strategies import strategy_to_wire

            spec["strategy"] = strategy_to_wire(strategy)
        # the creation task's return ("created") doubles as the handles' reference count:
        # every handle holds it, so when the last handle anywhere is gone the node manager
        # frees it and ends the actor (unless it is named or detached), as Ray does
        (created,) = client.submit(spec, self._exported.blob)
        return ActorHandle(actor_id, self._methods, self._cls.__name__, created)


class _ActorOptionsView:
    def __init__(self, actor_class: ActorClass, options: dict):
        self._actor_class = actor_class
        self._options_dict = options

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._actor_class._remote(args, kwargs, self._options_dict)

    def options(self, **options):
        validate_actor_options(options)
        return _ActorOptionsView(self._actor_class, {**self._options_dict, **options})


class ActorHandle:
    """A reference to an actor; ``handle.method.remote(...)`` calls it."""

    def __init__(self, actor_id: bytes, methods: dict, class_name: str, created=None):
        self._actor_id = actor_id
        self._methods = dict(methods)
        self._class_name = class_name
        self._created = created  # ObjectRef held by every handle (see ActorClass._remote)

    def __getattr__(self, name):
        methods = self.__dict__.get("_methods", {})
        if name in methods:
            return ActorMethod(self, name, methods[name])
        raise AttributeError(f"'{self.__dict__.get('_class_name', 'actor')}' actor has no "
                             f"method {name!r}")

    def __reduce__(self):
        return (ActorHandle, (self._actor_id, self._methods, self._class_name, self._created))

    def __repr__(self):
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self):
        return hash(self._actor_id)

    @property
    def _zactor_actor_id(self) -> ActorID:
        return ActorID(self._actor_id)


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, num_returns: int, options=None):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._options = options or {}

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Instead of running "
                        f"'{self._name}()', try '{self._name}.remote()'.")

    def options(self, **options) -> "ActorMethod":
        validate_method_options(options)
        return ActorMethod(self._handle, self._name, self._num_returns,
                           {**self._options, **options})

    def remote(self, *args, **kwargs):
        client = context.client()
        nret = self._options.get("num_returns", self._num_returns)
        current = context.current_task_id()
        enc_args, enc_kwargs, held = encode_args(client, args, kwargs,
                                                 current or client.driver_task_id)
        spec = {
            "id": client.new_task_id(), "fid": b"",
            "name": f"{self._handle._class_name}.{self._name}",
            "args": enc_args, "kwargs": enc_kwargs, "nret": nret, "res": {}, "retries": 0,
            "retry_exc": False, "parent": current or b"", "held": held,
            "actor": {"op": "call", "aid": self._handle._actor_id, "method": self._name},
        }
        refs = client.submit(spec, None)
        if nret == 1:
            return refs[0]
        return None if nret == 0 else refs


def _lookup(client, name: str, namespace: str):
    return client.request(m.GET_ACTOR, {"name": name, "namespace": namespace},
                          m.INFO_REPLY)["value"]


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor needs a non-empty actor name, got {name!r}")
    client = context.client()
    ns = namespace if namespace is not None else client.config.get("namespace", "")
    found = _lookup(client, name, ns)
    if found is None:
        raise ValueError(f"Failed to look up actor with name '{name}'. This could because "
                         f"1. You are trying to look up a named actor you didn't create. "
                         f"2. The named actor died. 3. You did not use a namespace matching "
                         f"the namespace of the actor.")
    return ActorHandle(found["aid"], found["methods"], found["cls"])


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    if not isinstance(actor, ActorHandle):
        raise ValueError(f"zactor.kill() only supports killing actors, got "
                         f"{type(actor).__name__}")
    context.client().request(m.KILL_ACTOR, {"aid": actor._actor_id,
                                            "no_restart": bool(no_restart)}, m.INFO_REPLY)
