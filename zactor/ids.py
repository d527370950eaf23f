"""Binary identifiers, laid out as Ray's so that lineage re-execution re-creates the same ids.

    JobID     4 bytes   counter assigned by the control store
    ActorID  16 bytes   12 unique bytes + JobID
    TaskID   24 bytes    8 unique bytes + ActorID (nil actor part for plain tasks)
    ObjectID 28 bytes   TaskID of the creating task + 4-byte little-endian index

An object's index says how it was made: the i-th return value of a task has index i (1-based),
the i-th ``put`` inside a task has index ``PUT_INDEX_FLAG | i``. A task re-executed from its
lineage has the same TaskID, so its returns and puts get the same ObjectIDs again.
"""

from __future__ import annotations

import os
import struct

JOB_ID_SIZE = 4
ACTOR_ID_SIZE = 16
TASK_ID_SIZE = 24
OBJECT_ID_SIZE = 28
PUT_INDEX_FLAG = 0x8000_0000
_INDEX = struct.Struct("<I")


class BaseID:
    """An immutable binary id; hashable, ordered, printable as hex."""

    __slots__ = ("_bytes", "_hash")
    SIZE = 0

    def __init__(self, id_bytes: bytes):
        if not isinstance(id_bytes, (bytes, bytearray, memoryview)):
            raise TypeError(f"{type(self).__name__} needs bytes, got {type(id_bytes).__name__}")
        id_bytes = bytes(id_bytes)
        if len(id_bytes) != self.SIZE:
            raise ValueError(f"{type(self).__name__} must be {self.SIZE} bytes, "
                             f"got {len(id_bytes)}")
        self._bytes = id_bytes
        self._hash = hash(id_bytes)

    @classmethod
    def from_random(cls):
        return cls(os.urandom(cls.SIZE))

    @classmethod
    def from_hex(cls, hex_id: str):
        return cls(bytes.fromhex(hex_id))

    @classmethod
    def nil(cls):
        return cls(b"\xff" * cls.SIZE)

    def is_nil(self) -> bool:
        return self._bytes == b"\xff" * self.SIZE

    def binary(self) -> bytes:
        return self._bytes

    def hex(self) -> str:
        return self._bytes.hex()

    def __bytes__(self):
        return self._bytes

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return type(other) is type(self) and other._bytes == self._bytes

    def __lt__(self, other):
        return self._bytes < other._bytes

    def __repr__(self):
        return f"{type(self).__name__}({self.hex()})"

    def __reduce__(self):
        return (type(self), (self._bytes,))


class JobID(BaseID):
    __slots__ = ()
    SIZE = JOB_ID_SIZE

    @classmethod
    def from_int(cls, value: int):
        return cls(struct.pack("<I", value))

    def int(self) -> int:
        return struct.unpack("<I", self._bytes)[0]


class ActorID(BaseID):
    __slots__ = ()
    SIZE = ACTOR_ID_SIZE

    @classmethod
    def of(cls, job_id: JobID):
        return cls(os.urandom(ACTOR_ID_SIZE - JOB_ID_SIZE) + job_id.binary())

    def job_id(self) -> JobID:
        return JobID(self._bytes[-JOB_ID_SIZE:])


class TaskID(BaseID):
    __slots__ = ()
    SIZE = TASK_ID_SIZE

    @classmethod
    def for_task(cls, job_id: JobID, actor_id: ActorID | None = None):
        actor_part = actor_id.binary() if actor_id is not None else (
            b"\xff" * (ACTOR_ID_SIZE - JOB_ID_SIZE) + job_id.binary())
        return cls(os.urandom(TASK_ID_SIZE - ACTOR_ID_SIZE) + actor_part)

    @classmethod
    def for_driver(cls, job_id: JobID):
        return cls(b"\x00" * (TASK_ID_SIZE - JOB_ID_SIZE) + job_id.binary())

    def actor_id(self) -> ActorID:
        return ActorID(self._bytes[-ACTOR_ID_SIZE:])

    def job_id(self) -> JobID:
        return JobID(self._bytes[-JOB_ID_SIZE:])


class ObjectID(BaseID):
    __slots__ = ()
    SIZE = OBJECT_ID_SIZE

    @classmethod
    def for_return(cls, task_id: TaskID, index: int):
        """The ``index``-th (1-based) return value of ``task_id``."""
        if not 1 <= index < PUT_INDEX_FLAG:
            raise ValueError(f"return index must be in [1, {PUT_INDEX_FLAG}), got {index}")
        return cls(task_id.binary() + _INDEX.pack(index))

    @classmethod
    def for_put(cls, task_id: TaskID, put_index: int):
        """The ``put_index``-th (1-based) object that ``task_id`` stored with ``put``."""
        if not 1 <= put_index < PUT_INDEX_FLAG:
            raise ValueError(f"put index must be in [1, {PUT_INDEX_FLAG}), got {put_index}")
        return cls(task_id.binary() + _INDEX.pack(PUT_INDEX_FLAG | put_index))

    def task_id(self) -> TaskID:
        return TaskID(self._bytes[:TASK_ID_SIZE])

    def index(self) -> int:
        return _INDEX.unpack_from(self._bytes, TASK_ID_SIZE)[0] & ~PUT_INDEX_FLAG

    def is_put(self) -> bool:
        return bool(_INDEX.unpack_from(self._bytes, TASK_ID_SIZE)[0] & PUT_INDEX_FLAG)

    def is_return(self) -> bool:
        return not self.is_put()


class NodeID(BaseID):
    __slots__ = ()
    SIZE = 28


class WorkerID(BaseID):
    __slots__ = ()
    SIZE = 28


class PlacementGroupID(BaseID):
    __slots__ = ()
    SIZE = 18
