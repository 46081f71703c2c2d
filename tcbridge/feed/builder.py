# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
Build one feed: take in pages (L{FeedBuilder.add}), then stream the
document out once (L{FeedBuilder.build_to}).

The steps live in their own modules: filters, values and packing on the
way in (L{tcbridge.feed.collect}, L{tcbridge.feed.columns}); grouping
(L{tcbridge.feed.grouping}, L{tcbridge.feed.grouped}) or the Expanded
plan (L{tcbridge.feed.expanded}, L{tcbridge.feed.expanded_reports}); report
timestamps (L{tcbridge.feed.stamp}); bytes out (L{tcbridge.feed.render}).
No grouping ever holds the document, or its reports, as Python objects.

B{Determinism.}  The same indicators and the same history give the same
bytes whatever the page order: reports are sorted by id, IOC values are
sorted (hashes and host names as text, addresses numerically), keys come
in a fixed order, and timestamps come from the data and the history, never
from the clock.

B{Validity.}  Every value is checked against the Carbon Black rules of
L{tcbridge.feed.iocs} when it comes in, scores are clamped to 0..100 and
tags cleaned (L{tcbridge.feed.text.cb_tags}) when they are computed, and as
each report is written its id and timestamp are checked (ids must also be
strictly increasing, hence unique).  A report that fails raises
L{FeedValidationError} and the build publishes nothing.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import orjson

from tcbridge.model import Grouping
from tcbridge.threatconnect.records import Indicator, IndicatorBatch

from .collect import Collector
from .document import feedinfo_dict
from .history import AnyHistory, ReportHistory, resolve
from .render import Body, Chunk, FeedWriter
from .reports import ReportContext
from .settings import BuildStats, FeedSettings, SourceCounts
from .stamp import Stamper
from .text import cb_tags
from .validator import validate_feedinfo

if TYPE_CHECKING:
    from .patch import CollectorIndex

_REPORT_ID: Final = re.compile(rb'"[A-Za-z0-9_.-]+"').fullmatch


class FeedValidationError(Exception):
    """
    The built feed broke a Carbon Black rule; C{problems} lists each one.
    This means a bug in tcbridge: the builder only emits values it has
    validated.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(problems[:5]))
        self.problems = problems


class FeedBuilder:
    """
    Collects pages of indicators and builds one feed document.

    Call L{add} once per page, then L{build_to} (or L{build_bytes} or
    L{build}) once.  L{stats} describes the result and L{history} (given,
    as itself or where it is stored, then replaced by the built feed's)
    drives report timestamps.

    :param record_history: keep the history of the built feed (write mode
        has nobody to give it to, and saves the digests).
    """

    def __init__(
        self,
        settings: FeedSettings | None = None,
        *,
        history: AnyHistory | None = None,
        record_history: bool = True,
    ) -> None:
        self.settings = settings if settings is not None else FeedSettings()
        self.stats = BuildStats()
        self.history: AnyHistory = history if history is not None else ReportHistory()
        self._record = record_history
        self._collector: Collector | None = Collector(self.settings, self.stats)
        #: a grouped feed's reports worked out ahead (L{plan_ahead})
        self._planned: tuple[ReportContext, list[Any]] | None = None

    @property
    def records_history(self) -> bool:
        """
        Whether this builder keeps the history of the feed it builds.
        """
        return self._record

    def add(self, batches: IndicatorBatch | Iterable[IndicatorBatch] | Iterable[Indicator]) -> None:
        """
        Take in one page: a batch, batches, or indicator records.  Nothing
        refers to them afterwards, so the page can be dropped at once.
        """
        if self._collector is None:
            raise RuntimeError("FeedBuilder.add called after build")
        if isinstance(batches, IndicatorBatch):
            self._collector.add(batches)
            return
        pending: list[Indicator] = []
        for item in batches:
            if isinstance(item, IndicatorBatch):
                self._collector.add(item)
            else:
                pending.append(item)
        for batch in IndicatorBatch.of(pending):
            self._collector.add(batch)

    def merge(self, other: FeedBuilder) -> None:
        """
        Take in everything C{other} (made with the same settings) took in,
        as if its pages had come here; C{other} can no longer build.
        """
        from .merge import merge_collectors

        if self._collector is None or other._collector is None:
            raise RuntimeError("FeedBuilder.merge called after build")
        merge_collectors(self._collector, other._collector)
        other._collector = None

    def state(self) -> FeedBuilder:
        """
        A builder holding what this one took in (the same columns, not a
        copy) and nothing else: no report history.  What a state file
        keeps (L{tcbridge.feed.state}).
        """
        if self._collector is None:
            raise RuntimeError("FeedBuilder.state called after build")
        kept = FeedBuilder(self.settings, record_history=False)
        kept._collector = self._collector
        kept.stats = self._collector.stats
        return kept

    def rebase(
        self, base: FeedBuilder, minus: FeedBuilder, index: CollectorIndex | None = None
    ) -> None:
        """
        Hold what C{base} took in, less what C{minus} took in, plus what
        this builder took in (all made with the same settings): a delta's
        feed from the last sync's state (L{tcbridge.feed.patch}; C{index}
        is C{base}'s columns' index if worked out ahead).  C{base} and
        C{minus} can no longer build.

        :raise PatchError: if the settings differ or C{base} does not hold
            what C{minus} took in; this builder is then unchanged.
        """
        from .merge import merge_collectors
        from .patch import PatchError, remove_collected

        into, taken, mine = base._collector, minus._collector, self._collector
        if into is None or taken is None or mine is None:
            raise RuntimeError("FeedBuilder.rebase called after build")
        if base.settings != self.settings or minus.settings != self.settings:
            raise PatchError("the last sync's state was built with other settings")
        base._collector = minus._collector = None
        remove_collected(into, taken, index)
        merge_collectors(into, mine)
        self._collector = into
        self.stats = into.stats

    def index(self) -> CollectorIndex:
        """
        The index of what this builder took in, for a later L{rebase} on
        it to start from (see L{tcbridge.feed.patch.index_collected}).

        :raise PatchError: if it could not be rebased on.
        """
        from .patch import PatchError, index_collected, patchable

        collector = self._collector
        if collector is None or not patchable(collector):
            raise PatchError("only a grouped feed's state, not built yet, is indexed")
        return index_collected(collector)

    def release(self) -> None:
        """
        Forget the pages taken in (once they are handed to a build elsewhere,
        see L{tcbridge.feed.job}); this builder can no longer build.
        """
        self._collector = None

    def plan_ahead(self, *, fork: bool) -> None:
        """
        Work out a grouped feed's reports now, before a build starts
        threads (with C{fork}, on two processes: see
        L{tcbridge.feed.forked}); L{build_to} then renders them.  Nothing
        to do for an Expanded feed.
        """
        from .grouped import plan_grouped

        collector = self._collector
        if collector is None:
            raise RuntimeError("FeedBuilder.plan_ahead called after build")
        if collector.expanded is None and self._planned is None:
            context = ReportContext(self.settings, self.stats, collector.labels)
            self._planned = (context, plan_grouped(context, fork=fork))

    def _reports(
        self, stamper: Stamper, fork: bool
    ) -> Iterable[tuple[str, bytes, Body, int] | Chunk]:
        """
        Every report in id order as (id, id as JSON, body, timestamp); with
        C{fork}, an Expanded feed is rendered in two processes.
        """
        # Imported when a build starts: numpy (behind both) is not needed
        # while pages come in, and a pull's peak memory is lower without it.
        from .expanded_reports import ExpandedReports
        from .grouped import plan_grouped, render_grouped

        collector = self._collector
        if collector is None:
            raise RuntimeError("FeedBuilder can build only once")
        self._collector = None
        context = ReportContext(self.settings, self.stats, collector.labels)
        if collector.expanded is not None:
            history = resolve(self.history)
            reports = ExpandedReports(context, collector.expanded, collector.tag_sets, history)
            yield from reports.reports(stamper, fork=fork)
            return
        if self._planned is not None:
            (context, plan), self._planned = self._planned, None
        else:
            plan = plan_grouped(context)
        for rid, id_json, body, newest in render_grouped(context, collector.tag_sets, plan):
            yield rid, id_json, body, stamper.stamp(rid, id_json, body, newest)

    def build_to(self, writer: FeedWriter, *, fork: bool = False) -> None:
        """
        Write the whole document to C{writer}, checking each report as it
        goes.  Can be called once.  With C{fork}, a forked copy of this
        process renders part of an Expanded feed (see
        L{tcbridge.feed.forked}; only in a process with one thread).

        :raise FeedValidationError: if the feedinfo or a report breaks a
            Carbon Black rule; the writer's output must then be thrown away.
        """
        feedinfo = feedinfo_dict(self.settings.feedinfo)
        problems = validate_feedinfo(feedinfo)
        if problems:
            raise FeedValidationError(problems)
        stamper = Stamper(resolve(self.history), self._record)
        writer.begin(feedinfo)
        last = b""
        for item in self._reports(stamper, fork):
            if isinstance(item, Chunk):
                last = _check_chunk(item, last)
                writer.chunk(item)
                self.stats.reports += item.count
                continue
            rid, id_json, body, timestamp = item
            problem = _check(id_json, last, timestamp, body)
            if problem is not None:
                raise FeedValidationError([f"report {rid!r}: {problem}"])
            last = id_json
            writer.report(id_json, timestamp, body)
            self.stats.reports += 1
        writer.end()
        if stamper.recorder is not None:
            self.history = stamper.recorder.history()

    def build_bytes(self, validate: bool = True, *, pretty: bool = False) -> bytes:
        """
        The serialised document, built in memory (for tests and small
        feeds; the sync streams to a file with L{build_to}).
        """
        out = io.BytesIO()
        self.build_to(FeedWriter(out, pretty=pretty))
        return out.getvalue()

    def build(self) -> dict[str, Any]:
        """
        The complete feed document as Python objects (for tests and small
        feeds only).
        """
        doc: dict[str, Any] = orjson.loads(self.build_bytes())
        return doc


def _check_chunk(chunk: Chunk, last: bytes) -> bytes:
    """
    The checks made as reports rendered together are written: ids made of
    a checked prefix and a number, in order after the previous report (the
    chunk's own order comes from the plan), timestamps from the data or
    the history (non-negative integers).  Return the chunk's last id.
    """
    first_json, last_json = orjson.dumps(chunk.first), orjson.dumps(chunk.last)
    for rid, id_json in ((chunk.first, first_json), (chunk.last, last_json)):
        if _REPORT_ID(id_json) is None:
            raise FeedValidationError(
                [f"report {rid!r}: id may only hold letters, digits, '_', '.' and '-'"]
            )
    if first_json <= last or last_json < first_json:
        raise FeedValidationError([f"report {chunk.first!r}: ids are not unique and in order"])
    return last_json


def _check(id_json: bytes, last: bytes, timestamp: int, body: Body) -> str | None:
    """
    The checks made as a report is written (its values were checked when
    they came in): a valid id after the previous one, a non-negative
    integer timestamp.
    """
    if _REPORT_ID(id_json) is None:
        return "id may only hold letters, digits, '_', '.' and '-'"
    if id_json <= last:
        return "ids are not unique and in order"
    if timestamp.__class__ is not int or timestamp < 0:
        return f"timestamp {timestamp!r} is not a non-negative integer"
    return None


__all__ = [
    "BuildStats",
    "FeedBuilder",
    "FeedSettings",
    "FeedValidationError",
    "Grouping",
    "SourceCounts",
    "cb_tags",
]
