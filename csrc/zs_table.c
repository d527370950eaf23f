/* zs_table.c -- the object table: records, the hash index over their ids, pin lists.
 *
 * Records never move (other structures refer to them by number), so deleting from the hash
 * index can use backward-shift deletion on the index alone: no tombstones, and probe lengths
 * stay short forever. The index has at least twice as many slots as there are records, so it
 * is at most half full and a probe ends after a few slots.
 *
 * Pins: each live record has a singly linked list of pin entries, one per client holding a
 * pin, with a count. A list is changed by one committing store: a new entry is filled in and
 * then linked as the head; an entry is unlinked by one store to its predecessor's link (after
 * its count dropped to 0, which recovery also treats as unlinked). Entries off every list are
 * reclaimed by recovery.
 *
 * All functions run with the store lock held.
 */
#include <string.h>

#include "zs_internal.h"

uint32_t zs_hash(const uint8_t *id)
{
    uint64_t w[3];
    uint32_t tail;
    memcpy(w, id, 24);
    memcpy(&tail, id + 24, 4);
    uint64_t x = 0x9e3779b97f4a7c15ULL ^ tail;
    for (int i = 0; i < 3; i++) {
        x ^= w[i];
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33;
    }
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 29;
    return (uint32_t)x;
}

zs_record *zs_find(zs_store *s, const uint8_t *id)
{
    uint64_t mask = s->h->nindex - 1;
    uint32_t hv = zs_hash(id);
    for (uint64_t i = hv & mask;; i = (i + 1) & mask) {
        uint32_t v = s->index[i];
        if (!v)
            return NULL;
        zs_record *r = &s->rec[v - 1];
        if (r->hash == hv && memcmp(r->id, id, ZS_ID_SIZE) == 0)
            return r;
    }
}

void zs_index_insert(zs_store *s, uint32_t r)
{
    uint64_t mask = s->h->nindex - 1;
    uint64_t i = s->rec[r].hash & mask;
    while (s->index[i])
        i = (i + 1) & mask;
    s->index[i] = r + 1;
}

void zs_index_remove(zs_store *s, uint32_t r)
{
    uint64_t mask = s->h->nindex - 1;
    uint64_t i = s->rec[r].hash & mask;
    while (s->index[i] != r + 1) {
        if (!s->index[i])
            return; /* not indexed (recovery is rebuilding) */
        i = (i + 1) & mask;
    }
    /* Backward shift: pull later entries of the cluster into the hole when their home slot
     * does not lie cyclically in (hole, j]. */
    for (uint64_t j = (i + 1) & mask; s->index[j]; j = (j + 1) & mask) {
        uint64_t home = s->rec[s->index[j] - 1].hash & mask;
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            s->index[i] = s->index[j];
            i = j;
        }
    }
    s->index[i] = 0;
}

int zs_rec_take(zs_store *s, uint32_t *r)
{
    zs_header *h = s->h;
    if (h->rec_free) {
        *r = h->rec_free - 1;
        h->rec_free = s->rec[*r].free_next;
    } else if (h->rec_hi < h->nrecords) {
        *r = h->rec_hi++; /* a never-used record: still all zeros */
    } else {
        return -1;
    }
    return 0;
}

static int pin_take(zs_store *s, uint32_t *e)
{
    zs_header *h = s->h;
    if (h->pin_free) {
        *e = h->pin_free;
        h->pin_free = s->pins[*e - 1].next;
    } else if (h->pin_hi < h->npins) {
        *e = ++h->pin_hi;
    } else {
        return -1;
    }
    return 0;
}

/* Commit the record's death (state = FREE), then undo everything derived from it. The block
 * must already be unreferenced by readers (no pins) and is returned to the allocator. */
void zs_rec_free(zs_store *s, uint32_t r)
{
    zs_header *h = s->h;
    zs_record *rec = &s->rec[r];
    uint32_t was = rec->state;
    rec->flags |= ZS_F_DELETED; /* take it off the LRU list first */
    zs_evict_update(s, r);
    rec->state = ZS_REC_FREE;   /* commit */
    zs_fault(s, ZS_FAULT_DELETE);
    zs_index_remove(s, r);
    zs_free(s, rec->block);
    h->object_count--;
    h->data_bytes -= rec->data_size + rec->meta_size;
    if (was == ZS_REC_SEALED)
        h->sealed_count--;
    rec->pin_head = 0;
    rec->flags = 0;
    rec->free_next = h->rec_free;
    h->rec_free = r + 1;
}

static void client_pins(zs_store *s, uint32_t client, int64_t delta)
{
    if (client < ZS_MAX_CLIENTS)
        s->h->clients[client].pins += (uint64_t)delta;
}

static void pinned_changed(zs_store *s, zs_record *rec, uint32_t before)
{
    if (!before && rec->pins) {
        s->h->pinned_count++;
        s->h->pinned_bytes += rec->block_size;
    } else if (before && !rec->pins) {
        s->h->pinned_count--;
        s->h->pinned_bytes -= rec->block_size;
    }
}

int zs_pin_add(zs_store *s, uint32_t r, uint32_t client)
{
    zs_record *rec = &s->rec[r];
    uint32_t before = rec->pins;
    for (uint32_t e = rec->pin_head; e; e = s->pins[e - 1].next) {
        if (s->pins[e - 1].client == client) {
            s->pins[e - 1].count++; /* commit */
            goto done;
        }
    }
    uint32_t e;
    if (pin_take(s, &e) != 0)
        return -1;
    zs_pin *p = &s->pins[e - 1];
    zs_fault(s, ZS_FAULT_GET);
    p->record = r;
    p->client = client;
    p->count = 1;
    p->next = rec->pin_head;
    rec->pin_head = e; /* commit */
done:
    rec->pins++;
    client_pins(s, client, 1);
    pinned_changed(s, rec, before);
    zs_evict_update(s, r);
    return 0;
}

/* Drop one pin (all = 0) or every pin (all = 1) of `client` on record r. Returns -1 with
 * nothing modified when the client holds no pin on it. */
int zs_pin_drop(zs_store *s, uint32_t r, uint32_t client, int all)
{
    zs_record *rec = &s->rec[r];
    uint32_t before = rec->pins;
    uint32_t *link = &rec->pin_head;
    while (*link && s->pins[*link - 1].client != client)
        link = &s->pins[*link - 1].next;
    if (!*link)
        return -1;
    uint32_t e = *link;
    zs_pin *p = &s->pins[e - 1];
    uint32_t dropped = all ? p->count : 1;
    p->count -= dropped; /* commit when it stays > 0 */
    zs_fault(s, ZS_FAULT_RELEASE);
    if (!p->count) {
        *link = p->next; /* commit: unlinked */
        p->next = s->h->pin_free;
        s->h->pin_free = e;
    }
    rec->pins -= dropped;
    client_pins(s, client, -(int64_t)dropped);
    pinned_changed(s, rec, before);
    if (!rec->pins)
        zs_evict_touch(s, r);
    zs_evict_update(s, r);
    return 0;
}

/* The tables of a fresh file are zeros: FREE records, an empty index, unused pin entries.
 * Nothing is written here, so no table page is committed before it is used. */
void zs_table_init(zs_store *s)
{
    zs_header *h = s->h;
    h->rec_free = h->pin_free = 0;
    h->rec_hi = h->pin_hi = 0;
    h->lru_head = h->lru_tail = 0;
}

/* Merge sort a list linked through sort_next (record + 1, 0 = end) by block offset or by
 * tick. No extra memory, O(n log n). Returns the new head. */
uint32_t zs_sort(zs_store *s, uint32_t head, int by_tick)
{
    if (!head || !s->rec[head - 1].sort_next)
        return head;
    uint32_t slow = head, fast = s->rec[head - 1].sort_next;
    while (fast && s->rec[fast - 1].sort_next) {
        slow = s->rec[slow - 1].sort_next;
        fast = s->rec[s->rec[fast - 1].sort_next - 1].sort_next;
    }
    uint32_t second = s->rec[slow - 1].sort_next;
    s->rec[slow - 1].sort_next = 0;
    uint32_t a = zs_sort(s, head, by_tick), b = zs_sort(s, second, by_tick);
    uint32_t out = 0, *tail = &out;
    while (a && b) {
        zs_record *ra = &s->rec[a - 1], *rb = &s->rec[b - 1];
        int a_first = by_tick ? ra->tick <= rb->tick : ra->block <= rb->block;
        uint32_t *pick = a_first ? &a : &b;
        *tail = *pick;
        tail = &s->rec[*pick - 1].sort_next;
        *pick = *tail;
    }
    *tail = a ? a : b;
    return out;
}

static int rec_live(const zs_record *r)
{
    return r->state == ZS_REC_CREATED || r->state == ZS_REC_SEALED;
}

/* Recovery: rebuild every derived structure from the truth (records and their pin lists).
 * Records that cannot be placed (a block out of range or overlapping another) are dropped. */
void zs_table_rebuild(zs_store *s)
{
    zs_header *h = s->h;
    uint32_t live = 0;

    for (uint64_t i = 0; i < h->pin_hi; i++)
        s->pins[i].record = ZS_UNREACHED;
    for (int c = 0; c < ZS_MAX_CLIENTS; c++)
        h->clients[c].pins = 0;
    /* Pin lists: drop entries being unlinked (count 0) or naming no client; mark the rest. */
    for (uint64_t i = 0; i < h->rec_hi; i++) {
        zs_record *r = &s->rec[i];
        r->pins = 0;
        r->in_lru = 0;
        r->lru_prev = r->lru_next = 0;
        r->sort_next = 0;
        if (!rec_live(r)) {
            r->pin_head = 0;
            continue;
        }
        uint32_t *link = &r->pin_head;
        uint64_t steps = 0;
        while (*link) {
            zs_pin *p = *link <= h->pin_hi ? &s->pins[*link - 1] : NULL;
            if (!p || p->record != ZS_UNREACHED || steps++ > h->pin_hi) {
                *link = 0; /* out of range or a cycle: cut */
                break;
            }
            if (!p->count || p->client >= ZS_MAX_CLIENTS) {
                *link = p->next;
                continue;
            }
            p->record = (uint32_t)i;
            r->pins += p->count;
            h->clients[p->client].pins += p->count;
            link = &p->next;
        }
        if ((r->flags & ZS_F_DELETED) && !r->pins)
            r->state = ZS_REC_FREE; /* a free (or a deferred delete) was cut short */
        if (rec_live(r)) {
            r->sort_next = live;
            live = (uint32_t)i + 1;
        }
    }
    h->pin_free = 0;
    for (uint64_t i = h->pin_hi; i-- > 0;) {
        if (s->pins[i].record == ZS_UNREACHED) {
            s->pins[i].count = 0;
            s->pins[i].next = h->pin_free;
            h->pin_free = (uint32_t)i + 1;
        }
    }
    /* Allocator: lay the live blocks in address order, free blocks over the gaps. */
    zs_alloc_reset(s);
    h->object_count = h->sealed_count = h->pinned_count = h->pinned_bytes = 0;
    h->data_bytes = 0;
    memset(s->index, 0, h->nindex * sizeof(uint32_t));
    uint64_t cursor = 0, prev = 0;
    for (uint32_t e = zs_sort(s, live, 0); e;) {
        zs_record *r = &s->rec[e - 1];
        uint32_t next = r->sort_next;
        if (r->block < cursor || r->block % ZS_ALIGN || r->block_size < ZS_MIN_BLOCK ||
            r->block + r->block_size > h->capacity) {
            r->state = ZS_REC_FREE;
            r->pin_head = 0;
        } else {
            zs_alloc_place(s, &cursor, &prev, r->block, r->block_size, e - 1);
            zs_index_insert(s, e - 1);
            h->object_count++;
            h->data_bytes += r->data_size + r->meta_size;
            if (r->state == ZS_REC_SEALED)
                h->sealed_count++;
            if (r->pins) {
                h->pinned_count++;
                h->pinned_bytes += r->block_size;
            }
        }
        e = next;
    }
    zs_alloc_finish(s, cursor, prev);
    h->rec_free = 0;
    for (uint64_t i = h->rec_hi; i-- > 0;) {
        if (!rec_live(&s->rec[i])) {
            s->rec[i].free_next = h->rec_free;
            h->rec_free = (uint32_t)i + 1;
        }
    }
    zs_evict_rebuild(s);
}

/* Count violations of T1-T4 (zstore.h). */
int zs_table_check(zs_store *s)
{
    zs_header *h = s->h;
    int bad = 0;
    uint64_t live = 0, sealed = 0, pinned = 0, pinned_bytes = 0, data_bytes = 0, used_pins = 0;
    uint64_t client_pins_sum[ZS_MAX_CLIENTS] = {0};
    for (uint64_t i = 0; i < h->rec_hi; i++) { /* above rec_hi: never used, not read */
        zs_record *r = &s->rec[i];
        if (!rec_live(r))
            continue;
        live++;
        sealed += r->state == ZS_REC_SEALED;
        data_bytes += r->data_size + r->meta_size;
        if (r->block + r->block_size > h->capacity) {
            bad++;
            continue;
        }
        zs_block *b = ZS_BLK(s, r->block);
        if (b->is_free || b->record != i || b->size != r->block_size ||
            r->block_size < ZS_BLOCK_HDR + r->data_size + r->meta_size)
            bad++; /* T1 */
        if (zs_find(s, r->id) != r)
            bad++; /* T2 */
        uint64_t sum = 0, steps = 0;
        for (uint32_t e = r->pin_head; e && steps <= h->npins; e = s->pins[e - 1].next) {
            zs_pin *p = &s->pins[e - 1];
            if (e > h->pin_hi || !p->count || p->record != i || p->client >= ZS_MAX_CLIENTS) {
                bad++;
                break;
            }
            sum += p->count;
            client_pins_sum[p->client] += p->count;
            used_pins++;
            steps++;
        }
        if (sum != r->pins)
            bad++; /* T3 */
        if (r->pins) {
            pinned++;
            pinned_bytes += r->block_size;
        }
    }
    uint64_t indexed = 0;
    for (uint64_t i = 0; i < h->nindex; i++) {
        uint32_t v = s->index[i];
        if (!v)
            continue;
        indexed++;
        if (v > h->nrecords || !rec_live(&s->rec[v - 1]))
            bad++; /* T2 */
    }
    if (indexed != live)
        bad++;
    if (live != h->object_count || sealed != h->sealed_count || pinned != h->pinned_count ||
        pinned_bytes != h->pinned_bytes || data_bytes != h->data_bytes)
        bad++; /* T4 */
    for (int c = 0; c < ZS_MAX_CLIENTS; c++)
        if (client_pins_sum[c] != h->clients[c].pins)
            bad++;
    uint64_t nfree = 0;
    for (uint32_t e = h->rec_free; e && nfree <= h->nrecords; e = s->rec[e - 1].free_next) {
        if (rec_live(&s->rec[e - 1]))
            bad++;
        nfree++;
    }
    if (nfree + live != h->rec_hi)
        bad++; /* T4 */
    uint64_t pfree = 0;
    for (uint32_t e = h->pin_free; e && pfree <= h->npins; e = s->pins[e - 1].next)
        pfree++;
    if (pfree + used_pins != h->pin_hi)
        bad++;
    return bad;
}
