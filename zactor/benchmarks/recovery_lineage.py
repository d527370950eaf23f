"""Recovery by lineage: a node holding an object dies; how long from the death being known
to the object rebuilt (its task re-run on another node) and used.

    python -m zactor.benchmarks.recovery_lineage [--repeat 3] [--size-mb 8] [--timeout S]
                                                 [--borrowed]

Each run starts a 2-node cluster with the real CLI on loopback (2 CPUs each), runs a task
pinned (soft node affinity) to the second node that returns a numpy array of ``size_mb`` MB
(kept only in that node's store: nothing asked for it yet), SIGKILLs that node's manager
(its workers die with it), waits until the driver's node reports the node dead (``nodes()``
polled every 5 ms: the same view from which the node manager starts the re-run) and times
``get`` of the object from there. Figures only; nothing is asserted.

``--borrowed``: a third node C *borrows* the object (a task there holds its ref in a list and
waits); the clock starts at the same point, C's task is let go at once, and stops when the
driver has C's answer: C asked the driver's node, which re-made the object, then pulled it
(cluster/borrowed_objects.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap

from zactor.benchmarks.cluster import CLI_TIMEOUT_S, _Cluster

_DRIVER = """
import json, os, signal, sys, time
import numpy as np
import psutil
import zactor
from zactor.util.scheduling_strategies import NodeAffinitySchedulingStrategy
zactor.init(address={address!r})
me = zactor.get_runtime_context().get_node_id()

@zactor.remote
def under(pid):
    return pid in [p.pid for p in psutil.Process().parents()]

def on(node):
    return NodeAffinitySchedulingStrategy(node, soft=False)

others = [n["NodeID"] for n in zactor.nodes() if n["NodeID"] != me]
other = next(x for x in others if zactor.get(under.options(scheduling_strategy=on(x))
                                             .remote({node_pid}), timeout=120))
borrower = next((x for x in others if x != other), None)
GO = os.path.join({go_dir!r}, "go")

@zactor.remote
def borrow(refs):  # on the borrower: holds the ref, reads it once the node is dead
    while not os.path.exists(GO):
        time.sleep(0.001)  # polling the go file
    return int(zactor.get(refs[0], timeout=120)[-1])

@zactor.remote
def make(n):
    return np.arange(n, dtype=np.int64), zactor.get_runtime_context().get_node_id()

@zactor.remote
def node():
    return zactor.get_runtime_context().get_node_id()

n = {size_mb} * (1 << 20) // 8
pin = NodeAffinitySchedulingStrategy(other, soft=True)
# warm a worker on each node, so the figure is the rebuild, not a worker's start
zactor.get([node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(x, soft=True))
            .remote() for x in (me, other, borrower) if x], timeout=120)
for _attempt in range(5):  # soft affinity: a node that looks busy is passed over
    ref, where = make.options(num_returns=2, scheduling_strategy=pin).remote(n)
    # the small second return comes in the same reply: once it is here the array exists,
    # on the other node only (nothing asked for it)
    if zactor.get(where, timeout=120) == other:
        break
else:
    raise AssertionError("the task did not run on the other node")
borrowed = borrow.options(scheduling_strategy=on(borrower)).remote([ref]) \
    if {borrowed} else None
deadline = time.monotonic() + 120
os.kill({node_pid}, signal.SIGKILL)
while time.monotonic() < deadline:
    if not any(x["NodeID"] == other and x["Alive"] for x in zactor.nodes()):
        break
    time.sleep(0.005)  # polling the node's view, 5 ms resolution
known = time.perf_counter()
if borrowed is not None:
    open(GO, "w").close()
    assert zactor.get(borrowed, timeout=120) == n - 1
else:
    assert int(zactor.get(ref, timeout=120)[-1]) == n - 1
print(json.dumps({{"rebuild_s": time.perf_counter() - known}}))
"""


def lineage_rebuild_s(size_mb: int = 8, death_timeout_s: float | None = None,
                      borrowed: bool = False) -> float:
    """Seconds from a node's death being known to an object it alone held, rebuilt by
    lineage on another node, being read by the driver (``borrowed``: by a task on a third
    node that held a ref to it); one run, fresh cluster; ``death_timeout_s`` None: the
    head's default ``--node-death-timeout``."""
    import shutil
    import tempfile

    from zactor.cluster.supervisor import session_files

    cluster = _Cluster(3 if borrowed else 2, 2, death_timeout=death_timeout_s)
    go_dir = tempfile.mkdtemp(prefix="zactor-bench-")
    try:
        node = next(r for r in session_files()
                    if r["address"] == cluster.address and not r["head"])
        code = _DRIVER.format(address=cluster.address, size_mb=int(size_mb),
                              node_pid=int(node["node_pid"]), borrowed=borrowed,
                              go_dir=go_dir)
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                             capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        if out.returncode != 0:
            raise RuntimeError(f"the recovery driver failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])["rebuild_s"]
    finally:
        cluster.stop()
        shutil.rmtree(go_dir, ignore_errors=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=None,
                        help="the head's --node-death-timeout (default: zactor start's)")
    parser.add_argument("--borrowed", action="store_true",
                        help="read by a task on a third node that borrowed the object")
    args = parser.parse_args(argv)
    runs = [lineage_rebuild_s(args.size_mb, args.timeout, args.borrowed)
            for _ in range(args.repeat)]
    print(f"lineage rebuild after a node death ({args.size_mb} MB object"
          f"{', read by a borrower' if args.borrowed else ''}): median "
          f"{statistics.median(runs):.3f} s over {len(runs)} runs "
          f"({', '.join(f'{r:.3f}' for r in runs)})")


if __name__ == "__main__":
    main()
