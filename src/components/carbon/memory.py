"""Give freed heap back to the system after start-up's one-off allocations.

Building codecarbon's tracker (hardware probing, its data tables) allocates and frees tens of
MB once; glibc keeps the freed pages in its arenas, so RSS stays ~18 MB higher than the
daemon needs for the rest of its life. ``malloc_trim(0)`` returns them. A no-op elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def release_free_memory() -> None:
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        pass
