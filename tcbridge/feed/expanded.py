# -*- test-case-name: tests.test_feed_builder -*-
"""
The Expanded feed: one report per ThreatConnect indicator, kept in
columns (L{ExpandedStore}: about 30 bytes per indicator plus its packed
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

import hashlib
import ipaddress
import socket
from array import array
from typing import Final

from tcbridge.threatconnect.records import IndicatorBatch

from .columns import FIXED_WIDTH, KindValues, LabelStore
from .text import http_link, valid_text

TC_TYPES: Final = ("File", "Address", "Host")
TYPE_CODE: Final = {name: code for code, name in enumerate(TC_TYPES)}
KIND_BITS: Final = {"md5": 1, "sha256": 2, "ipv4": 4, "ipv6": 8, "dns": 16}
KIND_ORDER: Final = ("md5", "sha256", "ipv4", "ipv6", "dns")
_MAX_NUMBER_DIGITS: Final = 19

Value = tuple[str, str]
Entry = tuple[int, int, str, str, str, tuple[Value, ...], tuple[str, ...]]
# (score, timestamp, type, link, description, ((kind, value), ...), tags)


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
        if ident and (at := link.find(ident)) >= 0:
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


class ExpandedStore:
    """
    Every indicator of an Expanded feed, column by column.
    """

    def __init__(self) -> None:
        self.label = array("H")
        self.number = array("Q")
        #: row -> id, for ids that are not a plain number (see module docstring)
        self.texts: dict[int, str] = {}
        self.type = array("B")
        self.kinds = array("B")
        self.length = array("B")
        self.blob = bytearray()
        self.score = array("B")
        self.stamp = array("q")
        self.link = array("I")
        self.description = array("I")
        self.tags = array("I")
        self.templates = _Templates()
        self.descriptions: list[str] = [""]
        self._description_index: dict[str, int] = {"": 0}

    def __len__(self) -> int:
        return len(self.label)

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
        per_position: dict[int, list[tuple[str, bytes, str]]] = {}
        for kind_values in values:
            packed = kind_values.packed_bytes()
            texts = kind_values.text_list()
            kind = kind_values.kind
            if kind == "dns":
                chunks = [text.encode("ascii") for text in texts]
            else:
                width = FIXED_WIDTH[kind]
                chunks = [packed[i * width : (i + 1) * width] for i in range(len(texts))]
            for position, chunk, text in zip(kind_values.positions, chunks, texts, strict=True):
                per_position.setdefault(position, []).append((kind, chunk, text))
        type_name = batch.type
        code = TYPE_CODE[type_name]
        raw_columns = batch.values
        for position in sorted(per_position):
            row = rows[position]
            found = per_position[position]
            found.sort(key=lambda item: KIND_ORDER.index(item[0]))
            ident = batch.ids[row]
            self._add_ident(ident, type_name, found)
            self.label.append(store.index)
            self.type.append(code)
            self.kinds.append(sum(KIND_BITS[kind] for kind, _, _ in found))
            packed = b"".join(chunk for _, chunk, _ in found)
            self.length.append(len(packed))
            self.blob += packed
            self.score.append(scores[position])
            self.stamp.append(stamps[position])
            self.tags.append(tags[position])
            self.description.append(self._describe(batch.descriptions[row]))
            first_kind, _, first_text = found[0]
            raw = _raw_value(raw_columns, type_name, first_kind, row)
            link = http_link(batch.links[row])
            self.link.append(self.templates.encode(link, raw, first_kind, first_text, ident))

    def _add_ident(self, ident: str, type_name: str, found: list[tuple[str, bytes, str]]) -> None:
        row = len(self.label)
        if ident.isascii() and ident.isdigit() and len(ident) <= 20:
            if len(ident) <= _MAX_NUMBER_DIGITS and (ident[0] != "0" or ident == "0"):
                self.number.append(int(ident))
                return
            self.texts[row] = ident
        else:
            self.texts[row] = hashed_ident(type_name, (found[0][0], found[0][2]))
        self.number.append(0)

    # -- reading back -----------------------------------------------------

    def ident(self, row: int) -> str:
        """
        The id part of a row's report id.
        """
        text = self.texts.get(row)
        return text if text is not None else str(self.number[row])

    def values(self, row: int, start: int) -> tuple[Value, ...]:
        """
        A row's values as C{(kind, text)} pairs, in kind order.
        """
        out = []
        at = start
        kinds = self.kinds[row]
        end = start + self.length[row]
        for kind in KIND_ORDER:
            if kinds & KIND_BITS[kind]:
                width = FIXED_WIDTH.get(kind, end - at)
                out.append((kind, value_text(kind, bytes(self.blob[at : at + width]))))
                at += width
        return tuple(out)

    def entry(self, row: int, start: int, tag_sets: list[tuple[str, ...]]) -> Entry:
        """
        A row as the (score, timestamp, type, link, description, values,
        tags) tuple the one-by-one logic works on.
        """
        values = self.values(row, start)
        link = self.templates.text(self.link[row], dict(values), self.ident(row))
        return (
            self.score[row],
            self.stamp[row],
            TC_TYPES[self.type[row]],
            link,
            self.descriptions[self.description[row]],
            values,
            tag_sets[self.tags[row]],
        )


def _raw_value(
    columns: dict[str, list[str | None]], type_name: str, kind: str, row: int
) -> str | None:
    """
    The first value of an indicator as ThreatConnect sent it, which its web
    link may hold.
    """
    if type_name == "File":
        return columns[kind][row]
    if type_name == "Address":
        return columns["ip"][row]
    return columns["host"][row]
