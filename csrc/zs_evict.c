/* zs_evict.c -- the eviction policy: least recently used first.
 *
 * The store's operations talk to the policy through four calls only (zs_internal.h):
 * update (re-file a record after any change), touch (it was used), victim (who goes next),
 * rebuild (recovery). Which objects may be evicted is decided here too (zs_evict_wanted):
 * sealed, unpinned, evictable and not deleted. Another policy replaces this file.
 *
 * The list is doubly linked through the records (record + 1, 0 = none), oldest at the head.
 * Every call is O(1) except rebuild, which sorts the candidates by their `tick` (truth kept
 * in the records) so that the order survives recovery. All calls run under the store lock.
 */
#include "zs_internal.h"

int zs_evict_wanted(const zs_record *r)
{
    return r->state == ZS_REC_SEALED && r->pins == 0 &&
           !(r->flags & (ZS_OBJ_NOEVICT | ZS_F_DELETED));
}

static void unlink_rec(zs_store *s, uint32_t r)
{
    zs_header *h = s->h;
    zs_record *rec = &s->rec[r];
    if (rec->lru_prev)
        s->rec[rec->lru_prev - 1].lru_next = rec->lru_next;
    else
        h->lru_head = rec->lru_next;
    if (rec->lru_next)
        s->rec[rec->lru_next - 1].lru_prev = rec->lru_prev;
    else
        h->lru_tail = rec->lru_prev;
    rec->lru_prev = rec->lru_next = 0;
    rec->in_lru = 0;
    h->evictable_bytes -= rec->block_size;
}

static void append(zs_store *s, uint32_t r)
{
    zs_header *h = s->h;
    zs_record *rec = &s->rec[r];
    rec->lru_prev = h->lru_tail;
    rec->lru_next = 0;
    if (h->lru_tail)
        s->rec[h->lru_tail - 1].lru_next = r + 1;
    else
        h->lru_head = r + 1;
    h->lru_tail = r + 1;
    rec->in_lru = 1;
    h->evictable_bytes += rec->block_size;
}

void zs_evict_update(zs_store *s, uint32_t r)
{
    zs_record *rec = &s->rec[r];
    int want = zs_evict_wanted(rec);
    if (want && !rec->in_lru)
        append(s, r);
    else if (!want && rec->in_lru)
        unlink_rec(s, r);
}

void zs_evict_touch(zs_store *s, uint32_t r)
{
    s->rec[r].tick = ++s->h->tick;
    if (s->rec[r].in_lru) { /* move to the young end */
        unlink_rec(s, r);
        append(s, r);
    }
}

int zs_evict_victim(zs_store *s, uint32_t *r)
{
    if (!s->h->lru_head)
        return -1;
    *r = s->h->lru_head - 1;
    return 0;
}

void zs_evict_rebuild(zs_store *s)
{
    zs_header *h = s->h;
    uint32_t list = 0;
    h->lru_head = h->lru_tail = 0;
    h->evictable_bytes = 0;
    for (uint64_t i = h->rec_hi; i-- > 0;) {
        zs_record *r = &s->rec[i];
        r->in_lru = 0;
        r->lru_prev = r->lru_next = 0;
        if (zs_evict_wanted(r)) {
            r->sort_next = list;
            list = (uint32_t)i + 1;
        }
    }
    for (uint32_t e = zs_sort(s, list, 1); e; e = s->rec[e - 1].sort_next)
        append(s, e - 1);
}

/* Count violations of E1 (zstore.h). */
int zs_evict_check(zs_store *s)
{
    zs_header *h = s->h;
    int bad = 0;
    uint64_t n = 0, bytes = 0;
    uint32_t back = 0;
    for (uint32_t e = h->lru_head; e && n <= h->nrecords; e = s->rec[e - 1].lru_next) {
        zs_record *r = &s->rec[e - 1];
        if (!zs_evict_wanted(r) || !r->in_lru || r->lru_prev != back)
            bad++;
        bytes += r->block_size;
        back = e;
        n++;
    }
    if (back != h->lru_tail || bytes != h->evictable_bytes)
        bad++;
    uint64_t wanted = 0;
    for (uint64_t i = 0; i < h->rec_hi; i++)
        wanted += zs_evict_wanted(&s->rec[i]) != 0;
    if (wanted != n)
        bad++;
    return bad;
}
