# -*- test-case-name: tests.test_feed_builder -*-
"""
Grouping for the Condensed and MaxCondensed feeds: every label's packed
column of one IOC kind sorted together (with numpy, no object per value)
and walked once, so that each value lands in exactly one group.

A value found under several labels goes into a group whose label is every
one of them (C{"Common Community + Example Organization"}), at the highest
score any of them gave and the newest C{lastModified}; a value one label
gave twice (a repeat) counts as C{duplicate}.  Groups are keyed by (labels,
kind, score) and hold their values packed and sorted (hashes and addresses
by their bytes, which is the order of their text and their number); host
names are grouped by a 64-bit hash of the name (equal hashes are checked
name by name) and sorted when their report is made.

Memory: one kind at a time, about twice the packed values plus 40 bytes
per value while it is sorted; the columns are released as they are read.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .columns import FIXED_WIDTH, PackedColumn

#: host names are gathered this many at a time
_GATHER = 16384


class KindGroup:
    """
    The values of one report-to-be: one (labels, kind, score).

    :ivar labels: the label indexes that reported these values, ascending.
    :ivar score: the score.
    :ivar timestamp: the newest C{lastModified} of its values.
    :ivar count: how many values.
    :ivar tags: tag set id -> how many of its values carry that set.
    :ivar packed: the values: fixed-width ones packed and sorted; host names
        each followed by a newline, not sorted.
    """

    __slots__ = ("count", "labels", "packed", "score", "tags", "timestamp")

    def __init__(self, labels: tuple[int, ...], score: int) -> None:
        self.labels = labels
        self.score = score
        self.timestamp = 0
        self.count = 0
        self.tags: dict[int, int] = {}
        self.packed = b""


class _Records:
    """
    One kind's records from every label, concatenated in label order and
    sorted by (value, label); the columns are emptied as they are read.
    """

    def __init__(self, kind: str, columns: list[tuple[int, PackedColumn]]) -> None:
        self.kind = kind
        lengths = [len(column) for _, column in columns]
        indexes = np.array([index for index, _ in columns], dtype=np.uint16)
        labels = np.repeat(indexes, lengths)
        meta = np.concatenate([np.frombuffer(c.meta, dtype=np.uint64) for _, c in columns])
        tags = np.concatenate([_tags_of(c) for _, c in columns])
        if kind == "dns":
            keys = np.concatenate([np.frombuffer(c.keys, dtype=np.int64) for _, c in columns])  # type: ignore[arg-type]
        self.data = np.concatenate([np.frombuffer(c.data, dtype=np.uint8) for _, c in columns])
        columns.clear()
        if kind == "dns":
            order = np.argsort(keys, kind="stable")
            self.sorted_keys = keys[order]
            del keys
            ends = np.flatnonzero(self.data == 10).astype(np.int64)
            self.starts = np.concatenate((np.zeros(1, dtype=np.int64), ends[:-1] + 1))
            self.ends = ends
        else:
            width = FIXED_WIDTH[kind]
            values = self.data.view(f"S{width}")
            order = np.argsort(values, kind="stable")
            self.sorted_keys = values[order]
        self.order = order
        self.labels = labels[order]
        self.meta = meta[order]
        self.tags = tags[order]

    def name(self, record: int) -> bytes:
        """
        The host name of one record (by its place before sorting).
        """
        return self.data[self.starts[record] : self.ends[record]].tobytes()

    def gather(self, records: NDArray[np.int64]) -> bytes:
        """
        The packed values of some records (by their place before sorting):
        fixed-width ones one after another, host names each with its
        newline.
        """
        if self.kind != "dns":
            width = FIXED_WIDTH[self.kind]
            return self.data.reshape(-1, width)[records].tobytes()
        pieces = []
        for at in range(0, len(records), _GATHER):
            chosen = records[at : at + _GATHER]
            starts = self.starts[chosen]
            lengths = self.ends[chosen] - starts + 1
            offsets = np.cumsum(lengths) - lengths
            index = np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))
            pieces.append(self.data[index].tobytes())
        return b"".join(pieces)


def _tags_of(column: PackedColumn) -> NDArray[np.uint32]:
    if column.tags is None:
        return np.zeros(len(column), dtype=np.uint32)
    return np.frombuffer(column.tags, dtype=np.uint32)


def _new_runs(records: _Records) -> NDArray[np.bool_]:
    """
    Where, in sorted order, a new value begins; for host names, equal
    hashes are checked name by name.
    """
    keys = records.sorted_keys
    new = np.ones(len(keys), dtype=bool)
    new[1:] = keys[1:] != keys[:-1]
    if records.kind == "dns":
        _split_collisions(records, new)
    return new


def _split_collisions(records: _Records, new_run: NDArray[np.bool_]) -> None:
    """
    Start a new run wherever the name differs within a run of equal
    hashes, ordering such a run by (name, label).
    """
    starts = np.flatnonzero(new_run)
    sizes = np.diff(np.append(starts, len(new_run)))
    order = records.order
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
        span = range(start, start + size)
        names = [records.name(int(order[i])) for i in span]
        if len(set(names)) == 1:
            continue
        ranked = sorted(span, key=lambda i: (names[i - start], int(records.labels[i])))
        for array in (records.order, records.labels, records.meta, records.tags):
            array[start : start + size] = array[ranked]
        names = [records.name(int(order[i])) for i in span]
        for k in range(1, size):
            new_run[start + k] = names[k] != names[k - 1]


def condense(kind: str, columns: list[tuple[int, PackedColumn]]) -> tuple[list[KindGroup], int]:
    """
    Group one IOC kind's values over every label.

    :param columns: (label index, column) pairs in ascending label index
        order (label indexes are ranks in the sorted list of labels, so a
        value's labels come out in label order); the list is emptied and
        the columns released as they are read.
    :return: the groups (in no particular order) and how many records were
        repeats of a value under the same label.
    """
    records = _Records(kind, columns)
    if not len(records.order):
        return [], 0
    new_run = _new_runs(records)
    records.sorted_keys = np.empty(0)
    labels = records.labels
    new_pair = new_run.copy()
    new_pair[1:] |= labels[1:] != labels[:-1]
    duplicates = len(labels) - int(np.count_nonzero(new_pair))
    run_starts = np.flatnonzero(new_run)
    scores = (records.meta & np.uint64(127)).astype(np.uint8)
    best = np.maximum.reduceat(scores, run_starts)
    del scores
    newest = np.maximum.reduceat(records.meta >> np.uint64(7), run_starts).astype(np.int64)
    records.meta = np.empty(0, dtype=np.uint64)
    combos, combo_of_run = _combos(labels, new_run, new_pair, run_starts)
    del new_pair
    groups, group_of_run = _groups(combos, combo_of_run, best)
    _count_tags(groups, group_of_run, records.tags, new_run)
    _fill(groups, group_of_run, newest, records, run_starts)
    return groups, duplicates


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
    del run_id
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


def _groups(
    combos: list[tuple[int, ...]], combo_of_run: NDArray[np.int64], best: NDArray[np.uint8]
) -> tuple[list[KindGroup], NDArray[np.intp]]:
    keys = combo_of_run * 128 + best
    unique, group_of_run = np.unique(keys, return_inverse=True)
    groups = [KindGroup(combos[int(key) // 128], int(key) % 128) for key in unique.tolist()]
    return groups, group_of_run.reshape(-1)


def _fill(
    groups: list[KindGroup],
    group_of_run: NDArray[np.intp],
    newest: NDArray[np.int64],
    records: _Records,
    run_starts: NDArray[np.intp],
) -> None:
    """
    Give each group its values (in value order), count and timestamp.
    """
    by_group = np.argsort(group_of_run, kind="stable")
    bounds = np.searchsorted(group_of_run[by_group], np.arange(len(groups) + 1))
    newest_of = np.zeros(len(groups), dtype=np.int64)
    np.maximum.at(newest_of, group_of_run, newest)
    first_record = records.order[run_starts]
    for number, group in enumerate(groups):
        runs = by_group[bounds[number] : bounds[number + 1]]
        group.count = len(runs)
        group.timestamp = int(newest_of[number])
        group.packed = records.gather(first_record[runs])


def _count_tags(
    groups: list[KindGroup],
    group_of_run: NDArray[np.intp],
    tags: NDArray[np.uint32],
    new_run: NDArray[np.bool_],
) -> None:
    """
    For each group, how many of its values carry each tag set (a value
    reported with the same set twice counts once).
    """
    tagged = np.flatnonzero(tags)
    if not len(tagged):
        return
    run_id = (np.cumsum(new_run) - 1)[tagged]
    pairs = np.unique(run_id.astype(np.int64) << 32 | tags[tagged].astype(np.int64))
    group_ids = group_of_run[pairs >> 32]
    keyed = np.unique(group_ids.astype(np.int64) << 32 | (pairs & 0xFFFFFFFF), return_counts=True)
    for key, count in zip(keyed[0].tolist(), keyed[1].tolist(), strict=True):
        groups[key >> 32].tags[key & 0xFFFFFFFF] = count
