# -*- test-case-name: tests.unit.test_feed_merge -*-
"""
Two collectors made one: what a builder took in from some pages, added to
what another took in from the others (write mode reads a source's listings
in two processes, see L{tcbridge.sync.shared}).

Codes that are only numbers for text kept once (tag sets, link templates,
descriptions) are translated into the receiving collector's; labels are
matched by name; rows and values are appended.  A feed does not depend on
the order indicators come in, so the merged collector builds the feed one
collector given every page would build.
"""

from __future__ import annotations

from .collect import Collector
from .settings import BuildStats


def merge_collectors(into: Collector, other: Collector) -> None:
    """
    Add everything C{other} took in to C{into} (both made with the same
    settings); C{other} is not used afterwards.
    """
    _merge_stats(into.stats, other.stats)
    tag_codes = [into.tag_set_id(tags) for tags in other.tag_sets]
    label_codes = []
    for name, theirs in sorted(other.labels.items(), key=lambda item: item[1].index):
        mine = into.label(name)
        label_codes.append(mine.index)
        mine.counts.indicators += theirs.counts.indicators
        mine.origins |= theirs.origins
        for kind, column in theirs.columns.items():
            mine.column(kind).take(column, tag_codes)
    if into.expanded is not None and other.expanded is not None:
        into.expanded.take(other.expanded, label_codes, tag_codes)


def _merge_stats(into: BuildStats, other: BuildStats) -> None:
    into.indicators += other.indicators
    for reason, count in other.skipped.items():
        into.skipped[reason] = into.skipped.get(reason, 0) + count
    for name, count in other.excluded_by.items():
        into.excluded_by[name] = into.excluded_by.get(name, 0) + count
