/* zs_store.c -- the object operations: the life of an object, pins, eviction, recovery.
 *
 *   create ----> CREATED --seal--> SEALED --get--> pinned --release--> SEALED (LRU tail)
 *                   |                 |                                   |
 *                 abort            delete (pinned: hidden, freed by     evicted (LRU head)
 *                   v                 |   the last release)              when create needs
 *                 FREE <--------------+-------------------------------------+ room
 *
 * Every public function takes the lock, checks every caller-caused condition before it
 * modifies anything, and keeps the commit order of zstore.h (TRUTH vs DERIVED).
 */
#include <string.h>

#include "zs_internal.h"

enum { OP_CREATE = 2, OP_SEAL, OP_ABORT, OP_GET, OP_RELEASE, OP_DELETE, OP_CONTAINS, OP_EVICTABLE,
       OP_RELEASE_CLIENT, OP_READ };

#define LOCK_OR_RETURN(s, op)                  \
    do {                                       \
        if ((s)->client < 0)                   \
            return ZS_ERR_CLOSED;              \
        int lrc_ = zs_lock((s), (op));         \
        if (lrc_ != ZS_OK)                     \
            return lrc_;                       \
    } while (0)

void zs_recover(zs_store *s)
{
    zs_table_rebuild(s);
}

/* Make room for `need` bytes by evicting LRU victims. Returns 0 with the block, or
 * ZS_ERR_FULL; evicts nothing when even evicting every candidate could not make enough. */
static int alloc_evicting(zs_store *s, uint64_t need, uint64_t *off)
{
    zs_header *h = s->h;
    if (zs_alloc(s, need, off) == 0)
        return ZS_OK;
    if (h->free_bytes + h->evictable_bytes < need)
        return ZS_ERR_FULL;
    uint32_t victim;
    while (zs_evict_victim(s, &victim) == 0) {
        zs_rec_free(s, victim);
        h->evictions++;
        if (zs_alloc(s, need, off) == 0)
            return ZS_OK;
    }
    return ZS_ERR_FULL;
}

int zs_create_object(zs_store *s, const uint8_t *id, uint64_t data_size, uint64_t meta_size,
                     uint32_t flags, uint8_t **data)
{
    int rc = ZS_OK;
    uint32_t r;
    uint64_t off;
    LOCK_OR_RETURN(s, OP_CREATE);
    zs_header *h = s->h;
    if (data_size > (1ull << 62) || meta_size > (1ull << 62)) {
        rc = ZS_ERR_BAD_SIZE;
        goto out;
    }
    uint64_t need = zs_round_up(ZS_BLOCK_HDR + data_size + meta_size, ZS_ALIGN);
    if (need < ZS_MIN_BLOCK)
        need = ZS_MIN_BLOCK;
    if (zs_find(s, id)) {
        rc = ZS_ERR_EXISTS;
        goto out;
    }
    if (!h->rec_free && h->rec_hi >= h->nrecords) {
        rc = ZS_ERR_TABLE_FULL;
        goto out;
    }
    if (need > h->capacity) {
        rc = ZS_ERR_FULL;
        goto out;
    }
    if ((rc = alloc_evicting(s, need, &off)) != ZS_OK)
        goto out;
    zs_fault(s, ZS_FAULT_CREATE); /* a block is taken, no record names it yet */
    zs_rec_take(s, &r);
    zs_record *rec = &s->rec[r];
    memcpy(rec->id, id, ZS_ID_SIZE);
    rec->hash = zs_hash(id);
    rec->block = off;
    rec->block_size = ZS_BLK(s, off)->size;
    rec->data_size = data_size;
    rec->meta_size = meta_size;
    rec->tick = ++h->tick;
    rec->owner = (uint32_t)s->client;
    rec->flags = flags & ZS_OBJ_NOEVICT;
    rec->pin_head = 0;
    rec->pins = 0;
    rec->in_lru = 0;
    ZS_BLK(s, off)->record = r;
    rec->state = ZS_REC_CREATED; /* commit */
    zs_index_insert(s, r);
    h->object_count++;
    h->data_bytes += data_size + meta_size;
    *data = s->data + off + ZS_BLOCK_HDR;
out:
    zs_unlock(s);
    if (rc == ZS_OK)
        zs_warm_object(s, off, need); /* outside the lock: fills this mapping's page tables */
    return rc;
}

int zs_seal(zs_store *s, const uint8_t *id)
{
    int rc = ZS_OK;
    LOCK_OR_RETURN(s, OP_SEAL);
    zs_record *rec = zs_find(s, id);
    if (!rec) {
        rc = ZS_ERR_NOT_FOUND;
        goto out;
    }
    if (rec->state != ZS_REC_CREATED) {
        rc = ZS_ERR_STATE;
        goto out;
    }
    rec->tick = ++s->h->tick;
    rec->state = ZS_REC_SEALED; /* commit */
    s->h->sealed_count++;
    zs_evict_update(s, (uint32_t)(rec - s->rec));
out:
    zs_unlock(s);
    return rc;
}

int zs_abort(zs_store *s, const uint8_t *id)
{
    int rc = ZS_OK;
    LOCK_OR_RETURN(s, OP_ABORT);
    zs_record *rec = zs_find(s, id);
    if (!rec)
        rc = ZS_ERR_NOT_FOUND;
    else if (rec->state != ZS_REC_CREATED)
        rc = ZS_ERR_STATE;
    else
        zs_rec_free(s, (uint32_t)(rec - s->rec));
    zs_unlock(s);
    return rc;
}

int zs_get(zs_store *s, const uint8_t *id, const uint8_t **data, uint64_t *data_size,
           uint64_t *meta_size)
{
    int rc = ZS_OK;
    LOCK_OR_RETURN(s, OP_GET);
    zs_record *rec = zs_find(s, id);
    if (!rec || (rec->flags & ZS_F_DELETED)) {
        rc = ZS_ERR_NOT_FOUND;
        goto out;
    }
    if (rec->state != ZS_REC_SEALED) {
        rc = ZS_ERR_NOT_SEALED;
        goto out;
    }
    uint32_t r = (uint32_t)(rec - s->rec);
    if (zs_pin_add(s, r, (uint32_t)s->client) != 0) {
        rc = ZS_ERR_PINS_FULL;
        goto out;
    }
    zs_evict_touch(s, r);
    *data = s->data + rec->block + ZS_BLOCK_HDR;
    *data_size = rec->data_size;
    *meta_size = rec->meta_size;
out:
    zs_unlock(s);
    return rc;
}

/* After the last pin of a deleted record went, free it. */
static void free_if_dead(zs_store *s, uint32_t r)
{
    zs_record *rec = &s->rec[r];
    if ((rec->flags & ZS_F_DELETED) && rec->pins == 0)
        zs_rec_free(s, r);
}

int zs_release(zs_store *s, const uint8_t *id)
{
    int rc = ZS_OK;
    LOCK_OR_RETURN(s, OP_RELEASE);
    zs_record *rec = zs_find(s, id);
    if (!rec || zs_pin_drop(s, (uint32_t)(rec - s->rec), (uint32_t)s->client, 0) != 0)
        rc = ZS_ERR_NOT_FOUND; /* not pinned by this client */
    else
        free_if_dead(s, (uint32_t)(rec - s->rec));
    zs_unlock(s);
    return rc;
}

int zs_delete(zs_store *s, const uint8_t *id)
{
    int rc = ZS_OK;
    LOCK_OR_RETURN(s, OP_DELETE);
    zs_record *rec = zs_find(s, id);
    if (!rec || (rec->flags & ZS_F_DELETED)) {
        rc = ZS_ERR_NOT_FOUND;
        goto out;
    }
    if (rec->state != ZS_REC_SEALED) {
        rc = ZS_ERR_STATE;
        goto out;
    }
    uint32_t r = (uint32_t)(rec - s->rec);
    if (rec->pins) {
        rec->flags |= ZS_F_DELETED; /* commit: hidden; the last release frees it */
        zs_evict_update(s, r);
    } else {
        zs_rec_free(s, r);
    }
out:
    zs_unlock(s);
    return rc;
}

int zs_contains(zs_store *s, const uint8_t *id)
{
    LOCK_OR_RETURN(s, OP_CONTAINS);
    zs_record *rec = zs_find(s, id);
    int rc = rec && rec->state == ZS_REC_SEALED && !(rec->flags & ZS_F_DELETED);
    zs_unlock(s);
    return rc;
}

int zs_set_evictable(zs_store *s, const uint8_t *id, int evictable)
{
    int rc = ZS_OK;
    LOCK_OR_RETURN(s, OP_EVICTABLE);
    zs_record *rec = zs_find(s, id);
    if (!rec || (rec->flags & ZS_F_DELETED)) {
        rc = ZS_ERR_NOT_FOUND;
    } else {
        if (evictable)
            rec->flags &= ~(uint32_t)ZS_OBJ_NOEVICT;
        else
            rec->flags |= ZS_OBJ_NOEVICT;
        zs_evict_update(s, (uint32_t)(rec - s->rec));
    }
    zs_unlock(s);
    return rc;
}

/* O(records + pins). Safe to repeat: a second call finds nothing to drop. */
int zs_release_client(zs_store *s, int client)
{
    if (client < 0 || client >= ZS_MAX_CLIENTS)
        return ZS_ERR_BAD_CLIENT;
    LOCK_OR_RETURN(s, OP_RELEASE_CLIENT);
    zs_header *h = s->h;
    for (uint32_t r = 0; r < h->rec_hi; r++) {
        zs_record *rec = &s->rec[r];
        if (rec->state == ZS_REC_FREE)
            continue;
        if (rec->state == ZS_REC_CREATED && rec->owner == (uint32_t)client) {
            zs_rec_free(s, r); /* an unsealed object its writer will never finish */
            continue;
        }
        if (zs_pin_drop(s, r, (uint32_t)client, 1) == 0)
            free_if_dead(s, r);
    }
    h->clients[client].state = ZS_CLIENT_FREE; /* commit */
    h->clients[client].pid = 0;
    zs_unlock(s);
    return ZS_OK;
}

int zs_clients(zs_store *s, zs_client_info *out, int max)
{
    int n = 0;
    LOCK_OR_RETURN(s, OP_READ);
    for (int c = 0; c < ZS_MAX_CLIENTS && n < max; c++) {
        if (s->h->clients[c].state != ZS_CLIENT_ACTIVE)
            continue;
        out[n].client = c;
        out[n].pid = s->h->clients[c].pid;
        out[n].pins = s->h->clients[c].pins;
        n++;
    }
    zs_unlock(s);
    return n;
}

int zs_stats_get(zs_store *s, zs_stats *o)
{
    LOCK_OR_RETURN(s, OP_READ);
    zs_header *h = s->h;
    o->capacity = h->capacity;
    o->total_size = h->total_size;
    o->used_bytes = h->used_bytes;
    o->data_bytes = h->data_bytes;
    o->free_bytes = h->free_bytes;
    o->evictable_bytes = h->evictable_bytes;
    o->pinned_bytes = h->pinned_bytes;
    o->object_count = h->object_count;
    o->sealed_count = h->sealed_count;
    o->pinned_count = h->pinned_count;
    o->max_objects = h->nrecords;
    o->evictions = h->evictions;
    o->recoveries = h->recoveries;
    o->high_water = h->high_water;
    o->warm_end = __atomic_load_n(&h->warm_end, __ATOMIC_ACQUIRE);
    o->headroom = zs_warm_headroom(h);
    o->commit_end = h->commit_end;
    o->given_back = h->given_back;
    o->clients = 0;
    for (int c = 0; c < ZS_MAX_CLIENTS; c++)
        o->clients += h->clients[c].state == ZS_CLIENT_ACTIVE;
    zs_unlock(s);
    return ZS_OK;
}

int zs_check(zs_store *s)
{
    LOCK_OR_RETURN(s, OP_READ);
    int bad = zs_alloc_check(s) + zs_table_check(s) + zs_evict_check(s);
    zs_unlock(s);
    return bad;
}

int64_t zs_blocks(zs_store *s, uint64_t *offsets, uint64_t *sizes, uint8_t *is_free,
                  int64_t max)
{
    int64_t n = 0;
    LOCK_OR_RETURN(s, OP_READ);
    for (uint64_t off = 0; off < s->h->capacity && n < max; n++) {
        zs_block *b = ZS_BLK(s, off);
        if (b->size < ZS_MIN_BLOCK)
            break;
        offsets[n] = off;
        sizes[n] = b->size;
        is_free[n] = (uint8_t)b->is_free;
        off += b->size;
    }
    zs_unlock(s);
    return n;
}
