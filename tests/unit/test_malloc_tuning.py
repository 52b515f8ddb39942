"""glibc's malloc as `serve` limits it before its threads start: every thread shares two
arenas instead of taking one of its own, unless the operator set MALLOC_ARENA_MAX. Each case
runs in a fresh interpreter: glibc fixes the limit once, when a second arena is first needed."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.malloc_tuning import ARENAS

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")

ROOT = Path(__file__).resolve().parents[2]

# Eight threads allocate (4 kB blocks: malloc's, not Python's small-object allocator) and hold
# it all at once; then malloc_info(3) says how many arenas ("heaps") the process has.
PROGRAM = """
import ctypes, os, sys, tempfile, threading
from exporter.malloc_tuning import limit_arenas
print("set" if sys.argv[1] == "limit" and limit_arenas() else "unset")
barrier = threading.Barrier(9)
held = []
def allocate():
    held.append([bytearray(4096) for _ in range(50)])
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads:
    t.start()
barrier.wait()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
fd, path = tempfile.mkstemp()
os.close(fd)
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, stream)
libc.fclose(stream)
with open(path) as info:
    print(info.read().count("<heap nr="))
os.unlink(path)
for t in threads:
    t.join()
"""


def arenas(mode: str, **env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        env={**environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    said, heaps = done.stdout.split()
    return said, int(heaps)


def test_threads_share_two_arenas_once_limited() -> None:
    assert arenas("limit") == ("set", ARENAS)


def test_without_the_limit_each_thread_takes_its_own() -> None:
    said, heaps = arenas("none")
    assert said == "unset" and heaps > ARENAS + 4  # what the limit saves


def test_the_operators_malloc_arena_max_wins() -> None:
    assert arenas("limit", MALLOC_ARENA_MAX="3") == ("unset", 3)
