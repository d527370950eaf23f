"""Heartbeat and failure-detection constants, in one place, with their units.

A peer is declared dead when its connection closes (seen through a ZeroMQ socket monitor,
milliseconds) or, for a hung peer whose connection stays open, after HEARTBEAT_LIVENESS
missed heartbeats. The paper's Ray used 100 ms x 100; a control store must reconfigure much
faster than a scheduler declares a node dead, hence the smaller count here.
"""

HEARTBEAT_INTERVAL_MS = 100
HEARTBEAT_LIVENESS = 10            # missed heartbeats before a silent replica is declared dead
DEAD_AFTER_MS = HEARTBEAT_INTERVAL_MS * HEARTBEAT_LIVENESS
POLL_INTERVAL_MS = 10              # the longest a poll loop sleeps between timer checks
CLIENT_ATTEMPT_TIMEOUT_MS = 1000   # a request unanswered this long is resent (config refreshed)
CLIENT_DEFAULT_TIMEOUT_S = 10.0    # a whole call's default deadline
COORDINATOR_STARTUP_GRACE_MS = 2 * DEAD_AFTER_MS  # a restarted coordinator waits this for members
