"""Objects a node uses but does not own (the *borrower*'s side), and the answers a node gives
about the objects it handed to others: where each one is now, re-made if its copy was lost.

Runs inside the node manager's loop, for RemoteTasks (cluster/remote_tasks.py). A node learns
of an object it does not own from the node that sent it a task (its *source*): an argument
(with its location), or a ref nested in the arguments or inside an argument's value (with no
location: nothing else would ever tell this node where it is, so it asks at once).

    borrower C                              source A (the task's origin)
    ---LOCATE_OBJECTS [oid, why, holder]--> a value: answered at once (its location)
                                            none yet (running, being re-made): answered when
                                            it exists
                                            "the copy on holder is lost": A re-makes it by
                                            lineage if it owns it, else asks its own source
    <--OBJECT_LOCATIONS [oid, state, data]-
    pulls it from there; the task (or actor call, or get) waiting for it goes on

**Why the source, not the owner.** A ref carries no owner address here. The node that handed
it over either owns it or borrowed it from a node nearer to the owner, and it keeps its own
reference while the borrower can still need the object (the origin holds a forwarded task's
arguments and nested refs until the task's results come back), so asking up the chain always
reaches a node that holds the object's entry, and the owner's lineage (runtime/lineage.py)
re-makes it once however many borrowers ask. The owner dying loses the object (fate sharing,
as in Ray): every borrower still waiting for an answer from it gets ObjectLostError.
"""

from __future__ import annotations

import sys

from zactor import protocol
from zactor import serialization as ser
from zactor.cluster import messages as cm
from zactor.exceptions import ObjectLostError
from zactor.runtime import messages as m

PEER_PREFIX = b"peer:"  # a node's identity on its peers' ROUTERs: PEER_PREFIX + node id


class BorrowedObjects:
    def __init__(self, remote):
        self.remote = remote  # the node's RemoteTasks: peers, locations, lost copies
        self.nm = remote.nm
        self.sources: dict[bytes, bytes] = {}   # borrowed oid -> node it was learned from
        self.asked: dict[bytes, bytes] = {}     # oid -> the node asked, no answer yet
        self.requesters: dict[bytes, set] = {}  # oid -> peer identities waiting for a value
        self.outgoing: dict[bytes, list] = {}   # node id -> [[oid, why, holder]] to send
        self.answers: dict[bytes, list] = {}    # peer identity -> [[oid, state, data]]

    # ---- the borrower's side --------------------------------------------------------------

    def learned(self, oids, source: bytes) -> None:
        """``oids`` came from node ``source`` (before this node made entries for them). An
        object this node owns, holds, makes or borrowed already keeps its own way to its
        value: learning it from every peer that passes it back could make two nodes each
        other's source, each waiting for the other's answer."""
        entries = self.nm.objects.entries
        producer = self.nm.lineage.producer
        for oid in oids:
            e = entries.get(oid)
            if oid in self.sources or oid in producer or \
                    (e is not None and (e.state is not None or e.producer is not None)):
                continue
            self.sources[oid] = source  # new here, or waited for with no way to it

    def look_up(self, oids) -> None:
        """Ask where the borrowed ``oids`` without a value here are (refs nested in a task's
        arguments: nothing else will tell this node)."""
        entries = self.nm.objects.entries
        for oid in oids:
            e = entries.get(oid)
            if oid in self.sources and e is not None and e.state is None and \
                    e.producer is None:
                self._ask(oid, None, None)

    def copy_gone(self, oid: bytes, why: str, holder: bytes) -> bool:
        """The copy of ``oid`` on ``holder`` cannot be fetched. A borrowed object: its value
        is forgotten here and its source asked to re-make it (what waits for it goes on
        waiting); False when it was not borrowed (the caller decides)."""
        if oid not in self.sources:
            return False
        e = self.nm.objects.entries.get(oid)
        if e is not None and e.state == m.OBJ_REMOTE and e.data[0] == holder:
            e.state = e.data = None
            if e.waiters:  # clients subscribed while it was being pulled: pull the new copy
                self.remote.wanted.add(oid)
            self._ask(oid, why, holder)
        return True

    def _ask(self, oid: bytes, why, holder) -> None:
        source = self.sources[oid]
        if why is None and self.asked.get(oid) == source:
            return  # a look-up is on its way already (a loss is always reported)
        if self.remote.link.peers.get(source, {}).get("state") == "dead":
            # (a row not read yet is not dead: this node may have joined a moment ago)
            self._lost(oid, f"the node it was borrowed from ({source.hex()[:16]}), which "
                            f"owns it or can reach its owner, is dead"
                            + (f"; {why}" if why else ""))
            return
        self.asked[oid] = source
        self.outgoing.setdefault(source, []).append([oid, why, holder])

    def on_locations(self, _identity, msg) -> None:
        if msg["error"]:
            print(f"zactor node manager: a peer refused an object look-up: {msg['error']}",
                  file=sys.stderr)
        for item in msg["objects"]:
            oid, state, data = item
            self.asked.pop(oid, None)
            e = self.nm.objects.entries.get(oid)
            if e is None or e.state is not None:
                continue  # freed meanwhile, or its value reached this node another way
            # collected if nothing here holds it any more (a nested ref nobody read)
            self.nm._set_value(oid, state, data)

    def _lost(self, oid: bytes, why: str) -> None:
        e = self.nm.objects.entries.get(oid)
        if e is None or e.state not in (None, m.OBJ_REMOTE):
            return
        e.state, e.data = m.OBJ_ERROR, ser.dumps(ObjectLostError(oid.hex(), reason=why))
        self.nm.object_arrived(oid, e)

    # ---- the source's side (the owner, or a borrower nearer to it) --------------------------

    def on_locate(self, identity, msg) -> None:
        """Answer where each object is (at once when it has a value, else when it gets one);
        a reported loss of the copy the asker was told of is handled first (re-made by
        lineage here, or asked of this node's own source)."""
        items = msg["oids"]
        if not isinstance(items, list):
            self._refuse(identity, f"LOCATE_OBJECTS oids must be a list, not "
                                   f"{type(items).__name__}")
            return
        asker = identity[len(PEER_PREFIX):].hex()[:16]
        entries = self.nm.objects.entries
        for item in items:
            if not (isinstance(item, (list, tuple)) and len(item) == 3 and
                    isinstance(item[0], bytes) and (item[1] is None or isinstance(item[1], str))):
                self._refuse(identity, f"a LOCATE_OBJECTS entry must be [object id, why or "
                                       f"None, holder or None], not {item!r:.80}")
                continue
            oid, why, holder = item
            e = entries.get(oid)
            if e is not None and why is not None and e.state == m.OBJ_REMOTE and \
                    e.data[0] == holder:
                self.remote._copy_gone(oid, f"node {asker} could not fetch it: {why}", holder)
                e = entries.get(oid)
            if e is None:
                self._answer(identity, [oid, m.OBJ_ERROR, ser.dumps(ObjectLostError(
                    oid.hex(), reason=f"node {self.nm.node_id.hex()[:16]}, asked where it "
                                      f"is, does not know it (freed: no reference to it "
                                      f"was left, or never held there)"))])
            elif e.state is None:
                self.requesters.setdefault(oid, set()).add(identity)
                if oid in self.sources and e.producer is None:
                    self._ask(oid, None, None)  # a borrower itself, not told yet either
            else:
                self._answer(identity, self.remote._location(oid, e.state, e.data))

    def value_known(self, oid: bytes, state: int, data) -> None:
        """``oid`` has a value (or an error) here now: answer the peers that asked for it."""
        waiting = self.requesters.pop(oid, None)
        if waiting:
            location = self.remote._location(oid, state, data)
            for identity in waiting:
                self._answer(identity, location)

    def _answer(self, identity: bytes, triple: list) -> None:
        self.answers.setdefault(identity, []).append(triple)

    def _refuse(self, identity: bytes, error: str) -> None:
        self.remote.router.send_multipart([identity, *protocol.encode(
            cm.OBJECT_LOCATIONS, {"objects": [], "error": error})])

    # ---- both ---------------------------------------------------------------------------------

    def pump(self) -> None:
        """Send the look-ups and answers gathered this loop turn, one message per node."""
        for node_id in list(self.outgoing):
            sock = self.remote._peer(node_id)
            if sock is None:
                # its row is not read here yet (this node joined a moment ago): kept until
                # it is; a node declared dead meanwhile fails them (node_died)
                continue
            sock.send_multipart(protocol.encode(cm.LOCATE_OBJECTS,
                                                {"oids": self.outgoing.pop(node_id)}))
        for identity, objects in self.answers.items():
            self.remote.router.send_multipart([identity, *protocol.encode(
                cm.OBJECT_LOCATIONS, {"objects": objects})])
        self.answers.clear()

    def freed(self, oid: bytes) -> None:
        self.sources.pop(oid, None)
        self.asked.pop(oid, None)
        self.requesters.pop(oid, None)

    def node_died(self, node_id: bytes, reason: str) -> None:
        """No request is left hanging: what was asked of the dead node is lost (it owned
        those objects, or was the only way to their owner); its own questions are dropped."""
        self.outgoing.pop(node_id, None)
        identity = PEER_PREFIX + node_id
        self.answers.pop(identity, None)
        for oid in [oid for oid, who in self.requesters.items() if identity in who]:
            self.requesters[oid].discard(identity)
            if not self.requesters[oid]:
                del self.requesters[oid]
        for oid in [oid for oid, asked in self.asked.items() if asked == node_id]:
            del self.asked[oid]
            self._lost(oid, f"the node it was borrowed from ({node_id.hex()[:16]}), which "
                            f"owns it or can reach its owner, died: {reason}")
