"""BorrowedObjects (zactor/cluster/borrowed_objects.py) without sockets: the messages it would
send, the answers it gives to good, unknown and garbage requests, and the waiters it never
leaves hanging when a node dies."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from zactor import protocol
from zactor import serialization as ser
from zactor.cluster import messages as cm
from zactor.cluster.borrowed_objects import PEER_PREFIX, BorrowedObjects
from zactor.exceptions import ObjectLostError
from zactor.runtime import messages as m
from zactor.runtime.object_table import ObjectTable

pytestmark = pytest.mark.timeout(30)

ME, OWNER, HOLDER, ASKER = b"m" * 28, b"o" * 28, b"h" * 28, b"a" * 28
X = b"x" * 28


class Wire:
    """A socket that keeps what is sent on it: [(identity or None, message)]."""

    def __init__(self, sent, routed):
        self.sent, self.routed = sent, routed

    def send_multipart(self, frames):
        identity = frames.pop(0) if self.routed else None
        self.sent.append((identity, protocol.decode(frames)))


class FakeRemote:
    def __init__(self):
        self.sent = []
        self.router = Wire(self.sent, routed=True)
        self.link = SimpleNamespace(peers={n: {"state": "alive"} for n in (OWNER, HOLDER,
                                                                          ASKER)})
        self.wanted = set()
        self.gone = []
        self.nm = SimpleNamespace(node_id=ME, objects=ObjectTable(),
                                  lineage=SimpleNamespace(producer={}),
                                  object_arrived=lambda oid, e: None,
                                  _set_value=self._set_value)
        self.borrowed = BorrowedObjects(self)

    def _peer(self, node_id):
        return Wire(self.sent, routed=False) if \
            self.link.peers.get(node_id, {}).get("state") == "alive" else None

    def _location(self, oid, state, data):
        if state == m.OBJ_STORE:
            return [oid, m.OBJ_REMOTE, [ME, "me:1", data]]
        return [oid, state, data]

    def _set_value(self, oid, state, data):
        self.nm.objects.set_value(oid, state, data)

    def _copy_gone(self, oid, why, holder):
        self.gone.append((oid, why, holder))
        self.nm.objects.entries[oid].state = None  # being re-made by lineage


def _error(triple) -> ObjectLostError:
    assert triple[1] == m.OBJ_ERROR
    return ser.loads(triple[2])


def test_a_garbage_request_gets_an_error_answer_and_the_rest_is_served():
    r = FakeRemote()
    asker = PEER_PREFIX + ASKER
    r.borrowed.on_locate(asker, {"oids": "junk"})
    r.borrowed.on_locate(asker, {"oids": [[1, 2], [X, None, None]]})
    r.borrowed.pump()
    errors = [msg["error"] for _, msg in r.sent if msg["error"]]
    assert "must be a list" in errors[0] and "must be [object id" in errors[1], errors
    answers = [msg["objects"] for _, msg in r.sent if msg["objects"]]
    assert len(answers) == 1 and answers[0][0][0] == X
    exc = _error(answers[0][0])  # unknown here: a clear error, not silence
    assert X.hex() in str(exc) and "does not know it" in str(exc)
    assert all(identity == asker for identity, _ in r.sent)


def test_an_object_being_made_is_answered_when_its_value_exists():
    r = FakeRemote()
    r.nm.objects.add_ref(X)
    r.borrowed.on_locate(PEER_PREFIX + ASKER, {"oids": [[X, None, None]]})
    r.borrowed.pump()
    assert r.sent == []
    r.nm.objects.set_value(X, m.OBJ_STORE, 123)
    r.borrowed.value_known(X, m.OBJ_STORE, 123)
    r.borrowed.pump()
    [(identity, msg)] = r.sent
    assert identity == PEER_PREFIX + ASKER and msg.name == "OBJECT_LOCATIONS"
    assert msg["objects"] == [[X, m.OBJ_REMOTE, [ME, "me:1", 123]]]


def test_a_reported_loss_is_rebuilt_before_the_answer():
    r = FakeRemote()
    r.nm.objects.set_value(X, m.OBJ_REMOTE, [HOLDER, "h:1", 10])
    r.borrowed.on_locate(PEER_PREFIX + ASKER, {"oids": [[X, "pull failed", HOLDER]]})
    assert r.gone and r.gone[0][0] == X and "pull failed" in r.gone[0][1]
    assert X in r.borrowed.requesters  # answered once the re-run's value exists


def test_a_borrower_asks_its_source_and_takes_the_answer():
    r = FakeRemote()
    r.borrowed.learned([X], OWNER)
    r.borrowed.learned([X], ASKER)  # the first source stays
    r.nm.objects.add_ref(X)  # a ref nested in a task's arguments: no location
    r.borrowed.look_up([X])
    r.borrowed.look_up([X])  # asked once
    r.borrowed.pump()
    [(_, msg)] = r.sent
    assert msg.name == "LOCATE_OBJECTS" and msg["oids"] == [[X, None, None]]
    r.borrowed.on_locations(None, {"objects": [[X, m.OBJ_REMOTE, [HOLDER, "h:1", 10]]],
                                   "error": ""})
    assert r.nm.objects.entries[X].state == m.OBJ_REMOTE
    # the holder's copy is lost: forgotten here, the source is told (and re-makes it)
    assert r.borrowed.copy_gone(X, "holder died", HOLDER)
    assert r.nm.objects.entries[X].state is None
    r.borrowed.pump()
    assert r.sent[-1][1]["oids"] == [[X, "holder died", HOLDER]]
    assert not r.borrowed.copy_gone(b"y" * 28, "not borrowed", HOLDER)


def test_the_source_dying_fails_what_waits_for_its_answer():
    r = FakeRemote()
    arrived = []
    r.nm.object_arrived = lambda oid, e: arrived.append((oid, e.state, e.data))
    r.borrowed.learned([X], OWNER)
    r.nm.objects.add_ref(X)
    r.borrowed.look_up([X])
    r.borrowed.node_died(OWNER, "killed")
    [(oid, state, data)] = arrived
    exc = _error([oid, state, data])
    assert oid == X and OWNER.hex()[:16] in str(exc) and "killed" in str(exc)
    assert r.borrowed.outgoing == {} and r.borrowed.asked == {}


def test_the_message_types_round_trip():
    for mtype, body in ((cm.LOCATE_OBJECTS, {"oids": [[X, "why", HOLDER], [X, None, None]]}),
                        (cm.OBJECT_LOCATIONS, {"objects": [[X, m.OBJ_INLINE, b"v"]]})):
        msg = protocol.decode(protocol.encode(mtype, body))
        assert msg.name == mtype.name and all(msg[k] == v for k, v in body.items())


def test_an_object_held_here_is_not_learned_from_a_peer():
    """A passes its own object to C, C passes it back in a task A runs: A must not make C
    its source (each would wait for the other's answer)."""
    r = FakeRemote()
    r.nm.objects.set_value(X, m.OBJ_REMOTE, [HOLDER, "h:1", 10])
    r.borrowed.learned([X], ASKER)
    assert X not in r.borrowed.sources
    assert not r.borrowed.copy_gone(X, "holder died", HOLDER)  # the caller's lineage decides


def test_a_source_whose_row_is_not_read_yet_is_asked_once_it_is():
    """A node that joined a moment ago may get a task before it has read the origin's row:
    unknown is not dead."""
    r = FakeRemote()
    del r.link.peers[OWNER]
    r.borrowed.learned([X], OWNER)
    r.nm.objects.add_ref(X)
    r.borrowed.look_up([X])
    r.borrowed.pump()
    assert r.sent == [] and r.nm.objects.entries[X].state is None
    r.link.peers[OWNER] = {"state": "alive"}
    r.borrowed.pump()
    [(_, msg)] = r.sent
    assert msg.name == "LOCATE_OBJECTS" and msg["oids"] == [[X, None, None]]
