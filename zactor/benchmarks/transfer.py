"""Object transfer benchmark: GB/s of pulling one object between two stores in two processes.

    python -m zactor.benchmarks.transfer                   # 512 MB, TCP loopback
    python -m zactor.benchmarks.transfer --size 1GB --repeat 5
    python -m zactor.benchmarks.transfer --netns NAME --host ADDR   # server in a namespace

A server process (this module with ``--serve``) creates a store, puts one object of random
bytes (incompressible: lz4 is sampled and skipped) and serves it three ways: a TransferServer
without keys, one with cluster keys and CURVE (encrypted), one with keys and encrypt=False
(HMAC-authenticated requests, bytes in the clear), plus a raw TCP socket that ``sendall``s the
same bytes from the store on request. The client (this process) pulls the object into its own
store ``--repeat`` times per mode (deleting it in between) and reads the raw socket into a
preallocated, already-touched buffer with ``recv_into``; it prints the median GB/s of each
and its ratio to the raw copy measured in the same run. Figures only; nothing is asserted.

``--netns NAME`` runs the server under ``ip netns exec NAME`` (or, once it exists,
``zactor.testing.netns.exec_argv(NAME, argv)``, the hook for the netns helper) so the bytes
cross a veth pair with whatever delay/bandwidth that namespace has; ``--host`` is then the
server's address in the namespace, which the server also binds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

from zactor.store import ObjectStore

OID = b"\x5a" * 24 + struct.pack("<I", 1)
MODES = (("zactor, no keys", "plain"), ("zactor, CURVE encrypted", "curve"),
         ("zactor, keys + HMAC, unencrypted", "hmac"))


def _parse_size(text: str) -> int:
    units = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    text = text.strip().upper()
    for unit, f in units.items():
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * f)
    return int(text)


# ---- the server process ---------------------------------------------------------------------

def _raw_server(listener: socket.socket, data: memoryview) -> None:
    """Each connection: for every 8-byte request, ``sendall`` the whole object."""
    import threading

    def serve(conn):
        with conn:
            while conn.recv(8):
                conn.sendall(data)

    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def serve(args) -> None:
    from zactor.net.security import load_keys
    from zactor.transfer import TransferServer

    store = ObjectStore.create(args.store, args.size + (64 << 20))
    try:
        buf = store.create_buffer(OID, args.size)
        rng = np.random.default_rng(0)
        step = 64 << 20
        for off in range(0, args.size, step):  # random bytes, made in slices to bound memory
            n = min(step, args.size - off)
            buf[off:off + n] = rng.bytes(n)
        buf.release()
        store.seal(OID)
        keys = load_keys(args.key_file)
        servers = {"plain": TransferServer(store, args.host),
                   "curve": TransferServer(store, args.host, keys=keys),
                   "hmac": TransferServer(store, args.host, keys=keys, encrypt=False)}
        listener = socket.create_server((args.host, 0))
        ports = {name: s.port for name, s in servers.items()}
        ports["raw"] = listener.getsockname()[1]
        print(json.dumps(ports), flush=True)
        data = store.get_buffer(OID).data
        import threading

        threading.Thread(target=_raw_server, args=(listener, data), daemon=True).start()
        sys.stdin.read()  # until the client closes our stdin (or dies)
    finally:
        store.destroy()


# ---- the client (this process) --------------------------------------------------------------

def _server_argv(args, store_path: str, key_file: str) -> list:
    argv = [sys.executable, "-m", "zactor.benchmarks.transfer", "--serve", "--size",
            str(args.size), "--host", args.host, "--store", store_path, "--key-file", key_file]
    if not args.netns:
        return argv
    try:  # the netns helper (zactor/testing/netns.py) owns namespaces when it exists
        from zactor.testing.netns import exec_argv  # type: ignore[import-not-found]
    except ImportError:
        return ["ip", "netns", "exec", args.netns, *argv]
    return exec_argv(args.netns, argv)


class _RawReader:
    """The raw copy: one connection; each round asks for the object and ``recv_into``s it."""

    def __init__(self, host: str, port: int, size: int):
        self.size = size
        self.out = bytearray(size)
        self.out[:] = bytes(size)  # touched: the raw copy pays no page faults
        self.sock = socket.create_connection((host, port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def once(self) -> None:
        view = memoryview(self.out)
        self.sock.sendall(b"go\0\0\0\0\0\0")
        got = 0
        while got < self.size:
            n = self.sock.recv_into(view[got:], self.size - got)
            if n == 0:
                raise ConnectionError("raw server closed the connection")
            got += n


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(fn) -> tuple:
    """(wall seconds, CPU seconds of this whole process: every thread, libzmq's included)."""
    c0, t0 = _cpu_s(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, _cpu_s() - c0


def run(args) -> dict:
    from zactor.net.security import generate_keys
    from zactor.transfer import TransferClient

    tmp = tempfile.mkdtemp(prefix="zactor-transfer-bench-")
    key_file = os.path.join(tmp, "cluster.key")
    keys = generate_keys(key_file)
    pid = os.getpid()
    server_store = f"/dev/shm/zactor-bench-{pid}-server"
    proc = subprocess.Popen(_server_argv(args, server_store, key_file), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    # the client's segment is kept populated (warm) so pulls and the raw copy both write
    # into touched memory
    store = ObjectStore.create(f"/dev/shm/zactor-bench-{pid}-client", args.size + (64 << 20),
                               warm_bytes=args.size + (64 << 20))
    results = {"raw TCP socket copy": []}
    cpu_s: dict = {}
    clients = []
    try:
        ports = json.loads(proc.stdout.readline())
        raw = _RawReader(args.host, ports["raw"], args.size)
        for label, mode in MODES:
            kw = {} if mode == "plain" else {"keys": keys, "encrypt": mode == "curve"}
            client = TransferClient(store, chunk_bytes=args.chunk_mb << 20,
                                    window=args.window, **kw)
            clients.append((label, client, f"{args.host}:{ports[mode]}"))
            results[label] = []

        def pull(client, address):
            client.fetch(OID, address, timeout=300)

        # rounds interleave the modes, so a load change on the machine hits each of them
        for round_ in range(args.repeat + 1):
            times = {"raw TCP socket copy": _timed(raw.once)}
            for label, client, address in clients:
                times[label] = _timed(lambda c=client, a=address: pull(c, a))
                store.delete(OID)
            if round_:  # round 0 warms connections, sessions and both segments
                for label, (wall, cpu) in times.items():
                    results[label].append(wall)
                    cpu_s.setdefault(label, []).append(cpu)
        raw.sock.close()
    finally:
        for _, client, _ in clients:
            client.close()
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        store.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(server_store):  # a killed server cannot remove its own segment
            os.unlink(server_store)
    results["cpu"] = cpu_s
    return results


def report(args, results: dict) -> None:
    size_gb = args.size / 1e9
    results = dict(results)
    results["cpu"] = results.pop("cpu")
    raw_times = results["raw TCP socket copy"]
    raw = size_gb / statistics.median(raw_times)
    print(f"pull of one {args.size >> 20} MB object (random bytes), median of {args.repeat}, "
          f"chunks {args.chunk_mb} MB x {args.window} in flight, host {args.host}"
          f"{', netns ' + args.netns if args.netns else ''}")
    print(f"{'':36} {'GB/s':>7} {'vs raw':>7} {'per-round ratio':>16} {'client CPU s/GB':>16}")
    for label, times in results.items():
        if label == "cpu":
            continue
        gbs = size_gb / statistics.median(times)
        per_round = statistics.median(r / t for r, t in zip(raw_times, times))
        cpu = statistics.median(results["cpu"][label]) / size_gb
        print(f"{label:36} {gbs:7.2f} {gbs / raw:6.2f}x {per_round:15.2f}x {cpu:16.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zactor.benchmarks.transfer",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_parse_size, default=512 << 20,
                        help="object size (256MB-1GB is the figure of record; default 512MB)")
    parser.add_argument("--repeat", type=int, default=5, help="timed pulls per mode")
    parser.add_argument("--chunk-mb", type=int, default=4)
    parser.add_argument("--window", type=int, default=4, help="chunk requests in flight")
    parser.add_argument("--host", default="127.0.0.1", help="server address (and bind)")
    parser.add_argument("--netns", default="",
                        help="run the server in this network namespace (see module doc)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--key-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
        return 0
    report(args, run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
