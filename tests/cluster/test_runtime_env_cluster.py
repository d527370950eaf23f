"""runtime_env on a cluster: the driver's ``working_dir`` is shipped once through the control
store and reaches a node on another (namespaced) host; a corrupt package fails the task with
RuntimeEnvSetupError instead of hanging."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.cluster.helpers import NetnsCluster, run_driver

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def two_hosts(host_network):
    net = host_network(2)
    cluster = NetnsCluster(net, cpus=(1, 1))
    try:
        yield cluster
    finally:
        cluster.stop()


def test_working_dir_reaches_a_namespaced_node(two_hosts, tmp_path):
    token = uuid.uuid4().hex  # a package no node has cached from an earlier run
    work = tmp_path / "work"
    work.mkdir()
    (work / "helper_mod.py").write_text(f"TOKEN = {token!r}\n")
    (work / "data.bin").write_bytes(os.urandom(5 << 20))  # incompressible
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "helper_mod.py").write_text(f"TOKEN = 'broken-{token}'\n")
    out = run_driver(f"""
        import os, zactor
        from zactor import protocol
        from zactor.exceptions import RuntimeEnvSetupError
        from zactor.runtime import context, runtime_env
        from zactor.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
        zactor.init(address="auto")
        here = zactor.get_runtime_context().get_node_id()
        other = [n["NodeID"] for n in zactor.nodes() if n["NodeID"] != here][0]
        client = context.client()

        spec_sizes = []
        submit = client.submit
        def counting_submit(spec, blob):
            spec_sizes.append(len(protocol.encode(protocol.message_type("SUBMIT"),
                                                  {{"tasks": [spec]}})[1]))
            return submit(spec, blob)
        client.submit = counting_submit

        @zactor.remote
        def use_helper():
            import helper_mod
            return (helper_mod.TOKEN, zactor.get_runtime_context().get_node_id(), os.getcwd(),
                    os.path.getsize("data.bin"))

        env = {{"working_dir": {str(work)!r}}}
        refs = [use_helper.options(runtime_env=env,
                                   scheduling_strategy=On(other, soft=False)).remote()
                for _ in range(3)]
        results = zactor.get(refs, timeout=120)
        for token, node, cwd, size in results:
            assert token == {token!r} and node == other and size == 5 << 20, (token, node)
            assert not cwd.startswith(client.session_dir), cwd  # the other node's cache
        assert len({{cwd for _, _, cwd, _ in results}}) == 1
        print("REMOTE OK")
        local = use_helper.options(runtime_env=env,
                                   scheduling_strategy=On(here, soft=False)).remote()
        assert zactor.get(local, timeout=120)[0] == {token!r}
        print("LOCAL OK")
        assert max(spec_sizes) < 16 * 1024, spec_sizes  # the reference, not the 5 MB zip
        print("SPEC SIZES", spec_sizes)

        # a package corrupted in the control store after the upload: the task fails
        broken_env = runtime_env.validate({{"working_dir": {str(broken)!r}}})
        sha, size = runtime_env.encode(broken_env, client)["working_dir"]
        from zactor.control.client import GcsClient
        with GcsClient.connect(client.config["gcs_address"], timeout_s=30,
                               keys=client.config.get("key_file")) as gcs:
            gcs.put("kv", runtime_env._chunk_key(sha, 0), b"garbage", timeout_s=30)
        ref = use_helper.options(runtime_env={{"working_dir": {str(broken)!r}}},
                                 scheduling_strategy=On(other, soft=False)).remote()
        try:
            zactor.get(ref, timeout=120)
        except RuntimeEnvSetupError as exc:
            assert "corrupt" in str(exc), exc
            print("CORRUPT OK")
        zactor.shutdown()
    """, env=two_hosts.env, timeout=240)
    assert "REMOTE OK" in out.stdout, out.stdout + out.stderr
    assert "LOCAL OK" in out.stdout, out.stdout + out.stderr
    assert "CORRUPT OK" in out.stdout, out.stdout + out.stderr
