"""Values in and out of a CoreClient: inline bytes in messages, or the node's shared-memory
store (with the node manager asked to spill when the store is full, and to restore a spilled
object before it is read). A mixin of CoreClient (core_client.py), which owns the lock, the
store and the socket these methods use.
"""

from __future__ import annotations

import time

from zactor import serialization as ser
from zactor.exceptions import (
    GetTimeoutError,
    ObjectLostError,
    ObjectNotFoundError,
    ObjectStoreFullError,
    RayTaskError,
)
from zactor.object_ref import collecting_refs
from zactor.runtime import messages as m

STORE_FULL_WAIT_S = 10.0
#: how long a client waits for its node manager to spill or restore (runtime/spilling.py)
SPILL_WAIT_S = 60.0


class ClientValues:
    def encode_value(self, value, oid):
        """(state, data, contained refs, oid) for ``value``; large values go to the store
        as ``oid`` (bytes, or a callable making the id, called only when it is needed)."""
        data = ser.dumps_scalar(value)
        if data is not None and len(data) <= self.inline_threshold:
            return m.OBJ_INLINE, data, (), oid
        with collecting_refs() as c:
            s = ser.serialize(value)
        if s.total_size <= self.inline_threshold:
            return m.OBJ_INLINE, s.to_bytes(), c.refs, oid
        if callable(oid):
            oid = oid()
        self._write_to_store(oid, s)
        return m.OBJ_STORE, s.total_size, c.refs, oid

    def _write_to_store(self, oid: bytes, s) -> None:
        """Write a primary copy (not evictable: the node manager deletes it when nothing
        references it). When the store is full, releases this process has not reported yet
        go out and the node manager is asked to spill objects to disk (make_room); each time
        it made room the write is tried again at once. When it cannot, the write is retried
        with a backoff for up to STORE_FULL_WAIT_S, as Ray waits for room, before
        ObjectStoreFullError (saying why spilling did not help) reaches the caller."""
        deadline = time.monotonic() + STORE_FULL_WAIT_S
        backoff = 0.001
        why_not_spilled = ""
        while True:
            try:
                self.store.put_serialized(oid, s, evictable=False)
                return
            except ObjectStoreFullError as full:
                if time.monotonic() + backoff > deadline:
                    raise ObjectStoreFullError(f"{full}{why_not_spilled}") from None
                with self._lock:
                    self.flush()
                reply = self._store_request("make_room", size=s.total_size)
                if not reply["error"]:
                    continue  # objects were spilled: try again now
                why_not_spilled = f"; spilling to disk could not make room: {reply['error']}"
                time.sleep(backoff)
                backoff = min(backoff * 2, 0.1)

    def _store_request(self, op: str, size: int = 0, oid: bytes = b""):
        """Ask the node manager to make room or restore a spilled object, and wait for its
        answer (STORE_REPLY: error "" when done) for up to SPILL_WAIT_S."""
        try:
            return self.request(m.STORE_REQUEST, {"op": op, "size": size, "oid": oid},
                                m.STORE_REPLY, timeout_s=SPILL_WAIT_S,
                                match=lambda msg: msg["op"] == op and msg["oid"] == oid)
        except GetTimeoutError as exc:
            return {"op": op, "oid": oid, "error": str(exc), "full": False}

    def _read_store(self, oid: bytes):
        """The value of a store object, restored first if it was spilled and evicted (again
        while the restored copy is evicted before this read pins it, up to SPILL_WAIT_S)."""
        deadline = time.monotonic() + SPILL_WAIT_S
        while True:
            try:
                return self.store.get(oid)
            except ObjectNotFoundError:
                pass
            reply = self._store_request("restore", oid=oid)
            if reply["error"] and reply["full"]:
                raise ObjectStoreFullError(f"object {oid.hex()} is spilled to disk and "
                                           f"cannot be restored: {reply['error']}")
            if reply["error"] or time.monotonic() > deadline:
                raise ObjectLostError(oid.hex(), reason=reply["error"] or
                                      "it was spilled and every restored copy was evicted "
                                      "before it could be read") from None

    def decode_value(self, oid: bytes, state: int, data):
        if state == m.OBJ_INLINE:
            return ser.deserialize(data)
        if state == m.OBJ_STORE:
            return self._read_store(oid)
        err = ser.deserialize(data)
        if isinstance(err, RayTaskError):
            raise err.as_instanceof_cause()
        raise err
