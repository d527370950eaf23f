"""The store side of a pull: reserve the object, write chunks into it, seal or abort.

A mixin of TransferClient (kept apart so each module stays readable); every method runs in
the client's thread and uses ``self.store``, ``self.chunk_bytes``, ``self.window``,
``self.compress``, ``self._request``, ``self._pulls``, ``self._lock``, ``self._completed``.
"""

from __future__ import annotations

import logging

import lz4.block

from zactor import protocol as P
from zactor.exceptions import ObjectExistsError, ObjectStoreFullError
from zactor.transfer import messages as M

log = logging.getLogger(__name__)


class StoreWriter:
    """TransferClient's methods that write into the local store."""

    def _on_meta(self, peer, pull, msg) -> None:
        size = msg["size"]
        if not isinstance(size, int) or size < 0:
            self._fail(pull, P.ERR_MALFORMED, f"bad size {size!r}")
            return
        if not isinstance(msg["metadata"], bytes):
            self._fail(pull, P.ERR_MALFORMED, "metadata is not bytes")
            return
        pull.size = size
        pull.compress = bool(msg["compress"]) and self.compress
        try:
            pull.buf = self.store.create_buffer(pull.oid, size, msg["metadata"])
        except ObjectExistsError:
            if self.store.contains(pull.oid):  # another writer finished it meanwhile
                self._finish(pull)
            else:
                self._fail(pull, "store", "another writer is creating it in the local store")
            return
        except ObjectStoreFullError as e:  # the node manager makes room and pulls again
            self._fail(pull, "store_full", str(e))
            return
        except Exception as e:  # bad size: the node manager decides what next
            self._fail(pull, "store", f"{type(e).__name__}: {e}")
            return
        if size == 0:
            self._finish(pull)
            return
        self._ask_more(peer, pull)

    def _ask_more(self, peer, pull) -> None:
        while pull.outstanding < self.window and pull.next_offset < pull.size:
            length = min(self.chunk_bytes, pull.size - pull.next_offset)
            self._request(peer, pull, M.XFER_CHUNK_REQ, pull.next_offset, length)
            pull.next_offset += length

    def _on_chunk(self, peer, pull, msg, payload) -> None:
        offset, length = msg["offset"], msg["length"]
        if length != min(self.chunk_bytes, pull.size - offset):
            self._fail(pull, P.ERR_MALFORMED, f"chunk at {offset} has length {length}")
            return
        data = payload.buffer
        if msg["codec"] == M.CODEC_LZ4:
            try:
                data = lz4.block.decompress(data, uncompressed_size=length)
            except Exception as e:  # lz4.block.LZ4BlockError or a bad size
                self._fail(pull, P.ERR_MALFORMED, f"chunk at {offset} does not decompress: {e}")
                return
        if len(data) != length:
            self._fail(pull, P.ERR_MALFORMED, f"chunk at {offset}: {len(data)} bytes, "
                                              f"expected {length}")
            return
        pull.buf[offset:offset + length] = data
        pull.received += length
        pull.handle.bytes_received = pull.received
        if pull.received == pull.size:
            self._finish(pull)
        else:
            self._ask_more(peer, pull)

    def _finish(self, pull) -> None:
        if pull.buf is not None:
            pull.buf.release()
            pull.buf = None
            try:
                self.store.seal(pull.oid)
            except Exception as e:
                self._end(pull, M.TransferError(pull.oid, pull.address, "store", str(e)))
                return
        self._end(pull, None)

    def _fail(self, pull, reason: str, detail: str) -> None:
        if pull.done:
            return
        if pull.buf is not None:  # drop our view before the memory goes back to the store
            pull.buf.release()
            pull.buf = None
            try:
                self.store.abort(pull.oid)
            except Exception:
                log.exception("transfer client: abort of %s failed", pull.oid.hex())
        self._end(pull, M.TransferError(pull.oid, pull.address, reason, detail))

    def _end(self, pull, error) -> None:
        pull.done = True
        with self._lock:
            if self._pulls.get(pull.oid) is pull:
                del self._pulls[pull.oid]
        pull.handle._set(pull.size, error)  # first: a poller woken below sees it done
        if self._completed is not None:
            self._completed.put(pull.handle)
