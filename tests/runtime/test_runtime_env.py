"""runtime_env: env_vars and working_dir reach tasks and actors; unsupported fields refused."""

from __future__ import annotations

import os

import pytest

import zactor

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster():
    zactor.init(num_cpus=2, object_store_memory=128 << 20,
                runtime_env={"env_vars": {"JOB_LEVEL": "job"}})
    try:
        yield zactor
    finally:
        zactor.shutdown()


def test_env_vars_and_working_dir(cluster, tmp_path):
    (tmp_path / "shipped_module_rt.py").write_text("VALUE = 41\n")
    (tmp_path / "data.txt").write_text("hello")

    @zactor.remote
    def inside():
        import shipped_module_rt

        with open("data.txt") as f:
            return (shipped_module_rt.VALUE + 1, f.read(), os.environ.get("TASK_LEVEL"),
                    os.environ.get("JOB_LEVEL"))

    @zactor.remote
    def outside():
        return os.environ.get("TASK_LEVEL"), os.environ.get("JOB_LEVEL")

    env = {"working_dir": str(tmp_path), "env_vars": {"TASK_LEVEL": "task"}}
    assert zactor.get(inside.options(runtime_env=env).remote(), timeout=60) == \
        (42, "hello", "task", "job")
    # restored after the task; the job's env_vars stay
    assert zactor.get([outside.remote() for _ in range(4)], timeout=60) == [(None, "job")] * 4

    @zactor.remote
    class Reader:
        def var(self):
            return os.environ.get("TASK_LEVEL")

    actor = Reader.options(runtime_env={"env_vars": {"TASK_LEVEL": "actor"}}).remote()
    assert zactor.get([actor.var.remote() for _ in range(3)], timeout=60) == ["actor"] * 3


def test_unsupported_fields_are_refused(cluster, tmp_path):
    @zactor.remote
    def f():
        return 1

    with pytest.raises(NotImplementedError, match="pip"):
        f.options(runtime_env={"pip": ["requests"]}).remote()
    with pytest.raises(ValueError, match="is not a directory"):
        f.options(runtime_env={"working_dir": str(tmp_path / "missing")}).remote()
    with pytest.raises(TypeError, match="env_vars"):
        f.options(runtime_env={"env_vars": {"A": 1}}).remote()
