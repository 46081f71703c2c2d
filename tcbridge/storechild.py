# -*- test-case-name: tests.integration.test_storechild -*-
"""
A full sync's transaction on the indicator store, run by a child process.

A full sync sends the store a million rows.  Binding them in a thread of
the service held the interpreter lock for half of each sync and made the
reactor and the pull wait for it (a 1M full sync took 19 s, against 8 s
without the store).  L{ChildStore} runs the same L{IndicatorDB} calls in
C{python -m tcbridge.storechild FOLDER}, on the other core, with its own
connection: the service only hands it blocks of rows.

The calls are L{IndicatorDB.begin}, C{add_rows}, C{remove}, C{commit} and
C{abort}, and L{tcbridge.sync.fill.fill_from_seen} (the rows of pages the
service has written to the file of what the sync saw), in order, each
answered before its result is reported.  The
transaction is the child's: if the child dies, or the service does (the
child's standard input ends), SQLite drops it, and the store keeps its
previous state.

Frames both ways: 8 bytes of length, then a pickle (between this process
and its own child only).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, BinaryIO, Final

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IReactorProcess
from twisted.python.failure import Failure

from tcbridge.childstderr import StderrTail
from tcbridge.indicatordb import IndicatorDB

#: the calls a child runs: L{IndicatorDB} methods, and
#: L{tcbridge.sync.fill.fill_from_seen}
CALLS: Final = frozenset({"begin", "add_rows", "remove", "commit", "abort", "fill_from_seen"})
_STDERR_KEPT: Final = 4096


class StoreChildError(Exception):
    """
    The store's child process failed a call, or ended before answering.
    """


def _frame(thing: object) -> bytes:
    data = pickle.dumps(thing, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(8, "big") + data


class ChildStore(protocol.ProcessProtocol):
    """
    Runs L{IndicatorDB} calls in a child process, in order (a
    L{tcbridge.sync.delta.StoreRunner} for a full sync's transaction).

    :param reactor: starts and watches the child.
    :param folder: the cache folder that holds the store.
    """

    def __init__(self, reactor: IReactorProcess, folder: str) -> None:
        self._reactor = reactor
        self._folder = folder
        self._started = False
        self._waiting: deque[defer.Deferred[Any]] = deque()
        self._buffer = bytearray()
        self._stderr = StderrTail(_STDERR_KEPT)
        self._ended: defer.Deferred[None] = defer.Deferred()
        self._gone: str | None = None

    @property
    def gone(self) -> bool:
        """
        Whether the child could not start or has ended.
        """
        return self._gone is not None

    async def run(self, method: Any, *args: Any) -> Any:
        """
        Run C{method(db, *args)} (an L{IndicatorDB} method of L{CALLS}) in
        the child, after the calls sent before it.

        :raise StoreChildError: if the child failed it, or is gone.
        """
        name = getattr(method, "__name__", "")
        if name not in CALLS:
            raise StoreChildError(f"{name!r} is not a call the store's child runs")
        if self._gone is not None:
            raise StoreChildError(self._gone)
        if not self._started:
            argv = [sys.executable, "-m", "tcbridge.storechild", self._folder]
            try:
                self._reactor.spawnProcess(self, argv[0], argv, env=dict(os.environ))
            except Exception as e:  # (OSError, or the reactor's own errors)
                self._gone = f"the indicator store's process could not start ({e})"
                raise StoreChildError(self._gone) from e
            self._started = True
        answer: defer.Deferred[Any] = defer.Deferred()
        self._waiting.append(answer)
        assert self.transport is not None
        self.transport.write(_frame((name, args)))
        return await answer

    async def close(self) -> None:
        """
        End the child once it has run the calls sent before (a transaction
        still open then is dropped), and wait for it.
        """
        if not self._started or self._ended.called:
            return
        assert self.transport is not None
        self.transport.closeStdin()
        await self._ended

    def kill(self) -> None:
        """
        End the child at once (its transaction is dropped).
        """
        if self._started and not self._ended.called and self.transport is not None:
            try:
                self.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass

    # -- the child's side of the pipes -------------------------------------

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 8:
            size = int.from_bytes(self._buffer[:8], "big")
            if len(self._buffer) < 8 + size:
                return
            reply = pickle.loads(self._buffer[8 : 8 + size])  # noqa: S301 - our own child
            del self._buffer[: 8 + size]
            waiter = self._waiting.popleft()
            if reply[0] == "ok":
                waiter.callback(reply[1])
            else:
                waiter.errback(StoreChildError(f"the indicator store failed: {reply[1]}"))

    def errReceived(self, data: bytes) -> None:
        self._stderr.add(data)

    def processEnded(self, reason: Failure) -> None:
        said = self._stderr.text(1000)
        self._gone = f"the indicator store's process ended ({reason.value})" + (
            f"; it said: {said}" if said else ""
        )
        waiting, self._waiting = self._waiting, deque()
        for waiter in waiting:
            waiter.errback(StoreChildError(self._gone))
        self._ended.callback(None)


def _call(name: str) -> Callable[..., Any]:
    if name not in CALLS:
        raise ValueError(f"{name!r} is not a call the store's child runs")
    if name == "fill_from_seen":
        from tcbridge.sync.fill import fill_from_seen

        return fill_from_seen
    method: Callable[..., Any] = getattr(IndicatorDB, name)
    return method


def serve(db: IndicatorDB, requests: BinaryIO, replies: BinaryIO) -> None:
    """
    Answer calls until the requests end; an open transaction then ends
    without being committed.
    """
    try:
        while len(head := requests.read(8)) == 8:
            name, args = pickle.loads(requests.read(int.from_bytes(head, "big")))  # noqa: S301
            try:
                reply: tuple[str, Any] = ("ok", _call(name)(db, *args))
            except Exception as e:  # the service is told, and decides
                reply = ("error", f"{type(e).__name__}: {e}")
            replies.write(_frame(reply))
            replies.flush()
    finally:
        db.abort()
        db.close()


def main(argv: list[str]) -> int:
    """
    C{python -m tcbridge.storechild FOLDER}: serve the store in FOLDER on
    standard input and output.
    """
    (folder,) = argv
    # Second to the service: its reactor answers requests while this works.
    with contextlib.suppress(OSError):
        os.nice(10)
    serve(IndicatorDB.for_writing(folder), sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
