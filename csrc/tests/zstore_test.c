/* zstore_test.c -- a C driver of the store for AddressSanitizer/UBSan builds.
 *
 * Built and run by tests/store/test_store_c_asan.py:
 *   gcc -fsanitize=address,undefined -g -Icsrc csrc/zs_(all).c csrc/tests/zstore_test.c -lpthread
 *   ./a.out /dev/shm/zactor-test-...
 * Random operations with zs_check after each, then child processes SIGKILLed inside the lock
 * at every fault point from random states, each followed by the parent's recovery and
 * release_client. Prints "ok" and exits 0.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zstore.h"

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)
#define NIDS 40

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void make_id(uint8_t *id, uint32_t n)
{
    memset(id, 0x5a, ZS_ID_SIZE);
    memcpy(id + 24, &n, 4);
}

static void check(zs_store *s, const char *after)
{
    int bad = zs_check(s);
    if (bad)
        FAIL("%d invariants violated after %s", bad, after);
}

static uint64_t size_scale = 1; /* the trim phase uses megabyte objects */

static void random_ops(zs_store *s, int steps)
{
    static const uint64_t sizes[] = {0, 1, 64, 100, 4096, 70000, 300000};
    int pinned[NIDS] = {0};
    uint8_t id[ZS_ID_SIZE];
    for (int i = 0; i < steps; i++) {
        uint32_t n = (uint32_t)(next_rand() % NIDS);
        make_id(id, n);
        uint8_t *data;
        const uint8_t *rdata;
        uint64_t dsize, msize;
        switch (next_rand() % 7) {
        case 0:
        case 1: {
            uint64_t size = sizes[next_rand() % 7] * size_scale;
            if (zs_create_object(s, id, size, 3, (uint32_t)(next_rand() % 4 == 0), &data) ==
                ZS_OK) {
                memset(data, (int)n, size + 3);
                if (next_rand() % 5)
                    zs_seal(s, id);
            }
            break;
        }
        case 2:
            if (zs_get(s, id, &rdata, &dsize, &msize) == ZS_OK) {
                for (uint64_t k = 0; k < dsize; k += 997)
                    if (rdata[k] != (uint8_t)n)
                        FAIL("object %u: wrong byte at %llu", n, (unsigned long long)k);
                pinned[n]++;
            }
            break;
        case 3:
            if (pinned[n] && zs_release(s, id) == ZS_OK)
                pinned[n]--;
            break;
        case 4:
            zs_delete(s, id);
            break;
        case 5:
            zs_abort(s, id);
            break;
        case 6:
            zs_set_evictable(s, id, (int)(next_rand() % 2));
            break;
        }
        check(s, "a random operation");
    }
}

int main(int argc, char **argv)
{
    if (argc != 2)
        FAIL("usage: %s SHM_PATH", argv[0]);
    const char *path = argv[1];
    zs_store *s, *other;
    zs_stats st;

    if (zs_create(path, 2u << 20, 32, 0, &s) != ZS_OK)
        FAIL("create failed");
    if (zs_attach(path, &other) != ZS_OK)
        FAIL("attach failed");
    random_ops(s, 3000);
    random_ops(other, 1000);
    zs_release_client(s, zs_client_id(other));
    check(s, "release_client");

    /* Children die inside the lock at each fault point, from random states; the next
     * locker recovers every time. */
    static const char *faults[] = {"crash_in_lock", "crash_in_get", "crash_in_release",
                                   "crash_in_delete"};
    uint64_t expected = 0;
    for (int round = 0; round < 12; round++) {
        const char *fault = faults[round % 4];
        pid_t pid = fork();
        if (pid == 0) {
            zs_store *c;
            setenv("ZACTOR_STORE_FAULT", fault, 1);
            if (zs_attach(path, &c) != ZS_OK)
                _exit(2);
            rng ^= (uint64_t)round * 0x9e3779b97f4a7c15ull;
            random_ops(c, 5000); /* dies at the first operation that reaches the point */
            _exit(3);
        }
        int status;
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
            continue; /* the random walk never reached the point: nothing to recover */
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
            FAIL("%s: the child was not killed by its fault point (status %d)", fault, status);
        expected++;
        check(s, fault);
        zs_stats_get(s, &st);
        if (st.recoveries != expected)
            FAIL("%s: expected %llu recoveries, got %llu", fault, (unsigned long long)expected,
                 (unsigned long long)st.recoveries);
        zs_client_info info[ZS_MAX_CLIENTS];
        int n = zs_clients(s, info, ZS_MAX_CLIENTS);
        for (int i = 0; i < n; i++)
            if (info[i].pid == pid)
                zs_release_client(s, info[i].client);
        check(s, "release_client of the dead child");
        random_ops(s, 200);
    }
    if (expected < 8)
        FAIL("only %llu of 12 children reached their fault point", (unsigned long long)expected);
    random_ops(s, 500);

    zs_close(other);
    zs_close(s);
    zs_unlink(path);

    /* Trimming races: a tiny fixed headroom makes the creator's thread punch the free top
     * while both handles create, verify and free megabyte objects (bytes checked by gets). */
    if (zs_create(path, 64u << 20, 64, 64u << 10, &s) != ZS_OK)
        FAIL("create (trim phase) failed");
    if (zs_attach(path, &other) != ZS_OK)
        FAIL("attach (trim phase) failed");
    size_scale = 16;
    for (int round = 0; round < 20; round++) {
        random_ops(round % 2 ? other : s, 150);
        usleep(5000); /* let the thread trim between rounds too */
    }
    zs_stats_get(s, &st);
    if (!st.given_back)
        FAIL("the trim phase gave nothing back");
    zs_close(other);
    zs_close(s);
    zs_unlink(path);
    puts("ok");
    return 0;
}
