# -*- test-case-name: tests.unit.test_feed_patch -*-
"""
What a builder took in, less what another took in: a delta's feed made
from the last sync's collected columns instead of from every indicator
again (see L{tcbridge.feed.state}).

A collector is a multiset: each indicator it takes in adds counts to the
figures and, per value kept, one entry (packed value, C{timestamp << 7 |
score}, tag set) to its label's column of that IOC kind.  Taking in the
old versions of the indicators a delta changed or removed, in a
collector of their own made with the same settings, gives exactly the
entries and counts they added; L{remove_collected} takes those out (one
equal entry per entry: equal entries cannot be told apart in a feed).
Adding the delta's indicators afterwards (L{tcbridge.feed.merge}) then
gives a collector that builds the feed a collector given the new data
from the start builds.

Only the grouped modes are patched this way (an Expanded store keeps ids
and per-indicator rows of its own), only with a C{web_url} (without one,
report links come from the set of link origins, which cannot be taken
from) and without an age limit.  An entry or count that is not there means the collector is
not the one the removed indicators went into: L{PatchError}, and the
caller builds from every indicator instead.
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import TYPE_CHECKING, Final

from .collect import Collector
from .columns import FIXED_WIDTH, PackedColumn, name_bounds
from .settings import FeedSettings

if TYPE_CHECKING:
    import numpy as np

#: An entry of a packed column: packed value, meta, tag set id.
Entry = tuple[bytes, int, int]

#: numpy's unsigned type of each width a value's first bytes are read in.
_PREFIX_TYPES: Final = {4: "<u4", 8: "<u8"}
#: An odd 64-bit constant that mixes a host name's last bytes into its number.
_MIX: Final = 0x9E37_79B9_7F4A_7C15


class ColumnIndex:
    """
    What finds entries in one packed column, worked out ahead
    (L{index_collected}): each value's number (L{_prefix}) and, for host
    names, where each starts and ends.  Good only for the column as it was
    when made.
    """

    __slots__ = ("ends", "prefixes", "starts")

    def __init__(self, prefixes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        self.prefixes = prefixes
        self.starts = starts
        self.ends = ends


#: The index of each (label, IOC kind) column of a collector.
CollectorIndex = dict[tuple[str, str], ColumnIndex]


class PatchError(Exception):
    """
    A collector cannot be patched: it does not hold what is to be taken out
    (or is of a kind that is never patched).
    """


def settings_patchable(settings: FeedSettings) -> bool:
    """
    Whether collectors of these settings can be patched: grouped modes,
    with a C{web_url}, and no age limit (which moves with the clock, so
    a kept state's choices would not be this sync's).
    """
    return (
        settings.grouping != "Expanded"
        and bool(settings.web_url)
        and settings.modified_after is None
    )


def patchable(collector: Collector) -> bool:
    """
    Whether L{remove_collected} can take from C{collector}.
    """
    return collector.expanded is None and settings_patchable(collector.settings)


def index_collected(collector: Collector) -> CollectorIndex:
    """
    The index of every column of C{collector}, for L{remove_collected} to
    use later (a build child works it out while the sync's pull runs).
    """
    return {
        (name, kind): _column_index(column, kind)
        for name, store in collector.labels.items()
        for kind, column in store.columns.items()
    }


def remove_collected(
    into: Collector, other: Collector, index: CollectorIndex | None = None
) -> None:
    """
    Take everything C{other} took in (made with the same settings) out of
    C{into}: its entries from C{into}'s columns and its counts from the
    figures.  Labels left with no indicator go, as if never seen.

    :param index: C{into}'s L{index_collected}, if worked out ahead (each
        column's is made here otherwise).
    :raise PatchError: if C{into} does not hold it all; C{into} is then
        part-changed and must not be built.
    """
    if not patchable(into) or other.expanded is not None:
        raise PatchError("only grouped feeds with a web_url are patched")
    tag_codes = [into.known_tag_set(tags) for tags in other.tag_sets]
    for name, theirs in other.labels.items():
        mine = into.labels.get(name)
        if mine is None:
            raise PatchError(f"label {name!r} is not in the collector")
        for kind, column in theirs.columns.items():
            if not len(column):
                continue
            own = mine.columns.get(kind)
            if own is None:
                raise PatchError(f"label {name!r} has no {kind} values")
            found = index.get((name, kind)) if index is not None else None
            _remove_entries(own, kind, _entries(column, kind, tag_codes), found)
            if not len(own):
                del mine.columns[kind]
        mine.counts.indicators -= theirs.counts.indicators
    _subtract_stats(into, other)
    _drop_empty_labels(into)


def _entries(column: PackedColumn, kind: str, tag_codes: list[int | None]) -> Counter[Entry]:
    """
    A column's entries, tag sets in the receiving collector's codes.
    """
    values = _values(column, kind)
    tags = column.tags
    found: Counter[Entry] = Counter()
    for at, value in enumerate(values):
        code = tag_codes[tags[at]] if tags is not None else 0
        if code is None:
            raise PatchError("a tag set is not in the collector")
        found[(value, column.meta[at], code)] += 1
    return found


def _values(column: PackedColumn, kind: str) -> list[bytes]:
    """
    A column's packed values, one C{bytes} each (host names without their
    newline).
    """
    data = bytes(column.data)
    width = FIXED_WIDTH.get(kind)
    if width is None:
        return data.split(b"\n")[:-1]
    return [data[at : at + width] for at in range(0, len(data), width)]


def _column_index(column: PackedColumn, kind: str) -> ColumnIndex:
    """
    A column's L{ColumnIndex}.
    """
    # Imported here: the service, which only names PatchError, never
    # imports numpy (the build child does).
    import numpy as np

    count = len(column)
    width = FIXED_WIDTH.get(kind)
    data = np.frombuffer(column.data, np.uint8)
    if width is not None:
        step = min(width, 8)
        rows = data.reshape(count, width)
        # A copy: a view would keep the column's data from growing later.
        prefixes = rows[:, :step].copy().view(_PREFIX_TYPES[step]).ravel()
        none = np.zeros(0, np.int64)
        return ColumnIndex(prefixes, none, none)
    # Host names, each ended by a newline: found by a number made of
    # their length and first and last eight bytes, then compared whole.
    bounds = name_bounds(data)
    starts, ends = bounds[:-1], bounds[1:] - 1
    lengths = ends - starts
    padded = np.concatenate((np.zeros(8, np.uint8), data, np.zeros(8, np.uint8)))
    eight = np.arange(8)
    heads = padded[starts[:, None] + 8 + eight]
    heads[eight >= lengths[:, None]] = 0
    tails = padded[ends[:, None] + eight]
    tails[eight < (8 - lengths)[:, None]] = 0
    prefixes = (
        heads.view("<u8").ravel()
        ^ (tails.view("<u8").ravel() * np.uint64(_MIX))
        ^ (lengths.astype(np.uint64) << np.uint64(56))
    )
    return ColumnIndex(prefixes, starts, ends)


def _remove_entries(
    column: PackedColumn, kind: str, wanted: Counter[Entry], index: ColumnIndex | None = None
) -> None:
    """
    Take one equal entry out of C{column} per entry of C{wanted}.

    :param index: the column's index, if worked out ahead.
    :raise PatchError: if one is not there.
    """
    import numpy as np

    if index is None:
        index = _column_index(column, kind)
    count = len(column)
    if len(index.prefixes) != count:
        raise PatchError(f"the {kind} index does not fit its column")
    width = FIXED_WIDTH.get(kind)
    data = np.frombuffer(column.data, np.uint8)
    prefixes, starts, ends = index.prefixes, index.starts, index.ends
    looked_for = np.array(
        sorted({_prefix(value, width) for value, _, _ in wanted}), dtype=prefixes.dtype
    )
    candidates = np.flatnonzero(np.isin(prefixes, looked_for)).tolist()
    raw, meta, tags = column.data, column.meta, column.tags
    gone: list[int] = []
    for at in candidates:
        if width is None:
            value = bytes(raw[starts[at] : ends[at]])
        else:
            value = bytes(raw[at * width : (at + 1) * width])
        key = (value, meta[at], tags[at] if tags is not None else 0)
        left = wanted.get(key, 0)
        if left:
            wanted[key] = left - 1
            gone.append(at)
    missing = sum(wanted.values())
    if missing:
        raise PatchError(f"{missing} {kind} value(s) to take out are not in the collector")
    if not gone:
        return
    keep = np.ones(count, dtype=bool)
    keep[gone] = False
    if width is None:
        kept = data[np.repeat(keep, ends - starts + 1)]
    else:
        kept = data.reshape(count, width)[keep]
    del data
    column.data = bytearray(kept.tobytes())
    del kept
    column.meta = _compressed(meta, keep)
    if tags is not None:
        column.tags = _compressed(tags, keep)


def _prefix(value: bytes, width: int | None) -> int:
    """
    The number a packed value is first looked for by: its first eight
    bytes (four for IPv4), little-endian; for a host name, those (padded
    with zeros) mixed with its last eight and its length.
    """
    if width is not None:
        step = min(width, 8)
        return int.from_bytes(value[:step], "little")
    head = int.from_bytes(value[:8].ljust(8, b"\0"), "little")
    tail = int.from_bytes(value[-8:].rjust(8, b"\0"), "little")
    return (head ^ (tail * _MIX) ^ (len(value) << 56)) & 0xFFFF_FFFF_FFFF_FFFF


def _compressed(values: array[int], keep: np.ndarray) -> array[int]:
    """
    The values C{keep} marks, in an array of the same type.
    """
    import numpy as np

    chosen = np.frombuffer(values, dtype=np.dtype(values.typecode))[keep]
    out = array(values.typecode)
    out.frombytes(chosen.tobytes())
    return out


def _subtract_stats(into: Collector, other: Collector) -> None:
    """
    Take C{other}'s counts (indicators, skip reasons, exclusions) out of
    C{into}'s figures; reasons left at 0 go.
    """
    stats, theirs = into.stats, other.stats
    stats.indicators -= theirs.indicators
    for table, their_table in (
        (stats.skipped, theirs.skipped),
        (stats.excluded_by, theirs.excluded_by),
    ):
        for reason, count in their_table.items():
            left = table.get(reason, 0) - count
            if left < 0:
                raise PatchError(f"more {reason!r} taken out than counted")
            if left:
                table[reason] = left
            else:
                table.pop(reason, None)
    if stats.indicators < 0:
        raise PatchError("more indicators taken out than taken in")


def _drop_empty_labels(into: Collector) -> None:
    """
    Forget labels no indicator is left of, and number the others again in
    their order (a label's number is its place among those seen).
    """
    for name, store in list(into.labels.items()):
        if store.counts.indicators < 0:
            raise PatchError(f"more indicators of {name!r} taken out than taken in")
        if store.counts.indicators == 0:
            if any(len(column) for column in store.columns.values()):
                raise PatchError(f"label {name!r} has values but no indicators")
            del into.labels[name]
            into.stats.per_source.pop(name, None)
    for index, store in enumerate(sorted(into.labels.values(), key=lambda s: s.index)):
        store.index = index
