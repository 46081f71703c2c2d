# -*- test-case-name: tests.integration.test_forked -*-
"""
Using the second core for a build: L{ordered_map} computes a pure function
over a list of inputs in two processes, this one and a forked copy of it,
and hands the results back in order.

The copy shares this process's memory (copy on write), so the inputs and
everything the function reads cost nothing to hand over; only results
travel, pickled through a pipe.  Forking is safe only while no other
thread of this process is working (a busy thread may hold a lock the copy
would never see released): callers ask for it only where that holds (the
build child has one thread; write mode builds after its pull, when the
reactor's pool threads sit idle).  Whatever goes wrong in the copy (an
exception, a kill, a short read), this process computes the missing
results itself: the outcome never depends on the copy.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def can_fork() -> bool:
    """
    Whether a fork can help L{ordered_map}: a POSIX system with at least
    two cores this process may use.
    """
    if not hasattr(os, "fork") or not hasattr(os, "sched_getaffinity"):
        return False
    return len(os.sched_getaffinity(0)) >= 2


def ordered_map(func: Callable[[In], Out], items: Sequence[In], *, fork: bool) -> Iterator[Out]:
    """
    C{func} of each item, in order.  With C{fork} (and at least two items),
    a forked copy of this process computes the odd-numbered items while
    this one computes the even-numbered ones.

    C{func} must be pure: the copy's side effects are lost.
    """
    if not fork or len(items) < 2:
        yield from map(func, items)
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the copy never returns to coverage
        os.close(read_end)
        _serve(func, items, os.fdopen(write_end, "wb"))
    os.close(write_end)
    with os.fdopen(read_end, "rb") as results:
        try:
            yield from _collect(func, items, results)
        finally:
            _end(pid)


def _serve(func: Callable[[In], Out], items: Sequence[In], out: BinaryIO) -> None:
    """
    The copy: compute the odd-numbered items, pickle each result to C{out},
    and leave without running anything of the parent's (no atexit, no
    flushing of its buffers).
    """
    status = 1
    try:
        # The collector would write to every object it visits and so copy
        # pages the two processes now share.
        gc.disable()
        for at in range(1, len(items), 2):
            pickle.dump(func(items[at]), out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
        status = 0
    finally:
        os._exit(status)


def _collect(func: Callable[[In], Out], items: Sequence[In], results: BinaryIO) -> Iterator[Out]:
    """
    The results in order: even ones computed here, odd ones read from the
    copy, or computed here once the copy has failed.
    """
    copy_works = True
    for at, item in enumerate(items):
        if at % 2 == 0 or not copy_works:
            yield func(item)
            continue
        try:
            yield pickle.load(results)  # noqa: S301 - our own fork, through our own pipe
        except Exception:
            copy_works = False
            yield func(item)


def _end(pid: int) -> None:
    """
    Make sure the copy is gone (it may still be working if the results
    were not all read) and reap it.
    """
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
