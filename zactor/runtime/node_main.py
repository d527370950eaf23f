"""The node manager process's entry point: ``python -m zactor.runtime.node_main``.

Started by the driver (runtime/local_cluster.py). Order matters: the worker factory (zygote)
is forked first, while this process has no ZeroMQ context, no threads and no store mapping;
only then is the store segment created and the ROUTER bound, and "READY <address>" written to
the driver's pipe. SIGUSR2 prints the scheduler's state to stderr, and
ZACTOR_PROFILE_NODE_MANAGER=path profiles the node manager's loop (developers' tools).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys

from zactor.ids import NodeID
from zactor.runtime import zygote
from zactor.runtime.node_manager import NodeManager
from zactor.scheduling.resources import ResourceSet

#: net allocations between the node manager's young-generation collections (Python's: 700)
GC_THRESHOLD = 70_000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zactor-node-manager")
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--store-bytes", type=int, required=True)
    parser.add_argument("--resources", default="{}", help="JSON: {'CPU': 2, 'GPU': 0, ...}")
    parser.add_argument("--config", default="{}", help="JSON runtime settings")
    parser.add_argument("--workers", type=int, default=0, help="workers to start at once")
    parser.add_argument("--ready-fd", type=int, default=1,
                        help="file descriptor to write 'READY <address>' to")
    args = parser.parse_args(argv)
    config = json.loads(args.config)

    from zactor.runtime import worker  # imported before the fork: workers start warm

    node_address = f"ipc://{os.path.join(args.session_dir, 'node.sock')}"
    zpid, cmd_fd, report_fd = zygote.start(
        lambda wid: worker.main(node_address, wid, config),
        close_in_child=[args.ready_fd] if args.ready_fd > 2 else [])

    from zactor.store import ObjectStore

    res = json.loads(args.resources)
    resources = ResourceSet.of(num_cpus=res.pop("CPU", 1), num_gpus=res.pop("GPU", 0),
                               memory=int(res.pop("memory", 0)), resources=res)
    # local_cluster.LocalNode.store_path names the same file (to clean up after a crash)
    store_path = os.path.join("/dev/shm", f"zactor-{os.path.basename(args.session_dir)}")
    store = ObjectStore.create(store_path, args.store_bytes)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides; it sends BYE
    nm = NodeManager(args.session_dir, store, resources, node_id=NodeID.from_random().binary(),
                     zygote_pid=zpid, zygote_cmd_fd=cmd_fd, zygote_report_fd=report_fd,
                     config=config, initial_workers=args.workers)
    signal.signal(signal.SIGTERM, lambda *_: nm.stop("SIGTERM"))
    # The node manager allocates a few containers per task and frees them by reference
    # counting (its tables hold no cycles): the cyclic collector's default pace (a pass
    # every 700 net allocations, full passes over every live task and object entry) cost
    # more than unpacking the messages themselves in a burst of tiny tasks. Objects made
    # at start are frozen out of the passes; collections run 100x less often.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    signal.signal(signal.SIGUSR2, lambda *_: print(  # a developer's view of its state
        f"zactor node manager {os.getpid()}:\n{nm.describe()}", file=sys.stderr, flush=True))
    os.write(args.ready_fd, f"READY {nm.address}\n".encode())
    if args.ready_fd != 1:
        os.close(args.ready_fd)
    profile_path = os.environ.get("ZACTOR_PROFILE_NODE_MANAGER")  # a developer's tool
    try:
        if profile_path:
            import cProfile

            cProfile.runctx("nm.serve()", globals(), {"nm": nm}, profile_path)
        else:
            nm.serve()
    except BaseException:
        nm.running = False
        nm._shutdown()
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
