"""The Python face of the C object store (csrc/zstore.h); the only module that touches ``lib``.

Runs in every process of a node: the node manager creates the segment
(``ObjectStore.create``) and later releases the pins of dead clients; drivers and workers
``attach`` and put and get objects. C status codes become the exceptions of
``zactor.exceptions``; every pin taken is released in a ``finally`` or by the garbage
collector.

Zero-copy reads: ``get_buffer`` pins the object and returns a ``StoreBuffer`` whose ``data``
is a read-only memoryview of the segment. The pin belongs to a cffi ``ffi.gc`` handle that the
memoryview (and every numpy array built on it) keeps alive, so the pin is released when the
last Python reference to the object's memory dies (``release()`` gives up the buffer's own
references early; memory still used by an array is never unpinned).
"""

from __future__ import annotations

import os

from zactor import exceptions as exc
from zactor import serialization
from zactor.store._zstore import ffi, lib

OBJECT_ID_SIZE = 28
DEFAULT_FRACTION = 0.30  # of system memory, as Ray's default object store size
_BIG_COPY_BYTES = 1 << 16  # above this, copies run in C without the interpreter lock
# get() copies values up to this size out and unpins at once: cheaper than a gc'd pin, and
# such a value has no out-of-band buffer to share (serialization.OUT_OF_BAND_MIN_BYTES).
SMALL_COPY_BYTES = 1024

_STATS_FIELDS = ("capacity", "total_size", "used_bytes", "data_bytes", "free_bytes",
                 "evictable_bytes", "pinned_bytes", "object_count", "sealed_count",
                 "pinned_count", "max_objects", "evictions", "recoveries", "high_water",
                 "warm_end", "clients", "headroom", "commit_end", "given_back")


def default_store_size() -> int:
    """30% of the machine's memory, in bytes (Ray's default object store size)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * DEFAULT_FRACTION) // 4096 * 4096


def _shm_free_bytes(path: str) -> int:
    st = os.statvfs(os.path.dirname(path) or ".")
    return st.f_bavail * st.f_frsize


def _id(oid) -> bytes:
    """``oid`` as 28 bytes (the C side reads exactly 28), or ValueError/TypeError."""
    if type(oid) is bytes and len(oid) == OBJECT_ID_SIZE:
        return oid
    return _check_id(oid)


def _addr(ptr) -> int:
    return int(ffi.cast("uintptr_t", ptr))


def _check_id(oid) -> bytes:
    if type(oid) is not bytes:
        oid = bytes(oid)
    if len(oid) != OBJECT_ID_SIZE:
        raise ValueError(f"object ids are {OBJECT_ID_SIZE} bytes, got {len(oid)}")
    return oid


class StoreBuffer:
    """A pinned, sealed object: ``data`` (read-only memoryview) and ``metadata`` (bytes).

    The pin lasts while this object, ``data`` or anything built on ``data`` is alive; after
    ``release()`` only while views built on ``data`` are.
    """

    __slots__ = ("object_id", "data", "metadata", "_handle", "__weakref__")

    def __init__(self, object_id: bytes, data: memoryview, metadata: bytes, handle):
        self.object_id = object_id
        self.data = data
        self.metadata = metadata
        self._handle = handle

    def release(self) -> None:
        """Give up this buffer: the pin is dropped at once if nothing else uses the memory,
        else when the last array or view built on ``data`` dies (never earlier: memory
        still referenced is never unpinned). Idempotent."""
        if self._handle is not None:
            try:
                self.data.release()
            except BufferError:  # something holds a buffer export: it keeps the pin
                pass
            self.data = None
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.release()

    def __len__(self):
        return self.data.nbytes


class ObjectStore:
    """A handle on the node's store segment: create (manager) or attach (any process).

    Object ids are 28-byte ``bytes`` (``zactor.ids.ObjectID.binary()``).
    """

    def __init__(self, handle, path: str, owner: bool):
        self._s = handle
        self.path = path
        self.owner = owner
        self.client_id = lib.zs_client_id(handle)
        self._closed = False
        self._base = lib.zs_base(handle)

    # ---- life of the handle -------------------------------------------------------------

    @classmethod
    def create(cls, path: str, capacity_bytes: int | None = None, max_objects: int | None = None,
               warm_bytes: int | None = None) -> ObjectStore:
        """Create the segment at ``path`` (a /dev/shm file that must not exist) and own it.

        ``capacity_bytes`` defaults to ``default_store_size()``; ``max_objects`` to one per
        16 KB of capacity (at least 1024); ``warm_bytes`` fixes how far above the highest
        used block pages are kept populated (default: adaptive, 16 MB at idle, twice the
        largest recent object while big objects are being put; see csrc/zs_warm.c).
        """
        if capacity_bytes is None:
            capacity_bytes = default_store_size()
        if not 1 << 16 <= capacity_bytes <= 1 << 46:
            raise ValueError(f"capacity_bytes must be between 64 KB and 64 TB, got "
                             f"{capacity_bytes}")
        out = ffi.new("zs_store **")
        rc = lib.zs_create(os.fsencode(path), int(capacity_bytes), int(max_objects or 0),
                           int(warm_bytes or 0), out)
        if rc == lib.ZS_ERR_NO_SPACE:
            raise exc.StoreSegmentError(
                f"cannot create a {capacity_bytes}-byte object store at {path}: its file system "
                f"has {_shm_free_bytes(path)} bytes free (enlarge /dev/shm, e.g. docker "
                f"--shm-size, or pass a smaller capacity)")
        _raise_for(rc, f"create store at {path}")
        return cls(ffi.gc(out[0], lib.zs_close), path, owner=True)

    @classmethod
    def attach(cls, path: str) -> ObjectStore:
        """Map the existing segment at ``path`` as a new client (lowest free number)."""
        out = ffi.new("zs_store **")
        rc = lib.zs_attach(os.fsencode(path), out)
        if rc == lib.ZS_ERR_NOT_FOUND:
            raise exc.StoreSegmentError(f"no object store at {path}")
        _raise_for(rc, f"attach store at {path}")
        return cls(ffi.gc(out[0], lib.zs_close), path, owner=False)

    def close(self) -> None:
        """Detach: release this client's pins and abort its unsealed objects.

        The mapping itself stays until the last buffer obtained from this handle is gone,
        so arrays still in use never point at unmapped memory. Idempotent.
        """
        if not self._closed:
            self._closed = True
            lib.zs_detach(self._s)

    def destroy(self) -> None:
        """Owner only: close and unlink the segment (mappings elsewhere stay valid)."""
        self.close()
        rc = lib.zs_unlink(os.fsencode(self.path))
        if rc not in (lib.ZS_OK, lib.ZS_ERR_NOT_FOUND):
            _raise_for(rc, f"unlink {self.path}")

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.destroy() if self.owner else self.close()

    def __repr__(self):
        state = "closed" if self._closed else f"client {self.client_id}"
        return f"ObjectStore({self.path!r}, {state}{', owner' if self.owner else ''})"

    # ---- objects ------------------------------------------------------------------------

    def create_buffer(self, oid: bytes, data_size: int, metadata: bytes = b"",
                      evictable: bool = True) -> memoryview:
        """Reserve a writable region of ``data_size`` bytes for ``oid``; ``metadata`` (small)
        is stored after it. Fill the region, then ``seal`` (or ``abort``). Objects created
        with ``evictable=False`` (primary copies) are never evicted.

        Raises ObjectExistsError, ObjectStoreFullError (with sizes), ValueError (bad size).
        """
        return memoryview(ffi.buffer(self._create(oid, data_size, metadata, evictable),
                                     data_size))

    def _create(self, oid, data_size: int, metadata: bytes, evictable: bool):
        """zs_create_object; returns the data pointer (cdata)."""
        oid = _id(oid)
        if data_size < 0:
            raise ValueError(f"data_size must be >= 0, got {data_size}")
        out = ffi.new("uint8_t **")
        rc = lib.zs_create_object(self._s, oid, data_size, len(metadata),
                                  0 if evictable else lib.ZS_OBJ_NOEVICT, out)
        if rc:
            oid = _check_id(oid)
            if rc == lib.ZS_ERR_FULL:
                raise exc.ObjectStoreFullError(self._full_message(oid, data_size + len(metadata)))
            _raise_for(rc, f"create object {oid.hex()}")
        if metadata:
            ffi.memmove(out[0] + data_size, metadata, len(metadata))
        return out[0]

    def seal(self, oid: bytes) -> None:
        """Make the object immutable and visible to readers."""
        oid = _id(oid)
        rc = lib.zs_seal(self._s, oid)
        if rc:
            _raise_for(rc, f"seal {oid.hex()}")

    def abort(self, oid: bytes) -> None:
        """Free an object that was created but not sealed."""
        oid = _id(oid)
        rc = lib.zs_abort(self._s, oid)
        if rc:
            _raise_for(rc, f"abort {oid.hex()}")

    def get_buffer(self, oid: bytes) -> StoreBuffer | None:
        """Pin and return the sealed object ``oid``, or None if absent or not sealed yet."""
        oid = _id(oid)
        data_p = ffi.new("uint8_t **")
        sizes = ffi.new("uint64_t[2]")
        if not self._pin(oid, data_p, sizes):
            return None
        return self._wrap(oid, data_p[0], sizes[0], sizes[1])

    def _pin(self, oid, data_p, sizes) -> bool:
        rc = lib.zs_get(self._s, oid, data_p, sizes, sizes + 1)
        if rc:
            if rc == lib.ZS_ERR_NOT_FOUND or rc == lib.ZS_ERR_NOT_SEALED:
                return False
            _raise_for(rc, f"get {_check_id(oid).hex()}")
        return True

    def _wrap(self, oid, ptr, data_size: int, meta_size: int) -> StoreBuffer:
        """Hand the pin to a gc'd handle that the returned buffer's memory keeps alive."""
        handle = ffi.gc(ptr, self._make_unpin(oid))
        data = memoryview(ffi.buffer(handle, data_size)).toreadonly()
        metadata = ffi.buffer(ptr + data_size, meta_size)[:] if meta_size else b""
        return StoreBuffer(oid, data, metadata, handle)

    def _make_unpin(self, oid):
        def unpin(_ptr, oid=oid, store=self):
            store._unpin(oid)
        return unpin

    def _unpin(self, oid: bytes) -> None:
        if not self._closed:
            lib.zs_release(self._s, oid)

    def contains(self, oid: bytes) -> bool:
        """True if ``oid`` is sealed (and not deleted) in the store."""
        oid = _id(oid)
        rc = lib.zs_contains(self._s, oid)
        if rc < 0:
            _raise_for(rc, "contains")
        return rc == 1

    def delete(self, oid: bytes) -> None:
        """Delete a sealed object; if pinned, it is hidden now and freed by its last release."""
        oid = _id(oid)
        rc = lib.zs_delete(self._s, oid)
        if rc:
            _raise_for(rc, f"delete {oid.hex()}")

    def set_evictable(self, oid: bytes, evictable: bool) -> None:
        oid = _id(oid)
        rc = lib.zs_set_evictable(self._s, oid, 1 if evictable else 0)
        if rc:
            _raise_for(rc, f"set_evictable {oid.hex()}")

    # ---- values -------------------------------------------------------------------------

    def put(self, oid: bytes, value, metadata: bytes = b"", evictable: bool = True) -> int:
        """Serialize ``value`` straight into a new object and seal it; returns its size.

        Each out-of-band buffer (numpy array data...) is copied once, into the segment.
        """
        return self.put_serialized(oid, serialization.serialize(value), metadata, evictable)

    def put_serialized(self, oid: bytes, ser, metadata: bytes = b"",
                       evictable: bool = True) -> int:
        """Write a ``serialization.SerializedValue`` as a new sealed object; returns its size.

        The fast way to store a value already serialized (e.g. to decide between inline and
        store by its size): big buffers are copied without the GIL and placed to avoid 4K
        aliasing with their source. On any error the object is aborted.
        """
        if not ser.buffers:  # small: the header and the pickle in one memmove
            blob = ser.to_bytes()
            ptr = self._create(oid, len(blob), metadata, evictable)
            ffi.memmove(ptr, blob, len(blob))
            self.seal(oid)
            return len(blob)
        dst = self._create(oid, ser.total_size, metadata, evictable)
        try:
            srcs = [ffi.from_buffer(b) for b in ser.buffers]
            ser.place(_addr(dst), [_addr(p) for p in srcs])
            ser.write_to(ffi.buffer(dst, ser.total_size),
                         copy=lambda off, src: self._copy(dst, off, src))
        except BaseException:
            self.abort(oid)
            raise
        self.seal(oid)
        return ser.total_size

    @staticmethod
    def _copy(base, off: int, src: memoryview) -> None:
        n = src.nbytes
        if n >= _BIG_COPY_BYTES:
            lib.zs_copy(base + off, ffi.from_buffer(src), n)
        else:
            ffi.memmove(base + off, src, n)

    def get(self, oid: bytes):
        """The value of ``oid`` (arrays zero-copy and read-only); ObjectNotFoundError if
        absent. The pin lasts as long as any part of the value uses the segment's memory;
        values of at most SMALL_COPY_BYTES are copied out and unpinned at once."""
        oid = _id(oid)
        data_p = ffi.new("uint8_t **")
        sizes = ffi.new("uint64_t[2]")
        if not self._pin(oid, data_p, sizes):
            raise exc.ObjectNotFoundError(f"object {_check_id(oid).hex()} is not in the store "
                                          f"at {self.path} (or not sealed yet)")
        size = sizes[0]
        if size <= SMALL_COPY_BYTES:
            try:
                raw = ffi.buffer(data_p[0], size)[:]
            finally:
                lib.zs_release(self._s, oid)
            return serialization.deserialize(raw)
        return serialization.deserialize(self._wrap(oid, data_p[0], size, sizes[1]).data)

    # ---- node manager and introspection -------------------------------------------------

    def release_client(self, client_id: int) -> None:
        """Drop every pin of client ``client_id`` (e.g. a dead worker), abort its unsealed
        objects and free its number."""
        rc = lib.zs_release_client(self._s, int(client_id))
        if rc:
            _raise_for(rc, f"release_client {client_id}")

    def clients(self) -> list:
        """[{'client': n, 'pid': pid, 'pins': count}] of the attached clients."""
        out = ffi.new("zs_client_info[]", lib.ZS_MAX_CLIENTS)
        n = lib.zs_clients(self._s, out, lib.ZS_MAX_CLIENTS)
        _raise_for(min(n, 0), "clients")
        return [{"client": out[i].client, "pid": out[i].pid, "pins": out[i].pins}
                for i in range(n)]

    def stats(self) -> dict:
        """Capacity, used/free/evictable/pinned bytes, object counts, evictions, recoveries."""
        st = ffi.new("zs_stats *")
        _raise_for(lib.zs_stats_get(self._s, st), "stats")
        return {name: getattr(st, name) for name in _STATS_FIELDS}

    def check(self) -> int:
        """Walk every structure; the number of violated invariants (0 = healthy)."""
        rc = lib.zs_check(self._s)
        if rc < 0:
            _raise_for(rc, "check")
        return rc

    def blocks(self) -> list:
        """[(offset, size, is_free)] of the allocator's blocks in address order (tests)."""
        n = self.stats()["capacity"] // 128 + 1
        n = min(n, 1 << 20)
        offs, sizes, free = ffi.new("uint64_t[]", n), ffi.new("uint64_t[]", n), ffi.new(
            "uint8_t[]", n)
        count = lib.zs_blocks(self._s, offs, sizes, free, n)
        return [(offs[i], sizes[i], bool(free[i])) for i in range(count)]

    def segment_view(self) -> memoryview:
        """The whole mapping as a memoryview (tests: np.shares_memory against it)."""
        return memoryview(ffi.buffer(self._base, lib.zs_map_size(self._s)))

    def _full_message(self, oid: bytes, size: int) -> str:
        st = self.stats()
        if size > st["capacity"]:
            return (f"object store full: object {oid.hex()} of {size} bytes is larger than the "
                    f"store's capacity of {st['capacity']} bytes; create a larger store")
        return (f"object store full: cannot create object {oid.hex()} of {size} bytes "
                f"(capacity {st['capacity']}, used {st['used_bytes']}, free {st['free_bytes']}, "
                f"pinned {st['pinned_bytes']} bytes in {st['pinned_count']} objects, "
                f"evictable {st['evictable_bytes']}); release or delete objects, or create a "
                f"larger store")


_ERRORS = {
    lib.ZS_ERR_FULL: exc.ObjectStoreFullError,
    lib.ZS_ERR_TABLE_FULL: exc.ObjectStoreFullError,
    lib.ZS_ERR_PINS_FULL: exc.ObjectStoreFullError,
    lib.ZS_ERR_EXISTS: exc.ObjectExistsError,
    lib.ZS_ERR_NOT_FOUND: exc.ObjectNotFoundError,
    lib.ZS_ERR_BAD_SIZE: ValueError,
    lib.ZS_ERR_STATE: exc.ObjectStateError,
    lib.ZS_ERR_NOT_SEALED: exc.ObjectStateError,
    lib.ZS_ERR_CLOSED: exc.ObjectStateError,
    lib.ZS_ERR_BAD_MAGIC: exc.StoreSegmentError,
    lib.ZS_ERR_BAD_VERSION: exc.StoreSegmentError,
    lib.ZS_ERR_CORRUPT: exc.StoreSegmentError,
    lib.ZS_ERR_NO_SPACE: exc.StoreSegmentError,
    lib.ZS_ERR_BAD_CLIENT: ValueError,
}


def _raise_for(rc: int, what: str) -> None:
    """Turn a C status into the matching exception; no-op for ZS_OK."""
    if rc >= 0:
        return
    err = ffi.errno  # before any other C call overwrites it
    msg = f"{what}: {ffi.string(lib.zs_strerror(rc)).decode()}"
    if rc in (lib.ZS_ERR_BAD_MAGIC, lib.ZS_ERR_BAD_VERSION):
        msg += f" (this zactor reads layout version {lib.ZS_LAYOUT_VERSION})"
    if rc == lib.ZS_ERR_SYS:
        raise exc.StoreSegmentError(f"{msg}: {os.strerror(err)}") from OSError(err,
                                                                          os.strerror(err))
    raise _ERRORS.get(rc, exc.ObjectStoreError)(msg)
