"""Values to bytes and back: cloudpickle, pickle protocol 5, out-of-band buffers.

Used by every process that puts or gets values (drivers, workers) and by the runtime for
small values that travel inline in messages. One format serves both, so an inline value can
be written to the store unchanged. Its layout (integers little-endian)::

    offset 0   magic  b"ZSV1"
           4   u32    number of out-of-band buffers, n
           8   u64    length of the pickle stream, p
          16   n x (u64 offset, u64 length)   where each buffer lies, from offset 0
    16+16n     the pickle stream (p bytes)
               then each buffer, starting at a multiple of 64

Large contiguous buffers (numpy arrays, bytes-like objects that support protocol 5) are not
copied into the pickle stream: ``serialize`` keeps references to them and ``write_to`` copies
each one exactly once into its final place (a store region), and ``deserialize`` hands the
unpickler slices of the region it was given, so arrays come back without a copy (read-only
when the region is, as a store object is).

cloudpickle is used so lambdas, closures and classes defined in ``__main__`` work in other
processes. A value that cannot be pickled raises ``TypeError`` naming the offending member
(``value['weights'].lock: _thread.lock``), not only its type.
"""

from __future__ import annotations

import pickle
import struct

import cloudpickle

MAGIC = b"ZSV1"
_HEAD = struct.Struct("<4sIQ")
_SPAN = struct.Struct("<QQ")
ALIGN = 64
# Buffers smaller than this stay inside the pickle stream: a separate aligned region costs
# more than the copy saves.
OUT_OF_BAND_MIN_BYTES = 2048
# Copies of at least this size are placed (``place``) so that the destination is not a
# little above the source modulo 4096: glibc's large memcpy then suffers 4K aliasing and
# runs at a third of its speed (measured: 3.4 against 10.6 GB/s with the destination 64
# bytes above the source). Each such buffer reserves this much slack to move in.
ALIAS_MIN_BYTES = 1 << 20
_ALIAS_SLACK = 4096
_CULPRIT_MAX_DEPTH = 6


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class SerializedValue:
    """A value ready to be written: the pickle stream plus references to its big buffers.

    ``total_size`` is the exact number of bytes ``write_to`` fills. Nothing is copied until
    ``write_to``; the referenced buffers must not change before it.
    """

    __slots__ = ("pickled", "buffers", "offsets", "total_size")

    def __init__(self, pickled: bytes, buffers: list):
        self.pickled = pickled
        self.buffers = buffers
        self.offsets = []
        pos = self._table_end()
        for buf in buffers:
            pos = _align(pos)
            self.offsets.append(pos)
            pos += buf.nbytes + (_ALIAS_SLACK if buf.nbytes >= ALIAS_MIN_BYTES else 0)
        self.total_size = pos

    def _table_end(self) -> int:
        return _HEAD.size + _SPAN.size * len(self.buffers) + len(self.pickled)

    def place(self, dst_address: int, src_addresses: list) -> None:
        """Move big buffers within their slack so that no copy runs with its destination
        just above its source modulo 4096 (see ALIAS_MIN_BYTES). Call before ``write_to``
        with the addresses the copies will use; ``total_size`` does not change."""
        pos = self._table_end()
        for i, (buf, src) in enumerate(zip(self.buffers, src_addresses)):
            pos = _align(pos)
            if buf.nbytes >= ALIAS_MIN_BYTES:
                delta = (dst_address + pos - src) % 4096
                if not 1024 <= delta <= 3072:
                    pos += (2048 - delta) % 4096 // ALIGN * ALIGN  # lands in [1985, 2048]
            self.offsets[i] = pos
            pos += buf.nbytes

    def write_to(self, dst, copy=None) -> None:
        """Fill ``dst`` (a writable buffer of at least ``total_size`` bytes).

        ``copy(dst_offset, src)``, when given, copies one out-of-band buffer (the store passes
        a memcpy that runs without the interpreter lock); otherwise slice assignment is used.
        """
        n = len(self.buffers)
        _HEAD.pack_into(dst, 0, MAGIC, n, len(self.pickled))
        pos = _HEAD.size
        for off, buf in zip(self.offsets, self.buffers):
            _SPAN.pack_into(dst, pos, off, buf.nbytes)
            pos += _SPAN.size
        dst[pos:pos + len(self.pickled)] = self.pickled
        for off, buf in zip(self.offsets, self.buffers):
            if copy is not None:
                copy(off, buf)
            else:
                dst[off:off + buf.nbytes] = buf

    def to_bytes(self) -> bytes:
        if not self.buffers:  # the common small case: one concatenation
            return _inline(self.pickled)
        out = bytearray(self.total_size)
        self.write_to(out)
        return bytes(out)


_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})


def _plain(value) -> bool:
    """True for scalars and small flat containers of scalars: values that the C pickler
    writes exactly as cloudpickle would, several microseconds faster."""
    t = type(value)
    if t in _SCALARS:
        return True
    if t not in _CONTAINERS or len(value) > 32:
        return False
    items = list(value.keys()) + list(value.values()) if t is dict else value
    return all(type(v) in _SCALARS for v in items)


SCALAR_MAX_LEN = 4096


def _inline(pickled: bytes) -> bytes:
    """The format above for a value with no out-of-band buffers."""
    return _HEAD.pack(MAGIC, 0, len(pickled)) + pickled


def dumps_scalar(value) -> bytes | None:
    """The bytes ``dumps`` makes for an int, float, bool, None, or a str or bytes of at most
    SCALAR_MAX_LEN characters, made without SerializedValue; None for anything else. Such
    values hold no ObjectRef. (The per-call path: arguments and returns of tiny tasks.)"""
    t = type(value)
    if t not in _SCALARS or (t is str or t is bytes) and len(value) > SCALAR_MAX_LEN:
        return None
    return _inline(pickle.dumps(value, protocol=5))


def serialize(value) -> SerializedValue:
    """Pickle ``value`` (cloudpickle, protocol 5); big contiguous buffers stay out of band.

    Raises TypeError naming the member that cannot be pickled.
    """
    if _plain(value):
        return SerializedValue(pickle.dumps(value, protocol=5), [])
    buffers = []

    def keep(pb: pickle.PickleBuffer):
        try:
            raw = pb.raw()
        except BufferError:  # not contiguous: let pickle copy it in band
            return True
        if raw.nbytes < OUT_OF_BAND_MIN_BYTES:
            return True
        buffers.append(raw)
        return False

    # A bare numpy array without Python objects inside holds no code: the C pickler writes it
    # as cloudpickle would, without cloudpickle's per-object Python hook (35 us -> 10 us).
    t = type(value)
    plain_array = (t.__name__ == "ndarray" and t.__module__ == "numpy"
                   and not value.dtype.hasobject)
    dumps_ = pickle.dumps if plain_array else cloudpickle.dumps
    try:
        pickled = dumps_(value, protocol=5, buffer_callback=keep)
    except Exception as exc:
        raise _unpicklable_error(value, exc) from exc
    return SerializedValue(pickled, buffers)


def dumps(value) -> bytes:
    """``value`` as one bytes object in the format above (for values sent inline)."""
    return serialize(value).to_bytes()


def deserialize(data):
    """Rebuild a value from a buffer in the format above, without copying its buffers.

    ``data`` is any buffer (bytes, a store object's memoryview); the buffers of the value are
    slices of it, so they keep it alive and share its memory and its read-only flag.
    """
    if type(data) is bytes and data[:4] == MAGIC and data[4:8] == b"\0\0\0\0":
        return pickle.loads(memoryview(data)[_HEAD.size:])  # small, no buffers: fast path
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.nbytes < _HEAD.size:
        raise ValueError(f"serialized value too short ({view.nbytes} bytes)")
    magic, n, plen = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise ValueError(f"not a serialized zactor value (magic {bytes(magic)!r})")
    pos = _HEAD.size
    buffers = []
    for _ in range(n):
        off, length = _SPAN.unpack_from(view, pos)
        pos += _SPAN.size
        if off + length > view.nbytes:
            raise ValueError("serialized value truncated: a buffer runs past its end")
        buffers.append(view[off:off + length])
    if pos + plen > view.nbytes:
        raise ValueError("serialized value truncated: the pickle runs past its end")
    return pickle.loads(view[pos:pos + plen], buffers=buffers)


loads = deserialize


def _pickles(obj) -> bool:
    try:
        cloudpickle.dumps(obj, protocol=5)
        return True
    except Exception:
        return False


def _children(obj):
    """(path suffix, child) pairs worth blaming, for the common containers."""
    if isinstance(obj, dict):
        for k, v in list(obj.items())[:1000]:
            yield f"[{k!r}]", v
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(list(obj)[:1000]):
            yield f"[{i}]", v
    else:
        closure = getattr(obj, "__closure__", None)
        code = getattr(obj, "__code__", None)
        if closure and code is not None:
            for name, cell in zip(code.co_freevars, closure):
                try:
                    yield f".<closure {name}>", cell.cell_contents
                except ValueError:
                    pass
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            for k, v in list(attrs.items())[:1000]:
                yield f".{k}", v


def _find_culprit(obj, path: str, depth: int):
    """The deepest member of ``obj`` that fails to pickle (obj itself when none does)."""
    if depth < _CULPRIT_MAX_DEPTH:
        for suffix, child in _children(obj):
            if not _pickles(child):
                return _find_culprit(child, path + suffix, depth + 1)
    return path, obj


def _unpicklable_error(value, exc: Exception) -> TypeError:
    try:
        path, culprit = _find_culprit(value, "value", 0)
    except Exception:  # blaming must never hide the original error
        path, culprit = "value", value
    kind = f"{type(culprit).__module__}.{type(culprit).__qualname__}"
    return TypeError(f"cannot serialize {path} (of type {kind}): {exc}")
