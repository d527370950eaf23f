"""zactor's wire protocol: every message any two zactor processes exchange, in one module.

Run by every process. A message is a list of ZeroMQ frames (after any ROUTER identity frames):

    frame 0  header, 10 bytes:  version (u8) | message type (u8) | request id (u64, big endian)
    frame 1  body: a msgpack map (str keys), the type's fields; bytes stay bytes
    frame 2+ optional raw payload frames (bulk bytes that should not be copied into msgpack)

A PUB/SUB notification carries one more frame in front: the topic (raw bytes the subscriber
filters on), so ``frames[0]`` is the topic and ``frames[1:]`` the message above.

Why this shape: the header is fixed-size and parsed without msgpack, so a peer that sends a
well-formed header but a broken body still gets an ``ERROR`` reply naming its request id
(``decode_header`` succeeds, ``decode`` fails). Anything that fails before that is logged and
dropped by the receiver. Bodies are msgpack, never pickle: a hostile frame must not run code.
``decode`` raises ``ProtocolError`` and nothing else, whatever bytes it is given.

Adding a message type (later subsystems add theirs here):

    MY_MSG = define(0x40, "MY_MSG", required=("task_id", "spec"), optional={"retries": 0})

codes 0x01-0x0F are generic, 0x10-0x3F belong to the control store, 0x40-0x7F to the runtime
(tasks, actors, scheduling), 0x80-0xBF to object transfer. ``define`` refuses a reused code or
name, so two subsystems cannot collide silently. Bumping ``PROTOCOL_VERSION`` is needed only
when an existing type changes meaning; new types and new optional fields are compatible.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import msgpack

from zactor.exceptions import ProtocolError

PROTOCOL_VERSION = 1
_HEADER = struct.Struct(">BBQ")
# one packer for every message (packb makes one per call, ~0.6 us): its pack() runs in C
# holding the GIL, so threads cannot interleave in it, and it starts afresh after an error
_packer = msgpack.Packer(use_bin_type=True)
HEADER_SIZE = _HEADER.size
MAX_BODY_BYTES = 256 * 1024 * 1024  # a body larger than this is refused, not parsed


class MessageType:
    """One kind of message: its code on the wire, its name, its body's fields.
    (Plain classes here, not dataclasses: every process imports this module at start, and
    the dataclasses module with what it imports costs ~15 ms of a node's start.)"""

    __slots__ = ("code", "name", "required", "required_set", "optional", "plain_header")

    def __init__(self, code: int, name: str, required: tuple = (), optional=None):
        self.code, self.name = code, name
        self.required, self.optional = tuple(required), dict(optional or {})
        self.required_set = frozenset(self.required)
        #: frame 0 of this type's messages without a request id (most of them): made once,
        #: and recognised by ``decode`` with one dict look-up
        self.plain_header = _HEADER.pack(PROTOCOL_VERSION, code, 0)

    def __repr__(self) -> str:
        return f"MessageType({self.code:#x}, {self.name!r})"


_BY_CODE: dict[int, MessageType] = {}
_BY_NAME: dict[str, MessageType] = {}
_BY_PLAIN_HEADER: dict[bytes, MessageType] = {}


def define(code: int, name: str, required=(), optional=None) -> MessageType:
    """Register a message type; returns it (use its ``code`` when building messages)."""
    if not 0 < code < 256:
        raise ValueError(f"message code {code} out of range 1..255")
    if code in _BY_CODE or name in _BY_NAME:
        raise ValueError(f"message type {name} / code {code:#x} already defined")
    mtype = MessageType(code, name, tuple(required), dict(optional or {}))
    _BY_CODE[code] = mtype
    _BY_NAME[name] = mtype
    _BY_PLAIN_HEADER[mtype.plain_header] = mtype
    return mtype


def message_type(code_or_name) -> MessageType:
    try:
        return _BY_CODE[code_or_name] if isinstance(code_or_name, int) else _BY_NAME[code_or_name]
    except KeyError:
        raise ProtocolError(f"unknown message type {code_or_name!r}") from None


class Message:
    """A decoded message: ``mtype`` (a MessageType), ``req_id``, ``body`` (dict), ``payload``."""

    def __init__(self, mtype: MessageType, req_id: int, body: dict, payload=None):
        self.mtype, self.req_id, self.body = mtype, req_id, body
        self.payload = [] if payload is None else payload

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        return (self.mtype, self.req_id, self.body, self.payload) == \
            (other.mtype, other.req_id, other.body, other.payload)

    __hash__ = None  # mutable, as a dataclass with eq

    def __repr__(self) -> str:
        return f"Message({self.mtype.name}, req_id={self.req_id}, body={self.body!r})"

    @property
    def name(self) -> str:
        return self.mtype.name

    def __getitem__(self, key):
        return self.body[key]

    def get(self, key, default=None):
        return self.body.get(key, default)


_req_ids = itertools.count(1)


def next_request_id() -> int:
    """A process-unique request id (the caller adds its own identity if ids must be global)."""
    return next(_req_ids) & 0xFFFF_FFFF_FFFF_FFFF


def encode(mtype: MessageType, body: dict | None = None, req_id: int = 0,
           payload=()) -> list:
    """Frames for one message. Missing required fields raise ``ProtocolError`` (a caller bug
    caught at the sender, not at the receiver)."""
    body = body or {}
    for name in mtype.required:
        if name not in body:
            raise ProtocolError(f"{mtype.name}: missing field {name!r}")
    try:
        packed = _packer.pack(body)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"{mtype.name}: body cannot be encoded: {exc}") from exc
    head = _HEADER.pack(PROTOCOL_VERSION, mtype.code, req_id) if req_id else mtype.plain_header
    return [head, packed, *payload] if payload else [head, packed]


def decode_header(frame) -> tuple[MessageType, int]:
    """Parse frame 0 alone: (type, request id). Raises ``ProtocolError``."""
    try:
        raw = bytes(frame)
    except TypeError as exc:
        raise ProtocolError("header frame is not bytes") from exc
    if len(raw) != HEADER_SIZE:
        raise ProtocolError(f"header frame is {len(raw)} bytes, expected {HEADER_SIZE}")
    version, code, req_id = _HEADER.unpack(raw)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version}, expected {PROTOCOL_VERSION}")
    mtype = _BY_CODE.get(code)
    if mtype is None:
        raise ProtocolError(f"unknown message type code {code:#x}")
    return mtype, req_id


def decode(frames) -> Message:
    """Parse a whole message (frames after any identity frames). Raises only ``ProtocolError``."""
    if not isinstance(frames, (list, tuple)) or len(frames) < 2:
        raise ProtocolError("a message needs a header frame and a body frame")
    head, raw = frames[0], frames[1]
    mtype = _BY_PLAIN_HEADER.get(head) if head.__class__ is bytes else None
    if mtype is not None:  # the usual header (no request id), without parsing it
        req_id = 0
    else:
        mtype, req_id = decode_header(head)
    if raw.__class__ is not bytes:
        try:
            raw = bytes(raw)
        except TypeError as exc:
            raise ProtocolError("body frame is not bytes") from exc
    if len(raw) > MAX_BODY_BYTES:
        raise ProtocolError(f"{mtype.name}: body of {len(raw)} bytes is too large")
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=True,
                               max_bin_len=MAX_BODY_BYTES, max_str_len=MAX_BODY_BYTES)
    except Exception as exc:  # msgpack raises many types on garbage; all mean the same here
        raise ProtocolError(f"{mtype.name}: body is not msgpack: {exc}") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"{mtype.name}: body is {type(body).__name__}, expected a map")
    if not body.keys() >= mtype.required_set:
        missing = next(name for name in mtype.required if name not in body)
        raise ProtocolError(f"{mtype.name}: missing field {missing!r}")
    if mtype.optional:
        for name, default in mtype.optional.items():
            body.setdefault(name, default)
    return Message(mtype, req_id, body, [bytes(f) for f in frames[2:]] if len(frames) > 2
                   else [])


def pack_value(value: Any) -> bytes:
    """msgpack for stored values (bytes stay bytes)."""
    return msgpack.packb(value, use_bin_type=True)


def unpack_value(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


# ---- generic (0x01-0x0F) ---------------------------------------------------------------------
# ERROR answers any request whose header parsed. ``code`` is one of the ERR_* strings.
ERROR = define(0x01, "ERROR", required=("code", "message"), optional={"epoch": 0})
PING = define(0x02, "PING", optional={"sender": ""})
PONG = define(0x03, "PONG", optional={"sender": ""})
OK = define(0x04, "OK", optional={"value": None})

ERR_MALFORMED = "malformed"      # the body did not parse or lacks fields
ERR_NOT_HEAD = "not_head"        # a write reached a replica that is not its chain's head
ERR_NOT_TAIL = "not_tail"        # a read reached a replica that is not its chain's tail
ERR_NOT_READY = "not_ready"      # the replica is still copying state
ERR_OUT_OF_ORDER = "out_of_order"  # a client's write skips client seqs not yet applied: resend
ERR_UNKNOWN_TYPE = "unexpected"  # a valid type this process does not serve
ERR_LOG_TRUNCATED = "truncated"  # the log no longer reaches back that far: re-read the table

# ---- control store (0x10-0x3F) ---------------------------------------------------------------
# Client -> head. ``ops``: [[client_seq, op, table, key, value-bytes-or-None], ...] where op is
# OP_PUT / OP_DELETE; one WRITE is one SQLite transaction at every replica.
# ``epoch``: the shard epoch the client knows; a replica behind it holds the request until its
# own configuration catches up (instead of refusing it), on every client request type.
WRITE = define(0x10, "WRITE", required=("cid", "ops"), optional={"epoch": 0})
# Head -> client once the tail has logged every op: ``upto`` the highest client_seq covered.
WRITE_ACK = define(0x11, "WRITE_ACK", required=("upto",))
# Client -> tail. READ: one key; SCAN: keys of ``table`` starting with ``prefix``.
READ = define(0x12, "READ", required=("table", "key"), optional={"epoch": 0})
SCAN = define(0x13, "SCAN", required=("table",), optional={"prefix": b"", "limit": 0, "epoch": 0})
# Client -> tail: the committed updates of ``table`` with table-seq > ``after`` (gap repair).
LOG_READ = define(0x14, "LOG_READ", required=("table", "after"),
                  optional={"limit": 10000, "epoch": 0})
# Reply to READ / SCAN / LOG_READ: ``value`` (READ), ``rows`` (SCAN: [[key, value]...];
# LOG_READ: [[tseq, op, key, value]...]), ``tseq`` the table's latest table-seq.
READ_REPLY = define(0x15, "READ_REPLY", optional={"value": None, "found": False, "rows": [],
                                                  "tseq": 0})
# Replica -> successor: log entries [[seq, cid, cseq, op, table, key, value, tseq], ...].
FORWARD = define(0x16, "FORWARD", required=("epoch", "entries"))
# Successor -> predecessor: the tail has logged every entry up to ``upto``.
ACK = define(0x17, "ACK", required=("epoch", "upto"))
# Successor -> predecessor after a configuration change: "I have everything up to last_seq".
NEED_FROM = define(0x18, "NEED_FROM", required=("epoch", "last_seq"))
# Predecessor -> successor when the log no longer reaches back: the whole state.
SNAPSHOT = define(0x19, "SNAPSHOT", required=("epoch", "seq", "rows", "dedup", "tseqs"))
# Client -> tail: many keys of one table; READ_REPLY ``rows`` = [value-or-None, ...] in order.
READ_MANY = define(0x1C, "READ_MANY", required=("table", "keys"), optional={"epoch": 0})
# Tail -> subscribers (PUB, topic = table + b"\0"): committed updates of one table, in tseq
# order, one message per committed batch: ``updates`` [[tseq, op, key, value], ...].
UPDATE = define(0x1A, "UPDATE", required=("table", "updates"))
# Tail -> subscribers (PUB, topic = table + b"\0"): "table's latest tseq", every heartbeat.
BEACON = define(0x1B, "BEACON", required=("table", "tseq"))

# Replica -> coordinator.
REGISTER = define(0x20, "REGISTER", required=("replica_id", "addr", "pub_addr"),
                  optional={"incarnation": "", "last_seq": 0})
# ``ready``: the replica holds everything its chain acknowledged (a joiner: once caught up).
HEARTBEAT = define(0x21, "HEARTBEAT", required=("replica_id",),
                   optional={"epoch": 0, "ready": False})
# Anyone -> coordinator: "replica_id looks dead to me".
REPORT_FAILURE = define(0x22, "REPORT_FAILURE", required=("replica_id",),
                        optional={"reason": ""})
# Anyone -> coordinator: the current configuration, answered with CONFIG.
GET_CONFIG = define(0x23, "GET_CONFIG")
# Coordinator -> everyone (reply, push to replicas, PUB to clients):
#   shards: [[epoch, [[replica_id, addr, pub_addr, ready], ...head to tail]], ...]
#   ``assign``: an answer to REGISTER (or to a heartbeat of a non-member): ``shard`` is the
#   replica's shard (-1: register again later), ``wipe`` whether to drop its state and copy it.
CONFIG = define(0x24, "CONFIG", required=("shards",),
                optional={"pub_addr": "", "assign": False, "shard": -1, "wipe": False})
