"""glibc's malloc, limited to two arenas for `serve`'s threads.

glibc gives every thread that allocates an arena of its own, up to eight per core: the query
pool's threads, the HTTP server's and the live grid feed's each take one, and an arena keeps
the memory of the largest things allocated in it (response bodies of several hundred kB,
decoded there) after they are freed. Two arenas bound that: at 200 models the peak RSS fell
from about 59.5 MB to 55 MB, with no measurable change in CPU per cycle or scrape latency
(docs/performance.md). An operator's own `MALLOC_ARENA_MAX` wins; on another C library this
does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

ARENAS = 2
M_ARENA_MAX = -8  # glibc's <malloc.h>


def limit_arenas(arenas: int = ARENAS, environ: Mapping[str, str] | None = None) -> bool:
    """Call before any thread starts (glibc fixes its limit when a second arena is first
    needed); True when the limit was set here."""
    environ = os.environ if environ is None else environ
    if "MALLOC_ARENA_MAX" in environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
