# -*- test-case-name: tests.unit.test_cli -*-
"""
Give freed memory back to the system, and keep the garbage collector off
what never dies.

A sync allocates and frees large buffers all the time: each page of 10,000
indicators arrives as a few megabytes of JSON, becomes a dozen megabytes of
objects and is dropped; the build sorts a few megabytes of packed values.
The C library (glibc) by default raises the size above which it maps such
buffers directly after the first few are freed, and then keeps the memory
of later ones in its heap, where it stays in the process's resident size.
L{return_freed_memory} fixes that threshold at 128 KiB (big buffers are
mapped and unmapped, so freeing one gives it back at once), trims the heap
above 128 KiB of free space, and, where several threads allocate, keeps to
two heaps.  Elsewhere than glibc it does nothing.

L{freeze_startup_objects} moves everything made at start (modules,
classes, the configuration: a few hundred thousand objects) out of the
garbage collector's sight: each full collection would otherwise walk them
all, and a page of 10,000 parsed indicators sets one off often enough that
the reactor stalled for 30 ms every few pages.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8
_THRESHOLD: Final = 128 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # The running process's own symbols: the C library is already loaded, and
    # ctypes.util.find_library would run ldconfig in a child process to find it.
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def return_freed_memory() -> bool:
    """
    Tune the C library's allocator as the module docstring says; return
    whether it could be.
    """
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) == 1
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, _THRESHOLD) == 1
    ok &= libc.mallopt(_M_ARENA_MAX, 2) == 1
    return bool(ok)


def trim() -> None:
    """
    Hand the free memory at the top of the heap back to the system now
    (after a build, before the process idles).
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@contextmanager
def reusing_buffers(size: int = 8 * 1024 * 1024) -> Iterator[None]:
    """
    While a build runs, let buffers up to C{size} come from the heap and
    be reused from one batch of reports to the next (mapping each afresh
    would cost a page fault per 4 KiB); afterwards, go back to mapping them
    and give the heap's free memory back.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, size)
        libc.mallopt(_M_TRIM_THRESHOLD, 4 * size)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _THRESHOLD)
        trim()


def freeze_startup_objects() -> None:
    """
    Leave the objects that exist now to the garbage collector's permanent
    generation (call once everything is imported and wired).
    """
    gc.collect()
    gc.freeze()
