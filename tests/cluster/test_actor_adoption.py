"""Actors whose owner died with them (zactor/cluster/actor_adoption.py): a task on node B
creates them, B is SIGKILLed. A detached actor is adopted by one surviving node, restored from
its checkpoint and reached by name from another driver; actors that are not detached die with
their owner, also one living on a node that survives; their calls raise ActorDiedError saying
why. A detached actor on a surviving node outlives its owner."""

from __future__ import annotations

import pytest

from tests.cluster.test_actor_failover import _cluster, _run_and_kill

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def head_b_and_c():
    cluster = _cluster(2)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_detached_actor_is_adopted_and_the_others_fate_share(head_b_and_c):
    out = _run_and_kill(head_b_and_c, """
        import subprocess
        B, C = OTHERS

        @zactor.remote
        def make(b, c):  # runs on B: B owns what it creates
            Counter.options(name="keeper", namespace="t", lifetime="detached",
                            max_restarts=-1, checkpoint_interval=5,
                            scheduling_strategy=On(b, soft=True)).remote()
            Plain.options(name="mortal_b", namespace="t",
                          scheduling_strategy=On(b, soft=True)).remote()
            Plain.options(name="mortal_c", namespace="t",
                          scheduling_strategy=On(c, soft=True)).remote()
            Plain.options(name="wanderer", namespace="t", lifetime="detached",
                          scheduling_strategy=On(c, soft=True)).remote()
            return zactor.get_runtime_context().get_node_id()

        assert zactor.get(make.options(scheduling_strategy=On(B, soft=False)).remote(B, C),
                          timeout=60) == B
        keeper = zactor.get_actor("keeper", namespace="t")
        mortal_b = zactor.get_actor("mortal_b", namespace="t")
        mortal_c = zactor.get_actor("mortal_c", namespace="t")
        wanderer = zactor.get_actor("wanderer", namespace="t")
        assert zactor.get(wanderer.inc.remote(), timeout=60) == 1
        assert [zactor.get(keeper.inc.remote(), timeout=60) for _ in range(12)] == \\
            list(range(1, 13))
        assert zactor.get(keeper.where.remote(), timeout=60) == B
        assert zactor.get(mortal_c.where.remote(), timeout=60) == C
        assert zactor.get(mortal_b.inc.remote(), timeout=60) == 1
        time.sleep(1)  # the checkpoint after call 10 reaches the control store
        pause(B, keeper)
        other = subprocess.run([sys.executable, "-c", "; ".join([  # another driver
            "import zactor", "zactor.init(address='auto')",
            "k = zactor.get_actor('keeper', namespace='t')",
            "print('OTHER', zactor.get(k.inc.remote(), timeout=120), "
            "zactor.get(k.where.remote(), timeout=60), flush=True)"])],
            capture_output=True, text=True, timeout=200)
        print(other.stdout, other.stderr[-2000:], flush=True)
        for name, handle in (("B", mortal_b), ("C", mortal_c)):
            try:
                print("MORTAL", name, zactor.get(handle.inc.remote(), timeout=120), flush=True)
            except ActorDiedError as e:
                print("MORTAL", name, "died:", "fate-shares" in str(e), str(e)[:300],
                      flush=True)
        print("WANDERER", zactor.get(wanderer.inc.remote(), timeout=60), flush=True)
        try:
            zactor.get_actor("mortal_b", namespace="t")
            print("FOUND mortal_b", flush=True)
        except ValueError:
            print("GONE mortal_b", flush=True)
        print("HEAD", HEAD, flush=True)
        print("B", B, flush=True)
    """)
    b = out.split("\nB ")[-1].split()[0]
    other = [line for line in out.splitlines() if line.startswith("OTHER")]
    assert other, out
    _, value, node = other[0].split()
    assert node != b, out  # restarted on a surviving node
    # the checkpoint (10) and the calls since replayed, once, whichever node adopted it
    # (the head, the calling node, also re-sends its calls since the checkpoint)
    assert int(value) == 13, out
    assert "MORTAL B died: True" in out, out
    assert "MORTAL C died: True" in out, out
    assert "GONE mortal_b" in out, out
    assert "WANDERER 2" in out, out  # detached, on C: it outlives its owner B
