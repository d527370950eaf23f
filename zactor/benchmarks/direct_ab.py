"""The cases the direct paths touch (sync/async tasks, actor calls, a chain right after the
bursts), short enough to run several times alternately against another checkout for an A/B
on a noisy machine: ``PYTHONPATH=<checkout> python -m zactor.benchmarks.direct_ab``. Prints
one JSON object (rates per second, medians of 3; the chain in ms per hop)."""

from __future__ import annotations

import json
import time


def main() -> None:
    import zactor as ray

    ray.init(num_cpus=2)

    @ray.remote
    def tiny(x=None):
        return x

    @ray.remote
    class Server:
        def ping(self, x=None):
            return x

    @ray.remote
    class AsyncServer:
        async def ping(self, x=None):
            return x

    for _ in range(20):  # let workers start (and leases be taken)
        ray.get([tiny.remote() for _ in range(50)])
    s, a = Server.remote(), AsyncServer.remote()
    ray.get([s.ping.remote(), a.ping.remote()])

    def rate(fn, n, repeat=3):
        out = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            out.append(n / (time.perf_counter() - t))
        return sorted(out)[repeat // 2]

    r = {
        "tasks sync": rate(lambda: [ray.get(tiny.remote()) for _ in range(500)], 500),
        "tasks async": rate(lambda: ray.get([tiny.remote() for _ in range(5000)]), 5000),
        "actor sync": rate(lambda: [ray.get(s.ping.remote()) for _ in range(500)], 500),
        "actor async": rate(lambda: ray.get([s.ping.remote() for _ in range(5000)]), 5000),
        "async-actor async": rate(lambda: ray.get([a.ping.remote() for _ in range(5000)]),
                                  5000),
    }
    t = time.perf_counter()
    ref = tiny.remote(0)
    for _ in range(99):
        ref = tiny.remote(ref)
    ray.get(ref)
    r["chain ms/hop"] = (time.perf_counter() - t) * 10
    print(json.dumps(r))
    ray.shutdown()


if __name__ == "__main__":
    main()
