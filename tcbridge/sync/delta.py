# -*- test-case-name: tests.unit.test_sync_delta -*-
"""
Incremental syncs: the indicator store (L{tcbridge.indicatordb}) kept in
step with ThreatConnect, so that most cycles ask only for what changed.

Each cycle is planned (L{Incremental.plan}) as a full sync or a delta:

  - a full sync pulls every source as before and replaces the store's rows
    of each; it runs at start, when the store is new (or was set aside),
    every C{full_sync_hours}, when a source has no state yet, and when
    asked (SIGHUP with other sources or filters, C{tcbridge full-sync});
  - a delta asks each owner and C{*} source only for what changed since its
    watermark (the newest C{lastModified} seen, less C{delta_overlap_minutes}),
    deactivated indicators included, and for what was deleted; it adds or
    updates the changed rows and takes out the deactivated and deleted
    ones.  2015 API paths cannot be filtered, and TQL sources would hide
    what stopped matching them: both are pulled whole, and their rows
    replaced, every cycle.

A cycle's changes are one transaction of the store (L{Transaction}),
committed only once the feed is published: a failed or held-back cycle
leaves the store and the watermarks as they were.  A delta builds the feed
from the store's content (see L{tcbridge.sync.rebuild} for the ways it
gets it), which gives the bytes a full sync of the same data gives (feeds
do not depend on the order indicators come in).  While its pull runs, a
delta also has the store read the last committed versions of the rows it
replaces or takes out (L{CycleBook.replaced_rows}): what a feed state
built from them must lose.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from attrs import Factory, define, evolve, field, frozen
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcbridge.indicatordb import IndicatorDB
from tcbridge.indicatorrows import SourceState, note_newest, rows_of_batch, sort_rows
from tcbridge.logs import bridge_observer
from tcbridge.model import Source
from tcbridge.seen import SeenWriter
from tcbridge.status import IncrementalState
from tcbridge.sync.base import Overlay, committed_token
from tcbridge.sync.fill import fill_from_seen
from tcbridge.threatconnect.deleted import Deleted, deleted_of_owners
from tcbridge.threatconnect.listing import JSONGetter, OnPage
from tcbridge.threatconnect.pull import PullOptions, pull_source
from tcbridge.threatconnect.records import IndicatorBatch, SourcePull
from tcbridge.threatconnect.tql import iso_time

#: Runs C{method(db, *args)} on the store (in its thread in the service).
StoreRunner = Callable[..., Awaitable[Any]]


class ChildRunner(Protocol):
    """
    Runs a transaction's store calls elsewhere (L{tcbridge.storechild}).
    """

    def run(self, method: Callable[..., Any], *args: Any) -> Awaitable[Any]: ...

    async def close(self) -> None: ...

    def kill(self) -> None: ...

    @property
    def gone(self) -> bool:
        """
        Whether the process could not start or has ended.
        """


log = Logger(observer=bridge_observer)
T = TypeVar("T")

#: The store's instance name for the one ThreatConnect of a configuration.
INSTANCE = "default"

#: Source kinds every cycle pulls whole: a 2015 API path cannot be filtered
#: by date, and a TQL source's own conditions would hide an indicator that
#: stopped matching them (deactivated, rated down) from a delta.
_WHOLE = ("path", "tql")

#: The file in C{cache_folder} that asks for a full sync (C{tcbridge full-sync}).
FULL_SYNC_FILE = "full-sync"


@frozen
class Plan:
    """
    One cycle's plan: per source name, the time to ask for changes since
    (a delta), or C{None} (pull everything).
    """

    since: dict[str, int | None]
    states: dict[str, SourceState]
    instances: dict[str, str] = Factory(dict)
    #: how many full syncs had been asked for when the plan was made
    requests_seen: int = 0
    #: the full-sync marker file's time when the plan was made, if any
    marker_time: float | None = None

    def instance(self, source: str) -> str:
        """
        The store's instance name of a source (see L{store_instance}).
        """
        return self.instances.get(source, INSTANCE)

    @property
    def full(self) -> bool:
        """
        Whether every source is pulled whole (the feed is then built from
        the pull, as without a store).
        """
        return all(since is None for since in self.since.values())


def store_instance(source: Source) -> str:
    """
    The store's instance name for a source: its ThreatConnect instance's
    name, or L{INSTANCE} for the main one.
    """
    return source.instance or INSTANCE


def deleted_key(instance: str, source: str, gone: Deleted) -> tuple[str, str, str, str, str]:
    """
    The store key (without id) of a deleted indicator: its first value is
    the first part of its summary (a File's C{"md5 : sha1 : sha256"}).
    """
    value = gone.summary.split(" : ")[0].strip() if gone.type == "File" else gone.summary.strip()
    return (instance, source, gone.owner, gone.type, value)


def rows_of_sources(
    rows: Sequence[tuple[Any, ...]], sources: frozenset[tuple[str, str]]
) -> list[tuple[Any, ...]]:
    """
    The store rows (tuples) of C{sources}, (instance, source) keys.
    """
    return [row for row in rows if (row[0], row[1]) in sources]


def rows_of(instance: str, source: str, batches: Iterable[IndicatorBatch]) -> list[Any]:
    """
    The store rows (tuples, see L{rows_of_batch}) of batches pulled for the
    configured C{source} (indicators without a value are not kept: the
    feed cannot hold them).
    """
    return [row for batch in batches for row in rows_of_batch(instance, source, batch)]


#: Store calls a cycle may have queued before its pull waits for the store
#: (this bounds the rows held in memory to a few blocks).
QUEUED_CALLS = 1
#: The same for a delta: its few pages go on to the deleted listings and
#: the build while the store writes them...
DELTA_QUEUED_CALLS = 16
#: ...as long as they hold at most this many rows and keys (a delta as big
#: as a full sync, after a long outage, holds no more than it would).
DELTA_QUEUED_ROWS = 20_000
#: Rows added to the store in one call, in key order (SQLite inserts rows
#: near each other much faster than rows scattered over the table).
ROW_BLOCK = 10_000


@define
class Transaction:
    """
    One cycle's changes to the store, sent as they come (the store's thread
    takes them in order) and committed or dropped at the end.  L{room}
    lets the sender wait while the store is behind, so that a full sync
    never holds more than a few pages of rows waiting for it.
    """

    run: StoreRunner
    limit: int = QUEUED_CALLS
    block: int = ROW_BLOCK
    #: rows and keys the queued calls may hold before L{room} waits (no
    #: bound but C{limit} without it)
    row_limit: int | None = None
    _pending: list[Deferred[Any]] = field(factory=list)
    _queued: int = 0
    _queued_rows: int = 0
    _waiting: list[Deferred[None]] = field(factory=list)
    _rows: list[tuple[Any, ...]] = field(factory=list)

    def add_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """
        Queue rows to add (or replace), sent in blocks of about C{block}
        rows in key order (rows with the same key keep their order, so the
        last one still wins).
        """
        self._rows += rows
        if len(self._rows) >= self.block:
            self._flush()

    def _flush(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            self._queue(len(rows), IndicatorDB.add_rows, sort_rows(rows))

    def drop_rows(self) -> None:
        """
        Forget the rows not sent yet (the cycle is being dropped).
        """
        self._rows = []

    def send(self, method: Callable[..., Any], *args: Any, size: int = 0) -> Deferred[Any]:
        """
        Queue a call on the store without waiting for it (after the rows
        queued before it), holding C{size} rows or keys; what it returns,
        when it has run.
        """
        self._flush()
        return self._queue(size, method, *args)

    def _queue(self, size: int, method: Callable[..., Any], *args: Any) -> Deferred[Any]:
        call = ensureDeferred(_call(self.run, method, *args))
        self._queued += 1
        self._queued_rows += size
        call.addBoth(self._done, size)
        self._pending.append(call)
        return call

    def _done(self, result: object, size: int) -> object:
        self._queued -= 1
        self._queued_rows -= size
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)
        return result

    async def room(self) -> None:
        """
        Wait until at most C{limit} calls (holding at most C{row_limit}
        rows and keys) are queued.
        """
        while self._queued > self.limit or (
            self.row_limit is not None and self._queued_rows > self.row_limit
        ):
            waiter: Deferred[None] = Deferred()
            self._waiting.append(waiter)
            await waiter

    async def settled(self) -> None:
        """
        Wait for every queued call; raise the first failure.
        """
        self._flush()
        pending, self._pending = self._pending, []
        failure: BaseException | None = None
        for d in pending:
            try:
                await d
            except BaseException as e:
                failure = failure or e
        if failure is not None:
            raise failure


async def _call(run: StoreRunner, method: Callable[..., Any], *args: Any) -> Any:
    return await run(method, *args)


@define
class Incremental:
    """
    Plans cycles as full syncs or deltas and keeps the store's books.

    :ivar full_every: seconds between full syncs (C{full_sync_hours}).
    :ivar overlap: seconds a delta reaches back before the watermark.
    :ivar last_full: when the last full sync was committed.
    :ivar last_delta: when the last delta was committed.
    :ivar last_changes: what the last committed cycle changed:
        C{added} (rows pulled), C{removed} (deactivated or deleted).
    """

    run: StoreRunner
    full_every: float
    overlap: int
    marker: str | None = None
    #: runs a call that reads only what is committed
    #: (L{IndicatorDB.committed_rows}) beside those C{run} runs; without
    #: it, C{run} runs them too
    read: StoreRunner | None = None
    #: makes what runs a full sync's transaction elsewhere (a
    #: L{tcbridge.storechild.ChildStore}); without it, C{run} runs it
    fill: Callable[[], ChildRunner] | None = None
    _full_wanted: bool = True
    _requests: int = 0
    #: the last full sync's child process failed: the next one runs here
    _child_failed: bool = False
    last_full: float | None = None
    last_delta: float | None = None
    last_changes: dict[str, int] = field(factory=dict)

    def child_failed(self, why: str) -> None:
        """
        Note that a full sync's child process could not start or died
        (C{why}): the next full sync stores its rows in the store's thread,
        so that a child that cannot run does not fail every full sync.
        """
        self._child_failed = True
        log.warn(
            "The indicator store's child process failed ({why}); "
            "the next full sync stores its rows in the service",
            why=why,
        )

    def take_fill(self) -> Callable[[], ChildRunner] | None:
        """
        What makes a full sync's child, unless the last one failed (once).
        """
        if self._child_failed:
            self._child_failed = False
            return None
        return self.fill

    def checkpoint_soon(self) -> None:
        """
        Have the store's thread copy what was just committed into the
        database file (L{IndicatorDB.checkpoint}) without the cycle waiting
        for it: a later call to the store waits instead, behind it.  A
        failure is logged; SQLite keeps the changes in its log meanwhile.
        """

        async def checkpoint() -> None:
            await self.run(IndicatorDB.checkpoint)

        done: Deferred[None] = ensureDeferred(checkpoint())
        done.addErrback(
            lambda failure: log.failure(
                "Copying the indicator store's log into its file failed", failure
            )
        )

    def request_full(self) -> None:
        """
        Make the next cycle a full sync (also when one is running now: it
        may have been planned before what made this one necessary).
        """
        self._full_wanted = True
        self._requests += 1

    async def plan(self, sources: Sequence[Source], now: float) -> Plan:
        """
        The plan of a cycle starting at C{now}.
        """
        instances = {s.name: store_instance(s) for s in sources}
        states = {
            s.name: await self.run(IndicatorDB.state, instances[s.name], s.name) for s in sources
        }
        fresh = await self.run(_needs_full_sync)
        marker_time = _mtime(self.marker)
        asked = marker_time is not None
        full = (
            self._full_wanted
            or fresh
            or asked
            or any(
                s.kind not in _WHOLE
                and (
                    states[s.name].watermark is None
                    or states[s.name].last_full is None
                    or now - (states[s.name].last_full or 0) >= self.full_every
                )
                for s in sources
            )
        )
        since: dict[str, int | None] = {}
        for source in sources:
            watermark = states[source.name].watermark
            if full or source.kind in _WHOLE or watermark is None:
                since[source.name] = None
            else:
                since[source.name] = max(0, watermark - self.overlap)
        return Plan(since, states, instances, self._requests, marker_time)

    def committed(self, plan: Plan, now: float, changes: dict[str, int]) -> None:
        """
        Note a cycle's changes as committed.
        """
        if plan.full:
            # A full sync asked for after this one was planned still runs.
            if self._requests == plan.requests_seen:
                self._full_wanted = False
            self.last_full = now
            if self.marker is not None and _mtime(self.marker) == plan.marker_time:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.marker)
        else:
            self.last_delta = now
        self.last_changes = dict(changes)


def _mtime(path: str | None) -> float | None:
    """
    When the file at C{path} was last changed (C{None}: no such file).
    """
    if path is None:
        return None
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return None


def _needs_full_sync(db: IndicatorDB) -> bool:
    return db.needs_full_sync


def new_states(
    plan: Plan, newest: dict[str, int], now: float
) -> dict[tuple[str, str], SourceState]:
    """
    The sources' states after a committed cycle: the watermark moved to the
    newest C{lastModified} seen (never back), the full or delta time set.
    """
    states = {}
    for name, since in plan.since.items():
        old = plan.states.get(name, SourceState())
        marks = [m for m in (old.watermark, newest.get(name)) if m is not None]
        states[(plan.instance(name), name)] = SourceState(
            watermark=max(marks) if marks else None,
            last_full=now if since is None else old.last_full,
            last_delta=now if since is not None else old.last_delta,
        )
    return states


@define
class _Reads:
    """
    Store reads started now and awaited later: each result goes to its
    C{then} as it comes; the first failure is kept (not reported as an
    unhandled error if nobody waits) and raised by L{done}.
    """

    run: StoreRunner
    _pending: list[Deferred[None]] = field(factory=list)
    _failure: Failure | None = None

    def start(self, then: Callable[[Any], None], method: Callable[..., Any], *args: Any) -> None:
        """
        Read C{method(db, *args)} on the store (after the calls sent before
        it), then call C{then} with what it returns.
        """
        reading = ensureDeferred(_call(self.run, method, *args))
        self._pending.append(reading.addCallbacks(then, self._failed))

    def _failed(self, failure: Failure) -> None:
        if self._failure is None:
            self._failure = failure

    async def done(self) -> None:
        """
        Wait for every read started; raise the first failure.
        """
        for reading in self._pending:
            await reading
        if self._failure is not None:
            self._failure.raiseException()


@define
class CycleBook:
    """
    What one cycle does to the store: it is told each source's pulled and
    inactive indicators and the deleted ones, keeps them in the cycle's
    transaction, and commits or drops it at the end.  A full sync with the
    file of what it sees (C{seen}) and a store child to make
    (L{Incremental.fill}) has the child run the transaction and read its
    rows from that file; otherwise the rows are made here and run by
    L{Incremental.run}.
    """

    incremental: Incremental
    plan: Plan
    now: float
    _tx: Transaction = field(init=False)
    _child: ChildRunner | None = field(init=False, default=None)
    #: the file of what this sync sees, which a full sync's child reads
    seen: SeenWriter | None = None
    _filled: int = field(init=False, default=0)
    _newest: dict[str, int] = field(factory=dict, init=False)
    _changes: dict[str, int] = field(factory=lambda: {"added": 0, "removed": 0}, init=False)
    overlay: Overlay = field(init=False)
    committed_states: dict[tuple[str, str], SourceState] | None = field(init=False, default=None)
    #: how many store rows this delta replaces or takes out (L{replaced_rows})
    replaced: int = field(init=False, default=0)
    #: the store's row count when this delta began (see L{counted})
    rows_at_start: int | None = field(init=False, default=None)
    _counting: _Reads = field(init=False)
    _old: dict[tuple[Any, ...], tuple[Any, ...]] = field(factory=dict, init=False)
    _reading_old: _Reads = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.overlay = Overlay(
            replaced=frozenset(name for name, since in self.plan.since.items() if since is None)
        )
        self._counting = _Reads(self.incremental.run)
        self._reading_old = _Reads(self.incremental.read or self.incremental.run)
        if not self.plan.full:
            # Counted before the transaction begins (the store's thread
            # takes calls in order), while the pull runs.
            self._counting.start(self._counted, IndicatorDB.count)
        fill = self.incremental.take_fill() if self.plan.full else None
        if fill is not None and self.seen is not None:
            # The child reads the rows from the file of what the sync saw.
            self._child = fill()
        self._tx = Transaction(
            self.incremental.run if self._child is None else self._child.run,
            limit=QUEUED_CALLS if self.plan.full else DELTA_QUEUED_CALLS,
            row_limit=None if self.plan.full else DELTA_QUEUED_ROWS,
        )
        replaced = [
            (self.plan.instance(name), name)
            for name, since in self.plan.since.items()
            if since is None
        ]
        # A full sync forgets sources no longer configured (their rows
        # would come back in the next delta's feed).
        self._tx.send(IndicatorDB.begin, replaced, self.plan.full)
        self._read_old([], [], replaced)

    def paced(self, pause: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """
        The pull's C{pause}, which also waits while the store is behind
        (see L{Transaction.room}).
        """

        async def pause_and_wait() -> None:
            await pause()
            await self._tx.room()

        # A child reading the file holds no rows in waiting: nothing to wait for.
        return pause if self._child is not None else pause_and_wait

    def pulled(self, source: str, batches: list[IndicatorBatch]) -> None:
        """
        Keep a page of a source's indicators (added, or updated).
        """
        if self._child is not None:
            self._fill()
            return
        rows = rows_of(self.plan.instance(source), source, batches)
        if not self.plan.full:
            self.overlay.pulled(source, rows, batches)
            self._read_old([row[:6] for row in rows], [])
        if not rows:
            return
        note_newest(self._newest, source, rows)
        self._changes["added"] += len(rows)
        self._tx.add_rows(rows)

    def _fill(self) -> None:
        """
        Have the child store the pages written to the file of what this
        sync saw since it was last told (it makes the rows; see
        L{tcbridge.sync.fill}).
        """
        assert self.seen is not None
        path, end = self.seen.written()
        if end <= self._filled:
            return
        instances = {name: self.plan.instance(name) for name in self.plan.since}
        call = self._tx.send(fill_from_seen, path, self._filled, end, instances)
        self._filled = end
        call.addCallback(self._stored)

    def _stored(self, result: tuple[int, dict[str, int]]) -> None:
        added, newest = result
        self._changes["added"] += added
        for source, stamp in newest.items():
            self._newest[source] = max(self._newest.get(source, 0), stamp)

    def inactive(self, source: str, batches: list[IndicatorBatch]) -> None:
        """
        Take out a source's indicators that ThreatConnect now marks inactive.
        """
        keys = [row[:5] for row in rows_of(self.plan.instance(source), source, batches)]
        self.overlay.taken_out(keys)
        self._read_old([], keys)
        self._changes["removed"] += len(keys)
        self._tx.send(IndicatorDB.remove, keys, size=len(keys))

    def deleted(self, source: str, gone: Sequence[Deleted]) -> None:
        """
        Take out a source's indicators that were deleted in ThreatConnect.
        """
        self._changes["removed"] += len(gone)
        instance = self.plan.instance(source)
        keys = [deleted_key(instance, source, g) for g in gone]
        self.overlay.taken_out(keys)
        self._read_old([], keys)
        self._tx.send(IndicatorDB.remove, keys, size=len(keys))

    async def pull_with_deletions(
        self, client: JSONGetter, source: Source, options: PullOptions, on_page: OnPage
    ) -> SourcePull:
        """
        Pull what changed in one source since its delta's time and take out
        what was deleted from its owners: their deleted listings are asked
        for as soon as the owners are known and the pull has sent its
        first request (the query of what changed, which the delta waits on
        most, goes first), several owners at once, beside the pull; they
        are taken out once the pull has handed on its pages (in the order a
        pull then the listings would give).  If either fails, the other is
        cancelled and the failure is raised.
        """
        since = self.plan.since[source.name]
        assert since is not None
        asked: list[Deferred[list[list[Deleted]]]] = []
        pulling: Deferred[SourcePull] | None = None
        stopped_by: Failure | None = None

        def stop_pull(failure: Failure) -> Failure:
            nonlocal stopped_by
            if pulling is not None and not pulling.called:
                stopped_by = failure
                pulling.cancel()
            return failure

        def on_owners(owners: tuple[str, ...]) -> None:
            listed = deleted_of_owners(
                client, owners, since=iso_time(since), api_version=options.api_version
            )
            asked.append(listed)
            if listed.called and isinstance(listed.result, Failure):
                listed.result.raiseException()  # failed at once: the pull stops here
            # Only a later failure stops the pull from outside (the pull is
            # not running then).
            listed.addErrback(stop_pull)

        told = evolve(options, on_owners=on_owners)
        pulling = ensureDeferred(pull_source(client, source, told, on_page))
        try:
            try:
                pull = await pulling
            except CancelledError:
                if stopped_by is not None:  # a listing's failure stopped the pull: raise it
                    stopped_by.raiseException()
                raise
            if not asked:  # owners known only from what was pulled
                on_owners(pull.owners)
            for gone in await asked[0]:
                self.deleted(source.name, gone)
        except BaseException:
            for asking in asked:
                asking.cancel()
                asking.addErrback(lambda _: None)  # the pull's own failure says why
            raise
        return pull

    def planned_from(self) -> list[list[Any]]:
        """
        The store's source states this cycle was planned from, as a trailer
        of the previous sync's file records them (see L{tcbridge.sync.base}).
        """
        return committed_token(
            {(self.plan.instance(name), name): self.plan.states[name] for name in self.plan.since}
        )

    def planned_sources(self) -> frozenset[tuple[str, str]]:
        """
        The (instance, source) keys of the sources this cycle planned: rows
        of a source no longer configured stay out of the feed even before a
        full sync forgets them.
        """
        return frozenset((self.plan.instance(name), name) for name in self.plan.since)

    def planned(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """
        The store rows (tuples) of the sources this cycle planned (see
        L{planned_sources}).
        """
        return rows_of_sources(rows, self.planned_sources())

    def _counted(self, rows: int) -> None:
        self.rows_at_start = rows

    async def counted(self) -> int | None:
        """
        The store's row count when this delta began, as committed (what
        the last sync's files must say it holds); C{None} for a full sync.
        """
        await self._counting.done()
        return self.rows_at_start

    def _read_old(
        self,
        full_keys: list[tuple[Any, ...]],
        value_keys: list[tuple[Any, ...]],
        sources: Sequence[tuple[str, str]] = (),
    ) -> None:
        """
        Have the store read, as last committed, the rows a delta's change
        replaces or takes out (L{IndicatorDB.committed_rows}), while the
        pull goes on.
        """
        if self.plan.full or not (full_keys or value_keys or sources):
            return
        self._reading_old.start(
            self._note_old, IndicatorDB.committed_rows, full_keys, value_keys, sources
        )

    def _note_old(self, rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            self._old[row[:6]] = row

    async def replaced_rows(self) -> list[tuple[Any, ...]]:
        """
        The store rows, as last committed, that this delta replaces or takes
        out (read while the pull ran); how many they are stays in
        C{replaced}.
        """
        await self._reading_old.done()
        rows = list(self._old.values())
        self.replaced = len(rows)
        return rows

    async def in_store(self, method: Callable[..., T], *args: Any) -> T:
        """
        C{method(db, *args)}, run in the store's thread once the cycle's
        writes are done: it reads the store as the cycle leaves it (for
        example L{IndicatorDB.raw_page}), and does its work off the
        reactor.
        """
        await self._tx.settled()
        result: T = await self.incremental.run(method, *args)
        return result

    async def commit(self) -> IncrementalState:
        """
        Keep the cycle's changes and move the watermarks; where incremental
        syncs stand now.
        """
        try:
            await self._tx.settled()
            # After the store's answers: a child's tell the newest dates.
            states = new_states(self.plan, self._newest, self.now)
            if self._child is None:
                await self.incremental.run(IndicatorDB.commit, states)
            else:
                await self._child.run(IndicatorDB.commit, states)
                await self._child.close()
                await self.incremental.run(IndicatorDB.filled_elsewhere)
        except Exception as e:
            if self._child is not None and self._child.gone:
                self.incremental.child_failed(str(e))
            raise
        self.committed_states = states
        inc = self.incremental
        inc.checkpoint_soon()
        inc.committed(self.plan, self.now, self._changes)
        return IncrementalState(
            kind="full" if self.plan.full else "delta",
            last_full=inc.last_full,
            last_delta=inc.last_delta,
            watermarks=tuple(
                sorted((name, state.watermark) for (_, name), state in states.items())
            ),
            added=self._changes["added"],
            removed=self._changes["removed"],
        )

    async def abort(self) -> None:
        """
        Drop the cycle's changes (the watermarks stay).
        """
        self._tx.drop_rows()
        if self._child is not None:
            self._child.kill()  # its transaction goes with it
        try:
            await self._tx.settled()
        except Exception:
            if self._child is None:
                raise
        finally:
            if self._child is None:
                await self.incremental.run(IndicatorDB.abort)
            else:
                await self._child.close()
