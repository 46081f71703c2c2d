# -*- test-case-name: tests.unit.test_sync -*-
"""
One sync cycle: every source pulled, the feed built and validated into a
file, then handed to the L{Publisher} (or, in write mode, installed at a
path); within C{sync_deadline_minutes}, with the status and the sync
history updated either way.  All or nothing: if any source fails, or the
feed does not validate, nothing is published.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any, NoReturn

from attrs import define, evolve, field
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcbridge.cbserver import CbServerSync
from tcbridge.config import Config
from tcbridge.feed.builder import FeedBuilder, FeedSettings, FeedValidationError
from tcbridge.feed.history import AnyHistory, ReportHistory
from tcbridge.feed.job import build_feed_file
from tcbridge.feed.patch import settings_patchable
from tcbridge.feed.state import StateJob
from tcbridge.feedfile import FeedFile
from tcbridge.files import TEMP_PREFIX, unlink_quietly
from tcbridge.logs import bridge_observer
from tcbridge.memory import trim
from tcbridge.model import Source
from tcbridge.secrets import redact
from tcbridge.seen import SeenWriter
from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore, Snapshot
from tcbridge.sync.base import committed_token, keep_state, state_file
from tcbridge.sync.delta import CycleBook, Incremental
from tcbridge.sync.errors import (
    FeedHeldBackError,
    FeedInvalidError,
    SyncDeadlineError,
    describe_failure,
)
from tcbridge.sync.publish import Publisher
from tcbridge.sync.rebuild import build_delta
from tcbridge.sync.record import log_failure, log_sync, record_build
from tcbridge.sync.work import (
    BuildFeed,
    RunHeavy,
    T,
    WarmBuild,
    as_of,
    feed_settings,
    pull_options,
    run_inline,
)
from tcbridge.synclog import SyncLog
from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.errors import ThreatConnectError
from tcbridge.threatconnect.listing import OnPage
from tcbridge.threatconnect.parse import forget_dates
from tcbridge.threatconnect.pull import PullOptions, ShareListings, pull_source
from tcbridge.threatconnect.records import SourcePull

#: Makes a pull's C{share} option (see L{SyncCycle}'s C{share}).
ShareFactory = Callable[
    [FeedBuilder, ThreatConnectClient, str, Callable[[int, int], None]], ShareListings
]


@define
class SyncCycle:
    """
    Pulls every configured source, builds and validates the feed, and
    publishes it into the store.

    :param run_heavy: where CPU-heavy steps (build, validate, serialise) and
        disk writes run; see L{RunHeavy}.
    :param sync_log: where each cycle is recorded (the page's history).
    :param seen_folder: where each cycle keeps what ThreatConnect sent, for
        explanations (L{tcbridge.seen}); none without it.
    :param build: builds the feed file elsewhere (a child process, see
        L{tcbridge.childbuild}); by default C{run_heavy} runs the build.
    :param warm_build: gets C{build} ready while a delta's pull runs (its
        child process started ahead); none by default.
    :param pause: given to the pull so that big pages are handled in chunks
        with a pause on the reactor between them (C{None} in unit tests).
    :param share: how write mode reads a C{*} or owner source's listings on two
        cores (L{tcbridge.sync.shared}): given the cycle's builder, a
        client, its instance's name and what to tell the pages and
        indicators read elsewhere, the pull's C{share} option.
    """

    log = Logger(observer=bridge_observer)

    _config: Config
    _client: ThreatConnectClient
    _store: FeedStore
    _status: SyncStatus
    _clock: IReactorTime
    _run_heavy: RunHeavy = field(default=run_inline)
    _settings: FeedSettings = field(init=False)
    _pull_options: PullOptions = field(init=False)
    _running: defer.Deferred[None] | None = field(init=False, default=None)
    _cb_sync: CbServerSync | None = field(default=None, kw_only=True)
    _history: AnyHistory = field(factory=ReportHistory, kw_only=True)
    _build: BuildFeed | None = field(default=None, kw_only=True)
    _warm_build: WarmBuild | None = field(default=None, kw_only=True)
    _sync_log: SyncLog | None = field(default=None, kw_only=True)
    _seen_folder: str | None = field(default=None, kw_only=True)
    _pause: Callable[[], Awaitable[None]] | None = field(default=None, kw_only=True)
    _incremental: Incremental | None = field(default=None, kw_only=True)
    _extra_notices: tuple[str, ...] = field(default=(), init=False)
    _other_clients: tuple[ThreatConnectClient, ...] = field(default=(), kw_only=True)
    _share: ShareFactory | None = field(default=None, kw_only=True)
    _pending: (
        tuple[Config, ThreatConnectClient, CbServerSync | None, tuple[ThreatConnectClient, ...]]
        | None
    ) = field(init=False, default=None)
    _publisher: Publisher = field(init=False)
    #: The store's states after this cycle's commit, for the trailer of
    #: what the sync saw (L{tcbridge.sync.base}); C{None} without one.
    _committed: list[list[Any]] | None = field(init=False, default=None)
    #: The feed state this cycle's build kept, to keep with the file of
    #: what the sync saw (L{tcbridge.sync.base.keep_state}).
    _state_kept: str | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._publisher = Publisher(
            self._config,
            self._store,
            self._status,
            self._clock,
            self._run_heavy,
            self._cb_sync,
            self._history,
        )
        self._configure()

    def _configure(self) -> None:
        self._settings, problems = feed_settings(self._config)
        self._pull_options = pull_options(self._config, self._pause)
        if len(self._other_clients) != len(self._config.other_instances):
            raise ValueError("one client per ThreatConnect instance")
        for problem in problems:
            self.log.warn("Exclusion file: {problem} (line skipped)", problem=problem)
        self._status.notices = (
            *self._config.notices,
            *(f"Exclusion file: {p} (line skipped)" for p in problems),
            *self._extra_notices,
        )

    @property
    def client(self) -> ThreatConnectClient:
        """
        The ThreatConnect client the current or next cycle uses.
        """
        return self._pending[1] if self._pending is not None else self._client

    @property
    def other_clients(self) -> tuple[ThreatConnectClient, ...]:
        """
        The clients of the other ThreatConnect instances the current or
        next cycle uses.
        """
        return self._pending[3] if self._pending is not None else self._other_clients

    @property
    def requests(self) -> int:
        """
        Requests sent to ThreatConnect so far, by every instance's client.
        """
        return sum(client.requests for client in (self._client, *self._other_clients))

    @property
    def status_counts(self) -> dict[int | str, int]:
        """
        How the requests of every instance's client ended (see
        L{ThreatConnectClient.status_counts}), added up.
        """
        counts: dict[int | str, int] = {}
        for client in (self._client, *self._other_clients):
            for outcome, number in client.status_counts.items():
                counts[outcome] = counts.get(outcome, 0) + number
        return counts

    def _sources(self) -> Iterator[tuple[str, Source, ThreatConnectClient, PullOptions]]:
        """
        Every source of every instance, with the instance's name (C{""} for
        the main one), client and pull options.
        """
        clients = (self._client, *self._other_clients)
        for instance, client in zip(self._config.instances, clients, strict=True):
            options = self._pull_options
            if instance.instance:
                options = pull_options(self._config, self._pause, instance)
            for source in instance.sources:
                yield instance.instance, source, client, options

    @property
    def config(self) -> Config:
        """
        The configuration the next cycle uses.
        """
        return self._pending[0] if self._pending is not None else self._config

    def request_full_sync(self) -> None:
        """
        Make the next cycle a full sync (with incremental sync on).
        """
        if self._incremental is not None:
            self._incremental.request_full()

    def reconfigure(
        self,
        config: Config,
        client: ThreatConnectClient,
        cb_sync: CbServerSync | None = None,
        notices: tuple[str, ...] = (),
        other_clients: tuple[ThreatConnectClient, ...] = (),
    ) -> None:
        """
        Use C{config}, C{client} and C{cb_sync} from the next cycle on (at
        once if no cycle is running; a running cycle finishes with what it
        started with).

        :param notices: more sentences for the page, e.g. settings that need
            a restart.
        :param other_clients: the clients of C{config}'s other instances.
        """
        self._pending = (config, client, cb_sync, other_clients)
        self._extra_notices = notices
        if not self._status.running:
            self._apply_pending()

    def _apply_pending(self) -> None:
        if self._pending is None:
            return
        counts, requests = self.status_counts, self.requests
        self._config, self._client, self._cb_sync, self._other_clients = self._pending
        # Keep counting where the old clients left off (metrics are counters).
        for client in self._other_clients:
            client.status_counts, client.requests = {}, 0
        self._client.status_counts, self._client.requests = dict(counts), requests
        self._publisher.reconfigure(self._config, self._cb_sync)
        self._pending = None
        self._configure()

    async def run(self) -> Snapshot:
        """
        Run one cycle and publish its feed (the shrink guard permitting).

        :raises Exception: whatever stopped the cycle (L{SyncDeadlineError}
            if it ran past C{sync_deadline_minutes}); the status and the store
            are updated either way (the store only on success).
        """
        snapshot: Snapshot = await self._cycle(self._publisher.publish, record_history=True)
        return snapshot

    async def write(self, path: str) -> FeedFile:
        """
        Run one cycle and write its feed to C{path} (atomically) instead of
        publishing it: write mode.  Nothing is served, so no report history
        is kept.

        :raises Exception: whatever stopped the cycle or the write; C{path}
            is then untouched.
        """

        async def install(feed: FeedFile, builder: FeedBuilder) -> FeedFile:
            await self._run_heavy(feed.install, path)
            return feed

        written: FeedFile = await self._cycle(
            install, record_history=False, directory=os.path.dirname(os.path.abspath(path))
        )
        return written

    async def _cycle(
        self,
        finish: Callable[[FeedFile, FeedBuilder], Awaitable[T]],
        *,
        record_history: bool,
        directory: str | None = None,
    ) -> T:
        """
        One cycle: pull, build into a file in C{directory} (by default the
        store's), then C{finish} with it, within C{sync_deadline_minutes};
        the status is updated either way.
        """
        self._apply_pending()
        status = self._status
        status.begin(self._clock.seconds(), len(self._config.sources))
        requests_before = self.requests
        self.log.info("Sync started: {sources} sources", sources=len(self._config.sources))
        work = defer.ensureDeferred(self._pull_and_build(finish, record_history, directory))
        deadline = self._config.sync.deadline_minutes
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            work.cancel()

        timer = self._clock.callLater(deadline * 60.0, expire)
        try:
            result, builder, pulls = await work
        except Exception:
            self._failed(Failure(), bool(expired), deadline, self.requests - requests_before)
        finally:
            if timer.active():
                timer.cancel()
            forget_dates()
            trim()
        for warning in record_build(
            self._status, builder.stats, pulls, self.requests - requests_before
        ):
            self.log.warn("Feed: {warning}", warning=warning)
        started = status.last_attempt
        status.succeeded(self._clock.seconds())
        log_sync(
            self._sync_log,
            started,
            self._clock.seconds(),
            "published",
            status.requests,
            dict(builder.stats.iocs_by_kind),
        )
        self.log.info(
            "Sync published {reports} reports with {iocs} IOCs in {seconds:.1f} s",
            reports=builder.stats.reports,
            iocs=builder.stats.iocs,
            seconds=status.last_duration or 0.0,
        )
        return result

    def _failed(
        self, failure: Failure, expired: bool, deadline: float, requests: int = 0
    ) -> NoReturn:
        """
        Record and log a failed cycle, then raise its error.
        """
        if expired and failure.check(defer.CancelledError):
            failure = Failure(
                SyncDeadlineError(
                    f"the sync did not finish within {deadline:g} minutes "
                    "(sync_deadline_minutes) and was stopped"
                )
            )
        stopped = failure.check(defer.CancelledError) is not None
        if stopped:
            message = "stopped before it finished (the service is stopping)"
        else:
            message = redact(describe_failure(failure), self._config.secrets())
        started = self._status.last_attempt
        self._status.failed(self._clock.seconds(), message)
        held = failure.check(FeedHeldBackError) is not None
        result = "held back" if held else "failed"
        log_sync(self._sync_log, started, self._clock.seconds(), result, requests, error=message)
        log_failure(self.log, failure, message)
        failure.raiseException()
        raise AssertionError("unreachable")

    async def _pull_and_build(
        self,
        finish: Callable[[FeedFile, FeedBuilder], Awaitable[T]],
        record_history: bool,
        directory: str | None,
    ) -> tuple[T, FeedBuilder, list[SourcePull]]:
        """
        Pull every source into a new builder, build the feed into a file
        (validated as it is written), and hand it to C{finish}; the file is
        deleted if anything fails before it is installed.
        """
        seen = SeenWriter(self._seen_folder) if self._seen_folder and record_history else None
        try:
            result = await self._pull_build_finish(finish, record_history, directory, seen)
        except FeedHeldBackError:
            if seen is not None:
                await self._keep_seen(seen, None)
            raise
        except BaseException:
            if seen is not None:
                seen.discard()
            raise
        if seen is not None:
            await self._keep_seen(seen, self._committed)
        return result

    async def _keep_seen(self, seen: SeenWriter, committed: Any) -> None:
        """
        Make this sync's file of what it saw the one explanations (and the
        next delta) read, off the reactor (its fsync took over 100 ms at a
        million indicators); if it cannot be written, say so and keep the
        previous one (the sync itself stands: the next delta, finding the
        old file no longer matching the store, reads the store).  A
        committed sync's feed state is kept with it, for the next delta.
        """
        kept, self._state_kept = self._state_kept, None
        try:
            await self._run_heavy(seen.finish, committed)
        except defer.CancelledError:
            # Stopped while the file was being finished: the sync is done
            # (published, committed) and the thread still puts the file in
            # place.
            pass
        except OSError as e:
            seen.discard()
            self.log.warn(
                "Could not keep what this sync saw ({error}); explanations use the previous sync's",
                error=str(e),
            )
        else:
            if kept is not None and committed is not None:
                found = {"committed": committed, "rows": seen.stored_rows}
                try:
                    await self._run_heavy(keep_state, seen.folder, kept, found)
                    kept = None
                except OSError as e:
                    self.log.warn(
                        "Could not keep this sync's feed state ({error}); "
                        "the next delta builds from every indicator",
                        error=str(e),
                    )
        finally:
            if kept is not None:
                unlink_quietly(kept)

    async def _pull_build_finish(
        self,
        finish: Callable[[FeedFile, FeedBuilder], Awaitable[T]],
        record_history: bool,
        directory: str | None,
        seen: SeenWriter | None,
    ) -> tuple[T, FeedBuilder, list[SourcePull]]:
        now = self._clock.seconds()
        settings = as_of(self._settings, self._config, now)
        builder = FeedBuilder(
            settings, history=self._publisher.history, record_history=record_history
        )
        incremental = self._incremental if record_history else None
        book: CycleBook | None = None
        self._committed = None
        if incremental is not None:
            plan = await incremental.plan(self._config.sources, now)
            book = CycleBook(incremental, plan, now, seen=seen)

        def build(built: FeedBuilder, state: StateJob) -> Awaitable[T]:
            return self._build_and_finish(built, finish, record_history, directory, state)

        def new_builder() -> FeedBuilder:
            return FeedBuilder(
                settings, history=self._publisher.history, record_history=record_history
            )

        keep: str | None = None
        cool: Callable[[], None] | None = None
        try:
            keep = self._state_to_keep(book, seen, settings)
            # A delta's build child started now is ready when its short pull
            # ends (a full sync's pull is long enough to start one after it).
            if self._warm_build is not None and book is not None and not book.plan.full:
                base = state_file(seen.folder) if keep and seen else None
                cool = self._warm_build(base)
            pulls = await self._pull_all(builder, seen, book)
            if book is not None and not book.plan.full:
                result, builder = await build_delta(
                    self._seen_folder, book, new_builder, seen, self._pause, build, keep
                )
            else:
                result = await build(builder, StateJob(save_to=keep))
            if book is not None:
                progress = self._status.progress
                if progress is not None:
                    progress.phase = "storing"
                self._status.incremental = await book.commit()
        except BaseException:
            # Also when the commit fails or is cancelled: the transaction
            # must not stay open (it holds the store's write lock).
            if keep is not None:
                unlink_quietly(keep)
            if book is not None:
                await book.abort()
            raise
        finally:
            if cool is not None:
                cool()
        if book is not None:
            assert book.committed_states is not None
            self._committed = committed_token(book.committed_states)
        self._state_kept = keep
        return result, builder, pulls

    def _state_to_keep(
        self, book: CycleBook | None, seen: SeenWriter | None, settings: FeedSettings
    ) -> str | None:
        """
        Where this cycle's build keeps its feed state for the next delta
        (L{tcbridge.feed.state}), or C{None}: only with a store, a file of
        what the sync sees beside it, and settings a state serves.
        """
        if book is None or seen is None or not settings_patchable(settings):
            return None
        fd, path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".state", dir=seen.folder)
        os.close(fd)
        return path

    async def _pull_all(
        self, builder: FeedBuilder, seen: SeenWriter | None, book: CycleBook | None
    ) -> list[SourcePull]:
        """
        Pull every source (whole, or what changed since, as C{book}'s plan
        says) into C{builder} (a full pull) and C{book}.
        """
        pulls: list[SourcePull] = []
        progress = self._status.progress
        full = book is None or book.plan.full
        for number, (instance, source, client, instance_options) in enumerate(self._sources()):
            if progress is not None:
                progress.source, progress.done = source.name, number
            since = None if book is None else book.plan.since[source.name]

            def on_page(batches: Any, name: str = source.name) -> None:
                if full:
                    if seen is not None:
                        seen.add(batches, origin=name)
                    builder.add(batches)
                if book is not None:
                    book.pulled(name, batches)
                if progress is not None:
                    progress.pages += 1
                    progress.indicators += sum(map(len, batches))

            def on_inactive(
                batches: Any, name: str = source.name, delta: bool = since is not None
            ) -> None:
                if seen is not None:
                    seen.add_inactive(batches, origin=name)
                if book is not None and delta:
                    book.inactive(name, batches)

            options = evolve(instance_options, on_inactive=on_inactive, modified_since=since)
            if book is not None and options.pause is not None:
                options = evolve(options, pause=book.paced(options.pause))
            if self._share is not None and book is None and seen is None:
                share = self._share(builder, client, instance, self._count_progress)
                options = evolve(options, share=share)
            try:
                pull = await self._pull_source(client, source, options, on_page, book)
            except ThreatConnectError as e:
                e.in_instance(instance)
                raise
            self.log.info(
                "Pulled {source}: {indicators} indicators in {pages} pages",
                source=source.name,
                indicators=pull.indicators,
                pages=pull.pages,
            )
            pulls.append(pull)
        return pulls

    async def _pull_source(
        self,
        client: ThreatConnectClient,
        source: Source,
        options: PullOptions,
        on_page: OnPage,
        book: CycleBook | None,
    ) -> SourcePull:
        """
        Pull one source: in a delta, with the deleted listings of its
        owners beside it (L{CycleBook.pull_with_deletions}).
        """
        if book is None or options.modified_since is None:
            return await pull_source(client, source, options, on_page)
        return await book.pull_with_deletions(client, source, options, on_page)

    def _count_progress(self, pages: int, indicators: int) -> None:
        """
        Add pages and indicators read elsewhere to the running sync's
        progress.
        """
        progress = self._status.progress
        if progress is not None:
            progress.pages += pages
            progress.indicators += indicators

    async def _build_and_finish(
        self,
        builder: FeedBuilder,
        finish: Callable[[FeedFile, FeedBuilder], Awaitable[T]],
        record_history: bool,
        directory: str | None,
        state: StateJob | None = None,
    ) -> T:
        progress = self._status.progress
        if directory is None:
            directory = await self._run_heavy(self._store.build_directory)
        if progress is not None:
            progress.phase, progress.done = "building", len(self._config.sources)
        feed = await self._build_file(builder, directory, record_history, state)
        if progress is not None:
            progress.phase = "publishing"
        try:
            return await finish(feed, builder)
        except BaseException:
            feed.discard()
            raise

    async def _build_file(
        self, builder: FeedBuilder, directory: str, gzip: bool, state: StateJob | None
    ) -> FeedFile:
        """
        Build the feed into a new file in C{directory}, checking every
        report as it is written, with its gzip form if asked for (and
        C{state}, see L{tcbridge.feed.state}): in a child process when the
        cycle has a L{BuildFeed}, else with C{run_heavy}.  The whole feed
        is never held as Python objects.
        """
        pretty = self._config.feed.pretty_print_json
        if state == StateJob():
            state = None
        try:
            if self._build is not None:
                return await self._build(builder, directory, gzip=gzip, pretty=pretty, state=state)
            feed: FeedFile = await self._run_heavy(
                partial(build_feed_file, builder, directory, gzip=gzip, pretty=pretty, state=state)
            )
            return feed
        except FeedValidationError as e:
            raise FeedInvalidError(
                f"the built feed failed validation with {len(e.problems)} problems "
                f"and was not published; first: {e.problems[0]}"
            ) from None

    def run_logged(self) -> defer.Deferred[None]:
        """
        Run one cycle for the timer: never fails, so the timer never stops.
        """
        running = defer.ensureDeferred(self._run_quietly())
        self._running = running
        running.addBoth(self._forget, running)
        return running

    def _forget(self, result: object, running: defer.Deferred[None]) -> object:
        if self._running is running:
            self._running = None
        return result

    def cancel(self) -> None:
        """
        Stop the cycle in progress, if any (the bridge is stopping): nothing
        is published and the next start syncs again.
        """
        if self._running is not None:
            self._running.cancel()

    async def _run_quietly(self) -> None:
        try:
            await self.run()
        except Exception:  # noqa: S110 (run() has logged and recorded it)
            pass
