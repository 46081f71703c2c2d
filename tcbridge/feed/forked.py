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
reactor's pool threads sit idle).  Whatever goes wrong with the copy (it
cannot be made, raises, is killed, or sends nothing for
L{RESULT_TIMEOUT} seconds), this process computes the missing results
itself: the outcome never depends on the copy.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import select
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar

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


#: Seconds the copy may take for one result before this process stops
#: waiting for it and computes the rest itself.
RESULT_TIMEOUT: Final = 120.0


def ordered_map(
    func: Callable[[In], Out],
    items: Sequence[In],
    *,
    fork: bool,
    timeout: float = RESULT_TIMEOUT,
) -> Iterator[Out]:
    """
    C{func} of each item, in order.  With C{fork} (and at least two items),
    a forked copy of this process computes the odd-numbered items while
    this one computes the even-numbered ones.  If the copy cannot be made,
    fails, dies or takes longer than C{timeout} seconds for a result, this
    process computes what is left.

    C{func} must be pure: the copy's side effects are lost.
    """
    if not fork or len(items) < 2:
        yield from map(func, items)
        return
    try:
        read_end, write_end = os.pipe()
    except OSError:
        yield from map(func, items)
        return
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        yield from map(func, items)
        return
    if pid == 0:  # pragma: no cover - the copy never returns to coverage
        os.close(read_end)
        _serve(func, items, write_end)
    os.close(write_end)
    try:
        yield from _collect(func, items, _Pipe(read_end, timeout))
    finally:
        os.close(read_end)
        _end(pid)


def _serve(func: Callable[[In], Out], items: Sequence[In], out: int) -> None:
    """
    The copy: compute the odd-numbered items, send each result pickled
    (after its length, 8 bytes) to C{out}, and leave without running
    anything of the parent's (no atexit, no flushing of its buffers, none
    of its signal handlers, nothing on its standard output or error).
    """
    status = 1
    try:
        _quiet()
        # The collector would write to every object it visits and so copy
        # pages the two processes now share.
        gc.disable()
        for at in range(1, len(items), 2):
            data = pickle.dumps(func(items[at]), protocol=pickle.HIGHEST_PROTOCOL)
            _write_all(out, len(data).to_bytes(8, "big"))
            _write_all(out, data)
        status = 0
    finally:
        os._exit(status)


def _quiet() -> None:
    """
    In the copy: default handling of SIGINT and SIGTERM (the parent's
    reactor handlers must not run here), no signal wake-up descriptor, and
    standard output and error to /dev/null.
    """
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Pipe:
    """
    The reading end of the copy's results, read with a deadline per result.
    """

    def __init__(self, fd: int, timeout: float) -> None:
        self.fd = fd
        self.timeout = timeout

    def result(self) -> Any:
        """
        The next result.

        :raise TimeoutError: if it took too long.
        :raise EOFError: if the copy ended before sending it.
        """
        deadline = time.monotonic() + self.timeout
        size = int.from_bytes(self._read(8, deadline), "big")
        return pickle.loads(self._read(size, deadline))  # noqa: S301 - our own fork's bytes

    def _read(self, size: int, deadline: float) -> bytes:
        chunks = []
        while size:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([self.fd], [], [], wait)[0]:
                raise TimeoutError("the copy sent no result in time")
            chunk = os.read(self.fd, min(size, 1 << 20))
            if not chunk:
                raise EOFError("the copy ended")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)


def _collect(func: Callable[[In], Out], items: Sequence[In], results: _Pipe) -> Iterator[Out]:
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
            got = results.result()
        except Exception:
            copy_works = False
            got = func(item)
        yield got


def _end(pid: int) -> None:
    """
    Make sure the copy is gone (it may still be working if the results
    were not all read) and reap it.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
