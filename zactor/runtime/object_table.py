"""The node manager's table of objects: state, reference counts and who waits for them.

Runs in the node manager. An object's entry exists from the first time anything mentions it
(a reference, a task that returns it, a subscription) until its count of holders drops to
zero once it has a value, when it is freed (deleted from the store, containers release what
they contain). Holders are counted, not listed: each client process that has an ObjectRef to
it counts once (clients report their own 0 <-> 1 transitions), each queued or running task that
takes it as an argument counts once, and each stored object that contains a ref to it counts
once.

Sans-IO: methods return what changed (objects to free, waiters to notify), the node manager
does the sending and the store deletes.
"""

from __future__ import annotations

from collections import deque

#: how many freed ids are remembered, to answer late asks with an error (~100 bytes each: a
#: node manager that remembered 100,000 held ~15 MB more after a burst of tiny tasks)
FREED_MEMORY = 30_000


class Entry:
    __slots__ = ("state", "data", "refs", "waiters", "contained", "producer")

    def __init__(self):
        self.state = None  # None until the value (or an error) exists
        self.data = None
        self.refs = 0
        self.waiters = set()
        self.contained = ()
        self.producer = None  # the task id that will produce it, while pending


class ObjectTable:
    def __init__(self):
        self.entries: dict[bytes, Entry] = {}
        self.freed: set = set()
        self._freed_order: deque = deque()  # the same ids, oldest first

    def entry(self, oid: bytes) -> Entry:
        e = self.entries.get(oid)
        if e is None:
            e = self.entries[oid] = Entry()
        return e

    def was_freed(self, oid: bytes) -> bool:
        return oid in self.freed

    def add_ref(self, oid: bytes, n: int = 1) -> None:
        self.entry(oid).refs += n

    def remove_ref(self, oid: bytes, n: int = 1) -> list:
        """Drop ``n`` holds; returns the entries freed as [(oid, entry)] (containers cascade:
        the ids they contain wait in ``pending``, made only when there are any)."""
        freed = []
        pending = None
        while True:
            e = self.entries.get(oid)
            if e is not None:
                e.refs -= n
                if e.refs <= 0 and e.state is not None and not e.waiters:
                    del self.entries[oid]
                    self._remember_freed(oid)
                    freed.append((oid, e))
                    if e.contained:
                        pending = pending or []
                        pending.extend((c, 1) for c in e.contained)
            if not pending:
                return freed
            oid, n = pending.pop()

    def set_value(self, oid: bytes, state: int, data, contained=()) -> tuple[Entry, list]:
        """Record an object's value; returns (entry, entries freed because nobody holds it).

        A second value for the same object (a retried task whose first result arrived) is
        ignored: objects are immutable.
        """
        e = self.entry(oid)
        if e.state is not None:
            return e, []
        e.state, e.data, e.producer = state, data, None
        e.contained = tuple(contained)
        for c in e.contained:
            self.add_ref(c)
        return e, []

    def collect_unreferenced(self, oid: bytes) -> list:
        """Free ``oid`` if nothing holds it any more (after its value arrived and its waiters
        were answered)."""
        e = self.entries.get(oid)
        if e is None or e.refs > 0 or e.state is None or e.waiters:
            return []
        e.refs = 0
        return self.remove_ref(oid, 0)

    def _remember_freed(self, oid: bytes) -> None:
        if oid in self.freed:
            return
        self.freed.add(oid)
        order = self._freed_order
        order.append(oid)
        if len(order) > FREED_MEMORY:
            self.freed.discard(order.popleft())
