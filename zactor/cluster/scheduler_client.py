"""Requests from a driver or worker to the cluster's global scheduler (placement groups).

Used by ``zactor.util.placement_group`` through ``zactor.api._cluster_request``. The
scheduler's address is read from the control store (kv ``cluster:scheduler``); a request that
gets no answer within a slice is sent again, to the address read anew (the scheduler may
have been restarted elsewhere: its requests are idempotent, so resending is safe).
"""

from __future__ import annotations

import itertools
import threading
import time

import zmq

from zactor import protocol
from zactor.exceptions import GetTimeoutError
from zactor.net.sockets import make_socket

ATTEMPT_S = 2.0

_lock = threading.Lock()
_clients: dict = {}


class SchedulerClient:
    def __init__(self, coordinator: str, keys=None):
        from zactor.net.security import keys_from

        self.keys = keys_from(keys)
        self.coordinator = coordinator
        self.ctx = zmq.Context()
        self.gcs = None
        self.sock = None
        self.address = None
        self._ids = itertools.count(1)

    def _connect(self, timeout_s: float) -> None:
        from zactor.control.client import GcsClient

        if self.gcs is None:
            self.gcs = GcsClient.connect(self.coordinator, timeout_s=timeout_s, keys=self.keys)
        row = self.gcs.get("kv", b"cluster:scheduler", timeout_s=timeout_s)
        if not isinstance(row, dict):
            raise RuntimeError(f"the cluster at {self.coordinator} has no global scheduler "
                               f"running (zactor scheduler); placement groups need one")
        address = f"tcp://{row['host']}:{row['port']}"
        if address != self.address or self.sock is None:
            if self.sock is not None:
                self.sock.close(0)
            from zactor.net.security import curve_client

            self.sock = curve_client(make_socket(self.ctx, zmq.DEALER), self.keys)
            self.sock.connect(address)
            self.address = address

    def request(self, mtype, body: dict, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GetTimeoutError(f"the global scheduler did not answer "
                                      f"{mtype.name} within {timeout_s} s")
            self._connect(min(left, ATTEMPT_S))
            req_id = next(self._ids)
            self.sock.send_multipart(protocol.encode(mtype, body, req_id))
            attempt_end = min(deadline, time.monotonic() + ATTEMPT_S)
            while time.monotonic() < attempt_end:
                if not self.sock.poll(int(max(1, (attempt_end - time.monotonic()) * 1000))):
                    continue
                reply = protocol.decode(self.sock.recv_multipart())
                if reply.req_id != req_id:
                    continue  # the answer to an earlier, timed-out attempt
                if reply.mtype is protocol.ERROR:
                    if reply["code"] == protocol.ERR_MALFORMED:
                        raise ValueError(reply["message"])
                    raise RuntimeError(f"the global scheduler refused {mtype.name}: "
                                       f"{reply['message']}")
                return reply.body.get("value")
            self.sock.close(0)  # no answer: reconnect (maybe to a restarted scheduler)
            self.sock = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
        if self.gcs is not None:
            self.gcs.close()
        self.ctx.term()


def cluster_request(coordinator: str, mtype, body: dict, timeout_s: float, keys=None):
    with _lock:
        client = _clients.get(coordinator)
        if client is None:
            client = _clients[coordinator] = SchedulerClient(coordinator, keys)
        return client.request(mtype, body, timeout_s)


def close_all() -> None:
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
