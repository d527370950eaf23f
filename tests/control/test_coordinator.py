"""The coordinator's membership rules (sans-IO) and its restart from its own SQLite."""

from __future__ import annotations

from zactor.control.coordinator import REPORT_TRUST_MS, Announce, CoordinatorState, Tell
from zactor.net.liveness import DEAD_AFTER_MS


def tells(out):
    return {t.replica_id: t.body for t in out if isinstance(t, Tell)}


def test_replicas_fill_shards_and_join_at_the_tail():
    c = CoordinatorState(2, 2)
    for i in range(4):
        out = c.register(f"r{i}", f"a{i}", f"p{i}", 0.0, "inc")
        assert any(isinstance(x, Announce) for x in out)
    assert sorted(len(ch) for ch in c.chains) == [2, 2]
    first, second = c.chains[0]
    assert c.replicas[second][2] == 0
    out = c.register("r9", "a9", "p9", 0.0, "inc")
    body = tells(out)["r9"]
    assert body["assign"] and body["wipe"] and c.chains[body["shard"]][-1] == "r9"


def test_repeated_register_of_the_same_process_changes_nothing():
    c = CoordinatorState(1, 1)
    c.register("r0", "a", "p", 0.0, "inc-1")
    epoch = c.epochs[0]
    out = c.register("r0", "a", "p", 0.0, "inc-1")
    assert c.epochs[0] == epoch and not any(isinstance(x, Announce) for x in out)
    c.register("r0", "a2", "p2", 0.0, "inc-2")  # a restart: out and back in
    assert c.chains[0] == ["r0"] and c.epochs[0] > epoch


def test_missed_heartbeats_remove_a_replica():
    c = CoordinatorState(1, 3)
    for i in range(3):
        c.register(f"r{i}", "a", "p", 0.0, str(i))
        c.heartbeat(f"r{i}", 0.0, ready=True)
    c.heartbeat("r0", DEAD_AFTER_MS, True)
    c.heartbeat("r2", DEAD_AFTER_MS, True)
    out = c.tick(DEAD_AFTER_MS + 1)
    assert c.chains[0] == ["r0", "r2"] and any(isinstance(x, Announce) for x in out)


def test_losing_the_last_caught_up_member_empties_the_chain_until_it_returns():
    c = CoordinatorState(1, 2)
    c.register("r0", "a", "p", 0.0, "0")
    c.register("r1", "a", "p", 0.0, "1")   # a joiner, not caught up yet
    c.remove("r0")
    assert c.chains[0] == []
    assert tells(c.register("r7", "a", "p", 0.0, "7"))["r7"]["shard"] == -1  # must wait
    body = tells(c.register("r0", "a", "p", 0.0, "0b"))["r0"]
    assert body["shard"] == 0 and not body["wipe"]  # the former member restarts with its data


def test_a_non_member_heartbeat_is_told_to_register_again():
    c = CoordinatorState(1, 1)
    assert tells(c.heartbeat("ghost", 0.0))["ghost"]["shard"] == -1


def test_saved_state_round_trips():
    c = CoordinatorState(2, 1)
    c.register("r0", "a", "p", 0.0, "0")
    c.register("r1", "b", "q", 0.0, "1")
    d = CoordinatorState(2, 1, c.saved())
    assert d.config() == c.config() and d.ready == c.ready


def test_a_silent_last_caught_up_member_is_kept():
    # removing it could only empty the chain: it may be slow, not dead (a closed connection
    # removes a dead one); a joiner that is not caught up does not count
    c = CoordinatorState(1, 2)
    c.register("r0", "a", "p", 0.0, "0")
    c.heartbeat("r0", 0.0, ready=True)
    c.register("r1", "a", "p", 0.0, "1")
    c.heartbeat("r1", DEAD_AFTER_MS * 3, ready=False)
    c.tick(DEAD_AFTER_MS * 3)
    assert c.chains[0] == ["r0", "r1"]
    c.heartbeat("r1", DEAD_AFTER_MS * 3, ready=True)  # caught up: r0 is no longer the last
    c.tick(DEAD_AFTER_MS * 3 + 1)
    assert c.chains[0] == ["r1"]


def test_a_failure_report_does_not_remove_the_last_caught_up_member():
    # client timeouts under load report the last caught-up member: removing it emptied the
    # chain (a 10-minute chaos run's control store stopped answering that way); a quiet
    # joiner that is not caught up is still removed on a report
    c = CoordinatorState(1, 2)
    c.register("r0", "a", "p", 0.0, "0")
    c.heartbeat("r0", 0.0, ready=True)
    c.register("r1", "a", "p", 0.0, "1")
    quiet = REPORT_TRUST_MS + 1
    assert c.reported_failed("r0", quiet) == []
    assert c.chains[0] == ["r0", "r1"]
    assert any(isinstance(x, Announce) for x in c.reported_failed("r1", quiet))
    assert c.chains[0] == ["r0"]
    c.register("r2", "a", "p", quiet, "2")
    c.heartbeat("r2", quiet, ready=True)  # caught up: r0 is no longer the last one
    assert c.reported_failed("r0", quiet + REPORT_TRUST_MS + 1) != []
    assert c.chains[0] == ["r2"]
    assert c.reported_failed("r2", quiet + 1) == []  # not quiet long enough: a report alone


def test_a_learner_is_given_time_to_copy_and_becomes_the_tail_in_a_new_epoch():
    from zactor.control.coordinator import LEARNER_DEAD_AFTER_MS

    c = CoordinatorState(1, 2)
    c.register("r0", "a", "p", 0.0, "0")
    c.register("r1", "a", "p", 0.0, "1")  # a joiner: a learner after the tail
    (_epoch, members), = c.config()
    assert [(m[0], m[3]) for m in members] == [("r0", True), ("r1", False)]
    c.heartbeat("r0", 5 * DEAD_AFTER_MS, True)
    c.tick(5 * DEAD_AFTER_MS)  # silent while it installs a snapshot: kept
    assert c.chains[0] == ["r0", "r1"]
    epoch = c.epochs[0]
    out = c.heartbeat("r1", 6 * DEAD_AFTER_MS, True)  # caught up
    assert c.epochs[0] == epoch + 1 and any(isinstance(x, Announce) for x in out)
    assert [m[3] for m in c.config()[0][1]] == [True, True]
    c.heartbeat("r0", LEARNER_DEAD_AFTER_MS, True)
    c.tick(LEARNER_DEAD_AFTER_MS)  # a member now: the usual limit
    assert c.chains[0] == ["r0"]
