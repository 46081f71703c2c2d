# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
Grouping for the Condensed and MaxCondensed feeds: every label's packed
column of one IOC kind sorted together and walked once, so that each value
lands in exactly one group.

A value found under several labels goes into a group whose label is every
one of them (C{"Common Community + Example Organization"}), at the highest
score any of them gave and the newest C{lastModified}; a value one label
gave twice (a repeat) counts as C{duplicate}.  Groups are keyed by (labels,
kind, score) and hold their values packed: hashes and addresses sorted by
their bytes (which is the order of their text and their number), host
names unsorted (their report sorts them).

B{Memory.}  The values are split into buckets of about 32,768 by their
leading bits (host names by a hash), and one bucket is sorted at a time
with numpy (fixed-width values by their first eight bytes as a number,
host names as zero-padded fixed-width keys, their count times the
longest's length), so the sorting never needs more than a few megabytes
(some more for a bucket with a name of hundreds of characters); equal
values always share a bucket, and for
fixed-width values the buckets come in value order, so a group's values
stay sorted as the buckets are appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from .columns import FIXED_WIDTH, PackedColumn, name_bounds

_BUCKET = 32768
_MAX_BUCKETS = 256


class KindGroup:
    """
    The values of one report-to-be: one (labels, kind, score).

    :ivar labels: the label indexes that reported these values, ascending.
    :ivar score: the score.
    :ivar timestamp: the newest C{lastModified} of its values.
    :ivar count: how many values.
    :ivar tags: tag set id -> how many of its values carry that set.
    :ivar parts: the values packed, a part per bucket: fixed-width ones
        sorted, host names each followed by a newline, not sorted.
    """

    __slots__ = ("count", "labels", "parts", "score", "tags", "timestamp")

    def __init__(self, labels: tuple[int, ...], score: int) -> None:
        self.labels = labels
        self.score = score
        self.timestamp = 0
        self.count = 0
        self.tags: dict[int, int] = {}
        self.parts: list[bytes] = []

    def take_packed(self) -> bytes:
        """
        The packed values, released from the group.
        """
        packed = b"".join(self.parts)
        self.parts = []
        return packed


class _Column:
    """
    One label's column of one kind, as numpy views, with each value's
    bucket.
    """

    def __init__(self, kind: str, label: int, column: PackedColumn, buckets: int) -> None:
        self.label = label
        self.meta = np.frombuffer(column.meta, dtype=np.uint64)
        self.tags = (
            np.frombuffer(column.tags, dtype=f"u{column.tags.itemsize}").astype(np.uint32)
            if column.tags is not None
            else np.zeros(len(column), dtype=np.uint32)
        )
        self.data = np.frombuffer(column.data, dtype=np.uint8)
        shift = max(0, 8 - (buckets - 1).bit_length())
        if kind == "dns":
            # Names end with a newline; a bucket from a few of their bytes
            # and their length, so that equal names share one.
            bounds = name_bounds(self.data)
            self.starts, self.ends = bounds[:-1], bounds[1:] - 1
            mix = (
                self.data[self.starts].astype(np.uint32) * 131
                + self.data[self.starts + 1].astype(np.uint32) * 31
                + self.data[self.ends - 1].astype(np.uint32) * 7
                + (self.ends - self.starts).astype(np.uint32)
            )
            self.bucket = (mix % buckets).astype(np.uint16)
        else:
            self.values = self.data.reshape(-1, FIXED_WIDTH[kind])
            self.bucket = (self.values[:, 0] >> shift).astype(np.uint16)


class _Bucket:
    """
    The records of one bucket from every label, in label order, and the
    order that sorts them by (value, label).
    """

    def __init__(self, kind: str, columns: Sequence[_Column], number: int) -> None:
        chosen = [np.flatnonzero(column.bucket == number) for column in columns]
        self.kind = kind
        self.labels = np.concatenate(
            [
                np.full(len(rows), column.label, dtype=np.uint16)
                for column, rows in zip(columns, chosen, strict=True)
            ]
        )
        meta = np.concatenate([c.meta[rows] for c, rows in zip(columns, chosen, strict=True)])
        tags = np.concatenate([c.tags[rows] for c, rows in zip(columns, chosen, strict=True)])
        if kind == "dns":
            # The names gathered into one block (each ended by a newline)
            # and sorted as zero-padded fixed-width keys: no object per name.
            self.blob = np.concatenate(
                [
                    _gather(c.data, c.starts[rows], c.ends[rows] + 1)
                    for c, rows in zip(columns, chosen, strict=True)
                ]
            )
            lengths = np.concatenate(
                [c.ends[rows] - c.starts[rows] for c, rows in zip(columns, chosen, strict=True)]
            )
            self.ends = np.cumsum(lengths + 1) - 1
            self.starts = self.ends - lengths
            keys = _padded(self.blob, self.starts, lengths)
            order = np.argsort(keys, kind="stable")
            ranked_keys = keys[order]
            new = np.ones(len(order), dtype=bool)
            new[1:] = ranked_keys[1:] != ranked_keys[:-1]
        else:
            width = FIXED_WIDTH[kind]
            self.values = np.concatenate(
                [c.values[rows] for c, rows in zip(columns, chosen, strict=True)]
            )
            keys = self.values.view(f"S{width}").reshape(-1)
            order = _value_order(self.values, keys)
            ranked_keys = keys[order]
            new = np.ones(len(order), dtype=bool)
            new[1:] = ranked_keys[1:] != ranked_keys[:-1]
        self.order = order
        self.new_run = new
        self.labels = self.labels[order]
        self.meta = meta[order]
        self.tags = tags[order]

    def packed(self, records: NDArray[np.int64]) -> bytes:
        """
        The packed values of some records (by their place before sorting).
        """
        if self.kind == "dns":
            return _gather(self.blob, self.starts[records], self.ends[records] + 1).tobytes()
        return self.values[records].tobytes()


def _value_order(values: NDArray[np.uint8], keys: NDArray[np.bytes_]) -> NDArray[np.intp]:
    """
    The stable order that sorts fixed-width values (rows of C{values},
    the same as C{keys}) by their bytes: by their first (up to) eight bytes
    as a number, which decides unless two different values share them
    (then by the whole values).
    """
    width = values.shape[1]
    step = min(width, 8)
    head = np.ascontiguousarray(values[:, :step]).view(f">u{step}").reshape(-1).astype(np.uint64)
    order = np.argsort(head, kind="stable")
    if width > step and len(order) > 1:
        ranked, heads = keys[order], head[order]
        if np.any((heads[1:] == heads[:-1]) & (ranked[1:] != ranked[:-1])):
            order = np.argsort(keys, kind="stable")
    return order


#: Bytes of names turned into keys at once (bounds the index arrays).
_PAD_AT_ONCE: Final = 1 << 18


def _padded(
    blob: NDArray[np.uint8], starts: NDArray[np.int64], lengths: NDArray[np.int64]
) -> NDArray[np.bytes_]:
    """
    The names (C{lengths[i]} bytes of C{blob} from C{starts[i]}) as
    fixed-width keys as long as the longest, padded with zeros (which no
    host name holds, so the keys sort as the names do): their count times
    the longest's length in bytes, made a slice of names at a time.
    """
    longest = max(1, int(lengths.max(initial=0)))
    keys = np.zeros((len(lengths), longest), dtype=np.uint8)
    offsets = np.arange(longest)
    last = max(len(blob) - 1, 0)
    step = max(1, _PAD_AT_ONCE // longest)
    for at in range(0, len(lengths) if len(blob) else 0, step):
        part = blob[np.minimum(starts[at : at + step, None] + offsets, last)]
        part[offsets >= lengths[at : at + step, None]] = 0
        keys[at : at + step] = part
    return keys.view(f"S{longest}").reshape(-1)


def _gather(
    data: NDArray[np.uint8], starts: NDArray[np.int64], stops: NDArray[np.int64]
) -> NDArray[np.uint8]:
    """
    The bytes C{data[starts[i]:stops[i]]} of every C{i}, one after another.
    """
    lengths = stops - starts
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.uint8)
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return data[np.arange(total) + shift]


def _bucket_count(total: int) -> int:
    count = 1
    while count * _BUCKET < total and count < _MAX_BUCKETS:
        count *= 2
    return count


def condense(kind: str, columns: list[tuple[int, PackedColumn]]) -> tuple[list[KindGroup], int]:
    """
    Group one IOC kind's values over every label.

    :param columns: (label index, column) pairs in ascending label index
        order (label indexes are ranks in the sorted list of labels, so a
        value's labels come out in label order); the list is emptied as it
        is read.
    :return: the groups (in no particular order) and how many records were
        repeats of a value under the same label.
    """
    buckets = _bucket_count(sum(len(column) for _, column in columns))
    views = [_Column(kind, label, column, buckets) for label, column in columns]
    columns.clear()
    groups: dict[tuple[tuple[int, ...], int], KindGroup] = {}
    duplicates = 0
    for number in range(buckets):
        bucket = _Bucket(kind, views, number)
        if len(bucket.order):
            duplicates += _condense_bucket(bucket, groups)
    return list(groups.values()), duplicates


def _condense_bucket(bucket: _Bucket, groups: dict[tuple[tuple[int, ...], int], KindGroup]) -> int:
    """
    Add one bucket's values to the groups; return its repeats.
    """
    labels, new_run = bucket.labels, bucket.new_run
    new_pair = new_run.copy()
    new_pair[1:] |= labels[1:] != labels[:-1]
    duplicates = len(labels) - int(np.count_nonzero(new_pair))
    run_starts = np.flatnonzero(new_run)
    scores = (bucket.meta & np.uint64(127)).astype(np.uint8)
    best = np.maximum.reduceat(scores, run_starts)
    newest = np.maximum.reduceat(bucket.meta >> np.uint64(7), run_starts).astype(np.int64)
    combos, combo_of_run = _combos(labels, new_run, new_pair, run_starts)
    keys = combo_of_run * 128 + best
    unique, group_of_run = np.unique(keys, return_inverse=True)
    group_of_run = group_of_run.reshape(-1)
    found = []
    for key in unique.tolist():
        labels_of = combos[key // 128]
        group = groups.get((labels_of, key % 128))
        if group is None:
            group = groups[(labels_of, key % 128)] = KindGroup(labels_of, key % 128)
        found.append(group)
    _count_tags(found, group_of_run, bucket.tags, new_run)
    _fill(found, group_of_run, newest, bucket, run_starts)
    return duplicates


def _combos(
    labels: NDArray[np.uint16],
    new_run: NDArray[np.bool_],
    new_pair: NDArray[np.bool_],
    run_starts: NDArray[np.intp],
) -> tuple[list[tuple[int, ...]], NDArray[np.int64]]:
    """
    The label combination of each value: one label mostly, several for
    values more than one label reported.
    """
    run_id = np.cumsum(new_run) - 1
    pairs_per_run = np.bincount(run_id[new_pair], minlength=len(run_starts))
    combo_of_run = labels[run_starts].astype(np.int64)
    combos: list[tuple[int, ...]] = [(i,) for i in range(int(labels.max()) + 1)]
    shared = np.flatnonzero(pairs_per_run > 1)
    if len(shared):
        index: dict[tuple[int, ...], int] = {}
        pair_labels = labels[new_pair]
        pair_starts = np.cumsum(pairs_per_run) - pairs_per_run
        for run in shared.tolist():
            start = int(pair_starts[run])
            combo = tuple(pair_labels[start : start + int(pairs_per_run[run])].tolist())
            found = index.get(combo)
            if found is None:
                found = index[combo] = len(combos)
                combos.append(combo)
            combo_of_run[run] = found
    return combos, combo_of_run


def _fill(
    groups: list[KindGroup],
    group_of_run: NDArray[np.intp],
    newest: NDArray[np.int64],
    bucket: _Bucket,
    run_starts: NDArray[np.intp],
) -> None:
    """
    Add to each group the bucket's values (in value order), count and
    timestamp.
    """
    by_group = np.argsort(group_of_run, kind="stable")
    bounds = np.searchsorted(group_of_run[by_group], np.arange(len(groups) + 1))
    newest_of = np.zeros(len(groups), dtype=np.int64)
    np.maximum.at(newest_of, group_of_run, newest)
    first_record = bucket.order[run_starts]
    for number, group in enumerate(groups):
        runs = by_group[bounds[number] : bounds[number + 1]]
        if not len(runs):
            continue
        group.count += len(runs)
        group.timestamp = max(group.timestamp, int(newest_of[number]))
        group.parts.append(bucket.packed(first_record[runs]))


def _count_tags(
    groups: list[KindGroup],
    group_of_run: NDArray[np.intp],
    tags: NDArray[np.uint32],
    new_run: NDArray[np.bool_],
) -> None:
    """
    For each group, how many of the bucket's values carry each tag set (a
    value reported with the same set twice counts once).
    """
    tagged = np.flatnonzero(tags)
    if not len(tagged):
        return
    run_id = (np.cumsum(new_run) - 1)[tagged]
    pairs = np.unique(run_id.astype(np.int64) << 32 | tags[tagged].astype(np.int64))
    group_ids = group_of_run[pairs >> 32]
    keyed = np.unique(group_ids.astype(np.int64) << 32 | (pairs & 0xFFFFFFFF), return_counts=True)
    for key, count in zip(keyed[0].tolist(), keyed[1].tolist(), strict=True):
        tags_of = groups[key >> 32].tags
        tag = key & 0xFFFFFFFF
        tags_of[tag] = tags_of.get(tag, 0) + count
