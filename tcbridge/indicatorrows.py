# -*- test-case-name: tests.unit.test_indicatordb -*-
"""
What the indicator store (L{tcbridge.indicatordb}) keeps, as records: one
indicator (L{StoredIndicator}, made from a pulled one by L{stored} and back
by L{indicator_of}, every field the feed uses kept exactly), a source's
state (L{SourceState}) and one sync's changes (L{StoreChanges}).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson
from attrs import field, frozen

from tcbridge.threatconnect.records import VALUE_COLUMNS, Indicator, IndicatorBatch


def _json(value: object) -> str:
    """
    C{value} as JSON text: ratings, confidences, scores and descriptions are
    kept exactly as ThreatConnect sent them (a rating sent as text stays
    text), so that a feed built from the store is the one a pull gives.
    """
    return orjson.dumps(value).decode()


@frozen
class StoredIndicator:
    """
    One indicator as stored.

    :ivar value: the indicator's first value, as ThreatConnect sent it
        (for a File, the first of md5, sha1, sha256 it has).
    :ivar source: the configured source it was pulled for (its key).
    :ivar values: its IOC values by column (C{md5}, C{sha256}, C{ip}...).
    :ivar label: the label its reports carry (the owner, for a C{*} source).
    """

    instance: str
    source: str
    owner: str
    type: str
    value: str
    id: str = ""
    rating: float | None = None
    confidence: int | None = None
    assess: int | None = None
    added: int | None = None
    modified: int | None = None
    tags: tuple[str, ...] = ()
    active: bool = True
    link: str | None = None
    values: dict[str, str] = field(factory=dict)
    description: str | None = None
    label: str = ""

    @property
    def key(self) -> tuple[str, str, str, str, str, str]:
        """
        The row's key, in the store's order.
        """
        return (self.instance, self.source, self.owner, self.type, self.value, self.id)

    def row(self) -> tuple[Any, ...]:
        """
        The row, in L{_COLUMNS} order.
        """
        return (
            self.instance,
            self.source,
            self.owner,
            self.type,
            self.value,
            self.id,
            _json(self.rating),
            _json(self.confidence),
            _json(self.assess),
            self.added,
            self.modified,
            orjson.dumps(list(self.tags)).decode(),
            int(self.active),
            self.link,
            orjson.dumps(self.values, option=orjson.OPT_SORT_KEYS).decode(),
            self.label,
            _json(self.description),
        )

    @classmethod
    def of_row(cls, row: tuple[Any, ...]) -> StoredIndicator:
        """
        The indicator a row holds.
        """
        (instance, source, owner, type_, value, id_, rating, confidence, assess, added,
         modified, tags, active, link, values, label, description) = row  # fmt: skip
        return cls(
            instance,
            source,
            owner,
            type_,
            value,
            id_,
            orjson.loads(rating),
            orjson.loads(confidence),
            orjson.loads(assess),
            added,
            modified,
            tuple(orjson.loads(tags)),
            bool(active),
            link,
            orjson.loads(values),
            orjson.loads(description),
            label,
        )


@frozen
class SourceState:
    """
    What the store knows of one source: its watermark and when the last
    full and delta syncs of it ended.
    """

    watermark: int | None = None
    last_full: float | None = None
    last_delta: float | None = None


@frozen
class StoreChanges:
    """
    One sync's changes to the store, applied in one transaction.

    :ivar replace: sources whose whole content is replaced (a full sync):
        their old rows go, C{upsert} brings the new ones.
    :ivar upsert: indicators added or updated.
    :ivar remove: C{(instance, source, owner, type, value)}: every row of
        that value leaves (whatever its id).
    :ivar states: per C{(instance, source)}, its new state.
    """

    replace: tuple[tuple[str, str], ...] = ()
    upsert: tuple[StoredIndicator, ...] = ()
    remove: tuple[tuple[str, str, str, str, str], ...] = ()
    states: dict[tuple[str, str], SourceState] = field(factory=dict)


#: StoredIndicator field -> Indicator field, for what passes unchanged.
_SAME: Final = (
    ("id", "id"),
    ("rating", "rating"),
    ("confidence", "confidence"),
    ("assess", "threat_assess_score"),
    ("modified", "last_modified"),
    ("tags", "tags"),
    ("description", "description"),
)


def stored(indicator: Indicator, instance: str, source: str = "") -> StoredIndicator | None:
    """
    What the store keeps of a pulled indicator of the configured C{source}
    (by default its label), or C{None} for one without a value (a type the
    feed cannot hold).
    """
    names = VALUE_COLUMNS.get(indicator.type, ())
    values = {name: v for name in names if (v := getattr(indicator, name))}
    if not values:
        return None
    same: dict[str, Any] = {mine: getattr(indicator, theirs) for mine, theirs in _SAME}
    return StoredIndicator(
        instance,
        source or indicator.source,
        indicator.owner,
        indicator.type,
        next(iter(values.values())),
        link=indicator.web_link,
        values=values,
        label=indicator.source,
        **same,
    )


def indicator_of(row: StoredIndicator) -> Indicator:
    """
    The indicator a stored row describes, as a pull would have handed it on.
    """
    same: dict[str, Any] = {theirs: getattr(row, mine) for mine, theirs in _SAME}
    same.update(row.values)
    return Indicator(
        source=row.label or row.source,
        owner=row.owner,
        type=row.type,
        web_link=row.link or "",
        **same,
    )


def batches_of_rows(rows: Sequence[tuple[Any, ...]]) -> list[tuple[str, IndicatorBatch]]:
    """
    The batches the store's rows (as L{StoredIndicator.row} lays them out)
    describe, as a pull would have handed them on: the same as
    L{indicator_of} of each row, grouped with L{IndicatorBatch.of}, but
    column by column, with one JSON decoding per column rather than one
    object per row (a delta rebuilds its feed from every row of the store).
    Each batch comes with the configured source its rows were pulled for.
    """
    grouped: dict[tuple[str, str, str], list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault((row[1], row[15] or row[1], row[3]), []).append(row)
    batches = []
    for (source, label, type_name), members in grouped.items():
        found = list(zip(*members, strict=True))
        values = _decoded(found[14])
        columns = {
            "owners": list(found[2]),
            "ids": list(found[5]),
            "ratings": _decoded(found[6]),
            "confidences": _decoded(found[7]),
            "assess": _decoded(found[8]),
            "modified": list(found[10]),
            "tags": [tuple(tags) for tags in _decoded(found[11])],
            "links": [link or "" for link in found[13]],
            "descriptions": _decoded(found[16]),
        }
        by_name = {
            name: [kept.get(name) for kept in values] for name in VALUE_COLUMNS.get(type_name, ())
        }
        batches.append((source, IndicatorBatch(label, type_name, by_name, columns)))
    return batches


def _decoded(texts: Sequence[str]) -> list[Any]:
    """
    The JSON texts of one column, decoded in one call.
    """
    decoded: list[Any] = orjson.loads("[" + ",".join(texts) + "]")
    return decoded


def rows_of_batch(instance: str, source: str, batch: IndicatorBatch) -> list[tuple[Any, ...]]:
    """
    The store rows (as L{StoredIndicator.row} lays them out) of a pulled
    batch of the configured C{source}: the same as C{stored(record,
    instance, source).row()} of each of its records, made column by column
    without an object per indicator (a full sync stores a million).
    Indicators without a value are left out.
    """
    names = VALUE_COLUMNS.get(batch.type, ())
    if not names or not len(batch):
        return []
    value_columns = [batch.values[name] for name in names]
    encode = _Encoder()
    ratings = encode.all(batch.column("ratings"))
    confidences = encode.all(batch.column("confidences"))
    assess = encode.all(batch.column("assess"))
    tags = encode.all([list(t) for t in batch.column("tags")], key=tuple)
    descriptions = encode.all(batch.column("descriptions"))
    label, kind = batch.source, batch.type
    rows = []
    for at, (owner, ident, modified, link) in enumerate(
        zip(
            batch.column("owners"),
            batch.column("ids"),
            batch.column("modified"),
            batch.column("links"),
            strict=True,
        )
    ):
        values = {
            name: v for name, column in zip(names, value_columns, strict=True) if (v := column[at])
        }
        if not values:
            continue
        rows.append(
            (
                instance,
                source or label,
                owner,
                kind,
                next(iter(values.values())),
                ident,
                ratings[at],
                confidences[at],
                assess[at],
                None,
                modified,
                tags[at],
                1,
                link,
                orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode(),
                label,
                descriptions[at],
            )
        )
    return rows


class _Encoder:
    """
    L{_json} of many values, each distinct value encoded once (ratings,
    confidences, tags and descriptions repeat a lot).  Values are told
    apart by type as well (C{3}, C{3.0} and C{True} encode differently),
    floats by their exact bits (C{0.0} and C{-0.0} are equal but differ).
    """

    def all(self, column: Sequence[Any], key: Callable[[Any], Any] | None = None) -> list[str]:
        known: dict[Any, str] = {}
        out = []
        for value in column:
            try:
                if value.__class__ is float:
                    marker = (float, value.hex())
                else:
                    marker = (value.__class__, value if key is None else key(value))
                text = known.get(marker)
                if text is None:
                    text = known[marker] = _json(value)
            except TypeError:  # unhashable: a list or object where a number belongs
                text = _json(value)
            out.append(text)
        return out


_KEY_OF = operator.itemgetter(0, 1, 2, 3, 4, 5)


def sort_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """
    Rows (sorted in place) in key order, as the store takes them fastest
    (rows with the same key keep their order, so the last one still wins).
    """
    rows.sort(key=_KEY_OF)
    return rows


def note_newest(newest: dict[str, int], source: str, rows: list[tuple[Any, ...]]) -> None:
    """
    Raise C{newest[source]} to the newest C{lastModified} among C{rows}
    (what a source's watermark moves to).
    """
    stamps = [modified for row in rows if isinstance(modified := row[10], int)]
    if stamps:
        newest[source] = max(newest.get(source, 0), max(stamps))
