# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
What a build is told (L{FeedSettings}) and what it reports (L{BuildStats}).
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import Factory, define, field, frozen

from tcbridge.model import KNOWN_TYPES, Grouping, ScoreSource

from .document import FeedInfo
from .filters import Exclusions
from .iocs import IOC_KINDS


def _all_types() -> frozenset[str]:
    return frozenset(KNOWN_TYPES)


def _type_set(types: Iterable[str]) -> frozenset[str]:
    return frozenset(types)


@frozen
class FeedSettings:
    """
    How indicators become a feed.

    :ivar grouping: C{Expanded} (one report per indicator), C{Condensed} (one
        per source, IOC kind and score) or C{MaxCondensed} (one per source
        and score).
    :ivar types: ThreatConnect type names to include (C{File}, C{Address},
        C{Host}).
    :ivar score_source: C{rating} (rating x 20), C{confidence},
        C{threatAssessScore} (0-1000, divided by 10) or C{max} (the highest
        of those the indicator has); missing values score 0.
    :ivar min_rating: indicators rated below this (0-5, the raw rating) are
        left out; with a minimum above 0, so are unrated ones.
    :ivar min_score: indicators scoring below this (0-100) are left out.
    :ivar exclude_reserved: leave out values that are never a meaningful
        IOC (loopback, multicast... see L{tcbridge.feed.reserved}).
    :ivar exclude_private: also leave out private and documentation
        addresses.
    :ivar modified_after: indicators whose C{lastModified} (seconds since
        the epoch) is before this are left out as aged out (C{max_age_days}
        before the sync); C{None}: no age limit.  An indicator without a
        C{lastModified} is never aged out.
    :ivar exclusions: values never put in the feed.
    :ivar max_reports: keep only this many reports (highest score, then
        newest, then smallest id).
    :ivar report_warning_threshold: warn above this many reports.
    :ivar web_url: base of the ThreatConnect web UI for report links.
    :ivar instance_web_urls: (label prefix, web UI base) of the other
        ThreatConnect instances: links of reports whose labels start with a
        prefix point at that instance's UI.
    :ivar feedinfo: what Carbon Black shows about the feed.
    """

    grouping: Grouping = "Condensed"
    types: frozenset[str] = field(default=Factory(_all_types), converter=_type_set)
    score_source: ScoreSource = "rating"
    min_score: int = 20
    exclude_reserved: bool = True
    exclude_private: bool = False
    exclusions: Exclusions = Factory(Exclusions)
    modified_after: int | None = None
    max_reports: int | None = None
    web_url: str = ""
    instance_web_urls: tuple[tuple[str, str], ...] = ()
    feedinfo: FeedInfo = Factory(FeedInfo)
    min_rating: float | None = None
    report_warning_threshold: int = 10_000


@define
class SourceCounts:
    """
    Figures for one source label: indicators received, and IOCs it
    contributed to the published feed (a value shared with other labels
    counts for each of them).
    """

    indicators: int = 0
    iocs: int = 0


@define
class BuildStats:
    """
    What a build did, for logs, metrics and the diagnostics page.

    :ivar indicators: indicator records received.
    :ivar iocs_by_kind: IOC values in the feed, per Carbon Black kind.
    :ivar per_source: figures per source label.
    :ivar skipped: what was left out, by reason (see L{tcbridge.feed.collect}).
    :ivar reports: reports in the feed.
    :ivar truncated_reports: reports dropped by C{max_reports}.
    :ivar shared_iocs: values in the feed that more than one label reported.
    :ivar excluded_by: IOC values removed, per exclusion list name.
    :ivar warnings: advice for the user, one line each.
    """

    indicators: int = 0
    iocs_by_kind: dict[str, int] = Factory(lambda: dict.fromkeys(IOC_KINDS, 0))
    per_source: dict[str, SourceCounts] = Factory(dict)
    skipped: dict[str, int] = Factory(dict)
    reports: int = 0
    truncated_reports: int = 0
    shared_iocs: int = 0
    excluded_by: dict[str, int] = Factory(dict)
    warnings: list[str] = Factory(list)

    @property
    def iocs(self) -> int:
        """
        IOC values in the feed, all kinds together.
        """
        return sum(self.iocs_by_kind.values())
