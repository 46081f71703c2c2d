# -*- test-case-name: tests.test_feed_builder -*-
"""
The reports of an Expanded feed, planned and rendered from an
L{ExpandedStore} (see L{tcbridge.feed.expanded} for the rules).

Most indicators hold values no other indicator holds and an id no other
indicator of their label has: each is one report, planned with numpy and
rendered from its columns with precomputed pieces.  The few others (the
I{entangled} ones) go through the one-by-one logic of L{_Entangled}.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np
import orjson
from numpy.typing import NDArray

from .columns import FIXED_WIDTH
from .expanded import (
    KIND_BITS,
    KIND_ORDER,
    TC_TYPES,
    Entry,
    ExpandedStore,
    Value,
    content_suffix,
)
from .history import ReportHistory
from .render import Body
from .reports import ReportContext
from .settings import BuildStats
from .stamp import next_timestamp
from .text import DEFAULT_WEB_URL, MAX_TAGS, http_link, source_prefixes

# A report of the entangled ones: (id, score, newest, members, values)
Special = tuple[str, int, int, list[tuple[str, str]], tuple[Value, ...]]


def offsets(store: ExpandedStore) -> NDArray[np.int64]:
    """
    Where each row's packed values start in the store's blob.
    """
    lengths = np.frombuffer(store.length, dtype=np.uint8).astype(np.int64)
    return np.cumsum(lengths) - lengths


def value_keys(
    store: ExpandedStore, starts: NDArray[np.int64]
) -> Iterator[tuple[NDArray[np.intp], NDArray[Any]]]:
    """
    For each IOC kind, the rows holding a value of it and a key per value
    (its packed bytes as words for fixed-width kinds, a hash for names).
    """
    kinds = np.frombuffer(store.kinds, dtype=np.uint8)
    blob = np.frombuffer(store.blob, dtype=np.uint8)
    lengths = np.frombuffer(store.length, dtype=np.uint8).astype(np.int64)
    md5_width = np.where(kinds & 1, 16, 0)
    sha_width = np.where(kinds & 2, 32, 0)
    for kind in KIND_ORDER:
        rows = np.flatnonzero(kinds & KIND_BITS[kind])
        if not len(rows):
            continue
        if kind == "dns":
            raw = store.blob
            spans = zip(starts[rows].tolist(), lengths[rows].tolist(), strict=True)
            keys = np.fromiter(
                (hash(bytes(raw[at : at + size])) for at, size in spans),
                dtype=np.int64,
                count=len(rows),
            )
            yield rows, keys.reshape(-1, 1)
            continue
        width = FIXED_WIDTH[kind]
        start = starts[rows]
        if kind == "sha256":
            start = start + md5_width[rows]
        elif kind in ("ipv4", "ipv6"):
            start = start + md5_width[rows] + sha_width[rows]
        chunk = blob[start[:, None] + np.arange(width)[None, :]].reshape(-1, width)
        yield rows, chunk.view(">u4" if width == 4 else ">u8")


def _repeated(keys: NDArray[Any]) -> NDArray[np.bool_]:
    """
    For rows of keys (one key per row, possibly several words), which rows
    hold a key another row holds too.
    """
    columns = [keys[:, i] for i in range(keys.shape[1])]
    order = np.lexsort(tuple(reversed(columns)))
    same = np.ones(len(order) - 1, dtype=bool) if len(order) > 1 else np.zeros(0, dtype=bool)
    for column in columns:
        ordered = column[order]
        same &= ordered[1:] == ordered[:-1]
    hit = np.zeros(len(order), dtype=bool)
    hit[1:] |= same
    hit[:-1] |= same
    out = np.zeros(len(order), dtype=bool)
    out[order] = hit
    return out


def entangled_rows(store: ExpandedStore) -> NDArray[np.bool_]:
    """
    The rows that share a value with another row, or their (label, id)
    with another row of the same label.
    """
    count = len(store)
    out = np.zeros(count, dtype=bool)
    for rows, keys in value_keys(store, offsets(store)):
        out[rows[_repeated(keys)]] = True
    numbered = np.ones(count, dtype=bool)
    numbered[list(store.texts)] = False
    rows = np.flatnonzero(numbered)
    labels = np.frombuffer(store.label, dtype=np.uint16)[rows].astype(np.uint64)
    numbers = np.frombuffer(store.number, dtype=np.uint64)[rows]
    out[rows[_repeated(np.stack((labels, numbers), axis=1))]] = True
    by_text: dict[tuple[int, str], list[int]] = {}
    for row, text in store.texts.items():
        by_text.setdefault((store.label[row], text), []).append(row)
    for members in by_text.values():
        if len(members) > 1:
            out[members] = True
    return out


class _Entangled:
    """
    The one-by-one logic for the entangled rows: identical IOC sets merge
    into one report, a value shared by different sets stays in the best
    one, repeats of an id are resolved (see L{tcbridge.feed.expanded}).
    """

    def __init__(self, stats: BuildStats) -> None:
        self.stats = stats
        self.entries: dict[tuple[str, str], Entry] = {}
        self.duplicates = 0

    def add_rows(self, by_key: dict[tuple[str, str], list[Entry]]) -> None:
        for (label, ident), found in by_key.items():
            best: dict[tuple[str, tuple[Value, ...]], Entry] = {}
            for entry in found:
                content = (entry[2], entry[5])
                previous = best.get(content)
                if previous is not None:
                    self.duplicates += 1
                    if previous >= entry:
                        continue
                best[content] = entry
            ordered = sorted(best)
            for number, content in enumerate(ordered):
                key = ident if number == 0 else f"{ident}-{content_suffix(*content)}"
                self.entries[(label, key)] = best[content]

    def plan(self, prefixes: dict[str, str]) -> list[Special]:
        """
        Merge identical IOC sets, then give each value shared by different
        sets to one report only.
        """
        entries = self.entries
        by_set: dict[tuple[Value, ...], list[tuple[str, str]]] = {}
        for key, entry in entries.items():
            by_set.setdefault(entry[5], []).append(key)
        candidates = []
        for values, found in by_set.items():
            members = sorted(found)
            if len(members) > 1:
                self.duplicates += len(members) - len({label for label, _ in members})
            score = max(entries[m][0] for m in members)
            newest = max(entries[m][1] for m in members)
            first = members[0]
            candidates.append(
                (-score, -newest, f"{prefixes[first[0]]}-{first[1]}", members, values)
            )
        candidates.sort(key=lambda item: (item[0], item[1], item[2]))
        claimed: set[Value] = set()
        plan: list[Special] = []
        for neg_score, neg_newest, rid, members, values in candidates:
            if any(pair in claimed for pair in values):
                values = tuple(pair for pair in values if pair not in claimed)
                if not values:
                    self.duplicates += len(members)
                    continue
            claimed.update(values)
            plan.append((rid, -neg_score, -neg_newest, members, values))
        return plan

    def report(self, context: ReportContext, made_of: Special) -> tuple[dict[str, Any], list[str]]:
        """
        The report of one planned entry (or several with the same IOCs), as
        a dict without id and timestamp, and its labels.
        """
        _, score, _, members, values = made_of
        first = self.entries[members[0]]
        labels = sorted({label for label, _ in members})
        tags: dict[str, None] = {}
        for member in members:
            for tag in self.entries[member][6]:
                tags.setdefault(tag, None)
        kind, link, description = first[2], first[3], first[4]
        iocs: dict[str, list[str]] = {}
        for ioc_kind, value in values:
            iocs.setdefault(ioc_kind, []).append(value)
        shown = values[0][1]
        if kind == "File":
            shown = shown[:8] + "..."
        report: dict[str, Any] = {
            "link": link or http_link(context.settings.web_url) or DEFAULT_WEB_URL,
            "title": f"ThreatConnect {context.title_name(labels)}: {kind} {shown} (score {score})",
            "score": score,
            "iocs": iocs,
        }
        if description:
            report["description"] = description
        if tags:
            report["tags"] = list(tags)[:MAX_TAGS]
        return report, labels


def _sort_keys(numbers: NDArray[np.uint64]) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """
    Keys that order numbers as their decimal texts sort: the number padded
    to 19 digits, then its length.
    """
    digits = np.ones(len(numbers), dtype=np.int64)
    bound = np.uint64(10)
    for _ in range(18):
        digits += numbers >= bound
        bound = bound * np.uint64(10)
    scale = (np.uint64(10) ** (np.uint64(19) - digits.astype(np.uint64))).astype(np.uint64)
    return numbers * scale, digits


class _LazyIds(Sequence[str]):
    """
    The report ids of rows in order, made only when looked at (by a binary
    search).
    """

    def __init__(self, reports: ExpandedReports, rows: list[int]) -> None:
        self._reports = reports
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, at: int) -> str: ...

    @overload
    def __getitem__(self, at: slice) -> Sequence[str]: ...

    def __getitem__(self, at: int | slice) -> str | Sequence[str]:
        if isinstance(at, slice):
            return [self._reports.rid(row) for row in self._rows[at]]
        return self._reports.rid(self._rows[at])


class ExpandedReports:
    """
    Plans and renders the reports of an Expanded feed.
    """

    def __init__(
        self,
        context: ReportContext,
        store: ExpandedStore,
        tag_sets: list[tuple[str, ...]],
        history: ReportHistory,
    ) -> None:
        self.context = context
        self.store = store
        self.tag_sets = tag_sets
        self.history = history
        self.labels = sorted(context.labels, key=lambda name: context.labels[name].index)
        self.entangled = _Entangled(context.stats)
        self._offsets = offsets(store)

    # -- planning ---------------------------------------------------------

    def plan(self) -> tuple[NDArray[np.intp], list[tuple[int, Special | int]]]:
        """
        The order of the reports: the rows that are reports by themselves
        and numbered, in id order, and the others (entangled reports and
        rows with text ids) with the position they go before.
        """
        store = self.store
        tangled = entangled_rows(store)
        by_key: dict[tuple[str, str], list[Entry]] = {}
        for row in np.flatnonzero(tangled).tolist():
            label = self.labels[store.label[row]]
            entry = store.entry(row, int(self._offsets[row]), self.tag_sets)
            by_key.setdefault((label, store.ident(row)), []).append(entry)
        self.entangled.add_rows(by_key)
        labels_used = {label for label, _ in self.entangled.entries}
        labels_used.update(
            self.labels[i] for i in set(np.frombuffer(store.label, np.uint16)[~tangled].tolist())
        )
        self.prefixes = source_prefixes(labels_used)
        special = self.entangled.plan(self.prefixes)
        if self.entangled.duplicates:
            skipped = self.context.stats.skipped
            skipped["duplicate"] = skipped.get("duplicate", 0) + self.entangled.duplicates
        plain = ~tangled
        plain[list(store.texts)] = False
        rows = np.flatnonzero(plain)
        order = self._numbered_order(rows)
        others: list[tuple[str, Special | int]] = [(item[0], item) for item in special]
        for row, text in store.texts.items():
            if not tangled[row]:
                others.append((f"{self.prefixes[self.labels[store.label[row]]]}-{text}", row))
        others.sort(key=lambda item: item[0])
        return order, self._merge(order, others)

    def _numbered_order(self, rows: NDArray[np.intp]) -> NDArray[np.intp]:
        store = self.store
        labels = np.frombuffer(store.label, dtype=np.uint16)[rows]
        used = {self.prefixes[self.labels[i]] for i in set(labels.tolist())}
        ranks = {prefix: rank for rank, prefix in enumerate(sorted(used))}
        label_rank = np.zeros(len(self.labels), dtype=np.int64)
        for index, name in enumerate(self.labels):
            prefix = self.prefixes.get(name)
            if prefix is not None and prefix in ranks:
                label_rank[index] = ranks[prefix]
        numbers = np.frombuffer(store.number, dtype=np.uint64)[rows]
        key, digits = _sort_keys(numbers)
        order = np.lexsort((digits, key, label_rank[labels]))
        return rows[order]

    def rid(self, row: int) -> str:
        """
        The report id of a row that is a report by itself.
        """
        return f"{self.prefixes[self.labels[self.store.label[row]]]}-{self.store.ident(row)}"

    def _merge(
        self, order: NDArray[np.intp], others: list[tuple[str, Special | int]]
    ) -> list[tuple[int, Special | int]]:
        """
        Where each of the others goes among the numbered rows (by id).
        """
        if not others:
            return []
        ids = _LazyIds(self, order.tolist())
        return [(bisect.bisect_left(ids, rid), item) for rid, item in others]

    # -- cutting and rendering -------------------------------------------

    def sequence(self) -> tuple[NDArray[np.int64], list[Special | int]]:
        """
        Every report in id order, after C{max_reports}: numbers >= 0 are
        rows that are reports by themselves, -1-k the k-th of the others.
        """
        order, placed = self.plan()
        others = [item for _, item in placed]
        positions = [at for at, _ in placed]
        sequence = np.insert(order.astype(np.int64), positions, -1 - np.arange(len(others)))
        limit = self.context.settings.max_reports
        if limit is not None and len(sequence) > max(limit, 0):
            scores, newest = self._scores_and_stamps(sequence, others)
            rank = np.arange(len(sequence))
            best = np.lexsort((rank, -newest, -scores))[: max(limit, 0)]
            self.context.stats.truncated_reports = len(sequence) - max(limit, 0)
            sequence = sequence[np.sort(best)]
        self.context.warn(len(sequence))
        return sequence, others

    def _scores_and_stamps(
        self, sequence: NDArray[np.int64], others: list[Special | int]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        store = self.store
        rows = np.where(sequence >= 0, sequence, 0)
        scores = np.frombuffer(store.score, dtype=np.uint8)[rows].astype(np.int64)
        newest = np.frombuffer(store.stamp, dtype=np.int64)[rows].copy()
        for at in np.flatnonzero(sequence < 0).tolist():
            item = others[-1 - int(sequence[at])]
            if isinstance(item, int):
                scores[at], newest[at] = store.score[item], store.stamp[item]
            else:
                scores[at], newest[at] = item[1], item[2]
        return scores, newest

    def reports(self) -> Iterator[tuple[str, bytes, Body, int, tuple[int, bytes] | None]]:
        """
        Each report in id order as (id, id as JSON, body, newest
        timestamp, what the history recorded for it).
        """
        sequence, others = self.sequence()
        renderer = _RowRenderer(self)
        previous = self._previous(sequence)
        for at, item in enumerate(sequence.tolist()):
            if item >= 0:
                yield renderer.render(item, previous(at))
                continue
            other = others[-1 - item]
            if isinstance(other, int):
                yield renderer.render(other, None, lookup=True)
                continue
            report, labels = self.entangled.report(self.context, other)
            self.context.count(labels, {k: len(v) for k, v in report["iocs"].items()})
            body = [b"," + orjson.dumps(report)[1:]]
            rid = other[0]
            yield rid, orjson.dumps(rid), body, other[2], self.history.get(rid)
        renderer.count()

    def _previous(self, sequence: NDArray[np.int64]) -> Any:
        """
        A function giving, for a position of the sequence that is a
        numbered row, what the history recorded for it.
        """
        store = self.store
        rows = np.where(sequence >= 0, sequence, 0)
        labels = np.frombuffer(store.label, dtype=np.uint16)[rows]
        numbers = np.frombuffer(store.number, dtype=np.uint64)[rows]
        known = np.zeros(len(sequence), dtype=bool)
        stamps = np.zeros(len(sequence), dtype=np.int64)
        digests = np.zeros(len(sequence), dtype=np.uint64)
        if len(self.history):
            for index, name in enumerate(self.labels):
                prefix = self.prefixes.get(name)
                chosen = np.flatnonzero((labels == index) & (sequence >= 0))
                if prefix is None or not len(chosen):
                    continue
                found, stamp, digest = self.history.lookup(prefix, numbers[chosen])
                known[chosen], stamps[chosen], digests[chosen] = found, stamp, digest
        known_list, stamp_list, digest_list = known.tolist(), stamps.tolist(), digests.tolist()

        def previous(at: int) -> tuple[int, bytes] | None:
            if not known_list[at]:
                return None
            return stamp_list[at], digest_list[at].to_bytes(8, "big")

        return previous


class _RowRenderer:
    """
    Renders the report of one row from its columns, with the pieces that
    many reports share (prefixes, titles, links, descriptions, tags) made
    once.
    """

    def __init__(self, reports: ExpandedReports) -> None:
        self.reports = reports
        store = self.store = reports.store
        context = reports.context
        self.offsets = reports._offsets.tolist()
        self.prefixes = [reports.prefixes.get(name, "").encode() for name in reports.labels]
        self.titles = [
            orjson.dumps(f"ThreatConnect {context.title_name([name])}: ")[:-1]
            for name in reports.labels
        ]
        default = http_link(context.settings.web_url) or DEFAULT_WEB_URL
        self.default_link = orjson.dumps(default)
        self.links: dict[int, tuple[bytes, str, bytes]] = {}
        self.descriptions: dict[int, bytes] = {0: b""}
        self.tags: dict[int, bytes] = {0: b""}
        self.rendered: list[int] = []
        self.blob = bytes(store.blob)

    def _link(self, code: int, values: dict[str, str], ident: str) -> bytes:
        if code == 0:
            return self.default_link
        parts = self.links.get(code)
        if parts is None:
            before, middle, after = self.store.templates.parts[code]
            if not middle:
                parts = (orjson.dumps(before), "", b"")
            else:
                parts = (orjson.dumps(before)[:-1], middle, orjson.dumps(after)[1:])
            self.links[code] = parts
        before_json, middle, after_json = parts
        if not middle:
            return before_json
        if middle == "#":
            text = ident
        elif middle.endswith("^"):
            text = values[middle[:-1]].upper()
        else:
            text = values[middle]
        return before_json + text.encode() + after_json

    def _description(self, code: int) -> bytes:
        found = self.descriptions.get(code)
        if found is None:
            text = self.store.descriptions[code]
            found = self.descriptions[code] = (
                b',"description":' + orjson.dumps(text) if text else b""
            )
        return found

    def _tags(self, code: int) -> bytes:
        found = self.tags.get(code)
        if found is None:
            tags = self.reports.tag_sets[code][:MAX_TAGS]
            found = self.tags[code] = b',"tags":' + orjson.dumps(list(tags)) if tags else b""
        return found

    def render(
        self, row: int, previous: tuple[int, bytes] | None, lookup: bool = False
    ) -> tuple[str, bytes, Body, int, tuple[int, bytes] | None]:
        store = self.store
        label = store.label[row]
        ident = store.ident(row)
        rid_bytes = self.prefixes[label] + b"-" + ident.encode()
        rid = rid_bytes.decode()
        if lookup:
            previous = self.reports.history.get(rid)
        values = store.values(row, self.offsets[row])
        texts = dict(values)
        score = store.score[row]
        kind = TC_TYPES[store.type[row]]
        shown = values[0][1]
        if kind == "File":
            shown = shown[:8] + "..."
        iocs = b",".join(f'"{k}":["{v}"]'.encode() for k, v in values)
        body = b"".join(
            (
                b',"link":',
                self._link(store.link[row], texts, ident),
                b',"title":',
                self.titles[label],
                f'{kind} {shown} (score {score})","score":{score},"iocs":{{'.encode(),
                iocs,
                b"}",
                self._description(store.description[row]),
                self._tags(store.tags[row]),
                b"}",
            )
        )
        self.rendered.append(row)
        return rid, b'"' + rid_bytes + b'"', [body], store.stamp[row], previous

    def count(self) -> None:
        """
        Count the IOCs of every report rendered from a row.
        """
        store = self.store
        rows = np.array(self.rendered, dtype=np.int64)
        kinds = np.frombuffer(store.kinds, dtype=np.uint8)[rows]
        labels = np.frombuffer(store.label, dtype=np.uint16)[rows]
        per_row = np.zeros(len(rows), dtype=np.int64)
        stats = self.reports.context.stats
        for kind in KIND_ORDER:
            has = (kinds & KIND_BITS[kind]) != 0
            stats.iocs_by_kind[kind] = stats.iocs_by_kind.get(kind, 0) + int(has.sum())
            per_row += has
        totals = np.bincount(labels, weights=per_row, minlength=len(self.reports.labels))
        for index, name in enumerate(self.reports.labels):
            self.reports.context.labels[name].counts.iocs += int(totals[index])


__all__ = ["ExpandedReports", "next_timestamp"]
