"""What the control store holds: its tables, how keys are normalised and spread over shards.

Imported by the client, the replicas and the coordinator. Every table has the same shape
(key bytes -> value bytes, the value usually msgpack); what differs is the meaning:

    nodes      node id -> address, resources, state
    jobs       job id -> driver, start time, state
    functions  function id -> pickled definition (the function table)
    actors     actor id -> creation spec, node, state
    tasks      task id -> spec (lineage: what re-creates the task's objects)
    objects    object id -> locations and size
    kv         anything else (named actors, cluster metadata, user kv)
"""

from __future__ import annotations

import zlib

TABLES = ("nodes", "jobs", "functions", "actors", "tasks", "objects", "kv")
OP_PUT = 1
OP_DELETE = 2
OP_ARCHIVE = 3  # move a row to the archive database, or write one there (finished lineage)
# a put that applies only if the row's current fields match (compare-and-set; the chain's
# head decides and logs a plain put, or a put of the unchanged row, so replicas and
# subscribers only ever see puts and deletes): the value is {"row": the new row, and
# conditions: "expect": {field: value} or None (no row), "not_above": {field: number} (a row
# whose field is greater is left alone)}
OP_PUT_IF = 4


def check_table(table: str) -> str:
    if table not in TABLES:
        raise ValueError(f"unknown control-store table {table!r}; tables: {', '.join(TABLES)}")
    return table


def key_bytes(key) -> bytes:
    """Keys are bytes on the wire and in SQLite; str keys are UTF-8 encoded."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    binary = getattr(key, "binary", None)  # zactor.ids.*ID
    if binary is not None:
        return binary()
    raise TypeError(f"control-store keys are bytes, str or ids, not {type(key).__name__}")


def shard_of(table: str, key: bytes, num_shards: int) -> int:
    """The shard holding (table, key): a stable hash (crc32, the same in every process)."""
    if num_shards == 1:
        return 0
    return zlib.crc32(key, zlib.crc32(table.encode())) % num_shards


def topic(table: str) -> bytes:
    """The PUB/SUB topic of a table's updates and beacons."""
    return table.encode() + b"\0"
