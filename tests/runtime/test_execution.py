import pickle

import pytest

from zactor.exceptions import RayTaskError, TaskCancelledError
from zactor.runtime.execution import run_task, split_returns


def boom(x):
    return 1 / x


def test_returns_are_split_by_num_returns():
    assert run_task(lambda: 5, (), {}, 1) == [5]
    assert run_task(lambda: (1, 2), (), {}, 2) == [1, 2]
    assert run_task(lambda: 7, (), {}, 0) == []
    with pytest.raises(ValueError, match="returned 3 objects, but num_returns=2"):
        split_returns((1, 2, 3), 2, "f")
    with pytest.raises(ValueError, match="not iterable"):
        split_returns(3, 2, "f")


def test_exception_is_wrapped_with_traceback_and_cause():
    with pytest.raises(RayTaskError) as info:
        run_task(boom, (0,), {}, 1)
    err = info.value
    assert isinstance(err.cause, ZeroDivisionError)
    assert "boom" in err.traceback_str and "1 / x" in err.traceback_str
    assert "zactor/runtime/execution.py" not in err.traceback_str  # our frames are cut off
    dual = pickle.loads(pickle.dumps(err)).as_instanceof_cause()
    assert isinstance(dual, ZeroDivisionError) and isinstance(dual, RayTaskError)
    assert "test_execution.boom" in str(dual)


def test_custom_exception_keeps_its_attributes():
    class MyError(Exception):
        def __init__(self, code):
            super().__init__(f"code {code}")
            self.code = code

    def f():
        raise MyError(42)

    with pytest.raises(RayTaskError) as info:
        run_task(f, (), {}, 1)
    dual = info.value.as_instanceof_cause()
    assert isinstance(dual, MyError) and dual.code == 42


def test_keyboard_interrupt_means_cancelled():
    def f():
        raise KeyboardInterrupt

    with pytest.raises(TaskCancelledError, match="cancelled"):
        run_task(f, (), {}, 1, task_id=b"\xab")
