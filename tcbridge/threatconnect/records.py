# -*- test-case-name: tests.unit.test_tc_parse -*-
"""
Plain records that leave the ThreatConnect side: L{IndicatorBatch}, the
indicators of one page and one type column by column (what a pull hands on:
no object per indicator), L{Indicator}, one indicator as a record (for tests
and for code that looks at a few), and L{SourcePull} figures for one pulled
source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from attrs import field, frozen


@frozen(slots=True)
class Indicator:
    """
    One ThreatConnect indicator, reduced to what a feed needs.

    Values are as ThreatConnect sent them (stripped of surrounding white space,
    otherwise untouched): validation and normalisation belong to the feed side.

    :ivar source: the label of the configured source this came from: the owner
        name for owner sources (and for each owner of a C{*} source), the
        [sources] tag for a legacy API path.
    :ivar owner: ThreatConnect owner name (C{ownerName}), or C{""} if absent.
    :ivar type: ThreatConnect type name: C{"File"}, C{"Address"}, C{"Host"},
        or another type name for indicators the feed side will skip.
    :ivar id: ThreatConnect indicator id as a string (C{""} if absent).
    :ivar md5: raw hash value of a File (likewise C{sha1}, C{sha256}); C{None} if absent.
    :ivar ip: the address of an Address indicator (IPv4 or IPv6 text).
    :ivar host: the host name of a Host indicator.
    :ivar rating: ThreatConnect threat rating, 0-5, or C{None} when unset.
    :ivar confidence: ThreatConnect confidence, 0-100, or C{None} when unset.
    :ivar last_modified: seconds since the epoch (UTC) or C{None}.
    :ivar web_link: ThreatConnect's C{webLink} for the indicator, or C{""}.
    :ivar description: free text, untrusted, or C{None}.
    :ivar tags: tag names, in ThreatConnect's order.
    :ivar threat_assess_score: ThreatConnect's ThreatAssess score, 0-1000, or
        C{None} when not sent (v3 sends it with C{fields=threatAssess}).
    """

    source: str
    owner: str
    type: str
    id: str = ""
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    ip: str | None = None
    host: str | None = None
    rating: float | None = None
    confidence: int | None = None
    last_modified: int | None = None
    web_link: str = ""
    description: str | None = None
    tags: tuple[str, ...] = field(default=())
    threat_assess_score: int | None = None


@frozen
class SourcePull:
    """
    What pulling one configured source produced.

    :ivar source: the configured source's name (its tag, or the owner name).
    :ivar owners: the owner names actually pulled (several for C{*}).
    :ivar indicators: indicator records handed on to the feed side.
    :ivar skipped: records that could not be read as indicators (no value,
        unknown shape); they never reach the feed.
    :ivar pages: pages fetched.
    :ivar inactive: items left out because ThreatConnect marks them inactive.
    :ivar duplicates: indicators ThreatConnect sent twice within one listing
        beyond the deliberate page overlap (the listing changed while it was
        read); dropped, they reach the feed once.
    :ivar restarts: listings read again from the start because more
        indicators vanished between two pages than the overlap covers.
    """

    source: str
    owners: tuple[str, ...]
    indicators: int
    skipped: int
    pages: int
    inactive: int = 0
    duplicates: int = 0
    restarts: int = 0


#: The value columns each ThreatConnect type fills in an L{IndicatorBatch}.
VALUE_COLUMNS: dict[str, tuple[str, ...]] = {
    "File": ("md5", "sha1", "sha256"),
    "Address": ("ip",),
    "Host": ("host",),
}

#: The columns every batch has, and the L{Indicator} field each one holds.
COLUMNS: dict[str, str] = {
    "owners": "owner",
    "ids": "id",
    "ratings": "rating",
    "confidences": "confidence",
    "modified": "last_modified",
    "links": "web_link",
    "descriptions": "description",
    "tags": "tags",
    "assess": "threat_assess_score",
}

#: Reads one column (by name) from the raw items a batch was made of.
ColumnReader = Callable[[list[Any], str], list[Any]]


class IndicatorBatch:
    """
    Indicators of one source label and one ThreatConnect type, one list per
    field (index I{i} of every list is indicator I{i}): what one page, or a
    chunk of one, gives.  Holding columns instead of one record per
    indicator keeps a page of 10,000 indicators at a few dozen lists, and a
    column nobody asks for (an Expanded-only field in a Condensed feed, say)
    is never read from the raw items at all.

    The columns (L{COLUMNS}) mean what the L{Indicator} fields of the same
    name mean; C{values} maps each value column of the type
    (L{VALUE_COLUMNS}: C{md5}/C{sha1}/C{sha256}, C{ip} or C{host}) to its
    list, and is empty for other types.

    :param columns: columns already read (the value columns at least).
    :param items: the raw items, for the columns not read yet.
    :param reader: how to read a column from the items.
    """

    __slots__ = ("_columns", "_items", "_reader", "source", "type", "values")

    def __init__(
        self,
        source: str,
        type: str,
        values: dict[str, list[str | None]],
        columns: dict[str, list[Any]] | None = None,
        items: list[Any] | None = None,
        reader: ColumnReader | None = None,
    ) -> None:
        self.source = source
        self.type = type
        self.values = values
        self._columns = dict(columns or {})
        self._items = items
        self._reader = reader
        if items is None and set(self._columns) != set(COLUMNS):
            raise TypeError("a batch without items needs every column")

    def column(self, name: str) -> list[Any]:
        """
        One column by name (see L{COLUMNS}), read on first use.
        """
        found = self._columns.get(name)
        if found is None:
            assert self._items is not None and self._reader is not None
            found = self._columns[name] = self._reader(self._items, name)
        return found

    owners = property(lambda self: self.column("owners"))
    ids = property(lambda self: self.column("ids"))
    ratings = property(lambda self: self.column("ratings"))
    confidences = property(lambda self: self.column("confidences"))
    modified = property(lambda self: self.column("modified"))
    links = property(lambda self: self.column("links"))
    descriptions = property(lambda self: self.column("descriptions"))
    tags = property(lambda self: self.column("tags"))
    assess = property(lambda self: self.column("assess"))

    def __len__(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else len(self.ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IndicatorBatch):
            return NotImplemented
        return (self.source, self.type, self.records()) == (
            other.source,
            other.type,
            other.records(),
        )

    def __repr__(self) -> str:
        return f"<IndicatorBatch {self.source!r} {self.type} x{len(self)}>"

    def select(self, indexes: Sequence[int]) -> IndicatorBatch:
        """
        A batch of the indicators at C{indexes}, in that order.
        """
        values = {name: [column[i] for i in indexes] for name, column in self.values.items()}
        columns = {name: [column[i] for i in indexes] for name, column in self._columns.items()}
        items = None if self._items is None else [self._items[i] for i in indexes]
        return IndicatorBatch(self.source, self.type, values, columns, items, self._reader)

    def keys(self) -> list[int | None]:
        """
        One key per indicator that identifies it within one listing: its
        owner, type and value (a File's value is its tuple of hashes; an
        indicator of another type is identified by its id, and has no key
        without one).  Keys are Python hashes: equal within one process.
        """
        kind = self.type
        owners = self.owners
        columns = [self.values[name] for name in VALUE_COLUMNS.get(kind, ())]
        if not columns:
            ids = self.ids
            return [
                hash((kind, owner, "#", ident)) if ident else None
                for owner, ident in zip(owners, ids, strict=True)
            ]
        salts = {owner: hash((kind, owner)) for owner in set(owners)}
        keys = map(hash, columns[0]) if len(columns) == 1 else map(hash, zip(*columns, strict=True))
        if len(salts) == 1:
            [salt] = salts.values()
            return [key ^ salt for key in keys]
        return [key ^ salts[owner] for key, owner in zip(keys, owners, strict=True)]

    def records(self) -> list[Indicator]:
        """
        The indicators as L{Indicator} records.
        """
        names = VALUE_COLUMNS.get(self.type, ())
        rows = zip(*(self.column(name) for name in COLUMNS), strict=True)
        fields = list(COLUMNS.values())
        out = []
        for index, row in enumerate(rows):
            values: dict[str, Any] = {name: self.values[name][index] for name in names}
            out.append(
                Indicator(
                    source=self.source,
                    type=self.type,
                    **dict(zip(fields, row, strict=True)),
                    **values,
                )
            )
        return out

    @classmethod
    def of(cls, records: Iterable[Indicator]) -> list[IndicatorBatch]:
        """
        Batches holding C{records}, one per (source, type) in order of first
        appearance, each in the records' order.
        """
        grouped: dict[tuple[str, str], list[Indicator]] = {}
        for record in records:
            grouped.setdefault((record.source, record.type), []).append(record)
        batches = []
        for (source, kind), members in grouped.items():
            columns = {name: [getattr(r, attr) for r in members] for name, attr in COLUMNS.items()}
            values = {
                name: [getattr(r, name) for r in members] for name in VALUE_COLUMNS.get(kind, ())
            }
            batches.append(cls(source, kind, values, columns))
        return batches
