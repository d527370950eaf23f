"""cffi build script of the object store (out-of-line API mode).

``setup.py`` names ``ffibuilder`` in ``cffi_modules``; ``pip install .`` and
``pip install -e .`` compile csrc/*.c into the extension module ``zactor.store._zstore``.
Run this file directly to build the module in place in a checkout
(``python zactor/store/_build.py``).

Only zactor/store/client.py may import the compiled module.
"""

from __future__ import annotations

import glob
import os

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
_CSRC = os.path.join(_ROOT, "csrc")


def _rel(path: str) -> str:
    """setuptools wants source paths relative to the project root (the build's cwd)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


CDEF = """
#define ZS_ID_SIZE 28
#define ZS_MAX_CLIENTS 256
#define ZS_LAYOUT_VERSION 2
#define ZS_OBJ_NOEVICT 1
enum {
    ZS_OK = 0, ZS_ERR_FULL = -1, ZS_ERR_EXISTS = -2, ZS_ERR_NOT_FOUND = -3, ZS_ERR_BAD_SIZE = -4,
    ZS_ERR_STATE = -5, ZS_ERR_TABLE_FULL = -6, ZS_ERR_CLIENTS_FULL = -7, ZS_ERR_PINS_FULL = -8,
    ZS_ERR_NOT_SEALED = -9, ZS_ERR_SYS = -10, ZS_ERR_BAD_MAGIC = -11, ZS_ERR_BAD_VERSION = -12,
    ZS_ERR_CORRUPT = -13, ZS_ERR_NO_SPACE = -14, ZS_ERR_BAD_CLIENT = -15, ZS_ERR_CLOSED = -16,
};

typedef struct zs_store zs_store;
typedef struct {
    uint64_t capacity, total_size, used_bytes, data_bytes, free_bytes, evictable_bytes;
    uint64_t pinned_bytes, object_count, sealed_count, pinned_count, max_objects, evictions;
    uint64_t recoveries, high_water, warm_end, clients, headroom, commit_end, given_back;
} zs_stats;
typedef struct { int32_t client; int32_t pid; uint64_t pins; } zs_client_info;

int zs_create(const char *path, uint64_t capacity, uint64_t max_objects, uint64_t warm_bytes,
              zs_store **out);
int zs_attach(const char *path, zs_store **out);
int zs_detach(zs_store *s);
void zs_close(zs_store *s);
int zs_unlink(const char *path);
int zs_client_id(const zs_store *s);
uint8_t *zs_base(const zs_store *s);
uint64_t zs_map_size(const zs_store *s);
int zs_create_object(zs_store *s, const uint8_t *id, uint64_t data_size, uint64_t meta_size,
                     uint32_t flags, uint8_t **data);
int zs_seal(zs_store *s, const uint8_t *id);
int zs_abort(zs_store *s, const uint8_t *id);
int zs_get(zs_store *s, const uint8_t *id, const uint8_t **data, uint64_t *data_size,
           uint64_t *meta_size);
int zs_release(zs_store *s, const uint8_t *id);
int zs_delete(zs_store *s, const uint8_t *id);
int zs_contains(zs_store *s, const uint8_t *id);
int zs_set_evictable(zs_store *s, const uint8_t *id, int evictable);
int zs_release_client(zs_store *s, int client);
int zs_clients(zs_store *s, zs_client_info *out, int max);
int zs_stats_get(zs_store *s, zs_stats *out);
int zs_check(zs_store *s);
int64_t zs_blocks(zs_store *s, uint64_t *offsets, uint64_t *sizes, uint8_t *is_free,
                  int64_t max);
void zs_copy(void *dst, const void *src, uint64_t n);
const char *zs_strerror(int code);
"""


def make_builder(relative: bool = True) -> FFI:
    """The FFI builder; source paths relative to the root for setuptools, else absolute."""
    fix = _rel if relative else (lambda p: p)
    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(
        "zactor.store._zstore",
        '#include "zstore.h"',
        sources=[fix(p) for p in sorted(glob.glob(os.path.join(_CSRC, "*.c")))],
        include_dirs=[fix(_CSRC)],
        extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
        libraries=["pthread"],
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    make_builder(relative=False).compile(tmpdir=_ROOT, verbose=False)
