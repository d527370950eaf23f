"""Socket helpers: every zactor socket is made here so that linger 0 is never forgotten.

Runs in every process. ``monitored`` wraps pyzmq's socket monitor so a poll loop can learn
within milliseconds that a peer's connection closed (EVENT_DISCONNECTED), without waiting for
missed heartbeats.
"""

from __future__ import annotations

import os
import socket
import stat

import zmq

DEFAULT_COORDINATOR_PORT = 6380
LOOPBACK = "127.0.0.1"
# sizeof(sockaddr_un.sun_path) on Linux is 108 bytes, one of them the terminating NUL
MAX_IPC_PATH_BYTES = 107


def make_socket(ctx: zmq.Context, kind: int, identity: bytes | None = None,
                hwm: int = 100_000) -> zmq.Socket:
    """A socket with linger 0 (closing never blocks) and high-water marks that fit bursts."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # unroutable replies are dropped, not raised
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)   # a restarted peer takes its identity back
    return sock


def bind_free(sock: zmq.Socket, host: str = LOOPBACK, port: int = 0) -> str:
    """Bind to ``host:port`` (0: a free port); returns the ``tcp://host:port`` bound."""
    if port:
        addr = f"tcp://{host}:{port}"
        sock.bind(addr)
        return addr
    port = sock.bind_to_random_port(f"tcp://{host}")
    return f"tcp://{host}:{port}"


def ipc_endpoint(directory: str, name: str) -> str:
    """``ipc://<directory>/<name>.sock``, checked so that binding it is safe and can work.

    The socket file is as open as its directory: ``directory`` must belong to this user and
    be closed to everyone else (mode 0700, made so if it does not exist yet), or no other
    local user is kept out. A path past the Unix limit is refused here, by name, rather than
    failing inside ZeroMQ with "File name too long"."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise PermissionError(
            f"ipc socket directory {directory} must be owned by uid {os.getuid()} and "
            f"closed to others (mode 0700; it is uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):o}): other local users could connect to it")
    path = os.path.join(os.path.abspath(directory), f"{name}.sock")
    if len(os.fsencode(path)) > MAX_IPC_PATH_BYTES:
        raise ValueError(
            f"ipc socket path {path} is {len(os.fsencode(path))} bytes, over the "
            f"{MAX_IPC_PATH_BYTES}-byte limit of Unix sockets: use a shorter directory "
            f"(e.g. set TMPDIR to a short path)")
    return f"ipc://{path}"


def bind_ipc(sock: zmq.Socket, directory: str, name: str) -> str:
    """Bind to ``ipc_endpoint(directory, name)``; returns it. A stale file of that name (a
    process killed before it could remove it) is replaced: ZeroMQ unlinks it first."""
    addr = ipc_endpoint(directory, name)
    sock.bind(addr)
    return addr


def bind_endpoint(sock: zmq.Socket, name: str, host: str = LOOPBACK, port: int = 0,
                  ipc_dir: str | None = None) -> str:
    """Bind ``ipc://<ipc_dir>/<name>.sock`` when ``ipc_dir`` is given, else TCP on
    ``host:port`` (0: a free port); returns the endpoint peers should connect to."""
    if ipc_dir is not None:
        return bind_ipc(sock, ipc_dir, name)
    return bind_free(sock, host, port)


def endpoint(address: str) -> str:
    """An address as given by a user or advertised by a peer -> a ZeroMQ endpoint: one with
    a transport (``tcp://``, ``ipc://``) is kept, a bare ``host:port`` means TCP."""
    return address if "://" in address else f"tcp://{address}"


def display_address(addr: str) -> str:
    """The inverse of ``endpoint`` for showing and passing on: ``tcp://host:port`` ->
    ``host:port`` (what ``zactor start --address`` takes); other transports unchanged."""
    return addr[len("tcp://"):] if addr.startswith("tcp://") else addr


def tcp_address(host_port: str) -> str:
    """``host:port`` or ``tcp://host:port`` -> ``tcp://host:port``."""
    return host_port if host_port.startswith("tcp://") else f"tcp://{host_port}"


def free_port(host: str = LOOPBACK) -> int:
    """A port free right now (a race is possible; prefer ``bind_free`` where one can)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class MonitoredPeer:
    """A DEALER connected to one peer plus its monitor socket; ``poll_events`` returns True
    once the peer's connection has closed after having been up. With ``keys``
    (zactor.net.security.ClusterKeys) the DEALER is a CURVE client of the cluster."""

    def __init__(self, ctx: zmq.Context, addr: str, identity: bytes | None = None,
                 keys=None):
        from zactor.net.security import curve_client

        self.addr = addr
        self.sock = curve_client(make_socket(ctx, zmq.DEALER, identity), keys)
        self.monitor = self.sock.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.sock.connect(addr)
        self.was_connected = False

    def poll_events(self) -> bool:
        """Drain monitor events; True when a disconnect followed a connection."""
        lost = False
        while True:
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return lost
            event = _parse_monitor_message(frames)["event"]
            if event == zmq.EVENT_CONNECTED:
                self.was_connected = True
            elif event == zmq.EVENT_DISCONNECTED and self.was_connected:
                lost = True

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
        self.sock.close(0)


def _parse_monitor_message(frames):
    # imported on first use: zmq.utils.monitor pulls in asyncio (~40 ms), which the node
    # manager, workers and drivers never need
    from zmq.utils.monitor import parse_monitor_message

    return parse_monitor_message(frames)
