# -*- test-case-name: tests.integration.test_shared_pull -*-
"""
Write mode's pull on two cores: the listings of a C{*} or owner source
(each owner's files, addresses and hosts) are read by this process and by a
forked copy of it at once, each taking the next listing nobody has taken
yet (a pipe of tickets both read, as L{tcbridge.feed.forked} shares the
windows of a build).

The copy runs a reactor, a connection pool and a ThreatConnect client of
its own, collects what it reads into a builder of its own, and when no
listing is left sends that builder back, pickled, with its counts; this
process merges it into its own builder (L{tcbridge.feed.merge}).  A feed
does not depend on the order indicators come in, so it is the feed one
process reading every listing builds.

If the copy cannot be made, fails (ThreatConnect refused it, say), dies or
sends nothing for longer than this process's own part took (and
L{SharedPull.grace} more), this process says why and reads the listings
it did not read itself, meeting any error there as it would have alone:
the outcome never depends on the copy.  An error met by this process on
its own listings stops the pull (the copy is stopped).  The copy dies
with this process (on Linux), logs nothing, and is stopped when the
reactor shuts down.
Only write mode shares its pull: nothing else runs in the process then
(forking is safe while no other thread works), and it keeps no file of
what the sync saw and no indicator store, both of which record pages in
the order they come.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable
from typing import Any, NoReturn

from attrs import define, frozen
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcbridge.feed.builder import FeedBuilder
from tcbridge.feed.forked import (
    RESULT_TIMEOUT,
    can_fork,
    end_copy,
    fork_with_tickets,
    quiet_copy,
    receive_pickled,
    send_pickled,
    take_ticket,
)
from tcbridge.feed.text import one_line
from tcbridge.logs import bridge_observer
from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.listing import JSONGetter, Listing, Tally, read_listings

log = Logger(observer=bridge_observer)


MakeListings = Callable[[JSONGetter], list[Listing]]

#: Reactors a copy can make a new one of (each has its own poller).
_OWN_REACTORS = frozenset({"EPollReactor", "PollReactor", "SelectReactor"})


@frozen
class CopyResult:
    """
    What the copy did: its builder (C{None} if it failed, and C{why}), its
    tally, and its client's requests and how they ended.
    """

    builder: FeedBuilder | None
    tally: Tally
    requests: int
    status_counts: dict[int | str, int]
    why: str = ""


@define
class SharedPull:
    """
    Reads a source's listings in two processes (a
    L{tcbridge.threatconnect.pull.ShareListings}); see the module
    docstring.

    :ivar builder: where this process's pages go, and the copy's builder is
        merged into.
    :ivar client: this process's client; its counters take the copy's.
    :ivar client_on: the same client made on another reactor (for the copy).
    :ivar reactor: this process's reactor (its thread pool waits for the
        copy's result, so the sync's deadline still runs).
    :ivar grace: seconds the copy may take for its last listings beyond
        the time this process took for its own, before it is given up on.
    :ivar on_counts: told the pages and indicators the copy read, once its
        builder is taken in (for a progress display).
    """

    builder: FeedBuilder
    client: ThreatConnectClient
    client_on: Callable[[Any], ThreatConnectClient]
    reactor: Any
    grace: float = RESULT_TIMEOUT
    on_counts: Callable[[int, int], None] | None = None

    async def __call__(
        self,
        listings: list[Listing],
        make: MakeListings,
        read_here: Callable[[list[Listing]], Any],
        tally: Tally,
    ) -> None:
        parent = os.getpid()
        forked = fork_with_tickets(len(listings)) if self._may_fork() else None
        if forked is None:
            await read_here(listings)
            return
        pid, tickets, results, out = forked
        if pid == 0:  # pragma: no cover - the copy never returns to coverage
            os.close(results)
            _copy(make, tickets, out, self.client_on, self.builder, parent)
        os.close(out)
        # Stopping the process (SIGTERM) stops the copy at once, and with it
        # any wait for it.
        stop = self.reactor.addSystemEventTrigger("before", "shutdown", _kill, pid)
        done: list[int] = []
        started = time.monotonic()
        receiving: Any = None
        try:
            while (at := take_ticket(tickets)) is not None:
                await read_here([listings[at]])
                done.append(at)
            # The copy may take as long again as this process took, and the
            # grace, to finish its last listing.
            patience = self.grace + time.monotonic() - started
            receiving = deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), _receive, results, patience
            )
            got = await receiving
        finally:
            with contextlib.suppress(ValueError):  # it ran: the reactor is stopping
                self.reactor.removeSystemEventTrigger(stop)
            os.close(tickets)
            end_copy(pid)
            if receiving is None:
                os.close(results)
        if isinstance(got, str) or got.builder is None:
            if not isinstance(got, str):
                self._count_requests(got)
            log.warn(
                "The second process reading ThreatConnect failed ({why}); "
                "this one reads its part again",
                why=got if isinstance(got, str) else got.why,
            )
            await read_here([one for at, one in enumerate(listings) if at not in done])
            return
        self._take_in(got, got.builder, tally)

    @staticmethod
    def _may_fork() -> bool:
        """
        Whether a copy can be made and given a reactor of its own: two
        cores, and one of Twisted's own poll-based reactors (a new
        asyncio reactor would find the parent's event loop).
        """
        from twisted.internet import reactor as installed

        return can_fork() and type(installed).__name__ in _OWN_REACTORS

    def _take_in(self, got: CopyResult, builder: FeedBuilder, tally: Tally) -> None:
        self.builder.merge(builder)
        tally.add(got.tally)
        self._count_requests(got)
        if self.on_counts is not None:
            self.on_counts(got.tally.pages, got.tally.indicators)

    def _count_requests(self, got: CopyResult) -> None:
        """
        Add the copy's requests to this process's client (they were made,
        whatever came of them).
        """
        self.client.requests += got.requests
        counts = self.client.status_counts
        for outcome, number in got.status_counts.items():
            counts[outcome] = counts.get(outcome, 0) + number


def _copy(
    make: MakeListings,
    tickets: int,
    out: int,
    client_on: Callable[[Any], ThreatConnectClient],
    like: FeedBuilder,
    parent: int,
) -> NoReturn:
    """
    The copy of process C{parent}: read listings on a reactor of its own
    until none is left, send back what it did (L{CopyResult}: what it
    read, or why it could not; streamed pickled, see
    L{tcbridge.feed.forked.send_pickled}), and leave
    without running anything of the parent's.
    """
    status = 1
    try:
        quiet_copy(parent)
        # What the parent made stays out of the collector's sight (it would
        # write to each object, copying the pages the two processes share).
        gc.freeze()
        reactor = _fresh_reactor()
        client = client_on(reactor)
        builder = FeedBuilder(like.settings, record_history=False)
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
        why = "it stopped before it finished"
        if outcome and isinstance(outcome[0], Failure):
            failure = outcome[0].value
            why = one_line(str(failure))[:300] or failure.__class__.__name__
        elif outcome:
            why = ""
        result = CopyResult(
            None if why else builder,
            tally,
            client.requests,
            dict(client.status_counts),
            why,
        )
        send_pickled(out, result)
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


def _receive(fd: int, patience: float) -> CopyResult | str:
    """
    In a thread: the copy's result from C{fd} (closed afterwards), or why
    there is none: what the copy said, or that it died or took longer than
    C{patience} seconds.
    """
    try:
        result = receive_pickled(fd, time.monotonic() + patience)
        return result if isinstance(result, CopyResult) else "its answer made no sense"
    except EOFError:
        return "it ended without an answer"
    except TimeoutError:
        return f"no answer within {patience:.0f} s"
    except Exception as e:  # an answer that cannot be read is no answer
        return f"its answer could not be read ({e.__class__.__name__})"
    finally:
        os.close(fd)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
