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

from array import array

from .collect import Collector
from .columns import PackedColumn
from .expanded import ExpandedStore
from .settings import BuildStats


def merge_collectors(into: Collector, other: Collector) -> None:
    """
    Add everything C{other} took in to C{into} (both made with the same
    settings); C{other} is not used afterwards.
    """
    _merge_stats(into.stats, other.stats)
    tag_codes = array("I", (_tag_id(into, tags) for tags in other.tag_sets))
    label_codes = array("H")
    for name, theirs in sorted(other.labels.items(), key=lambda item: item[1].index):
        mine = into.label(name)
        label_codes.append(mine.index)
        mine.counts.indicators += theirs.counts.indicators
        mine.origins |= theirs.origins
        for kind, column in theirs.columns.items():
            _merge_column(mine.column(kind), column, tag_codes)
    if into.expanded is not None and other.expanded is not None:
        merge_expanded(into.expanded, other.expanded, label_codes, tag_codes)


def _merge_stats(into: BuildStats, other: BuildStats) -> None:
    into.indicators += other.indicators
    for reason, count in other.skipped.items():
        into.skipped[reason] = into.skipped.get(reason, 0) + count
    for name, count in other.excluded_by.items():
        into.excluded_by[name] = into.excluded_by.get(name, 0) + count


def _tag_id(into: Collector, cleaned: tuple[str, ...]) -> int:
    """
    The id in C{into} of a cleaned tag set (added if new).
    """
    found = into._tag_ids.get(cleaned)
    if found is None:
        found = into._tag_ids[cleaned] = len(into.tag_sets)
        into.tag_sets.append(cleaned)
    return found


def _translated(codes: array[int], table: array[int], typecode: str) -> array[int]:
    return array(typecode, map(table.__getitem__, codes))


def _merge_column(into: PackedColumn, other: PackedColumn, tag_codes: array[int]) -> None:
    before = len(into)
    into.data += other.data
    into.meta.extend(other.meta)
    if other.tags is None:
        if into.tags is not None:
            into.tags.frombytes(bytes(into.tags.itemsize * len(other)))
        return
    theirs = _translated(other.tags, tag_codes, "I")
    if into.tags is None:
        into.tags = array("H", bytes(2 * before))
    if into.tags.typecode == "H" and len(theirs) and max(theirs) > 0xFFFF:
        into.tags = array("I", into.tags)
    into.tags.extend(theirs if into.tags.typecode == "I" else array("H", theirs))


def merge_expanded(
    into: ExpandedStore,
    other: ExpandedStore,
    label_codes: array[int],
    tag_codes: array[int],
) -> None:
    """
    Append C{other}'s rows to C{into}: labels, tag sets, link templates
    and descriptions translated, value rows moved past C{into}'s.
    """
    base = len(into)
    links = array("I", (into.templates.code(parts) for parts in other.templates.parts))
    descriptions = array("I", bytes(4 * len(other.descriptions)))
    for raw, code in other._description_index.items():
        descriptions[code] = into._describe(raw)
    into.label.extend(_translated(other.label, label_codes, "H"))
    into.number.extend(other.number)
    into.texts.update({base + row: text for row, text in other.texts.items()})
    into.type.extend(other.type)
    into.kinds.extend(other.kinds)
    into.score.extend(other.score)
    into.stamp.extend(other.stamp)
    into.link.extend(_translated(other.link, links, "I"))
    into.description.extend(_translated(other.description, descriptions, "I"))
    into.tags.extend(_translated(other.tags, tag_codes, "I"))
    for kind, column in other.values.items():
        mine = into.values[kind]
        mine.rows.extend(array("I", (row + base for row in column.rows)))
        mine.data += column.data
