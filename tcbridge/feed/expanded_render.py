# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
Rendering Expanded reports many at a time: a chunk of rows (indicators that
are a report each) becomes one run of comma-separated report JSON, built by
numpy from a table of I{segments} (for every report: its fixed strings, its
label's id prefix and title, its link template, its id, timestamp, score
and values as text, its description and tags) and one gather of the bytes
they point at.  The bytes are exactly what C{orjson.dumps} gives for each
report as a dict (keys C{id}, C{timestamp}, C{link}, C{title}, C{score},
C{iocs}, C{description}, C{tags}): every string that may need escaping
(labels, links, descriptions, tags) goes through orjson once per distinct
value; what is written directly (ids, numbers, hex digests, addresses, host
names) never needs escaping.
"""

from __future__ import annotations

import ipaddress
import socket
from array import array
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
import orjson
from numpy.typing import NDArray

from .columns import FIXED_WIDTH
from .expanded import ADDRESS_KINDS, FILE_KINDS, KIND_BITS, KIND_ORDER, TC_TYPES, ExpandedStore
from .text import MAX_TAGS

_HEX_LOWER: Final = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_UPPER: Final = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
_OCTETS: Final = np.frombuffer(
    b"".join(str(n).encode().ljust(3, b"\0") for n in range(256)), dtype=np.uint8
).reshape(256, 3)
_IPV6_WIDTH: Final = 45

#: per row: where a value's text starts, its length, where its upper-case
#: text starts (hashes only)
Texts = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64] | None]
#: where each host name starts in its column, and where the last one ends
#: (see L{tcbridge.feed.expanded.ValueColumn.starts})
Bounds = NDArray[np.unsignedinteger[Any]]


class _Buffer:
    """
    The bytes a chunk's segments point at, gathered as they are made.
    """

    def __init__(self) -> None:
        self.parts: list[NDArray[np.uint8]] = []
        self.size = 0

    def add(self, data: bytes | NDArray[np.uint8]) -> int:
        """
        Append bytes; return where they start.
        """
        array = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data.reshape(-1)
        start = self.size
        self.parts.append(array)
        self.size += len(array)
        return start

    def table(self, texts: Sequence[bytes]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """
        Append several texts; return their starts and lengths.
        """
        lengths = np.array([len(text) for text in texts], dtype=np.int64)
        start = self.add(b"".join(texts))
        return start + np.cumsum(lengths) - lengths, lengths

    def array(self) -> NDArray[np.uint8]:
        return np.concatenate(self.parts) if self.parts else np.empty(0, dtype=np.uint8)


def view(column: array[int]) -> NDArray[Any]:
    """
    A column of an L{ExpandedStore} as numpy sees it, in the column's own
    item type (which widens as values need).
    """
    return np.frombuffer(column, dtype=column.typecode)


def _digits(
    numbers: NDArray[np.int64] | NDArray[np.uint64],
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """
    Decimal texts of non-negative numbers, 20 bytes each (NUL-padded), and
    their lengths.
    """
    text = numbers.astype("S20")
    matrix = text.view(np.uint8).reshape(-1, 20)
    return matrix, np.count_nonzero(matrix, axis=1).astype(np.int64)


def _hex(values: NDArray[np.uint8], table: NDArray[np.uint8]) -> NDArray[np.uint8]:
    out = np.empty((len(values), 2 * values.shape[1]), dtype=np.uint8)
    out[:, 0::2] = table[values >> 4]
    out[:, 1::2] = table[values & 15]
    return out


def _left(matrix: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """
    Each row's non-NUL bytes moved to its start, and how many there are.
    """
    order = np.argsort(matrix == 0, axis=1, kind="stable")
    return np.take_along_axis(matrix, order, axis=1), np.count_nonzero(matrix, axis=1).astype(
        np.int64
    )


class ChunkRenderer:
    """
    Renders chunks of rows of an L{ExpandedStore}.

    :param prefixes: the report id prefix of each label index.
    :param titles: each label index's name as titles give it.
    :param default_links: by label index, the link of a report whose
        indicator has none.
    """

    def __init__(
        self,
        store: ExpandedStore,
        prefixes: Sequence[str],
        titles: Sequence[str],
        tag_sets: Sequence[tuple[str, ...]],
        default_links: Sequence[str],
    ) -> None:
        self.store = store
        self.prefixes = [prefix.encode() for prefix in prefixes]
        self.titles = [orjson.dumps(f"ThreatConnect {title}: ")[:-1] for title in titles]
        self.tag_sets = tag_sets
        self.default_links = [orjson.dumps(link) for link in default_links]
        self._links: dict[int, tuple[bytes, bytes]] = {}
        self._columns = {kind: self._view(kind) for kind in KIND_ORDER}

    def _view(self, kind: str) -> tuple[NDArray[np.uint32], NDArray[np.uint8], Bounds | None]:
        column = self.store.values[kind]
        rows = np.frombuffer(column.rows, dtype=np.uint32)
        data = np.frombuffer(column.data, dtype=np.uint8)
        if kind != "dns":
            return rows, data.reshape(-1, FIXED_WIDTH[kind]), None
        return rows, data, column.starts()

    def _link_parts(self, code: int) -> tuple[bytes, bytes]:
        found = self._links.get(code)
        if found is None:
            before, middle, after = self.store.templates.parts[code]
            if code == 0:
                found = (b"", b"")  # the label's default link, see _link
            elif not middle:
                found = (orjson.dumps(before), b"")
            else:
                found = (orjson.dumps(before)[:-1], orjson.dumps(after)[1:])
            self._links[code] = found
        return found

    def render(self, rows: NDArray[np.int64], stamps: NDArray[np.int64] | None) -> Rendered:
        """
        The reports of C{rows}, comma-separated, with C{stamps} as their
        timestamps (C{None}: without the C{timestamp} key, as digests read
        them).
        """
        store = self.store
        count = len(rows)
        buffer = _Buffer()
        segments: list[tuple[NDArray[np.int64], NDArray[np.int64]]] = []

        def fixed(text: bytes, present: NDArray[np.bool_] | None = None) -> None:
            start = buffer.add(text)
            lengths = np.full(count, len(text), dtype=np.int64)
            if present is not None:
                lengths = np.where(present, lengths, 0)
            segments.append((np.full(count, start, dtype=np.int64), lengths))

        def per(codes: NDArray[np.int64], texts: Sequence[bytes]) -> None:
            starts, lengths = buffer.table(texts)
            segments.append((starts[codes], lengths[codes]))

        labels = view(store.label)[rows].astype(np.int64)
        kinds = np.frombuffer(store.kinds, dtype=np.uint8)[rows]
        types = np.where(kinds & FILE_KINDS, 0, np.where(kinds & ADDRESS_KINDS, 1, 2))
        scores = np.frombuffer(store.score, dtype=np.uint8)[rows].astype(np.int64)
        numbers = view(store.number)[rows]
        links = view(store.link)[rows].astype(np.int64)
        descriptions = view(store.description)[rows].astype(np.int64)
        tag_codes = view(store.tags)[rows].astype(np.int64)

        separator = np.ones(count, dtype=np.int64)
        separator[0] = 0
        segments.append((np.full(count, buffer.add(b","), dtype=np.int64), separator))
        fixed(b'{"id":"')
        per(labels, self.prefixes)
        fixed(b"-")
        ident_text, ident_length = _digits(numbers)
        ident_at = buffer.add(ident_text) + 20 * np.arange(count, dtype=np.int64)
        segments.append((ident_at, ident_length))
        fixed(b'"')
        stamp_segment = len(segments)
        if stamps is not None:
            fixed(b',"timestamp":')
            stamp_text, stamp_length = _digits(stamps)
            segments.append((buffer.add(stamp_text) + 20 * np.arange(count), stamp_length))
        values = self._values(rows, kinds, buffer)
        self._link(links, labels, values, (ident_at, ident_length), buffer, segments)
        fixed(b',"title":')
        per(labels, self.titles)
        per(types, [name.encode() + b" " for name in TC_TYPES])
        first_at, first_length = self._first(kinds, values)
        is_file = types == 0
        segments.append((first_at, np.where(is_file, np.minimum(first_length, 8), first_length)))
        fixed(b"...", is_file)
        fixed(b" (score ")
        score_texts = [str(n).encode() for n in range(128)]
        per(scores, score_texts)
        fixed(b')","score":')
        per(scores, score_texts)
        fixed(b',"iocs":{')
        self._iocs(kinds, values, buffer, segments)
        fixed(b"}")
        _per_code(descriptions, self._description_text, buffer, segments)
        _per_code(tag_codes, self._tags_text, buffer, segments)
        fixed(b"}")
        return _gather(buffer.array(), segments, count, stamp_segment)

    def _values(
        self, rows: NDArray[np.int64], kinds: NDArray[np.uint8], buffer: _Buffer
    ) -> dict[str, Texts]:
        """
        Per kind: where each row's value text starts, its length (0 without
        one) and, for hashes, where its upper-case text starts.
        """
        count = len(rows)
        out: dict[str, Texts] = {}
        for kind in KIND_ORDER:
            has = (kinds & KIND_BITS[kind]) != 0
            if not has.any():
                zeros = np.zeros(count, dtype=np.int64)
                out[kind] = (zeros, zeros, None)
                continue
            column_rows, data, bounds = self._columns[kind]
            # (in the column's own type: another would copy the column)
            at = np.searchsorted(column_rows, rows[has].astype(column_rows.dtype))
            upper = None
            if kind in ("md5", "sha256"):
                packed = data[at]
                width = 2 * FIXED_WIDTH[kind]
                text = np.zeros((count, width), dtype=np.uint8)
                text[has] = _hex(packed, _HEX_LOWER)
                start = buffer.add(text) + width * np.arange(count)
                shout = np.zeros((count, width), dtype=np.uint8)
                shout[has] = _hex(packed, _HEX_UPPER)
                upper = buffer.add(shout) + width * np.arange(count)
                length = np.where(has, width, 0)
            else:
                matrix, lengths = self._text_matrix(kind, data, bounds, at)
                width = matrix.shape[1]
                length = np.zeros(count, dtype=np.int64)
                length[has] = lengths
                start = np.zeros(count, dtype=np.int64)
                start[has] = buffer.add(matrix) + width * np.arange(len(at))
            out[kind] = (start.astype(np.int64), length.astype(np.int64), upper)
        return out

    def _text_matrix(
        self,
        kind: str,
        data: NDArray[np.uint8],
        bounds: Bounds | None,
        at: NDArray[np.intp],
    ) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
        """
        The texts of some values of an address or host kind, one per row,
        from the start of the row, and their lengths.
        """
        if kind == "ipv4":
            octets = data[at]
            matrix = np.zeros((len(at), 15), dtype=np.uint8)
            for octet in range(4):
                matrix[:, 4 * octet : 4 * octet + 3] = _OCTETS[octets[:, octet]]
                if octet < 3:
                    matrix[:, 4 * octet + 3] = ord(".")
            return _left(matrix)
        if kind == "ipv6":
            texts = [_ipv6(bytes(value)) for value in data[at]]
            lengths = np.array([len(text) for text in texts], dtype=np.int64)
            padded = b"".join(text.ljust(_IPV6_WIDTH, b"\0") for text in texts)
            return np.frombuffer(padded, dtype=np.uint8).reshape(-1, _IPV6_WIDTH), lengths
        assert bounds is not None
        starts = bounds[at].astype(np.int64)
        lengths = bounds[at + 1].astype(np.int64) - starts - 1
        matrix = np.zeros((len(at), max(1, int(lengths.max()))), dtype=np.uint8)
        row = np.repeat(np.arange(len(at)), lengths)
        offset = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        matrix[row, offset] = data[np.repeat(starts, lengths) + offset]
        return matrix, lengths

    @staticmethod
    def _first(
        kinds: NDArray[np.uint8],
        values: dict[str, Texts],
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """
        Where each row's first value text starts, and its length.
        """
        start = np.zeros(len(kinds), dtype=np.int64)
        length = np.zeros(len(kinds), dtype=np.int64)
        for kind in reversed(KIND_ORDER):
            has = (kinds & KIND_BITS[kind]) != 0
            start = np.where(has, values[kind][0], start)
            length = np.where(has, values[kind][1], length)
        return start, length

    def _link(
        self,
        codes: NDArray[np.int64],
        labels: NDArray[np.int64],
        values: dict[str, Texts],
        ident: tuple[NDArray[np.int64], NDArray[np.int64]],
        buffer: _Buffer,
        segments: list[tuple[NDArray[np.int64], NDArray[np.int64]]],
    ) -> None:
        count = len(codes)
        unique, inverse = np.unique(codes, return_inverse=True)
        inverse = inverse.reshape(-1)
        parts = [self._link_parts(int(code)) for code in unique.tolist()]
        prefix = b',"link":'
        before_at, before_length = buffer.table([prefix + before for before, _ in parts])
        after_at, after_length = buffer.table([after for _, after in parts])
        middle_at = np.zeros(count, dtype=np.int64)
        middle_length = np.zeros(count, dtype=np.int64)
        templates = self.store.templates.parts
        for number, code in enumerate(unique.tolist()):
            middle = templates[code][1] if code else ""
            if not middle:
                continue
            chosen = inverse == number
            if middle == "#":
                start, length = ident
            elif middle.endswith("^"):
                start, length, upper = values[middle[:-1]]
                start = upper if upper is not None else start
            else:
                start, length, _ = values[middle]
            middle_at = np.where(chosen, start, middle_at)
            middle_length = np.where(chosen, length, middle_length)
        before_at, before_length = before_at[inverse], before_length[inverse]
        if unique[0] == 0:
            # No link of its own: its label's default, whole.
            missing = codes == 0
            own_at, own_length = buffer.table([prefix + link for link in self.default_links])
            before_at = np.where(missing, own_at[labels], before_at)
            before_length = np.where(missing, own_length[labels], before_length)
        segments.append((before_at, before_length))
        segments.append((middle_at, middle_length))
        segments.append((after_at[inverse], after_length[inverse]))

    @staticmethod
    def _iocs(
        kinds: NDArray[np.uint8],
        values: dict[str, Texts],
        buffer: _Buffer,
        segments: list[tuple[NDArray[np.int64], NDArray[np.int64]]],
    ) -> None:
        count = len(kinds)
        earlier = np.zeros(count, dtype=bool)
        for kind in KIND_ORDER:
            has = (kinds & KIND_BITS[kind]) != 0
            opening = f'"{kind}":["'.encode()
            plain = buffer.add(opening)
            comma = buffer.add(b"," + opening)
            segments.append(
                (
                    np.where(earlier, comma, plain).astype(np.int64),
                    np.where(has, np.where(earlier, len(opening) + 1, len(opening)), 0),
                )
            )
            start, length, _ = values[kind]
            segments.append((start, np.where(has, length, 0)))
            closing = buffer.add(b'"]')
            segments.append((np.full(count, closing, dtype=np.int64), np.where(has, 2, 0)))
            earlier |= has

    def _description_text(self, code: int) -> bytes:
        description = self.store.descriptions[code]
        return b',"description":' + orjson.dumps(description) if description else b""

    def _tags_text(self, code: int) -> bytes:
        tags = list(self.tag_sets[code][:MAX_TAGS])
        return b',"tags":' + orjson.dumps(tags) if tags else b""


def _per_code(
    codes: NDArray[np.int64],
    text: Callable[[int], bytes],
    buffer: _Buffer,
    segments: list[tuple[NDArray[np.int64], NDArray[np.int64]]],
) -> None:
    """
    One segment per row: the text of its code, made once per distinct code.
    """
    unique, inverse = np.unique(codes, return_inverse=True)
    starts, lengths = buffer.table([text(code) for code in unique.tolist()])
    inverse = inverse.reshape(-1)
    segments.append((starts[inverse], lengths[inverse]))


def _ipv6(packed: bytes) -> bytes:
    text = socket.inet_ntop(socket.AF_INET6, packed)
    if "." in text:
        text = ipaddress.IPv6Address(packed).compressed
    return text.encode("ascii")


class Rendered:
    """
    A chunk of rendered reports.

    :ivar data: the reports, separated by commas.
    :ivar starts: where each report starts (after its comma).
    :ivar ends: where each report ends.
    :ivar stamp_at: where each report's timestamp goes (or went): just after
        its id.
    """

    __slots__ = ("data", "ends", "stamp_at", "starts")

    def __init__(
        self,
        data: bytes,
        starts: NDArray[np.int64],
        ends: NDArray[np.int64],
        stamp_at: NDArray[np.int64],
    ) -> None:
        self.data = data
        self.starts = starts
        self.ends = ends
        self.stamp_at = stamp_at


#: rows gathered at a time (the index of every byte is the largest array
#: of a render: 4 bytes per byte of output)
GATHER_ROWS: Final = 512


def _gather(
    source: NDArray[np.uint8],
    segments: list[tuple[NDArray[np.int64], NDArray[np.int64]]],
    count: int,
    stamp_segment: int,
) -> Rendered:
    """
    The bytes the segments point at, row after row (each row's segments in
    order; the first segment of each row is its separating comma), taken
    L{GATHER_ROWS} rows at a time.
    """
    starts = np.stack([start for start, _ in segments], axis=1).reshape(-1)
    lengths = np.stack([length for _, length in segments], axis=1).reshape(-1)
    out_starts = np.cumsum(lengths) - lengths
    total = int(lengths.sum())
    # 32-bit offsets: a chunk is far below 2 GB, and they halve the traffic.
    shift = (starts - out_starts).astype(np.int32)
    step = GATHER_ROWS * len(segments)
    parts = []
    for at in range(0, len(lengths), step):
        index = np.repeat(shift[at : at + step], lengths[at : at + step])
        first = int(out_starts[at])
        index += np.arange(first, first + len(index), dtype=np.int32)
        # take() rather than source[index]: the same bytes, in half the time.
        parts.append(source.take(index).data)
        del index
    per_row = out_starts.reshape(count, -1)
    row_lengths = lengths.reshape(count, -1)
    report_starts = per_row[:, 0] + row_lengths[:, 0]
    report_ends = np.append(per_row[1:, 0], total)
    data = b"".join(parts)
    return Rendered(data, report_starts, report_ends, per_row[:, stamp_segment])


def insert_stamps(bare: Rendered, stamps: NDArray[np.int64]) -> Rendered:
    """
    Reports rendered without timestamps, with them put in after each id.
    """
    count = len(stamps)
    source = _Buffer()
    body = source.add(bare.data)
    key = source.add(b',"timestamp":')
    text, length = _digits(stamps)
    stamp_start = source.add(text) + 20 * np.arange(count, dtype=np.int64)
    comma = source.add(b",")
    separator = np.ones(count, dtype=np.int64)
    separator[0] = 0
    segments = [
        (np.full(count, comma, dtype=np.int64), separator),
        (body + bare.starts, bare.stamp_at - bare.starts),
        (np.full(count, key, dtype=np.int64), np.full(count, 13, dtype=np.int64)),
        (stamp_start, length),
        (body + bare.stamp_at, bare.ends - bare.stamp_at),
    ]
    return _gather(source.array(), segments, count, 2)
