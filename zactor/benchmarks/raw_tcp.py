"""Raw TCP copy: the most a plain Python socket moves, for comparing zactor's transfers with.

    python -m zactor.benchmarks.raw_tcp                  # loopback, root namespace
    python -m zactor.benchmarks.raw_tcp --netns          # also between namespaced hosts
    python -m zactor.benchmarks.raw_tcp --size 1024 --repeat 7

A server process receives ``nbytes`` with ``recv_into`` into a buffer allocated (and so
touched) once, then answers one byte; the client ``sendall``s a numpy buffer and times the
round from its first byte sent to that answer. Each round sends an 8-byte length first on
the same connection, so connection set-up and slow start are out of every round but the
first. GB/s is 1e9 bytes per second, the median of ``repeat`` rounds. Figures only.

``raw_tcp_copy(nbytes, server_host=None, client_host=None)`` runs the server in
``server_host`` and the client in ``client_host`` (zactor.testing.netns hosts), or in the
root namespace for None: the address is the server host's, else the client's network's
gateway, else 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time

import numpy as np

HEADER = struct.Struct("!Q")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _recv_exact(conn: socket.socket, view: memoryview) -> bool:
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def _serve(bind: str) -> None:
    """Receive rounds on one connection until the client closes it."""
    with socket.socket() as srv:
        srv.bind((bind, 0))
        srv.listen(1)
        print(srv.getsockname()[1], flush=True)
        conn, _ = srv.accept()
    buf = bytearray()
    header = bytearray(HEADER.size)
    with conn:
        while _recv_exact(conn, memoryview(header)):
            (n,) = HEADER.unpack(header)
            if len(buf) != n:
                buf = bytearray(n)  # zero-filled, so its pages are touched before the round
            if not _recv_exact(conn, memoryview(buf)):
                return
            conn.sendall(b"k")


def _client(address: str, port: int, nbytes: int, repeat: int) -> list[float]:
    """Seconds of each round."""
    data = np.ones(nbytes, dtype=np.uint8)  # written, so the send reads resident pages
    times = []
    with socket.create_connection((address, port), timeout=120) as conn:
        for _ in range(repeat):
            start = time.perf_counter()
            conn.sendall(HEADER.pack(nbytes))
            conn.sendall(memoryview(data))
            if conn.recv(1) != b"k":
                raise RuntimeError("raw_tcp server closed the connection mid-round")
            times.append(time.perf_counter() - start)
    return times


def _env() -> dict:
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=_ROOT + (os.pathsep + path if path else ""))


def raw_tcp_copy(nbytes: int, server_host=None, client_host=None, *, repeat: int = 5,
                 timeout: float = 300.0) -> float:
    """GB/s (1e9 bytes/s, median of ``repeat`` rounds) of sending ``nbytes`` over one TCP
    connection from ``client_host`` to ``server_host`` (Hosts of a HostNetwork; None is the
    root namespace)."""
    if server_host is not None:
        address = server_host.address
    elif client_host is not None:
        address = client_host.network.gateway_address
    else:
        address = "127.0.0.1"
    if address is None:
        raise ValueError("the root namespace end needs a network made with gateway=True")
    argv = [sys.executable, "-m", "zactor.benchmarks.raw_tcp", "--serve", "0.0.0.0"]
    if server_host is not None:
        server = server_host.popen(argv, stdout=subprocess.PIPE, env=_env())
    else:
        server = subprocess.Popen(argv, stdout=subprocess.PIPE, env=_env())
    try:
        ready, _, _ = select.select([server.stdout], [], [], 30)
        line = server.stdout.readline().decode().strip() if ready else ""
        if not line:
            raise RuntimeError(f"raw_tcp server {argv} did not print its port in 30 s")
        port = int(line)
        if client_host is None:
            times = _client(address, port, nbytes, repeat)
        else:
            cp = client_host.run([sys.executable, "-m", "zactor.benchmarks.raw_tcp", "--client",
                                  address, str(port), str(nbytes), str(repeat)],
                                 timeout=timeout, check=True, env=_env())
            times = json.loads(cp.stdout)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        server.stdout.close()
    return nbytes / statistics.median(times) / 1e9


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=float, default=256, help="MB (2**20 bytes) per round")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--netns", action="store_true",
                        help="also between two hosts of a zactor.testing.netns network")
    parser.add_argument("--serve", metavar="BIND", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve)
        return
    if args.client:
        address, port, nbytes, repeat = args.client
        print(json.dumps(_client(address, int(port), int(nbytes), int(repeat))))
        return
    nbytes = int(args.size * (1 << 20))
    label = f"{args.size:g} MB, median of {args.repeat}"
    print(f"loopback (root namespace), {label}: "
          f"{raw_tcp_copy(nbytes, repeat=args.repeat):.2f} GB/s", flush=True)
    if args.netns:
        from zactor.testing import HostNetwork, available

        ok, why = available()
        if not ok:
            print(f"namespaced hosts: skipped ({why})")
            return
        with HostNetwork(2) as net:
            a, b = net.hosts
            print(f"host -> host (veth + bridge), {label}: "
                  f"{raw_tcp_copy(nbytes, b, a, repeat=args.repeat):.2f} GB/s", flush=True)
            print(f"root -> host (gateway veth + bridge), {label}: "
                  f"{raw_tcp_copy(nbytes, b, None, repeat=args.repeat):.2f} GB/s", flush=True)
            print(f"inside one host (its own address, via lo), {label}: "
                  f"{raw_tcp_copy(nbytes, a, a, repeat=args.repeat):.2f} GB/s", flush=True)


if __name__ == "__main__":
    main()
