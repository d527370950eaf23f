/* zs_segment.c -- the segment: create, attach, validate, the robust lock, warm pages.
 *
 * CREATE maps a new file, lays out the header and the tables, initialises the robust mutex
 * and writes the magic number last, so an attacher never sees a half-made segment as valid.
 * The file is sized with ftruncate (sparse: no memory is committed). /dev/shm is checked for
 * room first because a tmpfs that runs out later turns page faults into SIGBUS.
 *
 * WARM PAGES (zs_warm.c). The creator populates the first ZS_SYNC_WARM bytes before
 * zs_create returns and starts the thread that keeps high_water + headroom populated and gives
 * freed pages above it back; zs_attach starts a thread that fills the client's own page
 * tables over the warm region. Neither blocks the caller for long; zs_detach joins them.
 *
 * THE LOCK is a PTHREAD_MUTEX_ROBUST, PTHREAD_PROCESS_SHARED mutex. EOWNERDEAD means its
 * holder died mid-operation: zs_recover rebuilds every derived structure (see zstore.h,
 * TRUTH vs DERIVED) before pthread_mutex_consistent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "zs_internal.h"

#define ZS_SYNC_WARM (16ull << 20) /* populated before zs_create returns */

void zs_recover(zs_store *s); /* zs_store.c */

static int parse_fault(void)
{
    const char *f = getenv("ZACTOR_STORE_FAULT");
    if (!f || !*f)
        return ZS_FAULT_NONE;
    if (!strcmp(f, "crash_in_lock") || !strcmp(f, "crash_in_create"))
        return ZS_FAULT_CREATE;
    if (!strcmp(f, "crash_in_get"))
        return ZS_FAULT_GET;
    if (!strcmp(f, "crash_in_release"))
        return ZS_FAULT_RELEASE;
    if (!strcmp(f, "crash_in_delete"))
        return ZS_FAULT_DELETE;
    if (!strcmp(f, "hang_in_lock"))
        return ZS_FAULT_HANG;
    return ZS_FAULT_NONE;
}

void zs_fault(zs_store *s, int point)
{
    if (!s->fault)
        return;
    if (s->fault == ZS_FAULT_HANG && point == ZS_FAULT_CREATE) {
        static const char msg[] = "zactor-store: hanging in the lock (test fault point)\n";
        if (write(2, msg, sizeof msg - 1) < 0) { /* the test waits for this line */
        }
        for (;;)
            pause(); /* the test SIGKILLs us while we hold the lock */
    }
    if (s->fault == point)
        raise(SIGKILL);
}

int zs_lock(zs_store *s, uint32_t op)
{
    int rc = pthread_mutex_lock(&s->h->lock);
    if (rc == EOWNERDEAD) {
        zs_recover(s);
        s->h->recoveries++;
        s->h->last_recovered_op = s->h->op;
        pthread_mutex_consistent(&s->h->lock);
    } else if (rc) {
        return ZS_ERR_CORRUPT; /* ENOTRECOVERABLE: a holder died and nobody recovered */
    }
    s->h->op = op;
    s->h->op_client = (uint32_t)s->client;
    return ZS_OK;
}

void zs_unlock(zs_store *s)
{
    s->h->op = 0;
    pthread_mutex_unlock(&s->h->lock);
}

static void layout(zs_store *s)
{
    zs_header *h = s->h;
    s->rec = (zs_record *)(s->base + h->records_off);
    s->index = (uint32_t *)(s->base + h->index_off);
    s->pins = (zs_pin *)(s->base + h->pins_off);
    s->data = s->base + h->data_off;
}

static int map_file(int fd, uint64_t size, zs_store **out)
{
    zs_store *s = calloc(1, sizeof *s);
    if (!s)
        return ZS_ERR_SYS;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        free(s);
        return ZS_ERR_SYS;
    }
    s->base = p;
    s->size = size;
    s->h = p;
    s->client = -1;
    s->pid = getpid();
    s->fault = parse_fault();
    *out = s;
    return ZS_OK;
}

int zs_create(const char *path, uint64_t capacity, uint64_t max_objects, uint64_t warm_bytes,
              zs_store **out)
{
    int rc, fd = -1;
    zs_store *s = NULL;
    capacity = zs_round_up(capacity, 4096);
    if (capacity < (1u << 16) || capacity > (1ull << 46))
        return ZS_ERR_BAD_SIZE;
    if (!max_objects)
        max_objects = capacity / 16384 < 1024 ? 1024 : capacity / 16384;
    if (max_objects > (1u << 24))
        max_objects = 1u << 24;
    uint64_t nindex = 1;
    while (nindex < 2 * max_objects)
        nindex <<= 1;
    uint64_t npins = 4 * max_objects;
    uint64_t hsize = zs_round_up(sizeof(zs_header), 4096);
    uint64_t records_off = hsize;
    uint64_t index_off = records_off + max_objects * sizeof(zs_record);
    uint64_t pins_off = zs_round_up(index_off + nindex * sizeof(uint32_t), ZS_ALIGN);
    uint64_t data_off = zs_round_up(pins_off + npins * sizeof(zs_pin), 4096);
    uint64_t total = data_off + capacity;

    struct statvfs vfs;
    char dir[4096];
    strncpy(dir, path, sizeof dir - 1);
    dir[sizeof dir - 1] = 0;
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = 0;
    if (statvfs(slash ? dir : ".", &vfs) == 0 &&
        (uint64_t)vfs.f_bavail * vfs.f_frsize < total) {
        errno = ENOSPC;
        return ZS_ERR_NO_SPACE;
    }
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? ZS_ERR_EXISTS : ZS_ERR_SYS;
    if (ftruncate(fd, (off_t)total) != 0) {
        rc = ZS_ERR_SYS;
        goto err;
    }
    if ((rc = map_file(fd, total, &s)) != ZS_OK)
        goto err;
    close(fd);
    fd = -1;
    zs_header *h = s->h;
    h->version = ZS_LAYOUT_VERSION;
    h->header_size = (uint32_t)hsize;
    h->total_size = total;
    h->capacity = capacity;
    h->records_off = records_off;
    h->nrecords = max_objects;
    h->index_off = index_off;
    h->nindex = nindex;
    h->pins_off = pins_off;
    h->npins = npins;
    h->data_off = data_off;
    h->warm_bytes = warm_bytes; /* 0: adaptive (zs_warm_headroom) */
    h->creator_pid = getpid();
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    rc = pthread_mutex_init(&h->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc) {
        errno = rc;
        rc = ZS_ERR_SYS;
        goto err;
    }
    layout(s);
    zs_table_init(s);
    zs_alloc_init(s);
    uint64_t sync = ZS_SYNC_WARM < capacity ? ZS_SYNC_WARM : capacity;
    zs_warm_populate(s, 0, sync);
    h->warm_end = sync;
    h->commit_end = sync;
    h->clients[0].pid = getpid();
    h->clients[0].state = ZS_CLIENT_ACTIVE;
    s->client = 0;
    s->owner = 1;
    __atomic_store_n(&h->magic, ZS_MAGIC, __ATOMIC_RELEASE); /* valid from here on */
    s->mapped_end = sync;
    zs_warm_start(s); /* best effort: without it puts only fault more */
    *out = s;
    return ZS_OK;
err:
    if (s) {
        munmap(s->base, s->size);
        free(s);
    }
    if (fd >= 0)
        close(fd);
    int saved = errno;
    unlink(path);
    errno = saved;
    return rc;
}

static int validate(const zs_header *h, uint64_t file_size)
{
    if (file_size < sizeof(zs_header) ||
        __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != ZS_MAGIC)
        return ZS_ERR_BAD_MAGIC;
    if (h->version != ZS_LAYOUT_VERSION)
        return ZS_ERR_BAD_VERSION;
    uint64_t nindex = h->nindex;
    if (h->total_size != file_size || h->header_size < sizeof(zs_header) ||
        h->records_off < h->header_size ||
        h->index_off < h->records_off + h->nrecords * sizeof(zs_record) ||
        h->pins_off < h->index_off + nindex * sizeof(uint32_t) ||
        h->data_off < h->pins_off + h->npins * sizeof(zs_pin) || h->data_off % ZS_ALIGN ||
        h->data_off + h->capacity != h->total_size || !nindex || (nindex & (nindex - 1)) ||
        nindex < 2 * h->nrecords || h->nrecords >= UINT32_MAX || h->npins >= UINT32_MAX ||
        h->rec_hi > h->nrecords || h->pin_hi > h->npins)
        return ZS_ERR_CORRUPT;
    return ZS_OK;
}

int zs_attach(const char *path, zs_store **out)
{
    int rc;
    zs_store *s = NULL;
    struct stat st;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? ZS_ERR_NOT_FOUND : ZS_ERR_SYS;
    if (fstat(fd, &st) != 0) {
        rc = ZS_ERR_SYS;
        goto err;
    }
    if ((uint64_t)st.st_size < sizeof(zs_header)) {
        rc = ZS_ERR_BAD_MAGIC;
        goto err;
    }
    if ((rc = map_file(fd, (uint64_t)st.st_size, &s)) != ZS_OK)
        goto err;
    if ((rc = validate(s->h, (uint64_t)st.st_size)) != ZS_OK)
        goto err;
    layout(s);
    if ((rc = zs_lock(s, 1)) != ZS_OK)
        goto err;
    rc = ZS_ERR_CLIENTS_FULL;
    for (int c = 0; c < ZS_MAX_CLIENTS; c++) {
        if (s->h->clients[c].state == ZS_CLIENT_FREE) {
            s->h->clients[c].pid = getpid();
            s->h->clients[c].pins = 0;
            s->h->clients[c].state = ZS_CLIENT_ACTIVE; /* commit */
            s->client = c;
            rc = ZS_OK;
            break;
        }
    }
    zs_unlock(s);
    if (rc != ZS_OK)
        goto err;
    close(fd);
    zs_warm_start(s); /* pre-faults this mapping in the background; best effort */
    *out = s;
    return ZS_OK;
err:
    if (s) {
        munmap(s->base, s->size);
        free(s);
    }
    close(fd);
    return rc;
}

/* A forked child inherits the handle but neither the client number nor the thread: it must
 * not release its parent's pins nor join a thread it does not have. */
int zs_detach(zs_store *s)
{
    if (s->pid != getpid()) {
        s->client = -1;
        return ZS_OK;
    }
    zs_warm_stop(s);
    if (s->client < 0)
        return ZS_OK;
    int rc = zs_release_client(s, s->client);
    s->client = -1;
    return rc;
}

void zs_close(zs_store *s)
{
    if (!s)
        return;
    zs_detach(s);
    munmap(s->base, s->size);
    free(s);
}

int zs_unlink(const char *path)
{
    return unlink(path) == 0 ? ZS_OK : (errno == ENOENT ? ZS_ERR_NOT_FOUND : ZS_ERR_SYS);
}

int zs_client_id(const zs_store *s) { return s->client; }
uint8_t *zs_base(const zs_store *s) { return s->base; }
uint64_t zs_map_size(const zs_store *s) { return s->size; }

void zs_copy(void *dst, const void *src, uint64_t n) { memcpy(dst, src, n); }

const char *zs_strerror(int code)
{
    switch (code) {
    case ZS_OK: return "ok";
    case ZS_ERR_FULL: return "object store full";
    case ZS_ERR_EXISTS: return "object already exists";
    case ZS_ERR_NOT_FOUND: return "object not found";
    case ZS_ERR_BAD_SIZE: return "size out of range";
    case ZS_ERR_STATE: return "wrong object state for this operation";
    case ZS_ERR_TABLE_FULL: return "object table full";
    case ZS_ERR_CLIENTS_FULL: return "too many clients attached";
    case ZS_ERR_PINS_FULL: return "pin table full";
    case ZS_ERR_NOT_SEALED: return "object not sealed yet";
    case ZS_ERR_SYS: return "system call failed";
    case ZS_ERR_BAD_MAGIC: return "not a zactor object store segment (bad magic)";
    case ZS_ERR_BAD_VERSION: return "object store segment of another layout version";
    case ZS_ERR_CORRUPT: return "object store segment is corrupt";
    case ZS_ERR_NO_SPACE: return "not enough free space in the shared-memory file system";
    case ZS_ERR_BAD_CLIENT: return "no such client";
    case ZS_ERR_CLOSED: return "store handle is closed";
    default: return "unknown error";
    }
}
