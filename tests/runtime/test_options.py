import pytest

from zactor.runtime.options import (
    TASK_DEFAULTS,
    merged,
    validate_actor_options,
    validate_method_options,
    validate_task_options,
)


def test_valid_task_options_pass_through():
    opts = {"num_cpus": 0.5, "num_gpus": 1, "resources": {"tpu": 2}, "num_returns": 2,
            "max_retries": -1, "retry_exceptions": [ValueError], "memory": 10**9}
    assert validate_task_options(opts) is opts
    assert merged(TASK_DEFAULTS, {"num_cpus": 2}, {"num_returns": 3})["num_returns"] == 3


@pytest.mark.parametrize("opts, exc, words", [
    ({"num_cpu": 1}, ValueError, "Invalid option keyword 'num_cpu'"),
    ({"num_cpus": -1}, ValueError, "'num_cpus' must be >= 0"),
    ({"num_cpus": "2"}, TypeError, "'num_cpus' must be a number"),
    ({"num_gpus": 1.5}, ValueError, "whole number"),
    ({"resources": {"CPU": 1}}, ValueError, "num_cpus"),
    ({"resources": ["x"]}, TypeError, "must be a dict"),
    ({"num_returns": 1.5}, TypeError, "'num_returns' must be an integer"),
    ({"max_retries": -2}, ValueError, ">= -1"),
    ({"retry_exceptions": "yes"}, TypeError, "retry_exceptions"),
    ({"scheduling_strategy": "FAST"}, ValueError, "scheduling_strategy"),
    ({"num_returns": True}, TypeError, "num_returns"),
])
def test_bad_task_options_are_named(opts, exc, words):
    with pytest.raises(exc, match=words):
        validate_task_options(opts)


def test_actor_options():
    validate_actor_options({"name": "a", "lifetime": "detached", "max_restarts": -1,
                            "max_concurrency": 4, "namespace": "ns"})
    with pytest.raises(ValueError, match="detached actor needs a name"):
        validate_actor_options({"lifetime": "detached"})
    with pytest.raises(ValueError, match="lifetime"):
        validate_actor_options({"lifetime": "forever"})
    with pytest.raises(ValueError, match="max_concurrency"):
        validate_actor_options({"max_concurrency": 0})
    with pytest.raises(ValueError, match="Invalid option keyword 'num_returns'"):
        validate_actor_options({"num_returns": 2})
    validate_method_options({"num_returns": 2})
    with pytest.raises(ValueError, match="actor methods"):
        validate_method_options({"num_cpus": 2})
