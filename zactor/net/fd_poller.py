"""A poller of plain file descriptors with the interface of zmq.Poller, for a process that
waits on one ZeroMQ socket together with pipes and Unix sockets (runtime/core_client.py: the
node manager's DEALER, the wake-up pipe, the direct paths' streams, net/stream.py).

Why not zmq.Poller: for each ZeroMQ socket in it, zmq_poll asks the socket for its events
before and after its poll(2) (each a poll(2) of the socket's mailbox and a getpid(2)), and
pyzmq rebuilds the poll items in Python on every call: ~5 system calls and ~2 us of Python
per wait, on the path of every synchronous call. Here a ZeroMQ socket is polled by its
``ZMQ_FD`` and the caller asks for its events only when they may have changed.

``ZMQ_FD``'s contract (libzmq's zmq_getsockopt(3)): the descriptor becomes readable when the
socket's state may have changed, and any operation on the socket (a send, a receive, an
events check) may consume that signal. So a message can wait on the socket while its
descriptor says nothing, after any such operation. The user of this poller must therefore
check the socket's events (``frames.has_input``) after its last operation on the socket and
before it sleeps in ``poll``; a ``poll`` that reports the socket only says "check it".
CoreClient keeps a flag for that (``_zmq_unchecked``).

Flags in and out are zmq's (POLLIN 1, POLLOUT 2, POLLERR 4; a hang-up or an invalid
descriptor is POLLERR, as zmq_poll reports them), so StreamSet works with either poller.
"""

from __future__ import annotations

import select

import zmq

_IN, _OUT, _ERR = 1, 2, 4  # zmq.POLLIN, zmq.POLLOUT, zmq.POLLERR
_SEL_IN, _SEL_OUT = select.POLLIN, select.POLLOUT
_SEL_ERR = select.POLLERR | select.POLLHUP | select.POLLNVAL


class FdPoller:
    def __init__(self):
        self._poll = select.poll()
        self._keys: dict = {}  # descriptor -> what was registered (an int, or a zmq socket)

    @staticmethod
    def _fd(key) -> int:
        return key if isinstance(key, int) else key.getsockopt(zmq.FD)

    def register(self, key, flags: int = _IN | _OUT) -> None:
        """Poll ``key`` (a descriptor, or a ZeroMQ socket: for input only) for ``flags``;
        registering it again changes its flags."""
        fd = self._fd(key)
        self._poll.register(fd, (_SEL_IN if flags & _IN else 0) |
                            (_SEL_OUT if flags & _OUT else 0))
        self._keys[fd] = key

    def unregister(self, key) -> None:
        """Stop polling ``key``; KeyError if it is not registered (as zmq.Poller)."""
        fd = self._fd(key)
        del self._keys[fd]
        self._poll.unregister(fd)

    def poll(self, timeout_ms: int | None = None) -> list:
        """[(key, zmq flags)...] of the keys with events, waiting up to ``timeout_ms``
        (None or negative: without limit) for the first."""
        if timeout_ms is not None and timeout_ms < 0:
            timeout_ms = None
        keys = self._keys
        return [(keys.get(fd, fd), _IN if ev == _SEL_IN else _zmq_flags(ev))
                for fd, ev in self._poll.poll(timeout_ms)]


def _zmq_flags(ev: int) -> int:
    return (_IN if ev & _SEL_IN else 0) | (_OUT if ev & _SEL_OUT else 0) | \
        (_ERR if ev & _SEL_ERR else 0)
