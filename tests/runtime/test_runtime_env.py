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


def test_a_working_dir_missing_on_the_node_fails_the_task_clearly(cluster, tmp_path,
                                                                   monkeypatch):
    from zactor.exceptions import RuntimeEnvSetupError
    from zactor.runtime import runtime_env

    (tmp_path / "never_shipped.py").write_text("X = 1\n")
    # the driver "forgets" to publish the package: the worker must fail, not hang
    monkeypatch.setattr(runtime_env, "_publish", lambda client, sha, blob: None)

    @zactor.remote
    def f():
        return 1

    ref = f.options(runtime_env={"working_dir": str(tmp_path)}).remote()
    with pytest.raises(RuntimeEnvSetupError, match="no control store"):
        zactor.get(ref, timeout=60)
    assert zactor.get(f.remote(), timeout=60) == 1  # the worker is still fine


def test_spec_carries_a_reference_not_the_package(cluster, tmp_path):
    from zactor.runtime import context, runtime_env

    (tmp_path / "big.bin").write_bytes(os.urandom(5 << 20))
    env = runtime_env.encode(runtime_env.validate({"working_dir": str(tmp_path)}),
                             context.client())
    sha, size = env["working_dir"]
    assert len(sha) == 64 and size > 5 << 20
