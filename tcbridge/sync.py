# -*- test-case-name: tests.unit.test_sync -*-
"""
One sync cycle (every source -> feed -> validation -> publish), and the timer
service that runs it every C{feed_retrieval_minutes}.

A cycle is all or nothing: if any source fails, or the feed does not
validate, nothing is published and the previous feed stays in place.  The
timer survives every failure.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NoReturn, TypeVar

from attrs import define, field
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcbridge.cbserver import CbServerSync, CbSyncError, CbSyncResult
from tcbridge.config import Config
from tcbridge.feed.builder import FeedBuilder, FeedSettings, FeedValidationError
from tcbridge.feed.filters import Exclusions, parse_exclusion_file
from tcbridge.feed.history import AnyHistory, ReportHistory
from tcbridge.feed.job import build_feed_file
from tcbridge.logs import bridge_observer
from tcbridge.memory import trim
from tcbridge.secrets import redact
from tcbridge.seen import SeenWriter
from tcbridge.status import SourceRow, SyncStatus
from tcbridge.store import FeedFile, FeedStore, Snapshot
from tcbridge.synclog import SyncLog, SyncRecord
from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.errors import ThreatConnectError
from tcbridge.threatconnect.parse import forget_dates
from tcbridge.threatconnect.pull import PullOptions, pull_source
from tcbridge.threatconnect.records import SourcePull

T = TypeVar("T")

#: Runs a blocking function somewhere that does not stall the reactor (a
#: thread in production; inline in unit tests) and returns a Deferred.
RunHeavy = Callable[..., "defer.Deferred[Any]"]

#: Builds a feed into a temporary file: C{build(builder, directory, *,
#: gzip, pretty)}; see L{tcbridge.childbuild.ChildBuild}.
BuildFeed = Callable[..., Awaitable[FeedFile]]


def run_inline(f: Callable[..., T], *args: Any) -> defer.Deferred[T]:
    """
    A L{RunHeavy} that runs C{f} at once in the caller's thread: for tests and
    for small feeds.
    """
    return defer.maybeDeferred(f, *args)


ACCEPT_SHRINK_FILE = "accept-shrink"


def accept_marker(config: Config) -> str | None:
    """
    The file whose presence accepts the next shrinking feed (written by
    C{tcbridge accept-shrink}); C{None} without a cache folder.
    """
    if config.sync.cache_folder is None:
        return None
    return os.path.join(config.sync.cache_folder, ACCEPT_SHRINK_FILE)


class FeedHeldBackError(Exception):
    """
    The new feed shrank more than allowed and was not published.
    """


class SyncDeadlineError(Exception):
    """
    A sync ran longer than C{sync_deadline_minutes}; it was stopped and
    nothing was published.
    """


class FeedInvalidError(Exception):
    """
    The built feed broke a Carbon Black feed rule; it is not published.
    """


def feed_settings(config: Config) -> tuple[FeedSettings, list[str]]:
    """
    The feed builder's settings for a configuration, and the problems found
    in its exclusion files (one line each, C{file:line: ...}; a bad line is
    skipped, never fatal).
    """
    lists = []
    problems: list[str] = []
    for excluded in config.feed.exclusions:
        parsed, bad = parse_exclusion_file(
            excluded.kind, excluded.option, excluded.path, excluded.lines
        )
        lists.append(parsed)
        problems += bad
    settings = FeedSettings(
        grouping=config.feed.grouping,
        types=config.feed.types,
        score_source=config.feed.score_source,
        min_rating=config.feed.min_rating,
        min_score=config.feed.min_score,
        exclude_reserved=config.feed.exclude_reserved,
        exclude_private=config.feed.exclude_private,
        exclusions=Exclusions.of(lists),
        max_reports=config.feed.max_reports,
        web_url=config.threatconnect.web_url,
    )
    return settings, problems


def pull_options(config: Config, pause: Callable[[], Awaitable[None]] | None = None) -> PullOptions:
    """
    How to page through ThreatConnect for a configuration.  On v3 the
    minimum rating goes into the TQL query (filtering on ThreatConnect's
    side; the feed builder applies it again either way), and the ThreatAssess
    score is asked for when scores come from it.
    """
    fields: tuple[str, ...] = ("tags",)
    if config.feed.score_source in ("threatAssessScore", "max"):
        fields += ("threatAssess",)
    return PullOptions(
        api_version=config.threatconnect.api_version,
        page_size=config.threatconnect.page_size,
        types=config.feed.types,
        min_rating=config.feed.min_rating,
        fields=fields,
        pause=pause,
    )


def describe_failure(failure: Failure) -> str:
    """
    One line for the page and the log: ThreatConnect's own words for an API
    failure, otherwise the exception's type and text.
    """
    error = failure.value
    if isinstance(
        error,
        ThreatConnectError | FeedInvalidError | SyncDeadlineError | FeedHeldBackError | CbSyncError,
    ):
        return str(error)
    if isinstance(error, defer.CancelledError):
        return "the sync was cancelled (the bridge is stopping)"
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text}"


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
    :param pause: given to the pull so that big pages are handled in chunks
        with a pause on the reactor between them (C{None} in unit tests).
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
    _sync_log: SyncLog | None = field(default=None, kw_only=True)
    _seen_folder: str | None = field(default=None, kw_only=True)
    _pause: Callable[[], Awaitable[None]] | None = field(default=None, kw_only=True)
    _extra_notices: tuple[str, ...] = field(default=(), init=False)
    _pending: tuple[Config, ThreatConnectClient, CbServerSync | None] | None = field(
        init=False, default=None
    )
    _cb_running: defer.Deferred[Any] | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._configure()

    def _configure(self) -> None:
        self._settings, problems = feed_settings(self._config)
        self._pull_options = pull_options(self._config, self._pause)
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
    def config(self) -> Config:
        """
        The configuration the next cycle uses.
        """
        return self._pending[0] if self._pending is not None else self._config

    def reconfigure(
        self,
        config: Config,
        client: ThreatConnectClient,
        cb_sync: CbServerSync | None = None,
        notices: tuple[str, ...] = (),
    ) -> None:
        """
        Use C{config}, C{client} and C{cb_sync} from the next cycle on (at
        once if no cycle is running; a running cycle finishes with what it
        started with).

        :param notices: more sentences for the page, e.g. settings that need
            a restart.
        """
        self._pending = (config, client, cb_sync)
        self._extra_notices = notices
        if not self._status.running:
            self._apply_pending()

    def _apply_pending(self) -> None:
        if self._pending is None:
            return
        self._config, self._client, self._cb_sync = self._pending
        self._pending = None
        self._configure()

    async def run(self) -> Snapshot:
        """
        Run one cycle and publish its feed (the shrink guard permitting).

        :raises Exception: whatever stopped the cycle (L{SyncDeadlineError}
            if it ran past C{sync_deadline_minutes}); the status and the store
            are updated either way (the store only on success).
        """
        snapshot: Snapshot = await self._cycle(self._publish, record_history=True)
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
        status.begin(self._clock.seconds(), len(self._config.threatconnect.sources))
        requests_before = self._client.requests
        self.log.info(
            "Sync started: {sources} sources", sources=len(self._config.threatconnect.sources)
        )
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
            self._failed(
                Failure(), bool(expired), deadline, self._client.requests - requests_before
            )
        finally:
            if timer.active():
                timer.cancel()
            forget_dates()
            trim()
        self._record(builder, pulls, self._client.requests - requests_before)
        started = status.last_attempt
        status.succeeded(self._clock.seconds())
        self._log_sync(started, "published", status.requests, dict(builder.stats.iocs_by_kind))
        self.log.info(
            "Sync published {reports} reports with {iocs} IOCs in {seconds:.1f} s",
            reports=builder.stats.reports,
            iocs=builder.stats.iocs,
            seconds=status.last_duration or 0.0,
        )
        return result

    def _log_sync(
        self,
        started: float | None,
        result: str,
        requests: int,
        iocs_by_type: dict[str, int] | None = None,
        error: str | None = None,
    ) -> None:
        """
        Add this cycle to the sync history, if there is one.
        """
        if self._sync_log is None or started is None:
            return
        iocs = sum(iocs_by_type.values()) if iocs_by_type else 0
        previous = self._sync_log.last_published()
        change = iocs - previous.iocs if iocs_by_type and previous is not None else None
        self._sync_log.add(
            SyncRecord(
                started=started,
                seconds=round(self._clock.seconds() - started, 3),
                result=result,
                requests=requests,
                iocs=iocs,
                iocs_by_type=iocs_by_type or {},
                change=change,
                error=error,
            )
        )

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
        message = redact(describe_failure(failure), self._config.secrets())
        started = self._status.last_attempt
        self._status.failed(self._clock.seconds(), message)
        held = failure.check(FeedHeldBackError) is not None
        self._log_sync(started, "held back" if held else "failed", requests, error=message)
        if isinstance(
            failure.value,
            ThreatConnectError | FeedInvalidError | SyncDeadlineError | FeedHeldBackError,
        ):
            self.log.error("Sync failed, the previous feed stays published: {error}", error=message)
        else:
            self.log.failure("Sync failed, the previous feed stays published", failure)
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
                seen.finish()
            raise
        except BaseException:
            if seen is not None:
                seen.discard()
            raise
        if seen is not None:
            seen.finish()
        return result

    async def _pull_build_finish(
        self,
        finish: Callable[[FeedFile, FeedBuilder], Awaitable[T]],
        record_history: bool,
        directory: str | None,
        seen: SeenWriter | None,
    ) -> tuple[T, FeedBuilder, list[SourcePull]]:
        builder = FeedBuilder(self._settings, history=self._history, record_history=record_history)
        pulls: list[SourcePull] = []
        progress = self._status.progress

        def on_page(batches: Any) -> None:
            if seen is not None:
                seen.add(batches)
            builder.add(batches)
            if progress is not None:
                progress.pages += 1
                progress.indicators += sum(map(len, batches))

        for number, source in enumerate(self._config.threatconnect.sources):
            if progress is not None:
                progress.source, progress.done = source.name, number
            pull = await pull_source(self._client, source, self._pull_options, on_page)
            self.log.info(
                "Pulled {source}: {indicators} indicators in {pages} pages",
                source=source.name,
                indicators=pull.indicators,
                pages=pull.pages,
            )
            pulls.append(pull)
        if directory is None:
            directory = await self._run_heavy(self._store.build_directory)
        if progress is not None:
            progress.phase, progress.done = "building", len(self._config.threatconnect.sources)
        feed = await self._build_file(builder, directory, record_history)
        if progress is not None:
            progress.phase = "publishing"
        try:
            result = await finish(feed, builder)
        except BaseException:
            feed.discard()
            raise
        return result, builder, pulls

    async def _publish(self, feed: FeedFile, builder: FeedBuilder) -> Snapshot:
        """
        Publish a built feed, unless the shrink guard holds it back.
        """
        held = self._shrink_guard(feed.iocs)
        if held is not None:
            self._status.held_back = held
            raise FeedHeldBackError(held)
        snapshot: Snapshot = await self._run_heavy(
            self._store.publish, feed, builder.history, self._clock.seconds()
        )
        self._store.swap(snapshot)
        self._history = snapshot.history if snapshot.history is not None else builder.history
        self._status.held_back = None
        self._start_cb_sync()
        return snapshot

    def _start_cb_sync(self) -> None:
        """
        Ask the Carbon Black server to synchronize the feed just published,
        without waiting: its outcome goes to the status and the log and never
        affects publishing.  A request still under way is not doubled.
        """
        if self._cb_sync is None or self._cb_running is not None:
            return
        status = self._status
        running = defer.ensureDeferred(self._cb_sync.synchronize())
        self._cb_running = running

        def synced(result: CbSyncResult) -> None:
            status.cb_last_sync = result.at
            status.cb_feed_id = result.feed_id

        def failed(failure: Failure) -> None:
            if not failure.check(CbSyncError):
                self.log.failure("Carbon Black server sync failed", failure)
            status.cb_last_error = redact(describe_failure(failure), self._config.secrets())
            status.cb_last_error_at = self._clock.seconds()

        def done(_: object) -> None:
            self._cb_running = None

        running.addCallbacks(synced, failed).addBoth(done)

    def _shrink_guard(self, new_iocs: int) -> str | None:
        """
        Say why C{new} must not replace the published feed, or C{None} if it
        may: it may not when it has more than C{max_shrink_percent} fewer
        IOCs, or none at all while the published feed has some, unless the
        user accepted the shrink (C{tcbridge accept-shrink}).
        """
        current = self._store.current
        if current is None or current.iocs == 0:
            return None
        limit = self._config.sync.max_shrink_percent
        drop = 100.0 * (current.iocs - new_iocs) / current.iocs
        if new_iocs > 0 and drop <= limit:
            return None
        marker = accept_marker(self._config)
        if marker is not None and os.path.exists(marker):
            os.unlink(marker)
            self.log.warn(
                "Publishing a feed {drop:.0f}% smaller than the last one ({new} IOCs instead "
                "of {old}): the shrink was accepted with tcbridge accept-shrink",
                drop=drop,
                new=new_iocs,
                old=current.iocs,
            )
            return None
        how = (
            f"run 'tcbridge --config {self._config.path} accept-shrink' to publish it at the "
            "next sync"
            if marker is not None
            else "set cache_folder so that 'tcbridge accept-shrink' can accept it"
        )
        if new_iocs == 0:
            why = "it has no IOCs at all"
        else:
            why = f"it is {drop:.0f}% smaller, more than max_shrink_percent = {limit:g}"
        return (
            f"A new feed with {new_iocs} IOCs was held back and the published feed "
            f"({current.iocs} IOCs) kept: {why}. If ThreatConnect really has fewer "
            f"indicators now, {how}, or raise max_shrink_percent."
        )

    async def _build_file(self, builder: FeedBuilder, directory: str, gzip: bool) -> FeedFile:
        """
        Build the feed into a new file in C{directory}, checking every
        report as it is written, with its gzip form if asked for: in a
        child process when the cycle has a L{BuildFeed}, else with
        C{run_heavy}.  The whole feed is never held as Python objects.
        """
        pretty = self._config.feed.pretty_print_json
        try:
            if self._build is not None:
                return await self._build(builder, directory, gzip=gzip, pretty=pretty)
            feed: FeedFile = await self._run_heavy(
                partial(build_feed_file, builder, directory, gzip=gzip, pretty=pretty)
            )
            return feed
        except FeedValidationError as e:
            raise FeedInvalidError(
                f"the built feed failed validation with {len(e.problems)} problems "
                f"and was not published; first: {e.problems[0]}"
            ) from None

    def _record(self, builder: FeedBuilder, pulls: list[SourcePull], requests: int) -> None:
        stats = builder.stats
        status = self._status
        status.sources = tuple(
            SourceRow(name=name, indicators=counts.indicators, iocs=counts.iocs)
            for name, counts in sorted(stats.per_source.items())
        )
        status.pulls = tuple(pulls)
        status.iocs_by_kind = dict(stats.iocs_by_kind)
        status.shared_iocs = stats.shared_iocs
        status.excluded_by = dict(stats.excluded_by)
        status.feed_warnings = tuple(stats.warnings)
        for warning in stats.warnings:
            self.log.warn("Feed: {warning}", warning=warning)
        status.skipped = dict(stats.skipped)
        status.reports = stats.reports
        status.truncated_reports = stats.truncated_reports
        status.requests = requests

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


def sync_timer(cycle: SyncCycle, minutes: float, clock: IReactorTime) -> TimerService:
    """
    A timer service that runs C{cycle} at start and then every C{minutes};
    a cycle still running delays the next one rather than overlapping it.
    """
    timer = _SyncTimer(minutes * 60.0, cycle)
    timer.clock = clock
    return timer


class _SyncTimer(TimerService):
    """
    The sync timer; stopping it also stops a cycle in progress, so a
    shutdown never waits for ThreatConnect.
    """

    def __init__(self, step: float, cycle: SyncCycle) -> None:
        super().__init__(step, cycle.run_logged)
        self._cycle = cycle

    def stopService(self) -> defer.Deferred[None]:
        self._cycle.cancel()
        return super().stopService()


class WriteOnceService(MultiService):
    """
    Write mode under twistd: sync once, write the feed to a file, stop the
    reactor.  twistd cannot exit non-zero, so a failure is logged as critical
    (the C{tcbridge write} console command gives an honest exit status).
    """

    log = Logger(observer=bridge_observer)

    def __init__(self, cycle: SyncCycle, path: str, stop: Callable[[], None]) -> None:
        super().__init__()
        self._cycle = cycle
        self._path = path
        self._stop = stop
        self.done: defer.Deferred[bool] | None = None

    def startService(self) -> None:
        super().startService()
        self.done = defer.ensureDeferred(self._write())

    async def _write(self) -> bool:
        try:
            await write_feed(self._cycle, self._path)
            return True
        except Exception as e:
            message = describe_failure(Failure()) if not isinstance(e, OSError) else str(e)
            self.log.critical(
                "Write mode failed, {path} was not written: {error}",
                path=self._path,
                error=message,
            )
            return False
        finally:
            self._stop()


async def write_feed(cycle: SyncCycle, path: str) -> FeedFile:
    """
    Sync once and write the feed to C{path} atomically.

    :raises Exception: if the sync fails or the file cannot be written
        (C{path} is then untouched).
    """
    feed = await cycle.write(path)
    cycle.log.info(
        "Wrote {reports} reports with {iocs} IOCs to {path}",
        reports=feed.reports,
        iocs=feed.iocs,
        path=path,
    )
    return feed
