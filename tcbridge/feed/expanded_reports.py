# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
The reports of an Expanded feed, planned and rendered from an
L{ExpandedStore} (see L{tcbridge.feed.expanded} for the rules).

Most indicators hold values no other indicator holds and an id no other
indicator of their label has: each is one report, ordered with numpy and
rendered thousands at a time (L{tcbridge.feed.expanded_render}).  The few
others (the I{entangled} ones, and ids that are not plain numbers) go
through the one-by-one logic of L{_Entangled}.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, overload

import numpy as np
import orjson
from attrs import frozen
from numpy.typing import NDArray

from .columns import FIXED_WIDTH
from .expanded import KIND_ORDER, Entry, ExpandedStore, Value, content_suffix
from .expanded_render import ChunkRenderer, Rendered, insert_stamps, view
from .forked import ordered_map
from .history import HistoryRecorder, ReportHistory
from .render import Body, Chunk
from .reports import ReportContext
from .settings import BuildStats
from .stamp import Stamper
from .text import MAX_TAGS, source_prefixes

#: rows rendered at a time
CHUNK = 2048
#: by number of digits: what pads a number to 19 digits
_PADDING = np.array([0] + [10 ** (19 - d) for d in range(1, 20)], dtype=np.uint64)
#: the same to 17 digits (room left for the number of digits in one word)
_PADDING_17 = np.array([0] + [10 ** max(17 - d, 0) for d in range(1, 20)], dtype=np.uint64)

# A report of the entangled ones: (id, score, newest, members, values)
Special = tuple[str, int, int, list[tuple[str, str]], tuple[Value, ...]]
Report = tuple[str, bytes, Body, int]


@frozen
class _Done:
    """
    A window's rows rendered: the reports, and their timestamps and digests
    when a history is kept (C{None} otherwise).
    """

    rendered: Rendered
    stamps: NDArray[np.int64] | None
    digests: NDArray[np.uint64] | None


#: keys looked up at a time when finding repeats
_BLOCK = 1 << 16
#: an odd 64-bit number: mixes two words into one key
_MIX = np.uint64(0x9E3779B97F4A7C15)


def value_keys(store: ExpandedStore) -> Iterator[tuple[NDArray[np.uint32], NDArray[np.uint64]]]:
    """
    For each IOC kind, the rows holding a value of it and a 64-bit key per
    value: equal values have equal keys; unequal values rarely do, and then
    only cost their rows the one-by-one logic, which compares the values
    themselves.
    """
    for kind in KIND_ORDER:
        column = store.values[kind]
        rows = np.frombuffer(column.rows, dtype=np.uint32)
        if not len(rows):
            continue
        if kind == "dns":
            yield rows, _name_keys(column.data, len(rows)).view(np.uint64)
        elif kind == "ipv4":
            yield rows, np.frombuffer(column.data, dtype=np.uint32).astype(np.uint64)
        elif kind == "ipv6":
            words = np.frombuffer(column.data, dtype=np.uint64).reshape(-1, 2)
            keys = words[:, 1] * _MIX
            keys ^= words[:, 0]
            yield rows, keys
        else:
            # A hash's first 8 bytes are as good a key as the whole.
            yield rows, np.frombuffer(column.data, dtype=np.uint64)[:: FIXED_WIDTH[kind] // 8]


def _name_keys(data: bytearray, count: int, block: int = 1 << 20) -> NDArray[np.int64]:
    """
    A hash of each newline-terminated name in C{data}, a block of bytes at
    a time (so that only one block's names exist as objects at once).
    """
    keys = np.empty(count, dtype=np.int64)
    done = 0
    start = 0
    view = memoryview(data)
    while start < len(data):
        end = data.rfind(b"\n", start, start + block) + 1 or data.index(b"\n", start) + 1
        names = bytes(view[start : end - 1]).split(b"\n")
        keys[done : done + len(names)] = np.fromiter(map(hash, names), np.int64, len(names))
        done += len(names)
        start = end
    view.release()
    return keys


def _repeated(keys: NDArray[Any]) -> NDArray[np.bool_]:
    """
    Which keys occur more than once: the repeated ones are found in a
    sorted copy, then each block of keys is looked up among them (so one
    whole-length copy exists at a time).
    """
    ordered = np.sort(keys)
    same = ordered[1:] == ordered[:-1]
    repeats = np.unique(ordered[1:][same])
    del ordered, same
    out = np.zeros(len(keys), dtype=bool)
    if not len(repeats):
        return out
    last = len(repeats) - 1
    for at in range(0, len(keys), _BLOCK):
        block = keys[at : at + _BLOCK]
        found = np.minimum(np.searchsorted(repeats, block), last)
        out[at : at + _BLOCK] = repeats[found] == block
    return out


def _repeated_numbers(store: ExpandedStore) -> NDArray[np.bool_]:
    """
    The rows whose (label, numeric id) another row has too: the ids of one
    label at a time, in their own 4 or 8 bytes.
    """
    numbers = view(store.number)
    labels = view(store.label)
    present = np.unique(labels).tolist()
    if len(present) == 1:
        out = _repeated(numbers)
    else:
        out = np.zeros(len(numbers), dtype=bool)
        for index in present:
            chosen = labels == index
            out[chosen] = _repeated(numbers[chosen])
            del chosen
    out[list(store.texts)] = False
    return out


def entangled_rows(store: ExpandedStore) -> NDArray[np.bool_]:
    """
    The rows that share a value with another row, or their (label, id)
    with another row of the same label.
    """
    count = len(store)
    out = np.zeros(count, dtype=bool)
    for rows, keys in value_keys(store):
        out[rows[_repeated(keys)]] = True
        del keys
    out |= _repeated_numbers(store)
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
            "link": link or context.default_link(labels[0]),
            "title": f"ThreatConnect {context.title_name(labels)}: {kind} {shown} (score {score})",
            "score": score,
            "iocs": iocs,
        }
        if description:
            report["description"] = description
        if tags:
            report["tags"] = list(tags)[:MAX_TAGS]
        return report, labels


#: numbers below this, padded to 10 digits and with their length, fit 37
#: bits: with a row's place in its label (L{_PLACE_BITS}), one 64-bit word
_SHORT = 10**10
_PLACE_BITS = 26
_PADDING_10 = np.array([0] + [10 ** max(10 - d, 0) for d in range(1, 20)], dtype=np.uint64)


def _in_text_order(rows: NDArray[Any], numbers: NDArray[Any]) -> NDArray[Any]:
    """
    C{rows}, whose distinct C{numbers} these are, in the order of the
    numbers as decimal texts sort.  Usually (numbers below L{_SHORT}) by
    sorting one word per row in place (the text's key above the row's
    place): 16 bytes a row at most, against 40 for L{_text_order}.
    """
    count = len(rows)
    if count >= 1 << _PLACE_BITS or (count and int(numbers.max()) >= _SHORT):
        return rows[_text_order(numbers)]
    key = numbers.astype(np.uint64)
    digits = _digit_counts(key)
    key *= _PADDING_10[digits]
    key *= np.uint64(11)
    key += digits
    del digits
    key <<= np.uint64(_PLACE_BITS)
    for at in range(0, count, _BLOCK):
        key[at : at + _BLOCK] |= np.arange(at, min(at + _BLOCK, count), dtype=np.uint64)
    key.sort()
    key &= np.uint64((1 << _PLACE_BITS) - 1)
    return rows[key]


def _digit_counts(numbers: NDArray[np.uint64]) -> NDArray[np.uint8]:
    """
    How many decimal digits each number (at most 19 digits) has.
    """
    digits = np.ones(len(numbers), dtype=np.uint8)
    bound = np.uint64(10)
    for _ in range(18):
        digits += numbers >= bound
        bound = bound * np.uint64(10)
    return digits


def _text_order(numbers: NDArray[Any]) -> NDArray[np.intp]:
    """
    The order of distinct numbers as their decimal texts sort: by the
    number padded with zeros to 19 digits, then by its length (one key of
    both when the numbers have at most 17 digits).
    """
    numbers = numbers.astype(np.uint64)
    digits = _digit_counts(numbers)
    if not len(numbers) or int(numbers.max()) < 10**17:
        numbers *= _PADDING_17[digits]  # (a copy: made into the key in place)
        numbers *= np.uint64(20)
        numbers += digits
        del digits
        return np.argsort(numbers)
    key = _PADDING[digits]
    key *= numbers
    return np.lexsort((digits, key))


class _LazyIds(Sequence[str]):
    """
    The report ids of rows in order, made only when looked at (by a binary
    search).
    """

    def __init__(self, reports: ExpandedReports, rows: NDArray[np.signedinteger[Any]]) -> None:
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
            return [self._reports.rid(row) for row in self._rows[at].tolist()]
        return self._reports.rid(int(self._rows[at]))


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
        self.prefixes: dict[str, str] = {}

    # -- planning ---------------------------------------------------------

    def plan(self) -> tuple[NDArray[np.signedinteger[Any]], list[tuple[int, Special | int]]]:
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
            by_key.setdefault((label, store.ident(row)), []).append(store.entry(row, self.tag_sets))
        self.entangled.add_rows(by_key)
        labels_used = {label for label, _ in self.entangled.entries}
        plain_labels = np.unique(view(store.label)[~tangled]).tolist()
        labels_used.update(self.labels[i] for i in plain_labels)
        self.prefixes = source_prefixes(labels_used)
        special = self.entangled.plan(self.prefixes)
        if self.entangled.duplicates:
            skipped = self.context.stats.skipped
            skipped["duplicate"] = skipped.get("duplicate", 0) + self.entangled.duplicates
        plain = ~tangled
        plain[list(store.texts)] = False
        order = self._numbered_order(plain)
        others: list[tuple[str, Special | int]] = [(item[0], item) for item in special]
        for row, text in store.texts.items():
            if not tangled[row]:
                others.append((f"{self.prefixes[self.labels[store.label[row]]]}-{text}", row))
        others.sort(key=lambda item: item[0])
        return order, self._merge(order, others)

    def _numbered_order(self, plain: NDArray[np.bool_]) -> NDArray[np.signedinteger[Any]]:
        """
        The C{plain} rows (numeric ids, each a report by itself) in report
        id order: by id prefix, then by id as text.  Sorted one label at a
        time, with 32-bit row numbers where they fit, to keep the arrays
        small.
        """
        store = self.store
        kind = np.int32 if len(store) < 2**31 else np.int64
        labels = view(store.label)
        numbers = view(store.number)
        present = np.unique(labels[plain]).tolist()
        parts = []
        for index in sorted(present, key=lambda i: self.prefixes[self.labels[i]]):
            chosen = np.flatnonzero(plain & (labels == index) if len(present) > 1 else plain)
            chosen = chosen.astype(kind)
            parts.append(_in_text_order(chosen, numbers[chosen]))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=kind)

    def rid(self, row: int) -> str:
        """
        The report id of a row that is a report by itself.
        """
        return f"{self.prefixes[self.labels[self.store.label[row]]]}-{self.store.ident(row)}"

    def _merge(
        self, order: NDArray[np.signedinteger[Any]], others: list[tuple[str, Special | int]]
    ) -> list[tuple[int, Special | int]]:
        """
        Where each of the others goes among the numbered rows (by id).
        """
        if not others:
            return []
        ids = _LazyIds(self, order)
        return [(bisect.bisect_left(ids, rid), item) for rid, item in others]

    def sequence(self) -> tuple[NDArray[np.signedinteger[Any]], list[Special | int]]:
        """
        Every report in id order, after C{max_reports}: numbers >= 0 are
        rows that are reports by themselves, -1-k the k-th of the others.
        """
        order, placed = self.plan()
        others = [item for _, item in placed]
        positions = [at for at, _ in placed]
        marks = (-1 - np.arange(len(others))).astype(order.dtype)
        sequence = np.insert(order, positions, marks)
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
        self, sequence: NDArray[np.signedinteger[Any]], others: list[Special | int]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        store = self.store
        rows = np.where(sequence >= 0, sequence, 0)
        scores = np.frombuffer(store.score, dtype=np.uint8)[rows].astype(np.int64)
        newest = view(store.stamp)[rows].astype(np.int64)
        for at in np.flatnonzero(sequence < 0).tolist():
            item = others[-1 - int(sequence[at])]
            if isinstance(item, int):
                scores[at], newest[at] = store.score[item], store.stamp[item]
            else:
                scores[at], newest[at] = item[1], item[2]
        return scores, newest

    # -- rendering --------------------------------------------------------

    def reports(self, stamper: Stamper, *, fork: bool = False) -> Iterator[Report | Chunk]:
        """
        Every report in id order, stamped: runs of rows that are a report
        each as L{Chunk}s (rendered a window of L{CHUNK} at a time, every
        other window by a forked copy of this process with C{fork}), the
        others one by one.
        """
        sequence, others = self.sequence()
        renderer = ChunkRenderer(
            self.store,
            [self.prefixes.get(name, "source") for name in self.labels],
            [self.context.title_name([name]) for name in self.labels],
            self.tag_sets,
            [self.context.default_link(name) for name in self.labels],
        )
        by_kind = np.zeros(len(KIND_ORDER), dtype=np.int64)
        by_label = np.zeros(len(self.labels), dtype=np.int64)
        windows = [sequence[at : at + CHUNK] for at in range(0, len(sequence), CHUNK)]
        render = partial(self._rendered, renderer, stamper.needs_digests)
        for part, done in zip(windows, ordered_map(render, windows, fork=fork), strict=True):
            window = part.astype(np.int64)
            rows = window[window >= 0]
            self._count(rows, by_kind, by_label)
            if done is not None and stamper.recorder is not None:
                self._record(rows, done, stamper.recorder)
            yield from self._window(window, rows, done, others, stamper)
        stats = self.context.stats
        for number, kind in enumerate(KIND_ORDER):
            stats.iocs_by_kind[kind] = stats.iocs_by_kind.get(kind, 0) + int(by_kind[number])
        for index, name in enumerate(self.labels):
            self.context.labels[name].counts.iocs += int(by_label[index])

    def _window(
        self,
        window: NDArray[np.int64],
        rows: NDArray[np.int64],
        done: _Done | None,
        others: list[Special | int],
        stamper: Stamper,
    ) -> Iterator[Report | Chunk]:
        """
        The reports of one window of the sequence: its rows, rendered
        together (C{done}), cut where the others go.
        """
        fast_before = np.cumsum(window >= 0)
        taken = 0
        for single in [*np.flatnonzero(window < 0).tolist(), len(window)]:
            upto = int(fast_before[single - 1]) if single else 0
            if upto > taken and done is not None:
                rendered = done.rendered
                data = rendered.data[int(rendered.starts[taken]) : int(rendered.ends[upto - 1])]
                first, last = self.rid(int(rows[taken])), self.rid(int(rows[upto - 1]))
                yield Chunk(data, upto - taken, first, last)
                taken = upto
            if single < len(window):
                yield self._single(others[-1 - int(window[single])], stamper)

    def _rendered(
        self, renderer: ChunkRenderer, digests_needed: bool, window: NDArray[Any]
    ) -> _Done | None:
        """
        The rows of a window that are a report each, rendered and stamped
        (C{None} if it has none).  Pure: reads the store and the old
        history, changes nothing, so a forked copy may run it.
        """
        rows = window[window >= 0].astype(np.int64)
        if not len(rows):
            return None
        newest = view(self.store.stamp)[rows].astype(np.int64)
        if not digests_needed:
            return _Done(renderer.render(rows, newest), None, None)
        bare = renderer.render(rows, None)
        data = bare.data
        digests = np.array(
            [
                int.from_bytes(hashlib.blake2b(data[a:b], digest_size=8).digest(), "big")
                for a, b in zip(bare.starts.tolist(), bare.ends.tolist(), strict=True)
            ],
            dtype=np.uint64,
        )
        stamps = self._stamps(rows, newest, digests)
        return _Done(insert_stamps(bare, stamps), stamps, digests)

    def _stamps(
        self, rows: NDArray[np.int64], newest: NDArray[np.int64], digests: NDArray[np.uint64]
    ) -> NDArray[np.int64]:
        """
        The timestamps of rows (see L{tcbridge.feed.stamp}).
        """
        store = self.store
        labels = view(store.label)[rows]
        numbers = view(store.number)[rows].astype(np.uint64)
        stamps = newest.astype(np.int64).copy()
        for index in np.unique(labels).tolist():
            chosen = labels == index
            head = self.prefixes[self.labels[index]]
            known, before, previous = self.history.lookup(head, numbers[chosen])
            mine = newest[chosen]
            same = known & (previous == digests[chosen])
            later = np.where(mine > before, mine, before + 1)
            stamps[chosen] = np.where(same, before, np.where(known, later, mine))
        return stamps

    def _record(self, rows: NDArray[np.int64], done: _Done, recorder: HistoryRecorder) -> None:
        """
        Record the timestamps and digests of rendered rows in the new
        history.
        """
        assert done.stamps is not None and done.digests is not None
        labels = view(self.store.label)[rows]
        numbers = view(self.store.number)[rows]
        for index in np.unique(labels).tolist():
            chosen = labels == index
            recorder.add_head(
                self.prefixes[self.labels[index]],
                numbers[chosen].tolist(),
                done.stamps[chosen].tolist(),
                done.digests[chosen].tolist(),
            )

    def _single(self, item: Special | int, stamper: Stamper) -> Report:
        """
        One report of the others, stamped.
        """
        if isinstance(item, int):
            label = self.labels[self.store.label[item]]
            ident = self.store.ident(item)
            entry = self.store.entry(item, self.tag_sets)
            self.entangled.entries[(label, ident)] = entry
            item = (self.rid(item), entry[0], entry[1], [(label, ident)], entry[5])
        report, labels = self.entangled.report(self.context, item)
        self.context.count(labels, {k: len(v) for k, v in report["iocs"].items()})
        body = [b"," + orjson.dumps(report)[1:]]
        rid = item[0]
        id_json = orjson.dumps(rid)
        return rid, id_json, body, stamper.stamp(rid, id_json, body, item[2])

    def _count(
        self, rows: NDArray[np.int64], by_kind: NDArray[np.int64], by_label: NDArray[np.int64]
    ) -> None:
        """
        Add the IOCs of C{rows} (reports by themselves) to the counts per
        kind and per label.
        """
        store = self.store
        kinds = np.frombuffer(store.kinds, dtype=np.uint8)[rows]
        labels = view(store.label)[rows]
        per_row = np.zeros(len(rows), dtype=np.int64)
        for number in range(len(KIND_ORDER)):
            has = (kinds >> number) & 1
            by_kind[number] += int(has.sum())
            per_row += has
        by_label += np.bincount(labels, weights=per_row, minlength=len(by_label)).astype(np.int64)
