# -*- test-case-name: tests.integration.test_forked -*-
"""
Using the second core for a build: L{ordered_map} computes a pure function
over a list of inputs in two processes, this one and a forked copy of it,
and hands the results back in order.

The work is shared as it goes, not split in advance: every input's index
waits in a pipe both processes read (a I{ticket} each), so whichever is
free takes the next one, and the process that also writes the results
out never waits for a copy that has fallen behind, nor the copy for it.
The copy shares this process's memory (copy on write), so the inputs and
everything the function reads cost nothing to hand over; only results
travel, pickled through a second pipe, and this process holds at most
L{AHEAD} of them before it needs them.  Forking is safe only while no
other thread of this process is working (a busy thread may hold a lock the
copy would never see released): callers ask for it only where that holds
(the build child forks before its writing thread starts; write mode
builds after its pull, when the reactor's pool threads sit idle).  Whatever goes wrong with the copy
(it cannot be made, raises, is killed, or sends nothing for
L{RESULT_TIMEOUT} seconds), this process computes the missing results
itself: the outcome never depends on the copy.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import os
import pickle
import select
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar

from twisted.logger import globalLogPublisher

from tcbridge.memory import trim

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


#: Results this process holds (computed ahead, or sent by the copy) before
#: it needs them.
AHEAD: Final = 3
_TICKET: Final = 4


def ordered_map(
    func: Callable[[In], Out],
    items: Sequence[In],
    *,
    fork: bool,
    timeout: float = RESULT_TIMEOUT,
) -> Iterator[Out]:
    """
    C{func} of each item, in order.  With C{fork} (and at least two items),
    a forked copy of this process computes some of them: both take the
    next item not taken yet whenever they are free.  If the copy cannot be
    made, fails, dies or takes longer than C{timeout} seconds for a result,
    this process computes what is left.

    C{func} must be pure: the copy's side effects are lost.
    """
    parent = os.getpid()
    forked = fork_with_tickets(len(items)) if fork and len(items) >= 2 else None
    if forked is None:
        yield from map(func, items)
        return
    pid, tickets, read_end, write_end = forked
    if pid == 0:  # pragma: no cover - the copy never returns to coverage
        os.close(read_end)
        _serve(func, items, tickets, write_end, parent)
    os.close(write_end)
    try:
        yield from _collect(func, items, tickets, _Pipe(read_end, timeout))
    finally:
        os.close(read_end)
        os.close(tickets)
        end_copy(pid)


def fork_with_tickets(count: int) -> tuple[int, int, int, int] | None:
    """
    The tickets of C{count} items (L{ticket_pipe}), a pipe for the copy's
    results, and the fork: C{(pid, tickets, read_end, write_end)} in both
    processes (C{pid} is 0 in the copy); C{None}, with nothing left open,
    if any of it cannot be made.
    """
    # Free memory given back first is memory the copy cannot come to own
    # a copy of by reusing it.
    trim()
    made: list[int] = []
    try:
        made.append(ticket_pipe(count))
        made.extend(os.pipe())
        _widen(made[2])
        pid = os.fork()
    except OSError:
        for fd in made:
            os.close(fd)
        return None
    tickets, read_end, write_end = made
    return pid, tickets, read_end, write_end


#: the buffer asked for a results pipe: a window's reports fit in it whole
RESULTS_PIPE: Final = 1 << 20


def _widen(write_end: int) -> None:
    """
    Give a results pipe a buffer of L{RESULTS_PIPE} bytes where the system
    allows (Linux): the copy then writes a result in one go instead of
    waiting for each 64 KiB to be read, which cost the render a fifth of
    its time.  Elsewhere, or over the system's limit, the pipe stays as
    it is.
    """
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, RESULTS_PIPE)


def ticket_pipe(count: int) -> int:
    """
    A pipe holding every index from 0 to C{count - 1} (4 bytes each, in
    order), its writing end closed: the read end, non-blocking (an empty
    pipe reads as its end).

    :raise OSError: if the pipe cannot be made or cannot hold them all.
    """
    read_end, write_end = os.pipe()
    try:
        data = b"".join(at.to_bytes(_TICKET, "big") for at in range(count))
        if len(data) > fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ):
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, len(data))
        os.set_blocking(write_end, False)
        if os.write(write_end, data) != len(data):
            raise OSError("the ticket pipe took only part of the tickets")
        os.set_blocking(read_end, False)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


def take_ticket(tickets: int) -> int | None:
    """
    The next index nobody has taken, or C{None} when all are taken.  (All
    tickets were written at once before either process read any, so a read
    gets one whole ticket.)
    """
    try:
        data = os.read(tickets, _TICKET)
    except BlockingIOError:
        return None
    return int.from_bytes(data, "big") if len(data) == _TICKET else None


def _serve(
    func: Callable[[In], Out], items: Sequence[In], tickets: int, out: int, parent: int
) -> None:
    """
    The copy of process C{parent}: take tickets and compute their items,
    sending each result with its index to C{out} (L{send_pickled}), and
    leave without running anything of the parent's (no atexit, no flushing
    of its buffers, none of its signal handlers, nothing on its standard
    output or error).
    """
    status = 1
    try:
        quiet_copy(parent)
        # The collector would write to every object it visits and so copy
        # pages the two processes now share.
        gc.disable()
        while (at := take_ticket(tickets)) is not None:
            send_pickled(out, (at, func(items[at])))
        status = 0
    finally:
        os._exit(status)


def quiet_copy(parent: int) -> None:
    """
    In the copy of process C{parent}: killed when it dies (Linux), default handling of
    SIGINT and SIGTERM (the parent's reactor handlers must not run here),
    no signal wake-up descriptor, no log observers (the parent's log files
    are the parent's to write and rotate), and standard output and error
    to /dev/null.
    """
    _die_with_parent(parent)
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_DFL)
    # The publisher keeps its observers to itself; the copy drops them all.
    for observer in list(getattr(globalLogPublisher, "_observers", ())):
        globalLogPublisher.removeObserver(observer)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent(parent: int) -> None:
    """
    Ask Linux to kill this process when its parent (C{parent}) dies
    (C{prctl PR_SET_PDEATHSIG}); elsewhere nothing happens.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def send_pickled(fd: int, thing: object) -> None:
    """
    Send C{thing} pickled, for L{receive_pickled}; blocks until all is
    written.  The pickle is streamed: no copy of a large result is made
    (a pull's builder is tens of megabytes).
    """
    with open(fd, "wb", closefd=False) as out:
        pickle.dump(thing, out, protocol=pickle.HIGHEST_PROTOCOL)


def receive_pickled(fd: int, deadline: float) -> Any:
    """
    One thing L{send_pickled} sent on C{fd} (from our own fork only), read
    as it is unpickled (nothing past its end).

    :raise TimeoutError: if it is not all there by C{deadline} (a
        C{time.monotonic} time).
    :raise EOFError: if the sender ended before sending it all.
    """
    return pickle.load(_Reader(fd, deadline))  # noqa: S301 - our own fork's bytes


class _Reader:
    """
    What the unpickler reads a pipe through: exactly the bytes asked for,
    each read by a deadline.
    """

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd = fd
        self.deadline = deadline

    def read(self, size: int) -> bytes:
        buffer = bytearray(size)
        self.readinto(buffer)
        return bytes(buffer)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        with memoryview(buffer) as view, view.cast("B") as whole:
            at = 0
            while at < len(whole):
                if not readable(self.fd, self.deadline - time.monotonic()):
                    raise TimeoutError("the copy sent nothing in time")
                got = os.readv(self.fd, [whole[at:]])
                if not got:
                    raise EOFError("the copy ended")
                at += got
            return at

    def readline(self) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n"):
            line += self.read(1)
        return bytes(line)


class _Pipe:
    """
    The reading end of the copy's results, read with a deadline per result.
    """

    def __init__(self, fd: int, timeout: float) -> None:
        self.fd = fd
        self.timeout = timeout

    def ready(self) -> bool:
        """
        Whether the copy has started sending a result.
        """
        return readable(self.fd, 0)

    def result(self) -> tuple[int, Any]:
        """
        The next result, and the index of its item.

        :raise TimeoutError: if it took too long.
        :raise EOFError: if the copy ended before sending it.
        """
        at, got = receive_pickled(self.fd, time.monotonic() + self.timeout)
        return at, got


def readable(fd: int, wait: float) -> bool:
    """
    Whether C{fd} can be read (or has reached its end) within C{wait}
    seconds (C{poll}: any descriptor number).
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(wait * 1000))))


def _collect(
    func: Callable[[In], Out], items: Sequence[In], tickets: int, results: _Pipe
) -> Iterator[Out]:
    """
    The results in order.  Until an item's result is here, this process
    takes in what the copy has sent, else computes the next item nobody has
    taken (holding at most L{AHEAD} results), else waits for the copy,
    which has the item.  Once the copy has failed, this process takes no
    more tickets and computes every missing result itself.
    """
    held: dict[int, Out] = {}
    copy_works = True
    for at in range(len(items)):
        while at not in held:
            if not copy_works:
                held[at] = func(items[at])
                continue
            room = len(held) < AHEAD
            mine = take_ticket(tickets) if room and not _sent(results) else None
            if mine is not None:
                held[mine] = func(items[mine])
                continue
            try:
                index, got = results.result()
            except Exception:  # the copy failed: what it has not sent is computed here
                copy_works = False
                continue
            held[index] = got
        yield held.pop(at)


def _sent(results: _Pipe) -> bool:
    """
    Whether the copy has started sending a result (a failure to tell counts
    as yes: reading it then finds out what is wrong).
    """
    try:
        return results.ready()
    except OSError:
        return True


def end_copy(pid: int) -> None:
    """
    Make sure the copy is gone (it may still be working if the results
    were not all read) and reap it.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
