"""Messages between the nodes of a cluster and the global scheduler (codes 0x60-0x7F of the
runtime's range in zactor.protocol), and the control-store rows they rely on.

Sockets (all TCP, CURVE-authenticated when the cluster has keys, see zactor/net/security.py):

    node manager  ROUTER  node_port       peers' DEALERs (forwarded tasks, results, frees)
                                          and the global scheduler's DEALER (decisions)
    scheduler     ROUTER  scheduler_port  every node manager's DEALER (spilled tasks, PGs)
    transfer      ROUTER  transfer_port   object bytes (zactor/transfer/, codes 0x80-0xBF)

Control-store rows (values msgpack):

    nodes[node_id] = {node_id, incarnation, host, node_port, transfer_port, ipc_address,
                      resources_total {name: amount}, resources_available {...},
                      queue_len, store_used, store_capacity, state: "alive" | "dead",
                      started_at, reason (when dead)}
        written by the node at registration and at every heartbeat (HEARTBEAT_INTERVAL_S);
        the global scheduler marks a node "dead" after missed heartbeats (by the time *it*
        last received one, so clocks need not agree) and the update is the death notice
        every subscriber gets.
    kv[b"cluster:scheduler"] = {host, port, pid, started_at}   where the scheduler listens
    kv[b"pg:" + pg_id] = {pg_id, bundles [{res}], strategy, state, nodes [node_id per bundle]}

Additions by the global scheduler (zactor/scheduling/scheduler_main.py), all optional:

    nodes rows may carry ``bandwidth`` (bytes/s the node pulls remote objects at, default
        1e9) and ``avg_task_s`` (its measured mean task duration, default 0.01 s): the
        scheduler's waiting-time estimate uses them.
    pg rows also carry ``name``, ``created_at`` and ``reason``; ``state`` is "pending" (not
        placed yet: retried whenever a node joins or frees resources), "created" (every bundle
        reserved), "rescheduling" (a bundle's node died; ``nodes`` has None there until it is
        placed again) or "removed"; ``pg_id`` is bytes (a str id is UTF-8 encoded).
    PLACE reasons start with a code: "placed: ...", "infeasible: ..." (no alive node can hold
        it now: the origin keeps the task; the scheduler sends another PLACE, req_id 0, when a
        node that fits appears, and the origin also re-sends the SPILL every few seconds since a
        restarted scheduler forgot it) or "failed: ..." (never placeable: hard affinity to a dead
        or unknown node, a removed placement group, a bundle too small, a malformed entry
        ("failed: malformed task: ...", the rest of its SPILL is still placed): fail the task;
        except "failed: ...: unknown node" (UNKNOWN_NODE: a node that exists may not be read
        yet, it just joined or the deciding view just started), asked again for a while).
        A SPILL whose ``tasks`` is not a list of maps with ``task_id`` is answered ERROR.
    CREATE_PG is answered OK {value: the pg row} (state "created" or "pending", with ``reason``
        naming why it does not fit yet), or ERROR "malformed" for bad bundles / strategy.
        Re-sending a CREATE_PG for an existing pg_id returns its row (resends are harmless).
    REMOVE_PG is answered OK {value: the pg row, state "removed"} (ERROR when unknown).
    ERROR codes from the scheduler: "malformed" (the request is wrong: do not resend it),
        "unexpected" (a type it does not serve), "unavailable" (the control store did not
        answer: resend later), "internal" (a scheduler bug, logged there: resend later).
    GET_PG (below) reads pg rows through the scheduler (drivers without a control-store client).
    FENCED is also sent scheduler -> node manager when a node it declared dead writes a row.
"""

from __future__ import annotations

from zactor.protocol import define

#: the detail ending a "failed" PLACE for hard affinity to a node the deciding view has no row
#: for (see PLACE reasons below; cluster/remote_tasks.py asks again for AFFINITY_GRACE_S)
UNKNOWN_NODE = "unknown node"

#: a node writes its row this often; the scheduler declares it dead after
#: NODE_DEATH_TIMEOUT_S without one (both configurable: a busy 2-core machine running 4
#: nodes under faults needs a longer timeout than an idle one)
HEARTBEAT_INTERVAL_S = 0.1
NODE_DEATH_TIMEOUT_S = 0.9  # 9 missed heartbeats: a silent host is known dead within 1 s
#: the origin re-sends a SPILL it got no PLACE for after SPILL_RESEND_S (the scheduler may have
#: restarted: re-read kv cluster:scheduler first), and re-sends the SPILL of a task answered
#: "infeasible" every INFEASIBLE_RESPILL_S (a restarted scheduler forgot the tasks it kept)
SPILL_RESEND_S = 1.0
INFEASIBLE_RESPILL_S = 5.0

# node manager -> scheduler: tasks that do not fit locally (or that name a strategy the
#   local scheduler cannot decide). tasks: [{task_id, resources {name: amount}, strategy,
#   deps [[oid, size_bytes, [node_id...]]...], origin node_id}]; strategy is None
#   ("DEFAULT"), "SPREAD", ["node", node_id, soft], or ["pg", pg_id, bundle_index]
SPILL = define(0x60, "SPILL", required=("tasks",))
# scheduler -> node manager: where each task goes: [[task_id, node_id | None, reason]];
#   None: no node fits now (infeasible: the origin warns and keeps it until one joins)
PLACE = define(0x61, "PLACE", required=("decisions",))
# node manager -> node manager: run these tasks for their origin. tasks: [[spec bytes,
#   [[oid, state, data, [contained oid...]]...] args already resolved, or OBJ_REMOTE
#   locations to pull, with the refs inside each value (the executor asks the origin where
#   those, and the refs nested in the spec's ``held``, are: LOCATE_OBJECTS)]]
FORWARD_TASKS = define(0x62, "FORWARD_TASKS", required=("tasks",),
                       optional={"functions": []})
# node manager -> origin node manager: results of forwarded tasks:
#   [[task_id, [[oid, state, data, [contained oid...]]...], flags, covered]]
#   (OBJ_REMOTE data: [node_id, transfer address, size]); covered, for an actor call only:
#   [actor id, the origin's last call the actor's last checkpoint includes] or None
#   (cluster/actor_failover.py: callers trim their replay log). objects: [[oid, state,
#   data]] of the objects the results contain refs to (a put inside the task), as far as
#   they exist: those in the executor's store are kept there for the origin until it frees
#   them. flags 0: it ran (an argument the executor cannot fetch is asked of the origin with
#   LOCATE_OBJECTS, below, while the task waits: it never comes back unrun). flags
#   STALE_INCARNATION: an actor call refused, not run, because the actor's home holds another
#   incarnation than the call names (cluster/actor_incarnations.py); the results slot holds
#   [the home's incarnation (or of its retired copy), why]; the origin re-sends it to the
#   live one. (Flag 1, ARG_LOST, is retired: lost arguments are located, not returned.)
REMOTE_DONE = define(0x63, "REMOTE_DONE", required=("done",), optional={"objects": []})
STALE_INCARNATION = 2
# origin -> holder: drop these objects' copies (their last reference is gone)
FREE_OBJECTS = define(0x64, "FREE_OBJECTS", required=("oids",))
# driver/NM -> scheduler: create / remove a placement group (answered with OK {value})
CREATE_PG = define(0x65, "CREATE_PG", required=("pg_id", "bundles", "strategy"),
                   optional={"name": ""})
REMOVE_PG = define(0x66, "REMOVE_PG", required=("pg_id",))
# scheduler -> node manager: reserve (or release) bundles of a placement group on this node
#   bundles: [[bundle_index, {name: amount}]]
RESERVE_BUNDLES = define(0x67, "RESERVE_BUNDLES", required=("pg_id", "bundles"),
                         optional={"release": False})
# node manager -> node manager: a node that was declared dead and is still running learns
#   it (also from its own row); it kills its workers and joins again as a new node
FENCED = define(0x68, "FENCED", required=("node_id", "incarnation"))
# driver -> scheduler: one placement group's row (pg_id) or, with pg_id None, every row:
#   answered OK {value: row | None} / OK {value: {pg_id.hex(): row}}
GET_PG = define(0x69, "GET_PG", optional={"pg_id": None})
# node manager -> node manager: end actor ``aid`` that lives on the receiver, for its owner
#   (``zactor.kill`` of a handle on another node, or the owner's last handle gone: then
#   ``when_idle``, the calls already sent run first, as for a local actor)
KILL_ACTOR_REMOTE = define(0x6A, "KILL_ACTOR_REMOTE", required=("aid", "reason"),
                           optional={"when_idle": False})
# borrower -> the node it learned an object from (the origin of the task that brought it, so
#   the owner or a borrower nearer to it: cluster/borrowed_objects.py): where is each object
#   now? oids: [[oid, why, holder node id]]; why and holder are None for a plain look-up
#   (a ref nested in a task's arguments), or say that the copy on ``holder`` could not be
#   fetched (the owner re-makes it by lineage; a borrower asks its own source in turn).
#   Answered with OBJECT_LOCATIONS once each object has a value, or at once with an error.
LOCATE_OBJECTS = define(0x6B, "LOCATE_OBJECTS", required=("oids",))
# answer: objects [[oid, state, data]] as REMOTE_DONE's results (OBJ_REMOTE: [node id,
#   transfer address, size]; OBJ_ERROR: e.g. ObjectLostError naming the object, the node and
#   why, or "not known on node X" for an object the asked node does not hold); error: why a
#   malformed request was refused ("" when none was)
OBJECT_LOCATIONS = define(0x6C, "OBJECT_LOCATIONS", required=("objects",),
                          optional={"error": ""})

# origin -> executor, for tasks forwarded there FORWARD_CHECK_S ago or more and still not
#   reported (REMOTE_DONE): which of them it does not hold. Sent on the DEALER that carried
#   the FORWARD_TASKS, so the executor has handled those first; its answer, TASKS_MISSING,
#   travels behind any REMOTE_DONE it sent before, so a task it finished is never named.
#   The origin schedules the missing ones again (a FORWARD_TASKS or REMOTE_DONE was lost:
#   seen as a chaos-run hang after a link-down of a third node).
TASKS_HELD = define(0x6D, "TASKS_HELD", required=("task_ids",))
TASKS_MISSING = define(0x6E, "TASKS_MISSING", required=("task_ids", "node_id"))
