"""Process-level tuning for CPU inference, applied once before a model runs."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_tuned = False


def tune_allocator() -> bool:
    """Stop glibc from returning and re-faulting large activation buffers on every batch.

    With glibc's defaults, buffers above the dynamic mmap threshold are mmap'ed and unmapped per
    allocation, so each batch of CNN inference page-faults its activations afresh (measured here:
    about half of EfficientNet-Lite0's CPU time). Raising the mmap and trim thresholds keeps
    them in the heap for reuse. Returns True when applied (glibc only; a no-op elsewhere).

    mallopt caps the mmap threshold at 32 MiB, but one activation of a batch of 64 at 224x224
    is ~100 MiB, so the threshold alone left ~13,000 page faults per image; turning mmap off
    for malloc (M_MMAP_MAX=0) cut them to a few thousand or none and raised images per
    CPU-second 1.6-1.9x on EfficientNet-Lite0 (`bench/bench_build.py --allocator`, BENCHMARKS.md).
    Big blocks then come from the heap, which the trim threshold keeps from being handed back
    to the kernel after every batch.
    """
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return _tuned
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # 32 MiB is glibc's largest accepted mmap threshold on 64-bit; trim only above 1 GiB free.
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    ok_trim = mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024)
    ok_max = mallopt(_M_MMAP_MAX, 0)
    _tuned = bool(ok_mmap and ok_trim and ok_max)
    return _tuned
