"""release_free_heap: hand the C heap's free pages back to the OS (glibc's malloc_trim).

Loading a model builds large temporary tables (the tokenizer's merge list, the vocabulary as
Python strings); once freed, glibc keeps most of those pages in its heaps, where they count in
the process's RSS until reused. malloc_trim(0) returns every free page of every arena (~50 MiB
after loading Gemma 3's 262k vocabulary). A no-op where libc is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def release_free_heap() -> bool:
    """Collect garbage, then malloc_trim(0). True if glibc released something."""
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
