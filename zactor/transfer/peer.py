"""One TransferServer as the TransferClient's thread sees it: a DEALER, its monitor, the HMAC
session and the requests in flight. Used only by that thread."""

from __future__ import annotations

import time
from collections import deque

import zmq

from zactor.net.security import curve_client
from zactor.net.sockets import make_socket

_MONITOR_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
                   | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                   | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
class Peer:
    """One server: its DEALER, monitor, HMAC session and requests in flight."""

    def __init__(self, ctx, address: str, keys, encrypt: bool):
        self.address = address
        self.sock = make_socket(ctx, zmq.DEALER, hwm=1000)
        if encrypt:
            curve_client(self.sock, keys)
        self.monitor = self.sock.get_monitor_socket(_MONITOR_EVENTS)
        self.sock.connect(address)
        self.connected = False
        self.needs_session = keys is not None and not encrypt
        self.session = None  # (sid, nonce) once welcomed
        self.hello_sent = False
        self.hello_id = 0
        self.seq = 0
        self.waiting: deque = deque()  # requests held until the session opens
        self.requests: dict = {}       # req_id -> (pull, offset or None for META)
        self.last_used = time.monotonic()

    def idle(self) -> bool:
        return not self.requests and not self.waiting

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
        self.sock.close(0)
