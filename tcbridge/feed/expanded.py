# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
The Expanded feed: one report per ThreatConnect indicator, kept in
columns (L{ExpandedStore}: about 17 bytes per indicator plus its packed
values) and planned with numpy.

B{Report ids}: C{<label prefix>-<ThreatConnect id>}, or C{h} and 16 hex
digits of a value hash when the indicator has no usable id.  Two
indicators of one label that share an id but differ in type or value both
reach the feed: the one whose (type, values) sorts first keeps the plain
id, each other one gets C{-} and 12 hex digits of a hash of its type and
values after it.

B{One value, one report.}  Indicators with identical IOC sets (from any
labels) become one report: its id, link and description are those of the
first (label, id) in sorted order, its title names every label, its score
is the highest and its tags the union.  A value shared by reports with
different IOC sets stays only in the one with the highest score, then
newest timestamp, then smallest id; a report left with no IOC is dropped
(counted as C{duplicate}).  Only the indicators holding a value some other
indicator holds too (or an id another one has) go through that logic, one
by one; every other indicator is one report as it is.

B{Links} are kept as templates: the text around the value or the id
(C{...file.xhtml?file=<md5>&owner=...}), shared by many indicators, so a
million links cost a few bytes each.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import socket
from array import array
from collections.abc import Sequence
from itertools import compress
from typing import TYPE_CHECKING, Any, Final, cast

from tcbridge.threatconnect.records import IndicatorBatch

from .columns import FIXED_WIDTH, KindValues, LabelStore, extended, name_bounds
from .text import http_link, valid_text

TC_TYPES: Final = ("File", "Address", "Host")
KIND_BITS: Final = {"md5": 1, "sha256": 2, "ipv4": 4, "ipv6": 8, "dns": 16}
#: the IOC kinds of each ThreatConnect type, as bits: a row's kinds say its type
FILE_KINDS: Final = 1 | 2
ADDRESS_KINDS: Final = 4 | 8
KIND_ORDER: Final = ("md5", "sha256", "ipv4", "ipv6", "dns")
_MAX_NUMBER_DIGITS: Final = 19

if TYPE_CHECKING:  # numpy is imported when a build needs it, not before the pull
    import numpy as np
    from numpy.typing import NDArray

Value = tuple[str, str]
Entry = tuple[int, int, str, str, str, tuple[Value, ...], tuple[str, ...]]
# (score, timestamp, type, link, description, ((kind, value), ...), tags)


#: The length of C{"https://"}: text before a value or id at least this
#: long holds a link's whole scheme.
_SCHEME: Final = 8


def _kept_as_given(ident: str) -> bool:
    """
    Whether a report keeps a ThreatConnect id as it was sent (digits,
    20 at most), so that a link template may put it back in; any other id
    is replaced by a hash (see L{hashed_ident}).
    """
    return ident.isascii() and ident.isdigit() and len(ident) <= 20


def hashed_ident(kind: str, first: Value) -> str:
    """
    The id of an indicator with no usable ThreatConnect id: C{h} and 16 hex
    digits of a hash of its type and first value.
    """
    digest = hashlib.sha1(f"{kind}\0{first[0]}\0{first[1]}".encode("ascii"))  # noqa: S324
    return "h" + digest.hexdigest()[:16]


def content_suffix(kind: str, values: tuple[Value, ...]) -> str:
    text = "\0".join([kind, *(f"{k}\0{v}" for k, v in values)])
    return hashlib.sha1(text.encode("ascii")).hexdigest()[:12]  # noqa: S324


def value_text(kind: str, packed: bytes) -> str:
    """
    The canonical text of one packed value.
    """
    if kind == "md5" or kind == "sha256":
        return packed.hex()
    if kind == "ipv4":
        return socket.inet_ntoa(packed)
    if kind == "ipv6":
        return ipaddress.IPv6Address(packed).compressed
    return packed.decode("ascii")


class _Templates:
    """
    Link templates: (text before, what goes between, text after), each an
    index; index 0 is "no link".  What goes between: C{""} nothing (the
    link as written), a value kind (its canonical text), the kind followed
    by C{"^"} (its text in upper case), or C{"#"} (the ThreatConnect id).
    """

    def __init__(self) -> None:
        self.parts: list[tuple[str, str, str]] = [("", "", "")]
        self._index: dict[tuple[str, str, str], int] = {("", "", ""): 0}

    def code(self, parts: tuple[str, str, str]) -> int:
        found = self._index.get(parts)
        if found is None:
            found = self._index[parts] = len(self.parts)
            self.parts.append(parts)
        return found

    def encode(self, link: str, raw: str | None, kind: str, text: str, ident: str) -> int:
        """
        The template code of one indicator's link.
        """
        if not link:
            return 0
        if raw and (at := link.find(raw)) >= 0:
            if raw == text:
                middle = kind
            elif raw == text.upper():
                middle = kind + "^"
            else:
                middle = ""
            if middle:
                return self.code((link[:at], middle, link[at + len(raw) :]))
        if _kept_as_given(ident) and (at := link.find(ident)) >= 0:
            return self.code((link[:at], "#", link[at + len(ident) :]))
        return self.code((link, "", ""))

    def text(self, code: int, values: dict[str, str], ident: str) -> str:
        before, middle, after = self.parts[code]
        if not middle:
            return before
        if middle == "#":
            return before + ident + after
        if middle.endswith("^"):
            return before + values[middle[:-1]].upper() + after
        return before + values[middle] + after


class ValueColumn:
    """
    The values of one IOC kind in an Expanded store: the row each belongs
    to (ascending) and the values packed as in L{tcbridge.feed.columns}.
    """

    __slots__ = ("_starts", "data", "rows")

    def __init__(self) -> None:
        self.rows = array("I")
        self.data = bytearray()
        self._starts: NDArray[np.unsignedinteger[Any]] | None = None

    def starts(self) -> NDArray[np.unsignedinteger[Any]]:
        """
        Host names: where each one starts in C{data}, and then where the
        last one's newline ends (so name C{i} is C{data[starts[i] :
        starts[i + 1] - 1]}).  Worked out once, when the build first asks,
        in 4 bytes each while C{data} is under 4 GiB.
        """
        found = self._starts
        if found is None or len(found) != len(self.rows) + 1:
            import numpy as np

            data = np.frombuffer(self.data, dtype=np.uint8)
            kind = np.uint32 if len(data) < 2**32 else np.uint64
            found = self._starts = name_bounds(data, kind)
            del data
        return found


class ExpandedStore:
    """
    Every indicator of an Expanded feed, column by column: per row (one
    indicator) its label, id, IOC kinds (a bit each, which also say its
    type), score,
    timestamp, link template, description and tag set; per IOC kind, a
    L{ValueColumn}.  A page is added with a handful of array operations
    and a few dict lookups per indicator, and takes about 17 bytes per
    indicator plus its packed values: ids and timestamps take 4 bytes,
    codes 2 and labels 1 until a value needs more (see L{extended}), so
    read the columns with their own item type.
    """

    def __init__(self) -> None:
        self.label = array("B")
        self.number = array("I")
        #: row -> id, for ids that are not a plain number (see module docstring)
        self.texts: dict[int, str] = {}
        self.kinds = array("B")
        self.score = array("B")
        self.stamp = array("I")
        self.link = array("H")
        self.description = array("H")
        self.tags = array("H")
        self.values: dict[str, ValueColumn] = {kind: ValueColumn() for kind in KIND_ORDER}
        self.templates = _Templates()
        self.descriptions: list[str] = [""]
        #: description text -> code (C{None}, the usual "no description", is 0)
        self._description_index: dict[str | None, int] = {"": 0, None: 0}

    def __len__(self) -> int:
        return len(self.label)

    def _describe_all(self, raws: list[Any]) -> list[int]:
        """
        The description code of each raw description (known texts found in
        one pass; new ones, and anything that is not text, one by one).
        """
        try:
            found: list[int | None] = list(map(self._description_index.get, raws))
        except TypeError:  # something unhashable where a description goes
            return [self._describe(raw) for raw in raws]
        if None not in found:
            return cast("list[int]", found)
        return [
            self._describe(raw) if code is None else code
            for code, raw in zip(found, raws, strict=True)
        ]

    def _describe(self, raw: object) -> int:
        if not isinstance(raw, str):
            return 0
        found = self._description_index.get(raw)
        if found is None:
            found = self._description_index[raw] = len(self.descriptions)
            self.descriptions.append(valid_text(raw))
        return found

    def add(
        self,
        store: LabelStore,
        batch: IndicatorBatch,
        rows: list[int],
        scores: list[int],
        stamps: list[int],
        tags: list[int],
        values: list[KindValues],
    ) -> None:
        """
        Keep the indicators at C{rows} that have at least one value (the
        positions in C{values} refer to C{rows}).
        """
        count = len(rows)
        kinds = bytearray(count)
        for kind_values in values:
            bit = KIND_BITS[kind_values.kind]
            for position in kind_values.positions:
                kinds[position] |= bit
        used = list(range(count)) if 0 not in kinds else list(compress(range(count), kinds))
        base = len(self.label)
        if len(used) == count:
            row_of: list[int] = list(range(base, base + count))
        else:
            row_of = [0] * count
            for rank, position in enumerate(used):
                row_of[position] = base + rank
        for kind_values in values:
            column = self.values[kind_values.kind]
            column.rows.extend([row_of[p] for p in kind_values.positions])
            column.data += kind_values.packed_bytes()
        every = len(used) == count
        chosen = rows if every else [rows[p] for p in used]
        self.label = extended(self.label, [store.index] * len(used))
        self.kinds.frombytes(bytes(kinds) if every else bytes(kinds[p] for p in used))
        self.score.extend(scores if every else [scores[p] for p in used])
        self.stamp = extended(self.stamp, stamps if every else [stamps[p] for p in used])
        self.tags = extended(self.tags, tags if every else [tags[p] for p in used])
        descriptions = batch.descriptions
        codes = self._describe_all([descriptions[row] for row in chosen])
        self.description = extended(self.description, codes)
        ids = batch.ids
        idents = [ids[row] for row in chosen]
        firsts = _first_values(values, used)
        self._add_idents(idents, batch.type, firsts)
        self._add_links(batch, chosen, idents, firsts)

    def _add_idents(self, idents: list[str], type_name: str, firsts: list[Value]) -> None:
        """
        The ids of the rows just added: plain numbers kept as numbers, the
        others as text (a hash of the first value for an indicator without
        a usable id).
        """
        base = len(self.number)
        if _plain_numbers(idents):
            self.number = extended(self.number, list(map(int, idents)))
            return
        numbers = [0] * len(idents)
        for offset, ident in enumerate(idents):
            if _kept_as_given(ident):
                if len(ident) <= _MAX_NUMBER_DIGITS and (ident[0] != "0" or ident == "0"):
                    numbers[offset] = int(ident)
                    continue
                self.texts[base + offset] = ident
            else:
                self.texts[base + offset] = hashed_ident(type_name, firsts[offset])
        self.number = extended(self.number, numbers)

    def _add_links(
        self,
        batch: IndicatorBatch,
        chosen: list[int],
        idents: list[str],
        firsts: list[Value],
    ) -> None:
        """
        The link template of each row just added (a row whose link has the
        same shape as the one before it costs a comparison or two: links
        made of the value, as v2 gives them, or of the id, as v3's
        C{webLink} is).
        """
        links = batch.links
        templates = self.templates
        codes = []
        # The template last made for each way the value (or the id: "#")
        # can appear.
        recent: dict[str, tuple[int, str, str]] = {}
        raws = _raw_values(batch, chosen, firsts)
        for offset, row in enumerate(chosen):
            kind, text = firsts[offset]
            raw = raws[offset]
            link = links[row]
            if raw:
                middle = kind if raw == text else kind + "^" if raw == text.upper() else ""
                known = recent.get(middle)
                if known is not None and link == known[1] + raw + known[2]:
                    codes.append(known[0])
                    continue
            ident = idents[offset]
            known = recent.get("#")
            if (
                known is not None
                and _kept_as_given(ident)
                and link == known[1] + ident + known[2]
                and link.find(ident) == len(known[1])
                and not (raw and raw in link)
            ):
                # What encode would make of it: the value is not in the
                # link, the id first is where the template has it, and the
                # link is as valid as the one the template came from.
                codes.append(known[0])
                continue
            code = templates.encode(http_link(link), raw, kind, text, ident)
            codes.append(code)
            before, middle, after = templates.parts[code]
            if middle and len(before) >= _SCHEME:
                # Only a template whose text before holds the whole scheme:
                # a link made from it is then as valid as this one.
                recent[middle] = (code, before, after)
        self.link = extended(self.link, codes)

    def take(
        self, other: ExpandedStore, label_codes: Sequence[int], tag_codes: Sequence[int]
    ) -> None:
        """
        Append another store's rows (see L{tcbridge.feed.merge}): labels and
        tag sets translated by the codes given, link templates and
        descriptions into this store's, value rows moved past this store's.
        """
        base = len(self)
        links = [self.templates.code(parts) for parts in other.templates.parts]
        descriptions = [0] * len(other.descriptions)
        for raw, code in other._description_index.items():
            descriptions[code] = self._describe(raw)
        self.label = extended(self.label, map(label_codes.__getitem__, other.label))
        self.number = extended(self.number, other.number)
        self.texts.update({base + row: text for row, text in other.texts.items()})
        self.kinds.extend(other.kinds)
        self.score.extend(other.score)
        self.stamp = extended(self.stamp, other.stamp)
        self.link = extended(self.link, map(links.__getitem__, other.link))
        self.description = extended(
            self.description, map(descriptions.__getitem__, other.description)
        )
        self.tags = extended(self.tags, map(tag_codes.__getitem__, other.tags))
        for kind, column in other.values.items():
            mine = self.values[kind]
            mine.rows.extend(row + base for row in column.rows)
            mine.data += column.data

    # -- reading back -----------------------------------------------------

    def ident(self, row: int) -> str:
        """
        The id part of a row's report id.
        """
        text = self.texts.get(row)
        return text if text is not None else str(self.number[row])

    def row_values(self, row: int) -> tuple[Value, ...]:
        """
        A row's values as C{(kind, text)} pairs, in kind order.
        """
        out = []
        kinds = self.kinds[row]
        for kind in KIND_ORDER:
            if kinds & KIND_BITS[kind]:
                column = self.values[kind]
                at = bisect.bisect_left(column.rows, row)
                out.append((kind, value_text(kind, _packed_at(kind, column, at))))
        return tuple(out)

    def entry(self, row: int, tag_sets: list[tuple[str, ...]]) -> Entry:
        """
        A row as the (score, timestamp, type, link, description, values,
        tags) tuple the one-by-one logic works on.
        """
        values = self.row_values(row)
        link = self.templates.text(self.link[row], dict(values), self.ident(row))
        return (
            self.score[row],
            self.stamp[row],
            TC_TYPES[type_code(self.kinds[row])],
            link,
            self.descriptions[self.description[row]],
            values,
            tag_sets[self.tags[row]],
        )


def type_code(kinds: int) -> int:
    """
    The ThreatConnect type (its index in L{TC_TYPES}) of a row with these
    IOC kinds (a File holds hashes, an Address addresses, a Host a name).
    """
    return 0 if kinds & FILE_KINDS else 1 if kinds & ADDRESS_KINDS else 2


def _plain_numbers(idents: list[str]) -> bool:
    """
    Whether every id is a plain number: ASCII digits, not empty, no leading
    zero, at most 19 digits (checked on one joined string, not one by one).
    """
    if not idents:
        return True
    text = "," + ",".join(idents) + ","
    return (
        text.isascii()
        and text.replace(",", "").isdigit()
        and ",," not in text
        and ",0" not in text
        and max(map(len, idents)) <= _MAX_NUMBER_DIGITS
    )


def _packed_at(kind: str, column: ValueColumn, at: int) -> bytes:
    """
    The packed value at index C{at} of a column (host names: without the
    newline; where each name starts is worked out once).
    """
    width = FIXED_WIDTH.get(kind)
    if width is not None:
        return bytes(column.data[at * width : (at + 1) * width])
    starts = column.starts()
    return bytes(column.data[int(starts[at]) : int(starts[at + 1]) - 1])


def _first_values(values: list[KindValues], used: list[int]) -> list[Value]:
    """
    The first value (kind, text) of each used position, in kind order.
    """
    first: dict[int, Value] = {}
    for kind in reversed(KIND_ORDER):
        for kind_values in values:
            if kind_values.kind == kind:
                texts = kind_values.text_list()
                first.update(zip(kind_values.positions, ((kind, t) for t in texts), strict=False))
    return [first[p] for p in used]


def _raw_values(batch: IndicatorBatch, rows: list[int], firsts: list[Value]) -> list[str | None]:
    """
    The first value of each indicator at C{rows} as ThreatConnect sent it,
    which its web link may hold (for a File, the hash of the kind its first
    value is).
    """
    columns = batch.values
    if batch.type == "File":
        return [columns[kind][row] for (kind, _), row in zip(firsts, rows, strict=True)]
    column = columns["ip" if batch.type == "Address" else "host"]
    return [column[row] for row in rows]
