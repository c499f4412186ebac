"""Private arrays on transparent huge pages, for the memory a lookup reads at random.

At 1e8 features every lookup misses the TLB: the snapshot's files are mapped from the
page cache, which the kernel maps in 2 MiB pieces where it can, but memory a process
writes itself (a copy-on-write page, a numpy array) comes in 4 KiB pages unless it asks
for more. A random read of a 100 MB mask array copied page by page measured ~9 ns an id
slower than the same read of the mapped file, and the same copy on huge pages as fast as
the file (``bench/updates.py --parts lookup``). Where the kernel has transparent huge
pages off, the advice is a no-op and the arrays are ordinary anonymous memory.
"""

from __future__ import annotations

import mmap

import numpy as np
import numpy.typing as npt

HUGE_PAGE = 2 << 20


def zeros(shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> npt.NDArray:
    """A zero-filled array in a private anonymous map, 2 MiB aligned, advised MADV_HUGEPAGE.

    The map lives as long as the array (numpy keeps the buffer's owner alive).
    """
    dt = np.dtype(dtype)
    count = int(np.prod(shape))
    nbytes = count * dt.itemsize
    if nbytes < HUGE_PAGE:
        return np.zeros(shape, dt)  # below one huge page there is nothing to gain
    length = (nbytes + HUGE_PAGE - 1) // HUGE_PAGE * HUGE_PAGE
    mm = mmap.mmap(-1, length + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(mm, np.uint8)
    start = -raw.ctypes.data % HUGE_PAGE
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        try:
            mm.madvise(advice, start, length)
        except OSError:
            pass  # a kernel built without THP: ordinary pages
    return raw[start : start + nbytes].view(dt).reshape(shape)


def full(shape: int | tuple[int, ...], value: int | float, dtype: npt.DTypeLike) -> npt.NDArray:
    """:func:`zeros` filled with ``value``."""
    out = zeros(shape, dtype)
    out.fill(value)
    return out


def copy(a: npt.NDArray) -> npt.NDArray:
    """A writable copy of ``a`` (same shape and dtype, C order) in :func:`zeros` memory."""
    out = zeros(a.shape, a.dtype)
    np.copyto(out, a)
    return out
