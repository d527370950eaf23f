"""The C store under AddressSanitizer and UBSan: a C driver (csrc/tests/zstore_test.c) runs
random operations with zs_check after each and a SIGKILL inside the lock."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def test_c_driver_under_asan(tmp_path, shm_path):
    exe = str(tmp_path / "zstore_test")
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "*.c")))
    sources.append(os.path.join(ROOT, "csrc", "tests", "zstore_test.c"))
    build = subprocess.run(
        ["gcc", "-std=gnu11", "-g", "-O1", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=undefined", "-Wall", "-Werror", "-I", os.path.join(ROOT, "csrc"),
         *sources, "-o", exe, "-lpthread"], capture_output=True, text=True, timeout=120)
    if build.returncode and "sanitizer" in build.stderr:
        pytest.skip(f"no sanitizer runtime: {build.stderr[:200]}")
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1")
    env.pop("ZACTOR_STORE_FAULT", None)
    run = subprocess.run([exe, shm_path], capture_output=True, text=True, timeout=100, env=env)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]
