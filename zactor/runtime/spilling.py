"""Spilling: when the store is full of referenced objects, the node manager writes the least
recently used ones to local disk, and brings them back when something reads them.

Runs in the node manager: ``Spilling`` on its loop (which objects, who waits for what), and
one I/O thread (``_SpillIO``, started at the first spill, its own store client) that does
the disk and copy work, so the loop never stalls on a 100 MB write.

The protocol (messages STORE_REQUEST / STORE_REPLY, runtime/messages.py):

* A client whose create fails with ObjectStoreFullError asks ``make_room`` (size). The loop
  picks primary copies, least recently used first (as the node manager sees uses: created,
  subscribed to, passed to a task, restored), until the free, evictable and being-spilled
  bytes cover the request, and queues them; it answers when they are written (or at once,
  with the reason, when nothing is left to spill). The client then retries its create.
* Spilling an object does not delete it: once its file is complete, the loop makes the
  store copy *evictable*. The store's own LRU eviction (csrc/zs_evict.c) then drops it when
  a create needs the room, atomically under the store lock and only while no reader pins
  it: an object a reader holds is never freed under it, and a spilled object that is read
  again before the room is needed costs no restore at all.
* A reader (get, a task's argument, the transfer server) that misses an object the node
  manager reports as in the store asks ``restore`` (oid). Concurrent restores of one object
  share one job. The I/O thread reads the file into a new, evictable store object (the file
  stays: the copy can be evicted and restored again); when even that does not fit, the
  loop spills more first and tries again, up to MAX_RESTORE_TRIES times.
* An object freed (its count at zero) loses its file, also when it is freed while a job on
  it runs (the job's result finds it forgotten and removes what it made).

Files live in ``<session dir>/spill/`` (or ``<object_spilling_directory>/<session name>/``)
and go with the session: at shutdown, and for sessions whose starter died, at the next start
(``local_cluster.remove_stale_segments``).
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from collections import OrderedDict, deque

from zactor.exceptions import ObjectExistsError, ObjectStoreFullError
from zactor.runtime.local_cluster import SPILL_SUBDIR
from zactor.store import ObjectStore
from zactor.store.spill_file import read_object, write_object

MAX_RESTORE_TRIES = 8
ROOM_SLACK_BYTES = 64 << 10  # block headers and alignment: ask a little more than the object
IO_STOP_WAIT_S = 5.0
#: tests only: the I/O thread waits this long before each restore (a restore in progress)
RESTORE_DELAY_ENV = "ZACTOR_TEST_RESTORE_DELAY_S"


def spill_directory(session_dir: str, config: dict) -> str:
    """Where this session's spill files go: ``object_spilling_directory`` (a system config
    key) gets a subdirectory named after the session, so that sessions never share files
    and a dead session's files can be told by its name."""
    base = config.get("object_spilling_directory")
    if not base:
        return os.path.join(session_dir, SPILL_SUBDIR)
    if not isinstance(base, str):
        raise ValueError(f"object_spilling_directory must be a path (str), not "
                         f"{type(base).__name__}")
    return os.path.join(base, os.path.basename(os.path.normpath(session_dir)))


class Spilling:
    """The loop's side. ``send(identity, body)`` sends a STORE_REPLY body to a client."""

    def __init__(self, store, session_dir: str, config: dict, send):
        self.store = store
        #: (oid, reply) -> None when it took the reader, else why not (str); set on a cluster
        #: node (cluster/remote_tasks.py): a copy pulled from another node is evictable, and
        #: one the store evicted is pulled again
        self.refetch = None
        self.enabled = bool(config.get("automatic_object_spilling_enabled", True))
        self.directory = spill_directory(session_dir, config)
        self._send = send
        self.lru: "OrderedDict[bytes, int]" = OrderedDict()  # primary copies not spilled yet
        self.spilled: dict[bytes, tuple[str, int]] = {}  # oid -> (file, size): complete files
        self.spilling: dict[bytes, int] = {}  # oid -> size, queued or being written
        self.restoring: dict[bytes, list] = {}  # oid -> [reply(body) callables]
        self._restore_tries: dict[bytes, int] = {}
        self._room_waiters: list = []  # [job seq to wait for, reply callable, error]
        self._seq = 0  # jobs queued so far (the I/O thread runs them in order)
        self.stats = {"spilled_objects": 0, "spilled_bytes": 0, "spill_file_bytes": 0,
                      "restored_objects": 0, "restored_bytes": 0, "spill_failures": 0,
                      "on_disk_objects": 0, "on_disk_bytes": 0}
        self._io = None
        self._results: deque = deque()  # from the I/O thread
        self._external: deque = deque()  # restore requests from other threads
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def fileno(self) -> int:
        """Readable when jobs finished or another thread asked for a restore (poll it)."""
        return self._wake_r

    # ---- what the node manager tells it ---------------------------------------------------

    def stored(self, oid: bytes, size: int) -> None:
        """A primary copy was sealed in the store: a candidate for spilling."""
        if oid not in self.spilled:
            self.lru[oid] = size

    def touch(self, oid: bytes) -> None:
        """``oid`` is being used: spill others first."""
        if oid in self.lru:
            self.lru.move_to_end(oid)

    def forget(self, oid: bytes) -> None:
        """``oid`` was freed: its file goes (now, or when the job writing it ends)."""
        self.lru.pop(oid, None)
        self.spilling.pop(oid, None)
        entry = self.spilled.pop(oid, None)
        if entry is not None:
            self.stats["on_disk_objects"] -= 1
            self.stats["on_disk_bytes"] -= entry[1]
            _unlink(entry[0])

    # ---- requests ---------------------------------------------------------------------------

    def on_request(self, identity: bytes, msg) -> None:
        op = msg["op"]
        if op == "make_room":
            self.make_room(msg["size"], lambda body: self._send(identity, body))
        elif op == "restore":
            oid = msg["oid"]
            self.restore(oid, lambda body: self._send(identity, body))
        else:
            raise ValueError(f"unknown STORE_REQUEST op {op!r} (make_room, restore)")

    def make_room(self, size: int, reply) -> None:
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"make_room needs a size in bytes >= 0, got {size!r}")
        if not self.enabled:
            reply({"op": "make_room", "error": "object spilling is disabled "
                   "(_system_config automatic_object_spilling_enabled=False)"})
            return
        for oid in self._choose(size):
            self._queue_spill(oid)
        if self.spilling:  # answered when everything queued so far is written
            self._room_waiters.append([self._seq, reply, ""])
        else:
            reply({"op": "make_room", "error": self._nothing_to_spill()})

    def restore(self, oid: bytes, reply) -> None:
        waiting = self.restoring.get(oid)
        if waiting is not None:  # one restore per object, shared by every reader
            waiting.append(reply)
            return
        entry = self.spilled.get(oid)
        if self.store.contains(oid):
            reply({"op": "restore", "oid": oid})
        elif entry is None:
            why = self.refetch(oid, reply) if self.refetch is not None else ""
            if why is None:
                return  # an evicted copy of another node's object: pulled again
            reply({"op": "restore", "oid": oid,
                   "error": "it is neither in the node's object store nor spilled to disk"
                            + (f" ({why})" if why else "")})
        else:
            self.restoring[oid] = [reply]
            self._restore_tries[oid] = 0
            self._queue(("restore", oid, entry[0]))

    def restore_blocking(self, oid: bytes, timeout_s: float) -> str:
        """From another thread (the transfer server): restore ``oid`` and wait; returns ""
        once it is in the store, else why not."""
        done = threading.Event()
        box = []

        def reply(body):
            box.append(body.get("error", ""))
            done.set()

        self._external.append((oid, reply))
        self._wake()
        if not done.wait(timeout_s):
            return f"no restore within {timeout_s:.0f} s"
        return box[0]

    # ---- choosing -------------------------------------------------------------------------

    def _choose(self, size: int) -> list:
        """The least recently used primary copies whose bytes, with what is free, evictable
        or already being spilled, cover ``size`` (at least one unless spills are in flight:
        the create failed, so free space alone did not do, e.g. fragmented)."""
        st = self.store.stats()
        short = size + ROOM_SLACK_BYTES - st["free_bytes"] - st["evictable_bytes"] \
            - sum(self.spilling.values())
        chosen = []
        for oid, n in self.lru.items():
            if short <= 0 and (chosen or self.spilling):
                break
            chosen.append(oid)
            short -= n
        return chosen

    def _nothing_to_spill(self) -> str:
        st = self.store.stats()
        return (f"nothing left to spill: {len(self.spilled)} objects are on disk already and "
                f"{st['pinned_bytes']} bytes in {st['pinned_count']} objects are pinned by "
                f"readers (values still in use)")

    def _queue_spill(self, oid: bytes) -> None:
        size = self.lru.pop(oid)
        self.spilling[oid] = size
        self._queue(("spill", oid, os.path.join(self.directory, oid.hex())))

    def _queue(self, job) -> None:
        if self._io is None:
            self._io = _SpillIO(self.store.path, self.directory, self._post)
            self._io.start()
        self._seq += 1
        self._io.jobs.put((self._seq, *job))

    def _post(self, result) -> None:  # the I/O thread's way back
        self._results.append(result)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass  # a wake-up is pending anyway

    # ---- results ----------------------------------------------------------------------------

    def on_readable(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while self._results:
            seq, kind, oid, *rest = self._results.popleft()
            if kind == "spill":
                self._spilled(seq, oid, *rest)
            else:
                self._restored(oid, *rest)
            self._answer_room_waiters(seq)
        while self._external:
            oid, reply = self._external.popleft()
            self.restore(oid, reply)

    def _spilled(self, seq: int, oid: bytes, path: str, file_bytes: int, error: str) -> None:
        size = self.spilling.pop(oid, None)
        if size is None:  # freed while it was written
            if not error:
                _unlink(path)
            return
        if error:
            self.lru[oid] = size
            self.lru.move_to_end(oid, last=False)
            self.stats["spill_failures"] += 1
            for waiter in self._room_waiters:
                if waiter[0] >= seq and not waiter[2]:
                    waiter[2] = error
            return
        self.spilled[oid] = (path, size)
        st = self.stats
        st["spilled_objects"] += 1
        st["spilled_bytes"] += size
        st["spill_file_bytes"] += file_bytes
        st["on_disk_objects"] += 1
        st["on_disk_bytes"] += size
        try:  # from now on the store may drop it (LRU, when unpinned): the file has it
            self.store.set_evictable(oid, True)
        except KeyError:
            pass  # evicted or deleted meanwhile: the file is what there is

    def _restored(self, oid: bytes, outcome: str, detail) -> None:
        entry = self.spilled.get(oid)
        if entry is None:  # freed while being restored: nothing may stay behind
            if outcome == "ok":
                try:
                    self.store.delete(oid)
                except KeyError:
                    pass
            self._finish_restore(oid, {"error": "it was freed while being restored"})
            return
        if outcome == "ok":
            self.stats["restored_objects"] += 1
            self.stats["restored_bytes"] += detail
            self._finish_restore(oid, {})
        elif outcome == "full" and self._restore_tries[oid] < MAX_RESTORE_TRIES:
            self._restore_tries[oid] += 1
            chosen = self._choose(entry[1])
            if not chosen and not self.spilling:
                self._finish_restore(oid, {"error": f"{detail}; and "
                                           f"{self._nothing_to_spill()}", "full": True})
                return
            for victim in chosen:
                self._queue_spill(victim)
            self._queue(("restore", oid, entry[0]))  # after those spills (jobs run in order)
        else:
            self._finish_restore(oid, {"error": str(detail), "full": outcome == "full"})

    def _finish_restore(self, oid: bytes, body: dict) -> None:
        self._restore_tries.pop(oid, None)
        for reply in self.restoring.pop(oid, ()):
            reply({"op": "restore", "oid": oid, **body})

    def _answer_room_waiters(self, done_seq: int) -> None:
        still = []
        for waiter in self._room_waiters:
            if waiter[0] <= done_seq:
                waiter[1]({"op": "make_room", "error": waiter[2]})
            else:
                still.append(waiter)
        self._room_waiters = still

    # ---- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the I/O thread and remove this session's spill files."""
        if self._io is not None:
            self._io.jobs.put(None)
            self._io.join(IO_STOP_WAIT_S)
            self._io = None
        shutil.rmtree(self.directory, ignore_errors=True)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


class _SpillIO(threading.Thread):
    """Runs spill and restore jobs in order, with its own store client (its pins are its
    own: a job in progress keeps its object's memory valid). Posts one result per job."""

    def __init__(self, store_path: str, directory: str, post):
        super().__init__(name="zactor-spill-io", daemon=True)
        self.store_path = store_path
        self.directory = directory
        self.post = post
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.delay_s = float(os.environ.get(RESTORE_DELAY_ENV, "0") or 0)

    def run(self) -> None:
        store = None
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                seq, kind, oid, path = job
                try:
                    if store is None:
                        store = ObjectStore.attach(self.store_path)
                    if kind == "spill":
                        result = self._spill(store, oid, path)
                    else:
                        result = self._restore(store, oid, path)
                except Exception as exc:  # noqa: BLE001 - reported to whoever waits
                    result = (path, 0, f"{exc}") if kind == "spill" else ("error", f"{exc}")
                self.post((seq, kind, oid, *result))
        finally:
            if store is not None:
                store.close()

    def _spill(self, store, oid: bytes, path: str):
        buf = store.get_buffer(oid)
        if buf is None:
            return path, 0, "it is no longer in the store"
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            return path, write_object(path, buf.data, buf.metadata), ""
        except OSError as exc:
            return path, 0, f"writing {path} failed: {exc}"
        finally:
            buf.release()

    def _restore(self, store, oid: bytes, path: str):
        if self.delay_s:
            time.sleep(self.delay_s)
        if store.contains(oid):
            return "ok", 0
        made = []

        def create(size, metadata):
            # evictable: the file stays, so this copy may be dropped again when room is needed
            made.append(store.create_buffer(oid, size, metadata, evictable=True))
            return made[0]

        try:
            size = read_object(path, create)
        except ObjectStoreFullError as exc:
            return "full", str(exc)
        except ObjectExistsError:
            return ("ok", 0) if store.contains(oid) else ("error", "it is being created")
        except Exception as exc:  # noqa: BLE001 - a bad or missing file
            if made:
                store.abort(oid)
            return "error", f"reading {path} failed: {exc}"
        made[0].release()
        store.seal(oid)
        return "ok", size


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
