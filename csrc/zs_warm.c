/* zs_warm.c -- warm pages: populate ahead of use, pre-fault each client, give freed pages back.
 *
 * WHY. A first write to a tmpfs page costs an allocation, zeroing and a fault (about 1 GB/s
 * here, against about 10 GB/s for a copy into mapped pages). A page another process already
 * populated still costs every other process one minor fault per 4 KiB on its first touch
 * through its own mapping (puts from a client ran at about 1.5 GB/s on blocks new to it).
 * And populating the whole store, or a big fixed headroom, at creation commits memory that
 * nobody uses, while pages of a freed 1 GB object stay committed forever unless given back.
 *
 * POLICY (zs_warm_headroom, the one place to change it). The headroom is warm_bytes when the
 * creator fixed it, else 2 x recent_max clamped to [ZS_WARM_FLOOR, max(floor, capacity / 4)];
 * recent_max is the largest block allocated lately (zs_alloc raises it, the creator's thread
 * halves it every ZS_WARM_DECAY_MS). target = high_water + headroom (high_water: the end of
 * the highest used block; it falls when the top block is freed) is populated; pages are kept
 * up to keep = recent_top + max(headroom, 2 x recent_max) (uncapped; high_water + headroom
 * when fixed) and given back above it; recent_top is the highest high_water lately, its
 * distance to high_water halved every ZS_WARM_DECAY_MS, so put+delete rounds do not make the
 * thread trim and re-populate the same headroom each round. A fresh store commits about the
 * floor; a run of 100 MB puts keeps 200 MB warm ahead of the allocator; a run of 1 GB
 * put+delete rounds keeps reusing its pages instead of trimming and re-faulting them each
 * round; once such work stops both hints decay and the pages above the floor go back
 * within seconds.
 *
 * THE CREATOR'S THREAD (one per store) loops, sleeping ZS_WARM_MIN_MS..ZS_WARM_MAX_MS when idle:
 *   populate [max(warm_end, high_water), target) in ZS_WARM_CHUNK steps (blocks below
 *     high_water are pre-faulted by their creators: zs_warm_object), outside the lock:
 *     MADV_POPULATE_WRITE (Linux 5.14+), else an atomic add of 0 to one byte per page;
 *     neither changes content.
 *   trim when top = max(commit_end, warm_end) exceeds keep by more than the slack (a
 *     quarter of the headroom, so populate and trim do not chase each other): MADV_REMOVE
 *     (a hole punched in the tmpfs file: the pages go back to the OS and leave every process's
 *     page tables; they read back as zeros) over [max(keep, top - ZS_TRIM_CHUNK), top), then
 *     commit_end = warm_end = that start, trim_gen++.
 *   The punch runs UNDER the store lock, one chunk per hold (16 MB: about 2 ms; small because
 *   the threads run at nice ZS_WARM_NICE and may be descheduled while holding it; they are
 *   niced so that warming yields the CPU to puts, which it slowed 2x on two cores).
 *   Everything above high_water is one free block, and only a locked allocation can hand any
 *   of it out, so "free while punched" holds for the whole punch with no reservation to recover if anybody
 *   dies: a punched free page is just a page of zeros. The free block's own header sits at
 *   high_water, below round_up(high_water + 64, page) <= the punch start, so no allocator
 *   state is ever punched. Free blocks below high_water are not trimmed (they are reused
 *   first, being in smaller size classes than the top block).
 *
 * EVERY OTHER CLIENT'S THREAD (started by zs_attach) fills its own page tables over
 *   [0, warm_end) with MADV_POPULATE_WRITE in ZS_PREFAULT_CHUNK steps. The pages already exist,
 *   so this commits no memory, only page-table entries; it never blocks zs_attach. Without
 *   MADV_POPULATE_WRITE the thread just ends (touching would commit pages of a trim race).
 *   After a trim (trim_gen changed) it lowers mapped_end to the new warm_end. A chunk that
 *   races with a trim may re-create pages just punched; the thread sees trim_gen move and
 *   punches the part of its chunk above max(warm_end, round_up(high_water + 64, page)) again,
 *   under the lock, by the same rule as the creator.
 *
 * zs_warm_object pre-faults a new block of >= ZS_PREFAULT_MIN bytes that lies above this
 *   mapping's mapped_end, in one system call after zs_create_object unlocks: batching the
 *   faults is several times faster than taking them one page at a time during the copy.
 *
 * STOPPING. zs_warm_stop (from zs_detach) sets warm_stop, signals the condition the thread
 * sleeps on and joins it, so no thread touches the mapping after zs_close unmaps it. A forked
 * child has no thread (zs_detach does not call this in a child).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "zs_internal.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define ZS_PAGE 4096ull
#define ZS_WARM_FLOOR (16ull << 20)    /* smallest adaptive headroom */
#define ZS_WARM_CHUNK (4ull << 20)     /* creator's populate step: short holds of mmap_lock */
#define ZS_PREFAULT_CHUNK (2ull << 20) /* client's step: bounds what a trim race re-commits */
#define ZS_PREFAULT_MIN (1ull << 20)   /* zs_warm_object pre-faults blocks at least this big */
#define ZS_TRIM_CHUNK (16ull << 20)    /* punched per hold of the store lock: ~2 ms */
#define ZS_TRIM_SLACK_MIN (4ull << 20) /* trim only this far above the kept range, at least */
#define ZS_WARM_MIN_MS 1               /* thread's poll while busy ... */
#define ZS_WARM_MAX_MS 50              /* ... backing off to this when idle */
#define ZS_WARM_DECAY_MS 1000          /* recent_max halves this often */
#define ZS_OP_TRIM 20                  /* journal op code of a trim */
#define ZS_WARM_NICE 10                /* the threads yield the CPU to puts (not SCHED_IDLE:
                                        * a trim holds the store lock and must not starve) */

static uint64_t page_up(uint64_t n) { return zs_round_up(n, ZS_PAGE); }

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Populate [from, to) of the data area in this mapping; content is never changed. */
void zs_warm_populate(zs_store *s, uint64_t from, uint64_t to)
{
    if (to <= from)
        return;
    if (madvise(s->data + from, to - from, MADV_POPULATE_WRITE) == 0)
        return;
    for (uint64_t o = from; o < to; o += ZS_PAGE) /* old kernels: touch, keep bytes */
        __atomic_fetch_add(s->data + o, 0, __ATOMIC_RELAXED);
}

uint64_t zs_warm_headroom(const zs_header *h)
{
    if (h->warm_bytes)
        return h->warm_bytes;
    uint64_t cap = h->capacity / 4 > ZS_WARM_FLOOR ? h->capacity / 4 : ZS_WARM_FLOOR;
    uint64_t want = 2 * __atomic_load_n(&h->recent_max, __ATOMIC_RELAXED);
    return want < ZS_WARM_FLOOR ? ZS_WARM_FLOOR : (want > cap ? cap : want);
}

static uint64_t target_of(const zs_header *h, uint64_t high_water)
{
    uint64_t t = page_up(high_water + zs_warm_headroom(h));
    return t < h->capacity ? t : h->capacity;
}

/* Where trimming starts: recent_top + max(headroom, 2 x recent_max), uncapped, so a run of
 * big put+delete rounds reuses its pages; they go back as recent_top and recent_max decay. */
static uint64_t keep_of(const zs_header *h, uint64_t high_water)
{
    uint64_t top = __atomic_load_n(&h->recent_top, __ATOMIC_RELAXED);
    if (!h->warm_bytes && top > high_water)
        high_water = top; /* rounds of put+delete: do not trim what the next put re-faults */
    uint64_t keep = 2 * __atomic_load_n(&h->recent_max, __ATOMIC_RELAXED);
    if (h->warm_bytes || keep < zs_warm_headroom(h))
        keep = zs_warm_headroom(h);
    uint64_t t = page_up(high_water + (keep < h->capacity ? keep : h->capacity));
    return t < h->capacity ? t : h->capacity;
}

/* Sleep up to ms, or until zs_warm_stop. Returns nonzero when asked to stop. */
static int nap(zs_store *s, uint64_t ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)(ms * 1000000);
    until.tv_sec += until.tv_nsec / 1000000000;
    until.tv_nsec %= 1000000000;
    pthread_mutex_lock(&s->warm_mu);
    while (!s->warm_stop && pthread_cond_timedwait(&s->warm_cv, &s->warm_mu, &until) == 0) {
    }
    pthread_mutex_unlock(&s->warm_mu);
    return s->warm_stop;
}

/* Punch the free pages in [lo, hi) that lie above max(high_water's block header, floor_off).
 * Runs under the lock (see the top comment). Returns the bytes punched. */
static uint64_t punch_locked(zs_store *s, uint64_t lo, uint64_t hi)
{
    zs_header *h = s->h;
    uint64_t safe = page_up(h->high_water + ZS_BLOCK_HDR);
    if (lo < safe)
        lo = safe;
    if (hi > h->capacity)
        hi = h->capacity;
    if (lo >= hi || madvise(s->data + lo, hi - lo, MADV_REMOVE) != 0)
        return 0;
    h->given_back += hi - lo;
    return hi - lo;
}

/* One trim step of the creator. Returns nonzero if it punched. */
static int trim_step(zs_store *s)
{
    zs_header *h = s->h;
    uint64_t head = zs_warm_headroom(h);
    uint64_t slack = head / 4 > ZS_TRIM_SLACK_MIN ? head / 4 : ZS_TRIM_SLACK_MIN;
    /* unlocked look first: the lock is taken only when a trim is likely */
    uint64_t top = page_up(h->commit_end > h->warm_end ? h->commit_end : h->warm_end);
    if (top <= keep_of(h, h->high_water) + slack)
        return 0;
    if (zs_lock(s, ZS_OP_TRIM) != ZS_OK)
        return 0;
    int did = 0;
    uint64_t target = keep_of(h, h->high_water);
    top = page_up(h->commit_end > h->warm_end ? h->commit_end : h->warm_end);
    if (top > h->capacity)
        top = h->capacity;
    if (top > target + slack) {
        uint64_t lo = top - target > ZS_TRIM_CHUNK ? top - ZS_TRIM_CHUNK : target;
        if (lo < page_up(h->high_water + ZS_BLOCK_HDR))
            lo = page_up(h->high_water + ZS_BLOCK_HDR);
        /* warm_end first: a client reading it afterwards does not pre-fault the punched pages */
        if (h->warm_end > lo)
            __atomic_store_n(&h->warm_end, lo, __ATOMIC_RELEASE);
        punch_locked(s, lo, top);
        h->commit_end = lo > h->high_water ? lo : h->high_water;
        __atomic_add_fetch(&h->trim_gen, 1, __ATOMIC_RELEASE);
        did = 1;
    }
    zs_unlock(s);
    return did;
}

/* Lower this thread's priority (Linux nice values are per thread); best effort. */
static void lower_priority(void)
{
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), ZS_WARM_NICE);
}

static void *creator_main(void *arg)
{
    zs_store *s = arg;
    lower_priority();
    zs_header *h = s->h;
    uint64_t idle_ms = ZS_WARM_MIN_MS, decay_at = now_ms() + ZS_WARM_DECAY_MS;
    while (!s->warm_stop) {
        int busy = 0;
        uint64_t hw = h->high_water, want = target_of(h, hw), end = h->warm_end;
        if (end < want) {
            /* Below high_water every block has an owner that pre-faults (or writes) it
             * itself: start above it, rather than fight over the same cold pages. */
            uint64_t from = end < hw ? page_up(hw) : end;
            uint64_t to = from + ZS_WARM_CHUNK < want ? from + ZS_WARM_CHUNK : want;
            zs_warm_populate(s, from, to);
            /* a trim may have lowered warm_end meanwhile: then the pages above its new mark
             * are a little warmer than recorded, never colder */
            __atomic_compare_exchange_n(&h->warm_end, &end, to, 0, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED);
            if (s->mapped_end == from) /* this mapping's page tables cover [0, to) */
                s->mapped_end = to;
            busy = 1;
        } else {
            busy = trim_step(s);
            if (s->mapped_end > h->warm_end)
                s->mapped_end = h->warm_end;
            else if (!busy && s->mapped_end < h->warm_end) {
                /* pages skipped below high_water were populated through their owners'
                 * mappings: fill this mapping's page tables over them when idle */
                uint64_t from = s->mapped_end, w = h->warm_end;
                uint64_t to = from + ZS_PREFAULT_CHUNK < w ? from + ZS_PREFAULT_CHUNK : w;
                if (madvise(s->data + from, to - from, MADV_POPULATE_WRITE) == 0)
                    s->mapped_end = to;
                else
                    s->mapped_end = w; /* old kernel: let the copies take the faults */
                busy = 1;
            }
        }
        uint64_t t = now_ms();
        if (t >= decay_at) {
            uint64_t m = __atomic_load_n(&h->recent_max, __ATOMIC_RELAXED);
            if (m) /* racy against zs_alloc's raise under the lock: a hint, either value works */
                __atomic_store_n(&h->recent_max, m / 2, __ATOMIC_RELAXED);
            uint64_t top = __atomic_load_n(&h->recent_top, __ATOMIC_RELAXED), hw = h->high_water;
            if (top > hw) /* halve the distance to the current high water */
                __atomic_store_n(&h->recent_top, hw + (top - hw) / 2, __ATOMIC_RELAXED);
            decay_at = t + ZS_WARM_DECAY_MS;
        }
        if (busy) {
            idle_ms = ZS_WARM_MIN_MS;
            continue;
        }
        if (nap(s, idle_ms))
            break;
        idle_ms = idle_ms * 2 > ZS_WARM_MAX_MS ? ZS_WARM_MAX_MS : idle_ms * 2;
    }
    return NULL;
}

static void *client_main(void *arg)
{
    zs_store *s = arg;
    lower_priority();
    zs_header *h = s->h;
    uint64_t idle_ms = ZS_WARM_MIN_MS;
    uint64_t gen = __atomic_load_n(&h->trim_gen, __ATOMIC_ACQUIRE);
    while (!s->warm_stop) {
        uint64_t g = __atomic_load_n(&h->trim_gen, __ATOMIC_ACQUIRE);
        uint64_t warm = __atomic_load_n(&h->warm_end, __ATOMIC_ACQUIRE);
        if (g != gen) {
            gen = g;
            if (s->mapped_end > warm)
                s->mapped_end = warm;
        }
        if (s->mapped_end < warm) {
            uint64_t from = s->mapped_end;
            uint64_t to = from + ZS_PREFAULT_CHUNK < warm ? from + ZS_PREFAULT_CHUNK : warm;
            if (madvise(s->data + from, to - from, MADV_POPULATE_WRITE) != 0)
                break; /* old kernel (or a bad range): pre-faulting is only an optimisation */
            if (__atomic_load_n(&h->trim_gen, __ATOMIC_ACQUIRE) != gen) {
                /* a trim ran during the chunk: take back what it punched and we re-created */
                if (zs_lock(s, ZS_OP_TRIM) == ZS_OK) {
                    uint64_t w = h->warm_end;
                    punch_locked(s, from > w ? from : w, to);
                    zs_unlock(s);
                }
                continue; /* gen differs: mapped_end is clamped on the next pass */
            }
            s->mapped_end = to;
            idle_ms = ZS_WARM_MIN_MS;
            continue;
        }
        if (nap(s, idle_ms))
            break;
        idle_ms = idle_ms * 2 > ZS_WARM_MAX_MS ? ZS_WARM_MAX_MS : idle_ms * 2;
    }
    return NULL;
}

void zs_warm_start(zs_store *s)
{
    s->warm_stop = 0;
    if (pthread_mutex_init(&s->warm_mu, NULL) != 0)
        return;
    if (pthread_cond_init(&s->warm_cv, NULL) != 0) {
        pthread_mutex_destroy(&s->warm_mu);
        return;
    }
    if (pthread_create(&s->warm_thread, NULL, s->owner ? creator_main : client_main, s) == 0) {
        s->warm_running = 1;
        return;
    }
    pthread_cond_destroy(&s->warm_cv);
    pthread_mutex_destroy(&s->warm_mu);
}

void zs_warm_stop(zs_store *s)
{
    if (!s->warm_running)
        return;
    pthread_mutex_lock(&s->warm_mu);
    s->warm_stop = 1;
    pthread_cond_signal(&s->warm_cv);
    pthread_mutex_unlock(&s->warm_mu);
    pthread_join(s->warm_thread, NULL);
    pthread_cond_destroy(&s->warm_cv);
    pthread_mutex_destroy(&s->warm_mu);
    s->warm_running = 0;
}

void zs_warm_object(zs_store *s, uint64_t off, uint64_t size)
{
    if (size < ZS_PREFAULT_MIN || off + size <= s->mapped_end)
        return;
    uint64_t from = off / ZS_PAGE * ZS_PAGE, to = page_up(off + size);
    if (to > s->h->capacity)
        to = s->h->capacity;
    /* ignore failure: the copy then takes the faults itself */
    (void)madvise(s->data + from, to - from, MADV_POPULATE_WRITE);
}
