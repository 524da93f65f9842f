"""Keep freed memory in the process during long CPU captures, so the model's activations are not page-faulted in again.

glibc's malloc returns large freed blocks to the kernel (``munmap``, or trimming the heap top), and adapts its
thresholds as it goes. A small model's forward and backward allocate and free the same few-MB activations every
batch, so in a fresh process each batch can fault its pages in again: the TokenCNN capture of 2,048 texts page-faulted
~180k times a run and took 2.12 s against 1.61 s with this set (`benchmarks/bench_capture.py --retain-freed-memory`;
the bare forward + backward faults as much or not at all, depending on what ran before it).
`retain_freed_memory` fixes the thresholds (``mallopt``) so freed blocks stay in the process
and are reused; the price is resident memory that is not given back (at most ``trim_mb`` above what is in use, plus
blocks below ``mmap_mb``). The command line does this for ``tracinwe index build``; a script calls it once, early.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def retain_freed_memory(mmap_mb: int = 256, trim_mb: int = 512, top_pad_mb: int = 64) -> bool:
    """Tell glibc's malloc to serve blocks below ``mmap_mb`` from its heap, trim the heap only when ``trim_mb`` lie free
    at its top, and grow it ``top_pad_mb`` at a time. Returns False (and changes nothing) where the C library is not
    glibc; True once set. Process-wide and permanent: glibc then stops adapting its thresholds."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = ((M_MMAP_THRESHOLD, mmap_mb), (M_TRIM_THRESHOLD, trim_mb), (M_TOP_PAD, top_pad_mb))
    return all(libc.mallopt(param, megabytes << 20) == 1 for param, megabytes in settings)
