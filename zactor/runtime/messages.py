"""The runtime's message types (codes 0x40-0x7F of zactor.protocol), and the object states
that travel in them.

Clients (the driver and workers) talk to their node manager over one DEALER each; the node
manager's ROUTER answers. Every body is msgpack; task specs and values travel as bytes that
only cluster processes produce (cloudpickle inside, see docs/security.md).

Object state triples ``[object_id, state, data]``, wherever an object's outcome travels:
    OBJ_INLINE  data = the serialized value (small values)
    OBJ_STORE   data = size in bytes; the value is in this node's shared-memory store
    OBJ_ERROR   data = a serialized exception (RayTaskError, WorkerCrashedError, ...)
"""

from __future__ import annotations

from zactor.protocol import define

#: values serialized to at most this many bytes travel inline in messages (Ray's 100 KB)
DEFAULT_INLINE_THRESHOLD_BYTES = 100 * 1024

OBJ_INLINE, OBJ_STORE, OBJ_ERROR = 0, 1, 2
#: between node managers only (never sent to a client): the value is in another node's store,
#: data = [node_id, transfer "host:port", size]; zactor/cluster/remote_tasks.py pulls it
OBJ_REMOTE = 3
#: node manager -> one of its workers only, in EXECUTE: a task queued before this one on the
#: same worker makes the value (a chain, scheduling/local_scheduler.py); data = None
OBJ_PENDING = 4

# client -> node manager: first message of a connection; answered with WELCOME.
#   kind: "driver" | "worker"; worker_id (workers); job_id (drivers, 0: assign one)
#   address: a worker's ROUTER for direct calls (runtime/direct.py)
HELLO = define(0x40, "HELLO", required=("kind", "pid"), optional={"worker_id": b"",
                                                                  "job_id": 0, "address": ""})
#   node_id, store_path, job_id, session_dir, config (dict)
WELCOME = define(0x41, "WELCOME", required=("node_id", "store_path", "job_id"),
                 optional={"session_dir": "", "config": {}, "resources": {}})
# client -> NM: tasks to run and reference changes, batched (core_client.py explains the
#   order). tasks: [spec...]; deltas: [[oid, +1|-1]...]; functions: [[fid, blob]...] not sent
#   before. The submitter holds one reference to each return of its tasks from now on.
#   objects: objects created meanwhile, as in PUT (applied after the +1s, before the tasks)
SUBMIT = define(0x42, "SUBMIT", required=("tasks",), optional={"functions": [], "deltas": [],
                                                               "objects": []})
# client -> NM: objects this client created (put, or a large task argument).
#   objects: [[oid, state, data, contained_oids, held]] held: the client keeps a reference
PUT = define(0x43, "PUT", required=("objects",))
# client -> NM: "tell me when these objects are ready" (answered by OBJECTS as they are)
SUBSCRIBE = define(0x44, "SUBSCRIBE", required=("oids",))
# NM -> client: objects ready: [[oid, state, data]...]
OBJECTS = define(0x45, "OBJECTS", required=("objects",))
# client -> NM: reference count changes [[oid, delta]...] (a client reports 0->1 and 1->0)
REF_DELTA = define(0x46, "REF_DELTA", required=("deltas",))
# NM -> worker: tasks to run: [[spec bytes, [[oid, state, data]...] resolved args]...]
#   functions: [[fid, blob]...] the worker has not been sent before
EXECUTE = define(0x47, "EXECUTE", required=("tasks",), optional={"functions": []})
# worker -> NM: tasks done: [[task_id, [[oid, state, data]...], flags]...]
#   flags: TASK_RETRYABLE (an exception that retry_exceptions covers), TASK_CANCELLED
TASK_DONE = define(0x48, "TASK_DONE", required=("done",))
TASK_RETRYABLE, TASK_CANCELLED = 1, 2
# worker -> NM: the running task waits in get()/wait() (its CPU can be lent) / resumes
BLOCKED = define(0x49, "BLOCKED")
UNBLOCKED = define(0x4A, "UNBLOCKED")
# NM -> worker: hand back the tasks not started (answered by RETURNED task_ids)
RECALL = define(0x4B, "RECALL", required=("task_ids",))
RETURNED = define(0x4C, "RETURNED", required=("task_ids",))
# client -> NM: cancel a task (force: kill its worker)
CANCEL = define(0x4D, "CANCEL", required=("task_id",), optional={"force": False,
                                                                 "recursive": True})
# NM -> worker: raise KeyboardInterrupt in the running task if it is task_id
#   direct: a task pushed to it by a lease holder: the worker itself drops it if queued, or
#   interrupts it (force: exits) if running
INTERRUPT = define(0x4E, "INTERRUPT", required=("task_id",), optional={"direct": False,
                                                                       "force": False})
# client -> NM: cluster information; answered with INFO_REPLY {value}
#   what: "nodes" | "total" | "available"
INFO = define(0x4F, "INFO", required=("what",))
INFO_REPLY = define(0x50, "INFO_REPLY", required=("value",))
# client -> NM: a function's pickled bytes, when a worker asks for one it lacks (rare)
# NM -> any client: the node is shutting down
SHUTDOWN = define(0x51, "SHUTDOWN", optional={"reason": ""})
# client -> NM: goodbye; the NM drops the client's references
BYE = define(0x52, "BYE")
# driver -> NM: the control store is up at ``address`` (host:port of its coordinator)
#   pids: its processes, so the node can tell when they are gone (for cleanup)
SET_GCS = define(0x53, "SET_GCS", required=("address",), optional={"pids": []})
# client -> NM: kill an actor's worker (answered with INFO_REPLY {value: bool})
KILL_ACTOR = define(0x54, "KILL_ACTOR", required=("aid",), optional={"no_restart": True})
# client -> NM: a named actor's id and methods (INFO_REPLY {value: {...} or None})
GET_ACTOR = define(0x55, "GET_ACTOR", required=("name",), optional={"namespace": ""})

# ---- direct calls (runtime/direct.py): caller <-> the actor's worker, no node manager hop ----
# NM -> client: where to send calls of actor ``aid`` straight to its worker; addr "" means
#   "no longer: go through the node manager" (the actor died or is restarting)
ACTOR_ROUTE = define(0x56, "ACTOR_ROUTE", required=("aid", "addr"), optional={"inc": 0})
# caller -> worker (its ROUTER): calls: [[spec, [[oid, state, data]...] resolved args]...]
#   functions: [[fid, blob]...] of tasks' functions not sent to this worker before
DIRECT_CALLS = define(0x57, "DIRECT_CALLS", required=("calls",), optional={"functions": []})
# worker -> caller: results of direct calls [[oid, state, data]...]; refused: task ids the
#   worker did not run (the call named another actor incarnation; the node manager re-queues)
DIRECT_RESULTS = define(0x58, "DIRECT_RESULTS", required=("objects",),
                        optional={"refused": []})
# caller -> leased worker: hand back the direct tasks queued behind the running one (they are
#   stuck behind a long task while another lease is idle); answered like a blocked worker's
DIRECT_BOUNCE = define(0x5D, "DIRECT_BOUNCE")
# TASK_DONE flags of direct calls: the caller already has the results / the call was refused
TASK_DIRECT, TASK_REFUSED = 4, 8
# client -> NM: lease a worker for tasks of resource shape ``res`` (lid: the lease's id, made
#   by the client, 24 bytes like a task id); answered with LEASE_GRANTED when one is free
LEASE_REQUEST = define(0x59, "LEASE_REQUEST", required=("lid", "res"))
# NM -> client: lease ``lid`` is the worker at ``addr``; addr "" means the lease is over
#   (its worker died: the node manager re-runs or fails the tasks it had)
LEASE_GRANTED = define(0x5A, "LEASE_GRANTED", required=("lid", "addr"))
# client -> NM: the client is done with lease ``lid`` (nothing of its is in flight)
LEASE_RETURN = define(0x5B, "LEASE_RETURN", required=("lid",))
# NM -> client: tasks wait for workers here: give back the leases with nothing in flight
LEASES_WANTED = define(0x5C, "LEASES_WANTED")
# worker -> NM, NM -> driver, executor NM -> origin NM (over the peer sockets): lines tasks
#   printed, for the driver of their job (output_relay.py). lines: [[task_id, is_stderr,
#   text, hops]...], text one or more whole lines already prefixed "(function pid=N, ip=H) ",
#   hops: node-to-node relays so far (task_id: the task of its chain the receiver knows)
WORKER_OUTPUT = define(0x70, "WORKER_OUTPUT", required=("lines",))

# ---- spilling (runtime/spilling.py): a client that meets a full store, or misses a spilled
# object, asks its node manager, and waits (with a timeout) for the answer ----
# client -> NM: op "make_room": spill objects so that ``size`` more bytes fit;
#   op "restore": bring the spilled object ``oid`` back into the store
STORE_REQUEST = define(0x5E, "STORE_REQUEST", required=("op",), optional={"size": 0,
                                                                          "oid": b""})
# NM -> client: the answer to STORE_REQUEST (op and oid repeated); error "" means done
#   (room made, object in the store), else why not; full: the cause is a full store
STORE_REPLY = define(0x5F, "STORE_REPLY", required=("op",), optional={"oid": b"", "error": "",
                                                                      "full": False})
