# -*- test-case-name: tests.unit.test_sync -*-
"""
What the bridge knows about its own syncs, for the diagnostics page and the
log: the last attempt, the last success, the last error in ThreatConnect's own
words, and the counts of the last successful cycle.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import define, field, frozen

from tcbridge.threatconnect.records import SourcePull


@frozen
class SourceRow:
    """
    Counts for one label of the last successful cycle: a configured source,
    or one owner of a C{*} source.

    :ivar indicators: ThreatConnect indicators read.
    :ivar iocs: IOC values that made it into the feed.
    """

    name: str
    indicators: int
    iocs: int


@define
class SyncProgress:
    """
    How far the running sync has got, for the page, /healthz and a
    terminal.

    :ivar phase: C{pulling}, C{building}, C{publishing} or C{storing} (the
        indicator store commits what a sync pulled, after publishing).
    :ivar source: the source being pulled (its name).
    :ivar done: sources pulled so far, of C{sources}.
    :ivar pages: pages read so far, all sources together.
    :ivar indicators: indicators read so far.
    """

    sources: int = 0
    phase: str = "pulling"
    source: str = ""
    done: int = 0
    pages: int = 0
    indicators: int = 0

    def describe(self, elapsed: float | None = None) -> str:
        """
        One line, e.g. C{pulling Acme (source 2 of 3): 12 pages, 120,000
        indicators, 14 s}.
        """
        where = (
            f"{self.phase} {self.source} (source {self.done + 1} of {self.sources})"
            if self.phase == "pulling" and self.source
            else self.phase
        )
        line = f"{where}: {self.pages:,} pages, {self.indicators:,} indicators"
        return line if elapsed is None else f"{line}, {elapsed:.0f} s"


@frozen
class IncrementalState:
    """
    Where incremental syncs stand (C{incremental_sync}), after the last
    committed cycle.

    :ivar kind: the last cycle's kind: C{"full"} or C{"delta"}.
    :ivar watermarks: per source, the newest C{lastModified} seen (epoch
        seconds; a delta asks from a little before it).
    :ivar added: indicators the last cycle added or updated in the store.
    :ivar removed: indicators it took out (deactivated, deleted).
    """

    kind: str
    last_full: float | None
    last_delta: float | None
    watermarks: tuple[tuple[str, int | None], ...]
    added: int
    removed: int

    def as_json(self) -> dict[str, object]:
        """
        The state for /healthz.
        """
        return {
            "last_cycle": self.kind,
            "last_full": self.last_full,
            "last_delta": self.last_delta,
            "watermarks": dict(self.watermarks),
            "added": self.added,
            "removed": self.removed,
        }


@define
class SyncStatus:
    """
    Mutable record of sync outcomes; written by the sync cycle, read by the
    web pages.  All times are seconds since the epoch from the injected clock.

    :ivar held_back: set while the shrink guard holds a new feed back: what
        happened and how to accept it.
    :ivar shared_iocs: IOCs that several owners reported (each is in the feed
        once, in a report naming all of them).
    :ivar excluded_by: IOCs each exclusion list removed, by option name.
    :ivar feed_warnings: advice about the last feed (e.g. too many reports).
    :ivar cb_last_sync: when the Carbon Black server last synchronized the
        feed on our request (C{cb_feed_id} is its id there).
    :ivar cb_last_error: the last Carbon Black server sync failure; it never
        stops publishing.
    :ivar progress: how far the running sync has got (C{None} between syncs).
    :ivar incremental: where incremental syncs stand (C{None} when off).
    """

    started_at: float
    notices: tuple[str, ...] = ()
    running: bool = False
    progress: SyncProgress | None = None
    incremental: IncrementalState | None = None
    last_attempt: float | None = None
    last_attempt_finished: float | None = None
    last_success: float | None = None
    last_duration: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    # What the last successful sync read and made.
    sources: tuple[SourceRow, ...] = ()
    pulls: tuple[SourcePull, ...] = ()
    requests: int = 0
    iocs_by_kind: Mapping[str, int] = field(factory=dict)
    shared_iocs: int = 0
    skipped: Mapping[str, int] = field(factory=dict)
    excluded_by: Mapping[str, int] = field(factory=dict)
    reports: int = 0
    truncated_reports: int = 0
    feed_warnings: tuple[str, ...] = ()
    held_back: str | None = None
    # Every sync since the start.
    cycles_ok: int = 0
    cycles_failed: int = 0
    cycle_seconds_total: float = 0.0
    cb_last_sync: float | None = None
    cb_feed_id: int | None = None
    cb_last_error: str | None = None
    cb_last_error_at: float | None = None

    def begin(self, now: float, sources: int = 0) -> None:
        """
        A cycle starts, with C{sources} sources to pull.
        """
        self.running = True
        self.last_attempt = now
        self.progress = SyncProgress(sources=sources)

    def failed(self, now: float, message: str) -> None:
        """
        A cycle ended without publishing; C{message} says why, in one line.
        """
        self.running = False
        self.progress = None
        self.last_attempt_finished = now
        self.last_error = message
        self.last_error_at = now
        self.cycles_failed += 1
        if self.last_attempt is not None:
            self.cycle_seconds_total += now - self.last_attempt

    def succeeded(self, now: float) -> None:
        """
        A cycle published a feed.  The counts were set by the caller.
        """
        self.running = False
        self.progress = None
        self.last_attempt_finished = now
        self.last_success = now
        if self.last_attempt is not None:
            self.last_duration = now - self.last_attempt
            self.cycle_seconds_total += self.last_duration
        self.cycles_ok += 1
