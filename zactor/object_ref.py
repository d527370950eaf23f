"""``ObjectRef``: a future for an object in the cluster (Ray's public class of that name).

An ObjectRef is a 28-byte ObjectID plus membership in its process's reference count: creating
one adds a local reference, garbage-collecting the last one drops it, and the process's core
client reports the 0 -> 1 and 1 -> 0 transitions to the node manager, which frees the object
when no process, task or containing object holds it any more (docs/architecture.md).

Pickling an ObjectRef (inside an argument or a stored value) records it in the active
``collecting_refs`` context, so the container can keep the target alive until the receiver has
registered its own reference.
"""

from __future__ import annotations

import threading

from zactor.ids import ObjectID

_collect = threading.local()


class collecting_refs:
    """Context manager: ObjectRefs pickled inside it are appended to ``self.refs``."""

    def __enter__(self):
        self.refs = []
        self._outer = getattr(_collect, "refs", None)
        _collect.refs = self.refs
        return self

    def __exit__(self, *exc):
        _collect.refs = self._outer
        return False


def _current_client():
    from zactor.runtime import context

    return context.client_or_none()


class ObjectRef:
    """A reference to an object that exists (or will) somewhere in the cluster."""

    __slots__ = ("_id", "_client", "__weakref__")

    def __init__(self, object_id: bytes, *, _client=None, _add_ref: bool = True):
        if isinstance(object_id, ObjectID):
            object_id = object_id.binary()
        if not isinstance(object_id, bytes) or len(object_id) != ObjectID.SIZE:
            raise ValueError(f"ObjectRef needs a {ObjectID.SIZE}-byte id, got {object_id!r}")
        self._id = object_id
        self._client = _client if _client is not None else _current_client()
        if _add_ref and self._client is not None:
            self._client.add_local_ref(object_id)

    @classmethod
    def _counted(cls, object_id: bytes, client) -> "ObjectRef":
        """A ref to a valid id that ``client`` has counted already (its own task's return:
        the per-call path, without the checks and the +1 of the constructor)."""
        ref = cls.__new__(cls)
        ref._id = object_id
        ref._client = client
        return ref

    def __del__(self):
        client = self._client
        if client is not None:
            try:
                client.remove_local_ref(self._id)
            except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to tell
                pass

    # ---- identity ---------------------------------------------------------------------

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def object_id(self) -> ObjectID:
        return ObjectID(self._id)

    def task_id(self):
        return ObjectID(self._id).task_id()

    def job_id(self):
        return ObjectID(self._id).task_id().job_id()

    def is_nil(self) -> bool:
        return self._id == b"\xff" * ObjectID.SIZE

    def __hash__(self):
        return hash(self._id)

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and other._id == self._id

    def __repr__(self):
        return f"ObjectRef({self._id.hex()})"

    def __reduce__(self):
        refs = getattr(_collect, "refs", None)
        if refs is not None:
            refs.append(self._id)
        return (_rebuild_ref, (self._id,))

    # ---- futures ----------------------------------------------------------------------

    def future(self):
        """A ``concurrent.futures.Future`` resolved with the object's value (or error)."""
        import concurrent.futures  # on first use: it costs every start-up ~10 ms

        fut = concurrent.futures.Future()

        def resolve():
            from zactor import api

            try:
                fut.set_result(api.get(self))
            except BaseException as exc:  # noqa: BLE001 - handed to the future's reader
                fut.set_exception(exc)

        threading.Thread(target=resolve, name=f"zactor-future-{self.hex()[:8]}",
                         daemon=True).start()
        return fut

    def as_future(self):
        """An asyncio future of the value, for the running event loop."""
        import asyncio  # on first use: importing asyncio costs ~40 ms of every start-up

        return asyncio.wrap_future(self.future())

    def __await__(self):
        return self.as_future().__await__()


def _rebuild_ref(object_id: bytes) -> ObjectRef:
    ref = ObjectRef(object_id)
    client = ref._client
    if client is not None:
        client.note_borrowed(object_id)
    return ref
