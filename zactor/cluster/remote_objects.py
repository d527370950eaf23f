"""Objects that live on another node: a node manager's pulls of them into its store, the
frees it owes their holders, and a pulled copy the store evicted (pulled again, or re-made
when its holder is gone). A mixin of RemoteTasks (remote_tasks.py), which owns the peers,
the sockets and the tables these methods use (``remote_copies``, ``wanted``,
``refetching``, ``room_retry``, ``free_out``, ``transfer``).

An OBJ_REMOTE entry's data is ``[holder node, transfer address, size]``; a pull turns it into
OBJ_STORE (the bytes are here now) and the holder keeps its copy until the object is freed
here, since a task forwarded to a third node may still be pulling it from the holder.
"""

from __future__ import annotations

import time

from zactor import serialization as ser
from zactor.net.sockets import tcp_address
from zactor.runtime import messages as m

PULL_ROOM_RETRY_S = 0.5  # a pull into a full store with nothing left to spill: tried again
_STATE_NAMES = {m.OBJ_INLINE: "inline", m.OBJ_ERROR: "an error", m.OBJ_REMOTE: "on another node",
                m.OBJ_PENDING: "not made yet"}


class RemoteObjects:
    def freed(self, oid: bytes, e) -> None:
        """The origin dropped an object whose bytes live (also) on another node."""
        holder = self.remote_copies.pop(oid, None)
        self.borrowed.freed(oid)
        if e.state == m.OBJ_REMOTE:
            holder = e.data[0]
        if holder is not None:
            self.free_out.setdefault(holder, []).append(oid)

    def pull_missing(self, requests) -> None:
        """Start pulling the remote arguments of the tasks that stayed here (a spilled task's
        arguments are pulled by the node that runs it)."""
        for request in requests:
            for oid in request.deps:
                if self.nm.scheduler.waits_for(oid):
                    self.ensure_local(oid)

    def ensure_local(self, oid: bytes) -> None:
        """Start pulling an OBJ_REMOTE object into this node's store (once)."""
        e = self.nm.objects.entries.get(oid)
        if e is None or e.state != m.OBJ_REMOTE:
            return
        self.transfer.pull(oid, e.data[1])

    def _pull_done(self, oid: bytes, error, address: str = "") -> None:
        nm = self.nm
        e = nm.objects.entries.get(oid)
        if e is None or e.state != m.OBJ_REMOTE:
            if error is None:  # nobody wants it any more
                try:
                    nm.store.delete(oid)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            return
        holder = e.data[0]
        if getattr(error, "reason", None) == "store_full":
            self._make_room_then_pull(oid, int(e.data[2]))  # the holder's copy is fine
            return
        if error is not None and address and tcp_address(address) != tcp_address(e.data[1]):
            # a pull from a former holder (the object was re-made elsewhere meanwhile, and
            # the new pull joined the old one): pull from where it is now
            self.ensure_local(oid)
            return
        if error is not None:
            if oid in self.refetching:  # readers wait for the copy re-made below: pulled
                self.wanted.add(oid)    # here, or made here (NodeManager.object_arrived)
            # the holder died (its death may not be declared yet) or lost the copy: re-run
            # the producer now rather than wait for the death notice
            self.free_out.setdefault(holder, []).append(oid)
            self._copy_gone(oid, f"it could not be fetched from node {holder.hex()[:16]}: "
                                 f"{error}", holder)
            return
        e.state, e.data = m.OBJ_STORE, e.data[2]
        self.wanted.discard(oid)
        nm.gcs.object_stored(oid, e.data)
        for reply in self.refetching.pop(oid, ()):
            reply({"op": "restore", "oid": oid})
        nm.object_arrived(oid, e)
        # the holder keeps its copy until the object is freed here: a task forwarded to a
        # third node may still be pulling it from the holder (its args name the holder)
        self.remote_copies[oid] = holder

    def refetch(self, oid: bytes, reply):
        """A reader found no copy here of an object pulled from another node: the store
        evicted it (a pulled copy is a cache; its holder keeps the primary until the object
        is freed here). Pull it again and answer ``reply`` when it is back: None. Else why it
        is not such an object (the caller reports it missing, with that)."""
        if oid in self.refetching:
            self.refetching[oid].append(reply)
            return None
        e = self.nm.objects.entries.get(oid)
        holder = self.remote_copies.get(oid)
        if e is None:
            return "this node no longer tracks it: freed"
        if e.state != m.OBJ_STORE:
            return f"this node's entry says {_STATE_NAMES.get(e.state, e.state)}"
        if holder is None:
            return "a primary copy made on this node, not spilled"
        peer = self.link.peers.get(holder)
        del self.remote_copies[oid]
        self.refetching[oid] = [reply]
        if peer is not None and peer.get("state") == "alive" and peer.get("transfer_port"):
            e.state, e.data = m.OBJ_REMOTE, [holder, f"{peer['host']}:{peer['transfer_port']}",
                                              int(e.data)]
            self.ensure_local(oid)
            return None
        # the holder is gone too: re-made (by lineage here, or by the node it was borrowed
        # from), then pulled or made here; the reader waits for it (it failed with
        # ObjectLostError in two 10-minute chaos runs)
        e.state, e.data = m.OBJ_REMOTE, [holder, "", int(e.data)]
        self.nm.scheduler.object_gone(oid)
        self.wanted.add(oid)
        self._copy_gone(oid, f"its copy here was evicted and the node it was pulled from "
                             f"({holder.hex()[:16]}) is gone", holder)
        return None

    def answer_refetch(self, oid: bytes, state: int, data) -> None:
        """``oid`` is here again (re-made on this node) or known lost: answer the readers
        that waited for it in ``refetch``."""
        replies = self.refetching.pop(oid, None)
        if not replies:
            return
        self.wanted.discard(oid)
        if state == m.OBJ_STORE:
            body = {"op": "restore", "oid": oid}
        elif state == m.OBJ_ERROR:
            body = {"op": "restore", "oid": oid, "error": str(ser.deserialize(data))}
        else:  # re-made small enough to travel inline: not in the store the reader looks in
            body = {"op": "restore", "oid": oid, "error": "it was re-made as an inline value"}
        for reply in replies:
            reply(body)

    def _make_room_then_pull(self, oid: bytes, size: int) -> None:
        """A pull found this node's store full: spill least recently used objects to disk
        (runtime/spilling.py) and pull again once they are written; when nothing can be
        spilled, try again every PULL_ROOM_RETRY_S (as a put waits for room) - the reader's
        own timeout bounds the wait."""
        def answered(body) -> None:
            if body.get("error"):
                self.room_retry[oid] = time.monotonic() + PULL_ROOM_RETRY_S
            else:
                self.ensure_local(oid)

        self.nm.spill.make_room(size, answered)

    def _retry_pulls_for_room(self, now: float) -> None:
        for oid, when in list(self.room_retry.items()):
            if now >= when:
                del self.room_retry[oid]
                self.ensure_local(oid)


class TransferLink:
    """The node's object-transfer server and client (zactor/transfer/), behind the three
    calls the node needs: ``pull`` (asynchronous), ``finished`` (what completed) and ``fd``
    (readable when something completed, for the node's poller)."""

    def __init__(self, store, host: str, keys=None, encrypt: bool = True, restore=None):
        from zactor.transfer import TransferClient, TransferServer

        # encrypt=False: object bytes in the clear, requests still authenticated (HMAC);
        # restore: spilled objects are read back from disk before they are served
        self.server = TransferServer(store, host, keys=keys, encrypt=encrypt, restore=restore)
        self.port = self.server.port
        self.address = f"{host}:{self.port}"
        self.client = TransferClient(store, keys=keys, encrypt=encrypt, pollable=True)
        self.fd = self.client.fileno()

    def pull(self, oid: bytes, address: str) -> None:
        self.client.pull(oid, address)  # a pull already running is joined, not repeated

    def finished(self) -> list:
        """[(oid, error or None, the address pulled from)] of the pulls that ended."""
        return [(h.oid, h.exception(0), h.address) for h in self.client.completed()]

    def close(self) -> None:
        self.client.close()
        self.server.close()
