"""The transports' floor: a small message's round trip between two Python processes, over a
ZeroMQ DEALER -> ROUTER pair on ipc (every path but the direct ones) and over the direct
paths' Unix stream (zactor/net/stream.py, polled through net/fd_poller.py as the runtime
does).

    python -m zactor.benchmarks.transport [--trips 3000] [--runs 5]

Prints each run's mean round trip and the medians. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import zmq

MESSAGE = [b"\x01\x41" + bytes(8), b"\x82\xa4call\x90\xa2id\xc4\x14" + bytes(20)]


def zmq_round_trip_us(n: int = 2000) -> float:
    """Mean time of n DEALER -> ROUTER -> DEALER round trips between two processes."""
    where = tempfile.mkdtemp(prefix="zactor-pp-")
    addr = f"ipc://{where}/pp.sock"
    pid = os.fork()
    if pid == 0:
        ctx = zmq.Context()
        r = ctx.socket(zmq.ROUTER)
        r.bind(addr)
        while True:
            frames = r.recv_multipart()
            if frames[1] == b"stop":
                os._exit(0)
            r.send_multipart(frames)
    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(addr)
    for _ in range(100):
        d.send_multipart(MESSAGE)
        d.recv_multipart()
    t = time.perf_counter()
    for _ in range(n):
        d.send_multipart(MESSAGE)
        d.recv_multipart()
    elapsed = time.perf_counter() - t
    d.send(b"stop")
    os.waitpid(pid, 0)
    d.close(0)
    ctx.term()
    shutil.rmtree(where, ignore_errors=True)
    return elapsed / n * 1e6


def stream_round_trip_us(n: int = 2000) -> float:
    """The same over zactor.net.stream: a listener and a connection, each side polled by an
    FdPoller (as the runtime's CoreClient.pump)."""
    from zactor.net.fd_poller import FdPoller
    from zactor.net.stream import StreamConn, StreamSet

    where = tempfile.mkdtemp(prefix="zactor-pp-")
    path = f"{where}/pp.sock"
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        server = StreamSet(FdPoller())

        def echo(conn, frames):
            if frames[0] == b"stop":
                os._exit(0)
            server.send(conn, frames)

        server.listen(path, echo)
        os.write(ready_w, b"!")
        while True:
            for fd, flags in server.poller.poll(1000):
                server.service(fd, flags)
    os.read(ready_r, 1)
    client = StreamSet(FdPoller())
    got = []
    conn = StreamConn.connect(path)
    client.add(conn, lambda c, frames: got.append(frames))

    def trip():
        client.send(conn, MESSAGE)
        while not got:
            for fd, flags in client.poller.poll(1000):
                client.service(fd, flags)
        got.clear()

    for _ in range(100):
        trip()
    t = time.perf_counter()
    for _ in range(n):
        trip()
    elapsed = time.perf_counter() - t
    client.send(conn, [b"stop"])
    os.waitpid(pid, 0)
    client.close()
    os.close(ready_r)
    os.close(ready_w)
    shutil.rmtree(where, ignore_errors=True)
    return elapsed / n * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    zmq_us, stream_us = [], []
    for i in range(args.runs):  # alternated, so that a slow phase of the machine hits both
        zmq_us.append(zmq_round_trip_us(args.trips))
        stream_us.append(stream_round_trip_us(args.trips))
        print(f"run {i + 1}: ZeroMQ ipc {zmq_us[-1]:6.1f} us   Unix stream {stream_us[-1]:6.1f} us")
    print(f"median round trip: ZeroMQ ipc {statistics.median(zmq_us):.1f} us, "
          f"Unix stream (net/stream.py) {statistics.median(stream_us):.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
