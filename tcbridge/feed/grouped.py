# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
The reports of a Condensed feed (one per labels, IOC kind and score) or a
MaxCondensed feed (one per labels and score, every kind together), made
from the groups of L{tcbridge.feed.grouping}.

Ids: C{<prefix>-<kind>-<score>} (Condensed) and C{<prefix>-all-<score>}
(MaxCondensed), where the prefix names the group's labels
(L{tcbridge.feed.text.source_prefixes}).  Titles:
C{"ThreatConnect Common Community: File md5 IOCs, score 80"} and
C{"ThreatConnect Common Community: all IOCs, score 80"}.  Tags: those of
the indicators behind the report's IOCs, most frequent first, then
alphabetically, at most 20.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from .columns import FIXED_WIDTH, LabelStore, PackedColumn
from .forked import ordered_map
from .grouping import KindGroup, condense
from .iocs import IOC_KINDS
from .lists import hex_list, ipv4_list, ipv6_list, names_list
from .render import Body
from .reports import TC_TYPE, ReportContext, cut
from .text import MAX_TAGS, source_prefixes

_KIND_ORDER: dict[str, int] = {kind: n for n, kind in enumerate(IOC_KINDS)}
Members = list[tuple[str, KindGroup]]
Planned = tuple[str, int, int, tuple[tuple[str, ...], Members]]


_CHUNK = 32768

#: Condense on two processes only from this many values (a fork costs some
#: milliseconds; a million values take about a third of a second).
FORK_AT = 100_000


def iocs_json(kind: str, group: KindGroup) -> list[bytes]:
    """
    The inside of a group's JSON list of values, in pieces of at most
    32768 values, releasing the packed data.
    """
    packed = group.take_packed()
    if kind == "dns":
        sorted_names = sorted(packed.split(b"\n")[:-1])
        del packed
        return [
            names_list(sorted_names[at : at + _CHUNK])
            + (b"," if at + _CHUNK < len(sorted_names) else b"")
            for at in range(0, len(sorted_names), _CHUNK)
        ]
    width = FIXED_WIDTH[kind]
    step = _CHUNK * width
    pieces = []
    for at in range(0, len(packed), step):
        chunk = packed[at : at + step]
        if kind == "ipv4":
            text = ipv4_list(chunk)
        elif kind == "ipv6":
            text = ipv6_list(chunk)
        else:
            text = hex_list(chunk, width)
        pieces.append(text + (b"," if at + step < len(packed) else b""))
    return pieces


def _condensed(
    work: tuple[str, list[tuple[int, PackedColumn]]],
) -> tuple[list[KindGroup], int]:
    """
    L{condense} of one kind's columns (a pure function of them, for
    L{ordered_map}).
    """
    kind, columns = work
    return condense(kind, columns)


def _groups(
    labels: list[str], stores: dict[str, LabelStore], fork: bool
) -> tuple[dict[tuple[str, str, int], KindGroup], int]:
    """
    Condense every kind over every label (in label order), releasing the
    columns kind by kind; with C{fork}, a forked copy of this process
    condenses some kinds (the biggest first) while this one does the
    others (see L{tcbridge.feed.forked}).
    """
    work: list[tuple[str, list[tuple[int, PackedColumn]]]] = []
    for kind in IOC_KINDS:
        columns = []
        for index, label in enumerate(labels):
            column = stores[label].columns.pop(kind, None)
            if column is not None and len(column):
                columns.append((index, column))
        if columns:
            work.append((kind, columns))
    # Host names cost about three times what other values do.
    cost = {kind: sum(map(len, (c for _, c in columns))) for kind, columns in work}
    cost["dns"] = 3 * cost.get("dns", 0)
    work.sort(key=lambda item: -cost[item[0]])
    fork = fork and sum(cost.values()) >= FORK_AT
    found_by_kind = dict(
        zip((kind for kind, _ in work), ordered_map(_condensed, work, fork=fork), strict=True)
    )
    del work
    groups: dict[tuple[str, str, int], KindGroup] = {}
    duplicates = 0
    for kind in IOC_KINDS:
        found, repeats = found_by_kind.pop(kind, ([], 0))
        duplicates += repeats
        for group in found:
            name = " + ".join(labels[i] for i in group.labels)
            groups[(name, kind, group.score)] = group
    return groups, duplicates


def plan_grouped(context: ReportContext, *, fork: bool = False) -> list[Planned]:
    """
    Every report of the feed as (id, score, timestamp, (labels, members)),
    after C{max_reports}, in id order; with C{fork}, on two processes
    (only where this process may fork, see L{tcbridge.feed.forked}).
    """
    labels = sorted(context.labels)
    groups, duplicates = _groups(labels, context.labels, fork)
    if duplicates:
        skipped = context.stats.skipped
        skipped["duplicate"] = skipped.get("duplicate", 0) + duplicates
    prefixes = source_prefixes({key[0] for key in groups})
    plan: list[Planned] = []
    if context.settings.grouping == "Condensed":
        for (name, kind, score), group in groups.items():
            names = tuple(labels[i] for i in group.labels)
            rid = f"{prefixes[name]}-{kind}-{score}"
            plan.append((rid, score, group.timestamp, (names, [(kind, group)])))
    else:
        merged: dict[tuple[str, int], Members] = {}
        for (name, kind, score), group in groups.items():
            merged.setdefault((name, score), []).append((kind, group))
        for (name, score), members in merged.items():
            members.sort(key=lambda item: _KIND_ORDER[item[0]])
            names = tuple(labels[i] for i in members[0][1].labels)
            newest = max(group.timestamp for _, group in members)
            plan.append((f"{prefixes[name]}-all-{score}", score, newest, (names, members)))
    plan = cut(plan, context.settings.max_reports, context.stats)
    context.warn(len(plan))
    return plan


def render_grouped(
    context: ReportContext, tag_sets: list[tuple[str, ...]], plan: list[Planned]
) -> Iterator[tuple[str, bytes, Body, int]]:
    """
    Each planned report as (id, id as JSON, body, newest timestamp),
    releasing its values as it goes.
    """
    condensed = context.settings.grouping == "Condensed"
    plan.reverse()
    while plan:
        rid, score, newest, (labels, members) = plan.pop()
        tag_counts: dict[str, int] = {}
        pieces: Body = []
        by_kind: dict[str, int] = {}  # the kinds of this report
        for number, (kind, group) in enumerate(members):
            opening = b'"' + kind.encode() + b'":['
            pieces += [opening if number == 0 else b"," + opening, *iocs_json(kind, group), b"]"]
            by_kind[kind] = group.count
            for tag_id, count in group.tags.items():
                for tag in tag_sets[tag_id]:
                    tag_counts[tag] = tag_counts.get(tag, 0) + count
        single = members[0][0] if condensed else None
        what = "all" if single is None else f"{TC_TYPE[single]} {single}"
        head = {
            "link": context.group_link(labels, single),
            "title": f"ThreatConnect {context.title_name(labels)}: {what} IOCs, score {score}",
            "score": score,
        }
        body: Body = [b"," + orjson.dumps(head)[1:-1] + b',"iocs":{', *pieces]
        if tag_counts:
            ranked = sorted(tag_counts.items(), key=lambda item: (-item[1], item[0]))
            tags = [tag for tag, _ in ranked[:MAX_TAGS]]
            body.append(b'},"tags":' + orjson.dumps(tags) + b"}")
        else:
            body.append(b"}}")
        context.count(labels, by_kind)
        yield rid, orjson.dumps(rid), body, newest
