/* zstore.h -- zactor's node-local object store: immutable objects in one shared-memory segment.
 *
 * PURPOSE
 *   Every process of a node maps one segment (a file under /dev/shm). The node manager creates
 *   it; workers and drivers attach to it as numbered clients. An object is created (a writable
 *   region), filled by its creator, sealed (immutable from then on), read by any number of
 *   clients without a copy (each read pins it), released, and deleted or evicted.
 *
 * SEGMENT LAYOUT (all references inside the segment are offsets or indexes, never pointers:
 * each process maps the segment at its own address)
 *
 *   +--------------------+ 0
 *   | header             |  magic, layout version, sizes and offsets of the regions below,
 *   |                    |  the robust mutex, allocator bins, LRU ends, counters, clients[256]
 *   +--------------------+ records_off
 *   | records[nrecords]  |  one 128-byte record per object slot: id, state, block, sizes, pins
 *   +--------------------+ index_off
 *   | index[nindex]      |  open-addressing hash index: record number + 1, 0 = empty
 *   +--------------------+ pins_off
 *   | pins[npins]        |  pin entries (record, client, count), linked per object
 *   +--------------------+ data_off (64-byte aligned)
 *   | data area          |  blocks: a 64-byte block header then the payload (data, metadata)
 *   +--------------------+ total_size
 *
 * THE LOCK
 *   One process-shared PTHREAD_MUTEX_ROBUST mutex in the header guards everything except the
 *   payload bytes (which belong to the creator until seal, and are read-only afterwards).
 *   A process that dies holding it leaves state half-updated; the next locker gets EOWNERDEAD
 *   and runs recovery (zs_store.c: zs_recover) before pthread_mutex_consistent. Recovery relies
 *   on one rule, kept by every operation:
 *
 *     TRUTH vs DERIVED. The records (their `state` field is written last, as the commit) and
 *     the pin lists hanging off live records are the truth. Everything else -- the allocator's
 *     block headers and bins, the hash index, the LRU list, the record and pin free lists and
 *     every counter -- is derived and is rebuilt from the truth by recovery. Every operation
 *     changes the truth with a single committing store (a state, a count, or one list link),
 *     so a process killed at any instruction leaves the truth consistent.
 *
 * INVARIANTS (checked by zs_check, which counts the violated ones)
 *   Allocator (zs_alloc.c), over the data area of `capacity` bytes:
 *     A1  blocks tile the area: walking from offset 0 by block size ends exactly at capacity;
 *     A2  every block offset and size is a multiple of 64, every size >= ZS_MIN_BLOCK;
 *     A3  block.prev_size == size of the physically previous block (0 for the first);
 *     A4  no two physically adjacent blocks are both free (coalescing is eager);
 *     A5  a block is on exactly one free list iff it is free, the list of its size class;
 *         the bitmaps have a bit set iff that list is non-empty;
 *     A6  free_bytes + used_bytes == capacity, each the sum over its blocks;
 *     A7  high_water == the end of the highest used block (0 if none), so everything above
 *         it is one free block; high_water <= commit_end <= capacity; warm_end <= capacity.
 *   Warm pages (zs_warm.c): every byte of the data area that is not inside a used block may
 *   read as zeros at any time (a trim punched it), so nothing but block headers may live in
 *   free space, and a trim punches only whole pages above high_water's block header, under
 *   the lock. The layout of a used block's bytes is never touched by warming or trimming.
 *   Table (zs_table.c):
 *     T1  every live record (state CREATED or SEALED) owns exactly one used block, and that
 *         block names the record; block size >= 64 + data_size + metadata_size;
 *     T2  the index holds each live record exactly once, reachable by probing from its hash;
 *     T3  a record's `pins` == the sum of the counts on its pin list; every count > 0;
 *     T4  object_count, pinned_count and the free lists agree with the records; records
 *         and pin entries at or above the high marks rec_hi / pin_hi were never used (zeros)
 *         and the free lists hold exactly the unused ones below them.
 *   Eviction (zs_evict.c):
 *     E1  a record is on the LRU list iff it is SEALED, unpinned, evictable and not deleted;
 *         the list is doubly linked consistently; evictable_bytes is the sum of its blocks.
 *
 * OWNERSHIP
 *   zs_store handles are process-local (malloc'd here, freed by zs_close). The segment
 *   belongs to its creator, which alone runs the warm-pages thread (populates ahead of the
 *   allocator, gives freed pages back) and unlinks the file (zs_unlink). Every attached
 *   handle runs a thread that fills its own page tables over the warm region; zs_detach
 *   joins either thread, so none outlives the mapping. Pointers returned by zs_create_object
 *   / zs_get point into this process's mapping and stay valid until zs_close; a pointer
 *   from zs_get must not be used after the matching zs_release.
 *
 * ERRORS
 *   Conditions a caller can cause return a negative ZS_ERR_* code and, unless said otherwise,
 *   modify nothing. Only a broken internal invariant aborts the process.
 *
 * TEST FAULT POINTS
 *   ZACTOR_STORE_FAULT=<point> in the environment (read at create/attach) makes this process
 *   SIGKILL itself (or hang, for hang_in_lock) while holding the lock in the middle of an
 *   operation: crash_in_lock (= crash_in_create), crash_in_get, crash_in_release,
 *   crash_in_delete, hang_in_lock.
 */
#ifndef ZSTORE_H
#define ZSTORE_H

#include <stddef.h>
#include <stdint.h>

#define ZS_ID_SIZE 28
#define ZS_MAX_CLIENTS 256
#define ZS_ALIGN 64
#define ZS_LAYOUT_VERSION 2

enum {
    ZS_OK = 0,
    ZS_ERR_FULL = -1,          /* no room even after evicting everything evictable */
    ZS_ERR_EXISTS = -2,        /* an object with this id is in the store */
    ZS_ERR_NOT_FOUND = -3,     /* no object with this id */
    ZS_ERR_BAD_SIZE = -4,      /* a size argument is out of range */
    ZS_ERR_STATE = -5,         /* the object's state forbids it (seal twice, abort sealed...) */
    ZS_ERR_TABLE_FULL = -6,    /* every record slot is in use */
    ZS_ERR_CLIENTS_FULL = -7,  /* ZS_MAX_CLIENTS clients are attached */
    ZS_ERR_PINS_FULL = -8,     /* every pin entry is in use */
    ZS_ERR_NOT_SEALED = -9,    /* the object exists but is still being written */
    ZS_ERR_SYS = -10,          /* a system call failed; errno says why */
    ZS_ERR_BAD_MAGIC = -11,    /* the file is not a zactor store (or not initialised) */
    ZS_ERR_BAD_VERSION = -12,  /* the segment has another layout version */
    ZS_ERR_CORRUPT = -13,      /* header fields disagree with each other or with the file */
    ZS_ERR_NO_SPACE = -14,     /* the shm file system has less free space than asked for */
    ZS_ERR_BAD_CLIENT = -15,   /* no such client number */
    ZS_ERR_CLOSED = -16,       /* this handle was detached */
};

enum { ZS_OBJ_NOEVICT = 1 }; /* zs_create_object flag: never evict (a primary copy) */

typedef struct zs_store zs_store;

typedef struct {
    uint64_t capacity;         /* bytes of the data area */
    uint64_t total_size;       /* bytes of the whole segment */
    uint64_t used_bytes;       /* bytes of used blocks (headers and padding included) */
    uint64_t data_bytes;       /* sum of data + metadata sizes of live objects */
    uint64_t free_bytes;
    uint64_t evictable_bytes;  /* blocks of sealed, unpinned, evictable objects */
    uint64_t pinned_bytes;
    uint64_t object_count;     /* live objects (created or sealed) */
    uint64_t sealed_count;
    uint64_t pinned_count;     /* objects with at least one pin */
    uint64_t max_objects;
    uint64_t evictions;
    uint64_t recoveries;       /* times a dead lock holder's state was repaired */
    uint64_t high_water;       /* end of the highest used block (0: none) */
    uint64_t warm_end;         /* the data area below this offset is populated */
    uint64_t clients;          /* attached clients */
    uint64_t headroom;         /* bytes kept warm above high_water now */
    uint64_t commit_end;       /* highest block end since the last trim */
    uint64_t given_back;       /* bytes of pages returned to the OS so far (holes included) */
} zs_stats;

typedef struct {
    int32_t client;
    int32_t pid;
    uint64_t pins;             /* pins this client holds, summed over objects */
} zs_client_info;

/* Create the segment at `path` (which must not exist) with a data area of `capacity` bytes
 * and room for `max_objects` objects (0: derived from capacity). The creator is client 0 and
 * runs a thread that keeps a headroom above the high-water mark populated and gives pages
 * above it back: `warm_bytes` fixes that headroom, 0 makes it adapt (zs_warm.c: 16 MB at
 * idle, twice the largest recent block while big objects come and go).
 * On error nothing is left behind (the file is unlinked). */
int zs_create(const char *path, uint64_t capacity, uint64_t max_objects, uint64_t warm_bytes,
              zs_store **out);
/* Map an existing segment and take the lowest free client number. On error nothing is
 * modified: ZS_ERR_BAD_MAGIC, ZS_ERR_BAD_VERSION, ZS_ERR_CORRUPT, ZS_ERR_CLIENTS_FULL. */
int zs_attach(const char *path, zs_store **out);
/* Stop the warming thread (creator), release this client's pins, abort its unsealed objects,
 * free its client number. The mapping stays until zs_close. Idempotent; in a forked child it
 * only disowns the handle (the client number is the parent's). */
int zs_detach(zs_store *s);
/* zs_detach if needed, unmap, free the handle. */
void zs_close(zs_store *s);
int zs_unlink(const char *path);
int zs_client_id(const zs_store *s);
uint8_t *zs_base(const zs_store *s);     /* start of this process's mapping */
uint64_t zs_map_size(const zs_store *s);

/* Reserve a writable region of data_size + meta_size bytes (metadata right after the data),
 * evicting LRU objects if needed. On error nothing is modified except evicted objects (only
 * when the object then fits, or when everything evictable was needed and it still did not). */
int zs_create_object(zs_store *s, const uint8_t *id, uint64_t data_size, uint64_t meta_size,
                     uint32_t flags, uint8_t **data);
int zs_seal(zs_store *s, const uint8_t *id);     /* CREATED -> SEALED, else ZS_ERR_STATE */
int zs_abort(zs_store *s, const uint8_t *id);    /* free an unsealed object */
/* Pin a sealed object for this client. ZS_ERR_NOT_FOUND, ZS_ERR_NOT_SEALED, ZS_ERR_PINS_FULL
 * modify nothing. */
int zs_get(zs_store *s, const uint8_t *id, const uint8_t **data, uint64_t *data_size,
           uint64_t *meta_size);
int zs_release(zs_store *s, const uint8_t *id);  /* drop one pin of this client */
/* Delete a sealed object. A pinned one is hidden at once and freed by its last release. */
int zs_delete(zs_store *s, const uint8_t *id);
int zs_contains(zs_store *s, const uint8_t *id); /* 1 sealed and not deleted, else 0 */
int zs_set_evictable(zs_store *s, const uint8_t *id, int evictable);
/* Drop every pin of client n, abort its unsealed objects, free its number. */
int zs_release_client(zs_store *s, int client);
int zs_clients(zs_store *s, zs_client_info *out, int max);  /* returns the count */
int zs_stats_get(zs_store *s, zs_stats *out);
/* Walk every structure; return the number of violated invariants (0 = healthy). */
int zs_check(zs_store *s);
/* Debug walk of the blocks in address order: fills up to max entries, returns the count. */
int64_t zs_blocks(zs_store *s, uint64_t *offsets, uint64_t *sizes, uint8_t *is_free,
                  int64_t max);
/* memcpy without the caller's interpreter lock (cffi releases it around calls). */
void zs_copy(void *dst, const void *src, uint64_t n);
const char *zs_strerror(int code);

#endif
