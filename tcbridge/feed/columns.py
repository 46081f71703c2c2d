# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
Packed columns: how the values of a feed are kept between the pages and
the build, a few bytes per value and no object per value.

Per source label (L{LabelStore}) and IOC kind, a L{PackedColumn} holds:

 - C{data}: the values packed one after another: 16 bytes per MD5, 32 per
   SHA-256, 4 per IPv4 address, 16 per IPv6 address, and for host names
   the name followed by a newline;
 - C{meta}: per value, C{timestamp << 7 | score} (8 bytes);
 - C{tags}: per value, the id of its cleaned tag set (2 bytes, wider once
   there are more than 65,535 sets: see L{extended}), made only once a
   value with tags arrives (all 0 before).
"""

from __future__ import annotations

import re
import socket
from array import array
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from .settings import SourceCounts

if TYPE_CHECKING:  # numpy is imported when a build needs it, not before the pull
    import numpy as np
    from numpy.typing import NDArray

#: Timestamps are capped here: far in the future, and exact in every JSON
#: reader.
MAX_TIMESTAMP: Final = 2**53

#: bytes per packed value of the fixed-width kinds
FIXED_WIDTH: Final[dict[str, int]] = {"md5": 16, "sha256": 32, "ipv4": 4, "ipv6": 16}

#: the next wider type of an array of unsigned numbers
_WIDER: Final = {"B": "H", "H": "I", "I": "Q"}


def name_bounds(data: NDArray[np.uint8], dtype: Any = "int64") -> NDArray[Any]:
    """
    Where each host name of a packed C{dns} column's C{data} starts, and
    then where the last one's newline ends (one more bound than names):
    name C{i} is C{data[bounds[i] : bounds[i + 1] - 1]}, its newline at
    C{bounds[i + 1] - 1}.  The one place that finds them, for every
    build step that reads host names without an object per name.
    """
    import numpy as np

    ends = np.flatnonzero(data == 10)
    bounds: NDArray[Any] = np.zeros(len(ends) + 1, dtype=dtype)
    after = bounds[1:]
    after[:] = ends
    del ends
    np.add(after, 1, out=after)
    return bounds


def extended(target: array[int], values: Iterable[int]) -> array[int]:
    """
    An array of unsigned numbers with C{values} appended, kept as narrow as
    its values allow: C{target} itself, or a copy of it in a wider type
    when a value does not fit (the caller keeps the array returned).
    """
    if not isinstance(values, array):
        values = array("Q", values)
    top = max(values, default=0)
    while top >> (8 * target.itemsize):
        target = array(_WIDER[target.typecode], target)
    if values.typecode != target.typecode:
        values = array(target.typecode, values)
    target.extend(values)
    return target


class KindValues:
    """
    The valid values of one IOC kind found in a batch.

    :ivar kind: the IOC kind.
    :ivar positions: for each value, its position among the batch rows the
        caller chose.
    :ivar packed: hashes: the values packed (see the module docstring).
    :ivar texts: addresses and host names: the canonical texts.
    """

    __slots__ = ("kind", "packed", "positions", "texts")

    def __init__(
        self,
        kind: str,
        positions: list[int],
        *,
        packed: bytes | None = None,
        texts: list[str] | None = None,
    ) -> None:
        self.kind = kind
        self.positions = positions
        self.packed = packed
        self.texts = texts

    def text_list(self) -> list[str]:
        """
        The canonical texts of the values.
        """
        if self.texts is not None:
            return self.texts
        assert self.packed is not None
        width = FIXED_WIDTH[self.kind]
        hexed = self.packed.hex()
        step = 2 * width
        return [hexed[i : i + step] for i in range(0, len(hexed), step)]

    def packed_bytes(self) -> bytes:
        """
        The values packed as a L{PackedColumn} holds them (host names each
        followed by a newline).
        """
        if self.packed is not None:
            return self.packed
        assert self.texts is not None
        kind = self.kind
        if kind == "ipv4":
            return b"".join(map(socket.inet_aton, self.texts))
        if kind == "ipv6":
            pton = socket.inet_pton
            return b"".join(pton(socket.AF_INET6, text) for text in self.texts)
        if not self.texts:
            return b""
        return ("\n".join(self.texts) + "\n").encode("ascii")

    def subset(self, keep: list[int]) -> KindValues:
        """
        The values at the given indexes (into this object's values).
        """
        positions = [self.positions[i] for i in keep]
        if self.texts is not None:
            return KindValues(self.kind, positions, texts=[self.texts[i] for i in keep])
        assert self.packed is not None
        width = FIXED_WIDTH[self.kind]
        packed = b"".join(self.packed[i * width : (i + 1) * width] for i in keep)
        return KindValues(self.kind, positions, packed=packed)


class PackedColumn:
    """
    The packed values of one (source label, IOC kind); see the module
    docstring.
    """

    __slots__ = ("data", "meta", "tags")

    def __init__(self, kind: str) -> None:
        self.data = bytearray()
        self.meta = array("Q")
        self.tags: array[int] | None = None

    def __len__(self) -> int:
        return len(self.meta)

    def append(self, values: KindValues, meta: list[int], tags: list[int]) -> None:
        """
        Add C{values}, taking each one's meta and tag set id from the lists
        (indexed by position).
        """
        positions = values.positions
        whole = len(positions) == len(meta)
        self.data += values.packed_bytes()
        self.meta.extend(meta if whole else [meta[p] for p in positions])
        self._add_tags(tags if whole else [tags[p] for p in positions])

    def take(self, other: PackedColumn, tag_codes: Sequence[int]) -> None:
        """
        Append the values of another column, its tag set ids translated
        by C{tag_codes} (see L{tcbridge.feed.merge}).
        """
        self.data += other.data
        self.meta.extend(other.meta)
        if other.tags is None:
            self._add_tags([0] * len(other))
        else:
            self._add_tags([tag_codes[code] for code in other.tags])

    def _add_tags(self, chosen: Sequence[int]) -> None:
        """
        The tag set ids of the values just added: the array is made only
        once one has tags (2 bytes each, wider once an id needs it).
        """
        if self.tags is None and any(chosen):
            self.tags = array("H", bytes(2 * (len(self.meta) - len(chosen))))
        if self.tags is not None:
            self.tags = extended(self.tags, chosen)


class LabelStore:
    """
    Everything kept about one source label.

    :ivar label: the label (owner name or source tag).
    :ivar counts: its figures in the build's stats.
    :ivar index: its number in order of first appearance.
    :ivar columns: its packed columns by IOC kind (grouped modes).
    :ivar origins: C{scheme://host} prefixes of its indicators' web links,
        for report links when no C{web_url} is set (grouped modes).
    """

    __slots__ = ("_known", "_new_links", "columns", "counts", "index", "label", "origins")

    def __init__(self, label: str, counts: SourceCounts, index: int) -> None:
        self.label = label
        self.counts = counts
        self.index = index
        self.columns: dict[str, PackedColumn] = {}
        self.origins: set[str] = set()
        self._new_links: re.Pattern[str] | None = None
        self._known = 0

    def column(self, kind: str) -> PackedColumn:
        """
        The column of one IOC kind, made on first use.
        """
        column = self.columns.get(kind)
        if column is None:
            column = self.columns[kind] = PackedColumn(kind)
        return column

    def add_origins(self, links: list[str]) -> None:
        """
        Remember the C{scheme://host} part of each non-empty link.  Most
        links start with an origin seen before: one scan of all the links
        finds those that do not.
        """
        origins = self.origins
        if self._new_links is None or self._known != len(origins):
            known = "|".join(re.escape(origin + "/") for origin in sorted(origins))
            self._new_links = re.compile(rf"^(?!{known}).+$" if known else r"^.+$", re.M)
            self._known = len(origins)
        joined = "\n".join(links)
        if joined.count("\n") != len(links) - 1:
            found: Iterable[str] = (link for link in links if link)
        else:
            found = self._new_links.findall(joined)
        for link in found:
            end = link.find("/", 8)
            origins.add(link if end < 0 else link[:end])
