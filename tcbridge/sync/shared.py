# -*- test-case-name: tests.integration.test_shared_pull -*-
"""
Write mode's pull on two cores: the listings of a C{*} source (each
owner's files, addresses and hosts) are read by this process and by a
forked copy of it at once, each taking the next listing nobody has taken
yet (a pipe of tickets both read, as L{tcbridge.feed.forked} shares the
windows of a build).

The copy runs a reactor, a connection pool and a ThreatConnect client of
its own, collects what it reads into a builder of its own, and when no
listing is left sends that builder back, pickled, with its counts; this
process merges it into its own builder (L{tcbridge.feed.merge}).  A feed
does not depend on the order indicators come in, so it is the feed one
process reading every listing builds.

If the copy cannot be made, fails (ThreatConnect refused it, say) or dies,
this process reads the listings it did not read itself, and meets any
error there as it would have alone: the outcome never depends on the copy.
Only write mode shares its pull: nothing else runs in the process then
(forking is safe while no other thread works), and it keeps no file of
what the sync saw and no indicator store, both of which record pages in
the order they come.
"""

from __future__ import annotations

import gc
import os
import pickle
from collections.abc import Callable
from typing import Any, NoReturn

from attrs import define, frozen
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcbridge.feed.builder import FeedBuilder
from tcbridge.feed.forked import can_fork, end_copy, quiet_copy, take_ticket, ticket_pipe, write_all
from tcbridge.logs import bridge_observer
from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.listing import JSONGetter, Listing, Tally, read_listings

log = Logger(observer=bridge_observer)

#: The counts of a L{Tally} the copy sends back.
_COUNTS = ("indicators", "skipped", "inactive", "duplicates", "restarts", "pages", "items")

MakeListings = Callable[[JSONGetter], list[Listing]]


@frozen
class CopyResult:
    """
    What the copy read: its builder, its tally's counts, and its client's
    requests and how they ended.
    """

    builder: FeedBuilder
    counts: dict[str, int]
    requests: int
    status_counts: dict[int | str, int]


@define
class SharedPull:
    """
    Reads a C{*} source's listings in two processes (a
    L{tcbridge.threatconnect.pull.ShareListings}); see the module
    docstring.

    :ivar builder: where this process's pages go, and the copy's builder is
        merged into.
    :ivar client: this process's client; its counters take the copy's.
    :ivar client_on: the same client made on another reactor (for the copy).
    :ivar reactor: this process's reactor (its thread pool waits for the
        copy's result, so the sync's deadline still runs).
    """

    builder: FeedBuilder
    client: ThreatConnectClient
    client_on: Callable[[Any], ThreatConnectClient]
    reactor: Any

    async def __call__(
        self,
        listings: list[Listing],
        make: MakeListings,
        read_here: Callable[[list[Listing]], Any],
        tally: Tally,
    ) -> None:
        forked = _fork(len(listings)) if can_fork() else None
        if forked is None:
            await read_here(listings)
            return
        pid, tickets, results, out = forked
        if pid == 0:  # pragma: no cover - the copy never returns to coverage
            os.close(results)
            _copy(make, tickets, out, self.client_on, self.builder)
        os.close(out)
        done: list[int] = []
        receiving = False
        try:
            while (at := take_ticket(tickets)) is not None:
                await read_here([listings[at]])
                done.append(at)
            receiving = True
            got = await deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), _receive, results
            )
        finally:
            os.close(tickets)
            if not receiving:
                os.close(results)
            end_copy(pid)
        if got is None:
            log.warn(
                "The second process reading ThreatConnect failed; this one reads its part again"
            )
            await read_here([one for at, one in enumerate(listings) if at not in done])
            return
        self._take_in(got, tally)

    def _take_in(self, got: CopyResult, tally: Tally) -> None:
        self.builder.merge(got.builder)
        for name in _COUNTS:
            setattr(tally, name, getattr(tally, name) + got.counts.get(name, 0))
        self.client.requests += got.requests
        counts = self.client.status_counts
        for outcome, number in got.status_counts.items():
            counts[outcome] = counts.get(outcome, 0) + number


def _fork(count: int) -> tuple[int, int, int, int] | None:
    """
    The tickets of C{count} listings and a pipe for the copy's result, and
    the fork: C{(pid, tickets, results, out)}; C{None} (nothing left open)
    if any of it cannot be made.
    """
    made: list[int] = []
    try:
        made.append(ticket_pipe(count))
        made.extend(os.pipe())
        pid = os.fork()
    except OSError:
        for fd in made:
            os.close(fd)
        return None
    tickets, results, out = made
    return pid, tickets, results, out


def _copy(
    make: MakeListings,
    tickets: int,
    out: int,
    client_on: Callable[[Any], ThreatConnectClient],
    parent: FeedBuilder,
) -> NoReturn:
    """
    The copy: read listings on a reactor of its own until none is left,
    send back what it read (L{CopyResult}, pickled after its length), and
    leave without running anything of the parent's.
    """
    status = 1
    try:
        quiet_copy()
        # Leave the objects shared with the parent alone (the collector
        # would write to each one, copying the pages they live on); the
        # copy is short-lived and its pages' objects hold no cycles.
        gc.disable()
        reactor = _fresh_reactor()
        client = client_on(reactor)
        builder = FeedBuilder(parent.settings, record_history=False)
        tally = Tally()
        outcome: list[object] = []

        async def work() -> None:
            listings = make(client)
            while (at := take_ticket(tickets)) is not None:
                await read_listings(client, [listings[at]], tally, builder.add)

        finished = ensureDeferred(work())
        finished.addBoth(outcome.append)
        finished.addBoth(lambda _: reactor.callLater(0, reactor.stop))
        reactor.run(installSignalHandlers=False)
        if outcome and not isinstance(outcome[0], Failure):
            result = CopyResult(
                builder,
                {name: getattr(tally, name) for name in _COUNTS},
                client.requests,
                dict(client.status_counts),
            )
            data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            write_all(out, len(data).to_bytes(8, "big"))
            write_all(out, data)
            status = 0
    finally:
        os._exit(status)


def _fresh_reactor() -> Any:
    """
    A new reactor of the kind this process runs (the copy must not touch
    the parent's: its poller and descriptors are shared with the parent).
    """
    from twisted.internet import reactor as installed

    kind: Any = type(installed)
    return kind()


def _receive(fd: int) -> CopyResult | None:
    """
    In a thread: the copy's result from C{fd} (closed afterwards), or
    C{None} if it sent none (it failed or died).
    """
    try:
        head = _read_exactly(fd, 8)
        if head is None:
            return None
        data = _read_exactly(fd, int.from_bytes(head, "big"))
        if data is None:
            return None
        result = pickle.loads(data)  # noqa: S301 - our own fork's bytes
        return result if isinstance(result, CopyResult) else None
    except Exception:  # a result that cannot be read is no result
        return None
    finally:
        os.close(fd)


def _read_exactly(fd: int, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    at = 0
    while at < size:
        got = os.readv(fd, [view[at:]])
        if not got:
            return None
        at += got
    view.release()
    return buffer
