/* zs_alloc.c -- a two-level segregated-fit allocator (TLSF style) over the data area.
 *
 * Runs on memory handed to it (the data area of the segment), makes no system calls and
 * never uses the C heap. Every block starts with a 64-byte zs_block header; sizes are
 * multiples of 64 so every payload is 64-byte aligned. Free blocks sit on one of
 * ZS_FL_COUNT x ZS_SL_COUNT lists: the first level is floor(log2(size / 64)), the second
 * splits each power-of-two range into 4. Two bitmaps find the first non-empty list in O(1).
 *
 * Allocation rounds the request up to the next class boundary so that any block of the found
 * list fits (O(1)); if that finds nothing it scans the request's own class for a block that
 * fits (bounded by that list's length), so a request never fails while a fitting block exists.
 * The remainder of a split is put back; freeing coalesces with both physical neighbours at
 * once, so no two adjacent blocks are ever free (invariant A4 in zstore.h).
 *
 * WARM PAGES. A fresh arena is one free block; allocations carve its low end and freed
 * blocks are preferred over it whenever they fit (they sit in smaller classes), so the
 * addresses in use stay low and packed. high_water is the end of the highest used block
 * (it falls when the top block is freed) and commit_end the highest block end handed out
 * since the last trim; the warm-pages thread (zs_warm.c) populates up to high_water +
 * headroom and gives back the pages of the free top above it.
 *
 * All functions run with the store lock held. The block headers and bins are DERIVED state
 * (see zstore.h): recovery rebuilds them from the records with zs_alloc_reset/place/finish.
 */
#include <string.h>

#include "zs_internal.h"

static void mapping(uint64_t size, uint32_t *fl, uint32_t *sl)
{
    uint64_t units = size / ZS_ALIGN;
    uint32_t f = 63u - (uint32_t)__builtin_clzll(units);
    if (f < ZS_SL_LOG) {
        *fl = f;
        *sl = (uint32_t)(units - (1ull << f)); /* tiny classes are exact */
    } else {
        *fl = f;
        *sl = (uint32_t)((units >> (f - ZS_SL_LOG)) & (ZS_SL_COUNT - 1));
    }
}

static void list_insert(zs_store *s, uint64_t off)
{
    zs_header *h = s->h;
    zs_block *b = ZS_BLK(s, off);
    uint32_t fl, sl;
    mapping(b->size, &fl, &sl);
    b->is_free = 1;
    b->magic = ZS_BLOCK_MAGIC;
    b->prev_free = ZS_NIL;
    b->next_free = h->bins[fl][sl];
    if (b->next_free != ZS_NIL)
        ZS_BLK(s, b->next_free)->prev_free = off;
    h->bins[fl][sl] = off;
    h->fl_bitmap |= 1ull << fl;
    h->sl_bitmap[fl] |= 1u << sl;
}

static void list_remove(zs_store *s, uint64_t off)
{
    zs_header *h = s->h;
    zs_block *b = ZS_BLK(s, off);
    uint32_t fl, sl;
    mapping(b->size, &fl, &sl);
    if (b->prev_free != ZS_NIL)
        ZS_BLK(s, b->prev_free)->next_free = b->next_free;
    else
        h->bins[fl][sl] = b->next_free;
    if (b->next_free != ZS_NIL)
        ZS_BLK(s, b->next_free)->prev_free = b->prev_free;
    if (h->bins[fl][sl] == ZS_NIL) {
        h->sl_bitmap[fl] &= ~(1u << sl);
        if (h->sl_bitmap[fl] == 0)
            h->fl_bitmap &= ~(1ull << fl);
    }
    b->next_free = b->prev_free = ZS_NIL;
}

/* First non-empty list at class (fl, sl) or above, or ZS_NIL. */
static uint64_t find_from(zs_store *s, uint32_t fl, uint32_t sl)
{
    zs_header *h = s->h;
    if (fl >= ZS_FL_COUNT)
        return ZS_NIL;
    uint32_t sl_map = sl < ZS_SL_COUNT ? h->sl_bitmap[fl] & (~0u << sl) : 0;
    if (!sl_map) {
        uint64_t fl_map = fl + 1 < ZS_FL_COUNT ? h->fl_bitmap & (~0ull << (fl + 1)) : 0;
        if (!fl_map)
            return ZS_NIL;
        fl = (uint32_t)__builtin_ctzll(fl_map);
        sl_map = h->sl_bitmap[fl];
    }
    return h->bins[fl][__builtin_ctz(sl_map)];
}

void zs_alloc_init(zs_store *s)
{
    zs_alloc_reset(s);
    zs_alloc_finish(s, 0, 0);
}

/* Take `need` bytes (a multiple of 64, >= ZS_MIN_BLOCK). Returns 0 and the block's offset,
 * or -1 with nothing modified when no free block is large enough. */
int zs_alloc(zs_store *s, uint64_t need, uint64_t *off_out)
{
    zs_header *h = s->h;
    uint32_t fl, sl;
    uint64_t off;

    /* Round up to the next class boundary: every block on the found list then fits. */
    uint64_t rounded = need;
    mapping(need, &fl, &sl);
    if (fl >= ZS_SL_LOG)
        rounded = need + ((uint64_t)ZS_ALIGN << (fl - ZS_SL_LOG)) - ZS_ALIGN;
    uint32_t rfl, rsl;
    mapping(rounded, &rfl, &rsl);
    off = find_from(s, rfl, rsl);
    if (off == ZS_NIL) { /* the request's own class may still hold a block that fits */
        for (off = h->bins[fl][sl]; off != ZS_NIL; off = ZS_BLK(s, off)->next_free)
            if (ZS_BLK(s, off)->size >= need)
                break;
        if (off == ZS_NIL)
            return -1;
    }
    zs_block *b = ZS_BLK(s, off);
    list_remove(s, off);
    if (b->size - need >= ZS_MIN_BLOCK) {
        uint64_t rest_off = off + need;
        zs_block *rest = ZS_BLK(s, rest_off);
        rest->size = b->size - need;
        rest->prev_size = need;
        uint64_t after = rest_off + rest->size;
        if (after < h->capacity)
            ZS_BLK(s, after)->prev_size = rest->size;
        b->size = need;
        list_insert(s, rest_off);
    }
    b->is_free = 0;
    b->magic = ZS_BLOCK_MAGIC;
    h->free_bytes -= b->size;
    h->used_bytes += b->size;
    if (off + b->size > h->high_water)
        h->high_water = off + b->size;
    if (off + b->size > h->commit_end)
        h->commit_end = off + b->size;
    if (b->size > h->recent_max)
        h->recent_max = b->size;
    if (off + b->size > h->recent_top)
        h->recent_top = off + b->size;
    *off_out = off;
    return 0;
}

/* Return the used block at `off` and coalesce it with free neighbours. Cannot fail. */
void zs_free(zs_store *s, uint64_t off)
{
    zs_header *h = s->h;
    zs_block *b = ZS_BLK(s, off);
    h->used_bytes -= b->size;
    h->free_bytes += b->size;
    uint64_t next = off + b->size;
    if (next < h->capacity && ZS_BLK(s, next)->is_free) {
        list_remove(s, next);
        b->size += ZS_BLK(s, next)->size;
    }
    if (off > 0 && b->prev_size && ZS_BLK(s, off - b->prev_size)->is_free) {
        uint64_t prev = off - b->prev_size;
        list_remove(s, prev);
        ZS_BLK(s, prev)->size += b->size;
        off = prev;
        b = ZS_BLK(s, off);
    }
    next = off + b->size;
    if (next < h->capacity)
        ZS_BLK(s, next)->prev_size = b->size;
    else
        h->high_water = off; /* the top is free: the highest used block ends where it starts */
    list_insert(s, off);
}

/* Recovery: forget every block. Blocks are then re-laid in address order with
 * zs_alloc_place and the tail closed with zs_alloc_finish. */
void zs_alloc_reset(zs_store *s)
{
    zs_header *h = s->h;
    h->fl_bitmap = 0;
    memset(h->sl_bitmap, 0, sizeof h->sl_bitmap);
    for (int i = 0; i < ZS_FL_COUNT; i++)
        for (int j = 0; j < ZS_SL_COUNT; j++)
            h->bins[i][j] = ZS_NIL;
    h->free_bytes = 0;
    h->used_bytes = 0;
}

static void place_free(zs_store *s, uint64_t *cursor, uint64_t *prev, uint64_t end)
{
    if (end <= *cursor)
        return;
    zs_block *f = ZS_BLK(s, *cursor);
    f->size = end - *cursor;
    f->prev_size = *prev;
    list_insert(s, *cursor);
    s->h->free_bytes += f->size;
    *prev = f->size;
    *cursor = end;
}

/* Recovery: lay a used block at `off` (>= *cursor, callers go in address order), with a free
 * block over any gap before it. */
void zs_alloc_place(zs_store *s, uint64_t *cursor, uint64_t *prev, uint64_t off,
                    uint64_t size, uint32_t record)
{
    place_free(s, cursor, prev, off);
    zs_block *b = ZS_BLK(s, off);
    b->size = size;
    b->prev_size = *prev;
    b->is_free = 0;
    b->record = record;
    b->magic = ZS_BLOCK_MAGIC;
    b->next_free = b->prev_free = ZS_NIL;
    s->h->used_bytes += size;
    *prev = size;
    *cursor = off + size;
}

void zs_alloc_finish(zs_store *s, uint64_t cursor, uint64_t prev)
{
    zs_header *h = s->h;
    h->high_water = cursor; /* the end of the last used block */
    if (h->commit_end < cursor)
        h->commit_end = cursor;
    place_free(s, &cursor, &prev, h->capacity);
}

/* Count violations of invariants A1-A7 (zstore.h). */
int zs_alloc_check(zs_store *s)
{
    zs_header *h = s->h;
    int bad = 0;
    uint64_t off = 0, prev = 0, free_sum = 0, used_sum = 0, nfree = 0, used_end = 0;
    int prev_free = 0;
    while (off < h->capacity) {
        zs_block *b = ZS_BLK(s, off);
        if (b->magic != ZS_BLOCK_MAGIC || b->size < ZS_MIN_BLOCK || b->size % ZS_ALIGN ||
            off + b->size > h->capacity) {
            return bad + 1; /* A1/A2: cannot walk further */
        }
        if (b->prev_size != prev)
            bad++; /* A3 */
        if (b->is_free && prev_free)
            bad++; /* A4 */
        if (b->is_free) {
            free_sum += b->size;
            nfree++;
        } else {
            used_sum += b->size;
            used_end = off + b->size;
        }
        prev_free = b->is_free != 0;
        prev = b->size;
        off += b->size;
    }
    if (off != h->capacity)
        bad++;
    if (free_sum != h->free_bytes || used_sum != h->used_bytes ||
        free_sum + used_sum != h->capacity)
        bad++; /* A6 */
    if (h->high_water != used_end || h->commit_end < h->high_water ||
        h->commit_end > h->capacity || h->warm_end > h->capacity)
        bad++; /* A7 */
    uint64_t listed = 0;
    for (uint32_t fl = 0; fl < ZS_FL_COUNT; fl++) {
        for (uint32_t sl = 0; sl < ZS_SL_COUNT; sl++) {
            uint64_t o = h->bins[fl][sl], back = ZS_NIL;
            int has = o != ZS_NIL;
            if (has != !!(h->sl_bitmap[fl] & (1u << sl)))
                bad++; /* A5 bitmap */
            while (o != ZS_NIL && listed <= nfree) {
                zs_block *b = ZS_BLK(s, o);
                uint32_t bfl, bsl;
                mapping(b->size, &bfl, &bsl);
                if (!b->is_free || bfl != fl || bsl != sl || b->prev_free != back)
                    bad++; /* A5 */
                listed++;
                back = o;
                o = b->next_free;
            }
        }
        if (!!h->sl_bitmap[fl] != !!(h->fl_bitmap & (1ull << fl)))
            bad++;
    }
    if (listed != nfree)
        bad++; /* A5: every free block listed once */
    return bad;
}
