"""Sending and reading multipart messages on the per-task paths, one layer below pyzmq's.

Runs in every process (drivers, workers, node managers). pyzmq's ``send_multipart`` and
``recv_multipart`` are Python: they check every frame's type, combine ``zmq.SNDMORE`` with the
flags (an ``enum.Flag`` operation that builds a new enum member), and call ``send`` frame by
frame through another Python layer; ``getsockopt(zmq.EVENTS) & zmq.POLLIN`` builds a flag
member too. Measured here (pyzmq 27, one send + one read of a two-frame message over inproc):
9.3 us through pyzmq's methods, 3.2 us through its Cython socket methods called directly, as
below (an ad-hoc timeit, not a kept benchmark). A synchronous actor call makes four such
sends and reads on its critical path.

The frames given must be ``bytes`` (or objects with the buffer interface): protocol.encode
makes them so. Errors are pyzmq's own (``zmq.ZMQError``, ``zmq.Again``).
"""

from __future__ import annotations

import zmq
from zmq.backend import Socket as _CythonSocket

_send = _CythonSocket.send
_recv = _CythonSocket.recv
_get = _CythonSocket.get

SNDMORE = int(zmq.SNDMORE)
NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_RCVMORE = int(zmq.RCVMORE)


def send_frames(sock: zmq.Socket, frames: list) -> None:
    """``sock.send_multipart(frames)`` (blocking as it is; the sockets have no send limit)."""
    last = len(frames) - 1
    for i in range(last):
        _send(sock, frames[i], SNDMORE)
    _send(sock, frames[last], 0)


def send_routed(sock: zmq.Socket, identity: bytes, frames: list) -> None:
    """``sock.send_multipart([identity, *frames])`` on a ROUTER, without building the list."""
    _send(sock, identity, SNDMORE)
    send_frames(sock, frames)


def has_input(sock: zmq.Socket) -> bool:
    """Whether a whole message waits to be read (cheaper than ending a drain on zmq.Again)."""
    return bool(_get(sock, _EVENTS) & _POLLIN)


def recv_frames(sock: zmq.Socket) -> list:
    """One waiting message's frames (``recv_multipart(zmq.NOBLOCK)``): call after
    ``has_input``; the frames of a message arrive together, so the rest never wait."""
    frames = [_recv(sock, NOBLOCK)]
    while _get(sock, _RCVMORE):
        frames.append(_recv(sock, NOBLOCK))
    return frames
