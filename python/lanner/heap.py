"""The C heap's hold on freed memory (glibc malloc): release_free_heap, server_heap_options.

Loading a model builds large temporary tables (the tokenizer's merge list, the vocabulary as
Python strings, llguidance's token list); once freed, glibc keeps most of those pages in its
heaps, where they count in the process's RSS until reused. release_free_heap() returns every
free page of every arena (malloc_trim(0)); server_heap_options() makes large blocks come from
mmap (handed back at free) in a long-running server. No-ops where libc is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Optional

M_MMAP_THRESHOLD = -3  # glibc mallopt parameters (malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024  # bytes: larger blocks are mmap'ed (glibc's default is 128 KiB,
                             # raised on the fly up to 32 MiB as such blocks are freed)
ARENA_MAX = 2                # heaps shared by the HTTP threads (default: 8 per core)


def _glibc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


def release_free_heap() -> bool:
    """Collect garbage, then malloc_trim(0). True if glibc released something."""
    gc.collect()
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(libc.malloc_trim(0))


def server_heap_options() -> bool:
    """A fixed mmap threshold (blocks over 256 KiB, e.g. logits copies, are unmapped at free
    instead of fragmenting a heap) and at most ARENA_MAX arenas for the process's threads.
    Call before the threads start allocating. True if glibc took both."""
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_ARENA_MAX, ARENA_MAX))
