/* zs_internal.h -- the segment's structures and the interfaces between the store's C files.
 *
 * Not part of the public interface. The layout below is the on-segment format of
 * ZS_LAYOUT_VERSION: change any struct and bump the version, so old segments are refused.
 */
#ifndef ZS_INTERNAL_H
#define ZS_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "zstore.h"

#define ZS_MAGIC 0x3145524f54535a5aULL /* "ZZSTORE1" little-endian */
#define ZS_BLOCK_MAGIC 0x5a424c4bU
#define ZS_BLOCK_HDR 64u
#define ZS_MIN_BLOCK 128u
#define ZS_FL_COUNT 64
#define ZS_SL_LOG 2
#define ZS_SL_COUNT (1 << ZS_SL_LOG)
#define ZS_NIL UINT64_MAX
#define ZS_UNREACHED UINT32_MAX

/* Record states; `state` is the commit field (written last when a record comes alive). */
enum { ZS_REC_FREE = 0, ZS_REC_CREATED = 1, ZS_REC_SEALED = 2 };
/* Record flags (truth): ZS_OBJ_NOEVICT from zstore.h, and: */
enum { ZS_F_DELETED = 2 }; /* deleted while pinned: hidden, freed by the last release */

enum { ZS_CLIENT_FREE = 0, ZS_CLIENT_ACTIVE = 1 };

enum {
    ZS_FAULT_NONE = 0, ZS_FAULT_CREATE, ZS_FAULT_GET, ZS_FAULT_RELEASE, ZS_FAULT_DELETE,
    ZS_FAULT_HANG,
};

/* Block header at the start of each block of the data area (64 bytes). */
typedef struct {
    uint64_t size;      /* block bytes, this header included */
    uint64_t prev_size; /* size of the physically previous block, 0 for the first */
    uint64_t next_free; /* free-list links (data-area offsets), ZS_NIL at the ends */
    uint64_t prev_free;
    uint32_t is_free;
    uint32_t record;    /* used blocks: the owning record's number */
    uint32_t magic;
    uint32_t pad[5];
} zs_block;

typedef struct {
    uint8_t id[ZS_ID_SIZE];
    uint32_t state;      /* truth, commit field */
    uint64_t block;      /* truth: data-area offset of the block */
    uint64_t block_size; /* truth */
    uint64_t data_size;  /* truth */
    uint64_t meta_size;  /* truth */
    uint64_t tick;       /* truth: last use, orders the LRU list after recovery */
    uint32_t owner;      /* truth: creating client */
    uint32_t flags;      /* truth: ZS_OBJ_NOEVICT | ZS_F_DELETED */
    uint32_t pin_head;   /* truth: first pin entry + 1, 0 = none */
    uint32_t pins;       /* derived: sum of pin counts */
    uint32_t lru_prev;   /* derived: record + 1, 0 = none */
    uint32_t lru_next;
    uint32_t in_lru;     /* derived */
    uint32_t free_next;  /* derived: record free list */
    uint32_t sort_next;  /* scratch of recovery */
    uint32_t hash;       /* copy of the id's hash */
    uint8_t pad[16];
} zs_record;

typedef struct {
    uint32_t record;     /* the pinned record (ZS_UNREACHED while recovery marks) */
    uint32_t client;
    uint32_t count;      /* truth: > 0 on a live list; 0 = being unlinked */
    uint32_t next;       /* next entry + 1 on the object's list or the free list, 0 = end */
} zs_pin;

typedef struct {
    int32_t pid;
    uint32_t state;
    uint64_t pins;       /* derived */
} zs_client;

typedef struct {
    uint64_t magic;      /* written last by the creator: a half-made segment is refused */
    uint32_t version;
    uint32_t header_size;
    uint64_t total_size;
    uint64_t capacity;   /* data area bytes */
    uint64_t records_off, nrecords;
    uint64_t index_off, nindex;   /* nindex: a power of two >= 2 * nrecords */
    uint64_t pins_off, npins;
    uint64_t data_off;
    uint64_t warm_bytes; /* fixed headroom above high_water; 0 = adaptive (zs_warm.c) */
    int64_t creator_pid;
    pthread_mutex_t lock;
    /* journal: which operation holds the lock, kept for diagnostics after recovery */
    uint32_t op, op_client;
    uint32_t last_recovered_op, pad0;
    /* allocator (derived) */
    uint64_t fl_bitmap;
    uint32_t sl_bitmap[ZS_FL_COUNT];
    uint64_t bins[ZS_FL_COUNT][ZS_SL_COUNT];
    uint64_t free_bytes, used_bytes;
    uint64_t high_water;                 /* derived: end of the highest used block, 0 if none */
    uint64_t commit_end;                 /* derived: highest block end since the last trim */
    uint64_t recent_max;                 /* hint: largest block lately (halved each second) */
    uint64_t recent_top;                 /* hint: highest high_water lately (decays to it) */
    uint64_t given_back;                 /* counter: bytes of pages trimmed (holes included) */
    volatile uint64_t warm_end;          /* the warm-pages thread's populated mark */
    volatile uint64_t trim_gen;          /* bumped by every trim: clients re-check their PTEs */
    /* table (derived) */
    uint32_t rec_free, pin_free;         /* free-list heads, + 1, 0 = empty */
    /* Records and pin entries at or above these were never handed out: they are still the
     * zeros of the fresh file, so creating a store writes (commits) none of the tables.
     * Truth: raised before the handed-out entry can be committed, never lowered. */
    uint32_t rec_hi, pin_hi;
    uint32_t lru_head, lru_tail;         /* + 1, 0 = none */
    uint64_t object_count, sealed_count, pinned_count, pinned_bytes, evictable_bytes;
    uint64_t data_bytes;
    uint64_t tick, evictions, recoveries;
    zs_client clients[ZS_MAX_CLIENTS];
} zs_header;

struct zs_store {
    uint8_t *base;
    uint64_t size;
    zs_header *h;
    zs_record *rec;
    uint32_t *index;
    zs_pin *pins;
    uint8_t *data;
    int client;          /* -1 once detached */
    int fault;
    int owner;           /* this handle created the segment */
    pid_t pid;           /* the process that made this handle (a forked child is not it) */
    pthread_t warm_thread;   /* creator: populate + trim; client: pre-fault its mapping */
    int warm_running;
    volatile int warm_stop;
    pthread_mutex_t warm_mu;  /* the thread naps on warm_cv; zs_warm_stop signals it */
    pthread_cond_t warm_cv;
    volatile uint64_t mapped_end; /* this mapping's page tables are filled below this */
};

#define ZS_BLK(s, off) ((zs_block *)((s)->data + (off)))

/* zs_segment.c */
int zs_lock(zs_store *s, uint32_t op);   /* ZS_OK, or ZS_ERR_CORRUPT if unrecoverable */
void zs_unlock(zs_store *s);
void zs_fault(zs_store *s, int point);   /* test hook: die here if asked to */

/* zs_warm.c: warm pages, pre-faulting and giving freed pages back (see its top comment). */
void zs_warm_populate(zs_store *s, uint64_t from, uint64_t to);
uint64_t zs_warm_headroom(const zs_header *h);
void zs_warm_start(zs_store *s);                   /* creator or client thread; best effort */
void zs_warm_stop(zs_store *s);                    /* join it */
void zs_warm_object(zs_store *s, uint64_t off, uint64_t size); /* pre-fault a new block */

/* zs_alloc.c: the allocator over the data area; no system calls, no heap. */
void zs_alloc_init(zs_store *s);
int zs_alloc(zs_store *s, uint64_t need, uint64_t *off);  /* 0, or -1: no block fits */
void zs_free(zs_store *s, uint64_t off);
void zs_alloc_reset(zs_store *s);                  /* recovery: empty bins, no blocks */
void zs_alloc_place(zs_store *s, uint64_t *cursor, uint64_t *prev, uint64_t off,
                    uint64_t size, uint32_t record); /* recovery: append a used block */
void zs_alloc_finish(zs_store *s, uint64_t cursor, uint64_t prev);
int zs_alloc_check(zs_store *s);

/* zs_table.c: records, hash index, pin lists. */
uint32_t zs_hash(const uint8_t *id);
zs_record *zs_find(zs_store *s, const uint8_t *id);
void zs_index_insert(zs_store *s, uint32_t r);
void zs_index_remove(zs_store *s, uint32_t r);
int zs_rec_take(zs_store *s, uint32_t *r);         /* pop a free record: 0, or -1 */
void zs_rec_free(zs_store *s, uint32_t r);         /* commit FREE, unlink everything derived */
int zs_pin_add(zs_store *s, uint32_t r, uint32_t client);       /* 0, or -1: pool empty */
int zs_pin_drop(zs_store *s, uint32_t r, uint32_t client, int all); /* 0, or -1: none */
void zs_table_init(zs_store *s);
void zs_table_rebuild(zs_store *s);                /* recovery of everything derived */
int zs_table_check(zs_store *s);
uint32_t zs_sort(zs_store *s, uint32_t head, int by_tick); /* merge sort a sort_next list */

/* zs_evict.c: the eviction policy behind a narrow hook (LRU). */
void zs_evict_update(zs_store *s, uint32_t r);     /* re-file r after any change of state */
void zs_evict_touch(zs_store *s, uint32_t r);      /* r was used */
int zs_evict_victim(zs_store *s, uint32_t *r);     /* 0 and the next victim, or -1 */
void zs_evict_rebuild(zs_store *s);
int zs_evict_check(zs_store *s);
int zs_evict_wanted(const zs_record *r);

static inline uint64_t zs_round_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

#endif
