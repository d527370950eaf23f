"""Options of remote functions and actor classes: defaults and validation, in one place.

``@zactor.remote(...)``, ``.options(...)`` and the actor equivalents all go through
``validate_task_options`` / ``validate_actor_options``, so a misspelt or ill-typed option is
refused with the same clear message wherever it is given (Ray's semantics and defaults:
tasks use 1 CPU and retry 3 times on worker death; actors use 1 CPU to be placed and none
while they live, and are not restarted unless ``max_restarts`` says so).
"""

from __future__ import annotations

import numbers

_COMMON = {
    "num_cpus", "num_gpus", "resources", "memory", "scheduling_strategy", "runtime_env",
    "accelerator_type", "label_selector", "_metadata", "placement_group",
    "placement_group_bundle_index", "placement_group_capture_child_tasks",
}
TASK_OPTIONS = _COMMON | {"num_returns", "max_retries", "retry_exceptions", "name",
                          "max_calls"}
ACTOR_OPTIONS = _COMMON | {"name", "namespace", "lifetime", "max_restarts", "max_task_retries",
                           "max_concurrency", "get_if_exists", "max_pending_calls",
                           "concurrency_groups", "checkpoint_interval", "enable_task_events"}
METHOD_OPTIONS = {"num_returns", "max_task_retries", "retry_exceptions", "name",
                  "concurrency_group", "enable_task_events"}

TASK_DEFAULTS = {"num_cpus": 1, "num_gpus": 0, "resources": None, "memory": 0,
                 "num_returns": 1, "max_retries": 3, "retry_exceptions": False,
                 "scheduling_strategy": "DEFAULT", "name": None}
ACTOR_DEFAULTS = {"num_cpus": None, "num_gpus": 0, "resources": None, "memory": 0,
                  "name": None, "namespace": None, "lifetime": None, "max_restarts": 0,
                  "max_task_retries": 0, "max_concurrency": None, "get_if_exists": False,
                  "scheduling_strategy": "DEFAULT", "checkpoint_interval": 100,
                  "max_pending_calls": -1}
DEFAULT_CHECKPOINT_INTERVAL = 100
SCHEDULING_STRATEGIES = ("DEFAULT", "SPREAD")


def _check_keys(options: dict, allowed: set, what: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"Invalid option keyword {unknown[0]!r} for {what}. "
                         f"Valid ones are {sorted(allowed)}.")


def _number(name, value, *, minimum=0, integer=False, allow_none=False):
    if value is None and allow_none:
        return
    ok = isinstance(value, numbers.Integral if integer else numbers.Real) and \
        not isinstance(value, bool)
    if not ok:
        kind = "an integer" if integer else "a number"
        raise TypeError(f"option {name!r} must be {kind}, got {value!r} "
                        f"({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"option {name!r} must be >= {minimum}, got {value!r}")


def _common(options: dict) -> None:
    for key in ("num_cpus", "num_gpus", "memory"):
        if key in options:
            _number(key, options[key], allow_none=True)
    gpus = options.get("num_gpus")
    if gpus and gpus > 1 and gpus != int(gpus):
        raise ValueError(f"option 'num_gpus' above 1 must be a whole number, got {gpus}")
    resources = options.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(f"option 'resources' must be a dict, got "
                            f"{type(resources).__name__}")
        for name, amount in resources.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"use num_cpus/num_gpus instead of resources={{{name!r}: "
                                 f"...}}")
            if not isinstance(name, str):
                raise TypeError(f"resource names must be strings, got {name!r}")
            _number(f"resources[{name!r}]", amount)
    strategy = options.get("scheduling_strategy")
    if isinstance(strategy, str) and strategy not in SCHEDULING_STRATEGIES:
        raise ValueError(f"option 'scheduling_strategy' must be one of "
                         f"{SCHEDULING_STRATEGIES} or a strategy object, got {strategy!r}")
    if options.get("runtime_env") is not None:
        from zactor.runtime.runtime_env import validate

        validate(options["runtime_env"])


def _num_returns(value) -> None:
    if value in ("dynamic", "streaming"):
        raise NotImplementedError(f"num_returns={value!r} (generators) is not supported yet")
    _number("num_returns", value, integer=True)


def validate_task_options(options: dict) -> dict:
    """Check the options of a remote function; returns them unchanged (raises on error)."""
    _check_keys(options, TASK_OPTIONS, "remote functions")
    _common(options)
    if "num_returns" in options:
        _num_returns(options["num_returns"])
    if "max_retries" in options:
        _number("max_retries", options["max_retries"], minimum=-1, integer=True)
    retry = options.get("retry_exceptions")
    if retry is not None and not isinstance(retry, bool):
        if not isinstance(retry, (list, tuple)) or not all(
                isinstance(c, type) and issubclass(c, BaseException) for c in retry):
            raise TypeError("option 'retry_exceptions' must be a bool or a list of exception "
                            f"classes, got {retry!r}")
    return options


def validate_actor_options(options: dict) -> dict:
    """Check the options of an actor class; returns them unchanged (raises on error)."""
    _check_keys(options, ACTOR_OPTIONS, "actors")
    _common(options)
    for key in ("max_restarts", "max_task_retries", "max_pending_calls"):
        if key in options:
            _number(key, options[key], minimum=-1, integer=True)
    if options.get("max_concurrency") is not None:
        _number("max_concurrency", options["max_concurrency"], minimum=1, integer=True)
    if "checkpoint_interval" in options:
        _number("checkpoint_interval", options["checkpoint_interval"], minimum=1, integer=True)
    lifetime = options.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError(f"option 'lifetime' must be None, 'detached' or 'non_detached', "
                         f"got {lifetime!r}")
    name = options.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"option 'name' must be a non-empty string, got {name!r}")
    namespace = options.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise ValueError(f"option 'namespace' must be a non-empty string, got {namespace!r}")
    if lifetime == "detached" and not name:
        raise ValueError("a detached actor needs a name (options(name=..., "
                         "lifetime='detached')) so it can be found with get_actor")
    return options


def validate_method_options(options: dict) -> dict:
    _check_keys(options, METHOD_OPTIONS, "actor methods")
    if "num_returns" in options:
        _num_returns(options["num_returns"])
    if "max_task_retries" in options:
        _number("max_task_retries", options["max_task_retries"], minimum=-1, integer=True)
    return options


def merged(defaults: dict, *layers: dict) -> dict:
    """Defaults overlaid by each layer of explicitly given options, left to right."""
    out = dict(defaults)
    for layer in layers:
        out.update(layer)
    return out
