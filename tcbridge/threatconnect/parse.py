# -*- test-case-name: tests.unit.test_tc_parse -*-
"""
Pure functions turning raw ThreatConnect JSON into L{IndicatorBatch} columns
(no object per indicator: a page is read field by field).

Nothing here raises on bad data: an item that is not an object, or that has
no usable value, is skipped and counted.  An item ThreatConnect marks
inactive (C{"active": false}) is left out and counted apart, as inactive.
Values are stripped of surrounding white space and otherwise passed on as
sent; validating them is the feed side's job.

Shapes read: v2 per-type items (C{ip}, C{hostName}, C{md5}/C{sha1}/C{sha256}),
v1/v2 generic items (C{type} + C{summary}, multi-hash File summaries in any
subset), v3 items (both, with C{tags.data}), C{ownerName} or
C{owner: {id, name, type}}, ids as numbers or strings, dates with no zone
(UTC), C{Z} or an offset, rating and confidence possibly absent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from itertools import repeat
from typing import Any

from attrs import field, frozen

from .records import VALUE_COLUMNS, Indicator, IndicatorBatch

#: v2 per-type list key ("apiEntity") -> (ThreatConnect type name, value fields)
TYPED_ENTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "file": ("File", ("md5", "sha1", "sha256")),
    "address": ("Address", ("ip",)),
    "host": ("Host", ("hostName",)),
}

_HASH_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256"}
_HEX = frozenset("0123456789abcdefABCDEF")
_CANONICAL_TYPES = {"file": "File", "address": "Address", "host": "Host"}


def _text(value: Any) -> str | None:
    """
    A stripped, non-empty string, or C{None}.
    """
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _id(value: Any) -> str:
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return str(value)
    return _text(value) or ""


def _owner(item: dict[str, Any], default: str) -> str:
    name = _text(item.get("ownerName"))
    if name is not None:
        return name
    owner = item.get("owner")
    if isinstance(owner, dict):
        name = _text(owner.get("name"))
        if name is not None:
            return name
    elif isinstance(owner, str) and owner.strip():
        return owner.strip()
    return default


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _rating(value: Any) -> float | None:
    return _number(value)


def _confidence(value: Any) -> int | None:
    number = _number(value)
    if number is None:
        return None
    return round(number)


def parse_date(value: Any) -> int | None:
    """
    Seconds since the epoch (UTC) for a ThreatConnect date:
    C{2017-07-13T17:50:17} (no zone: UTC), C{...Z}, C{...-04:00}, optionally
    with fractional seconds.  C{None} if absent or unparseable.
    """
    return _parse_date_text(value) if isinstance(value, str) else None


@lru_cache(maxsize=4096)
def _parse_date_text(value: str) -> int | None:
    """
    L{parse_date} for a string; cached, since many indicators of one import
    share their timestamps.
    """
    text = value.strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def forget_dates() -> None:
    """
    Empty the date cache (at the end of a sync: its keys are strings of the
    pages just read, and would otherwise keep their memory in use).
    """
    _parse_date_text.cache_clear()


def is_inactive(item: dict[str, Any]) -> bool:
    """
    Whether an item says it is inactive: C{"active": false} (or the string
    C{"false"}, as v2 sends some flags).  An item without C{active} is active.
    """
    active = item.get("active")
    if active is False:
        return True
    return isinstance(active, str) and active.strip().lower() == "false"


def _threat_assess(value: Any) -> int | None:
    """
    ThreatConnect's ThreatAssess score (0-1000), or C{None} if absent or out
    of range.
    """
    number = _number(value)
    if number is None or not 0 <= number <= 1000:
        return None
    return round(number)


def _items(items: Any) -> tuple[list[Any], int]:
    """
    The list to walk, and how many to count as skipped up front (1 for a
    non-list that is not C{None}).
    """
    if items is None:
        return [], 0
    if isinstance(items, list):
        return items, 0
    return [], 1


def _usable(
    items: list[Any], active_only: bool
) -> tuple[list[dict[str, Any]], int, list[dict[str, Any]]]:
    """
    The items that are objects (and, with C{active_only}, not marked
    inactive), how many were not objects, and the inactive ones.
    """
    skipped = 0
    if items and set(map(type, items)) != {dict}:
        objects = [item for item in items if isinstance(item, dict)]
        skipped = len(items) - len(objects)
        items = objects
    inactive: list[dict[str, Any]] = []
    if active_only and items:
        flags = [item.get("active") for item in items]
        if flags.count(None) + flags.count(True) != len(flags):
            inactive = [item for item in items if is_inactive(item)]
            items = [item for item in items if not is_inactive(item)]
    return items, skipped, inactive


def _texts(raw: list[Any]) -> list[str | None]:
    """
    L{_text} of each value: stripped non-empty strings, else C{None}.
    """
    if set(map(type, raw)) <= {str, type(None)}:
        if None not in raw:
            return [value.strip() or None for value in raw]
        return [(value.strip() or None) if value else None for value in raw]
    return [(value.strip() or None) if value.__class__ is str else _text(value) for value in raw]


def _column(items: list[dict[str, Any]], key: str) -> list[Any]:
    return list(map(dict.get, items, repeat(key)))


def _owners(items: list[dict[str, Any]], default: str) -> list[str]:
    raw = _column(items, "ownerName")
    names = set(raw)
    if all(name.__class__ is str and name and name == name.strip() for name in names):
        return raw
    return [_owner(item, default) for item in items]


def _ids(raw: list[Any]) -> list[str]:
    if set(map(type, raw)) == {int}:
        return list(map(str, raw))
    return [str(value) if value.__class__ is int else _id(value) for value in raw]


def _ratings(raw: list[Any]) -> list[float | None]:
    if set(map(type, raw)) <= {float, int, type(None)} and math.isfinite(sum(filter(None, raw))):
        return raw
    return [None if value is None else _rating(value) for value in raw]


def _confidences(raw: list[Any]) -> list[int | None]:
    if set(map(type, raw)) <= {int, type(None)}:
        return raw
    return [None if value is None else _confidence(value) for value in raw]


def _dates(raw: list[Any]) -> list[int | None]:
    if set(map(type, raw)) == {str}:
        return list(map(_parse_date_text, raw))
    return [_parse_date_text(value) if value.__class__ is str else None for value in raw]


def _stripped(raw: list[Any]) -> list[str]:
    if set(map(type, raw)) == {str}:
        return list(map(str.strip, raw))
    return [value.strip() if value.__class__ is str else "" for value in raw]


def _descriptions(raw: list[Any]) -> list[str | None]:
    if raw.count(None) == len(raw):
        return raw
    return [value.strip() if isinstance(value, str) else None for value in raw]


def _assess(raw: list[Any]) -> list[int | None]:
    if raw.count(None) == len(raw):
        return raw
    return [None if value is None else _threat_assess(value) for value in raw]


def _tag_names(raw: Any) -> tuple[str, ...]:
    """
    Tag names from a v2 C{tag} list or a v3 C{tags} object (C{{"data": [...]}}).
    """
    if raw.__class__ is dict:
        raw = raw.get("data")
    if raw.__class__ is list:
        try:
            names = tuple([tag["name"] for tag in raw])
            if "" not in names and names == tuple(map(str.strip, names)):
                return names
        except (TypeError, KeyError):
            pass
    if not isinstance(raw, list):
        return ()
    found = []
    for tag in raw:
        text = _text(tag.get("name") if isinstance(tag, dict) else tag)
        if text is not None:
            found.append(text)
    return tuple(found)


def _all_tags(items: list[dict[str, Any]], typed: bool) -> list[tuple[str, ...]]:
    """
    Every item's tag names: from C{tag} (v2), else from C{tags} (v3; never
    in a v2 per-type listing, so not looked for there).
    """
    raw = _column(items, "tag")
    if None in raw and not typed:
        v3 = _column(items, "tags")
        raw = [tag if tag is not None else other for tag, other in zip(raw, v3, strict=True)]
    return [() if tag is None else _tag_names(tag) for tag in raw]


_READERS: dict[str, Callable[[list[dict[str, Any]]], list[Any]]] = {
    "ids": lambda items: _ids(_column(items, "id")),
    "ratings": lambda items: _ratings(_column(items, "rating")),
    "confidences": lambda items: _confidences(_column(items, "confidence")),
    "modified": lambda items: _dates(_column(items, "lastModified")),
    "links": lambda items: _stripped(_column(items, "webLink")),
    "descriptions": lambda items: _descriptions(_column(items, "description")),
    "assess": lambda items: _assess(_column(items, "threatAssessScore")),
}


def _batch(
    items: list[dict[str, Any]],
    type_name: str,
    values: dict[str, list[str | None]],
    source: str,
    owner: str,
    typed: bool,
) -> IndicatorBatch:
    """
    A batch of C{items} with C{values}; the other columns are read from the
    items when first asked for.

    :param typed: the items come from a v2 per-type listing.
    """

    def read(items: list[Any], name: str) -> list[Any]:
        if name == "owners":
            return _owners(items, owner)
        if name == "tags":
            return _all_tags(items, typed)
        return _READERS[name](items)

    return IndicatorBatch(source, type_name, values, items=items, reader=read)


def _drop_valueless(
    items: list[dict[str, Any]], values: dict[str, list[str | None]]
) -> tuple[list[dict[str, Any]], dict[str, list[str | None]], int]:
    """
    Leave out the items none of whose value columns holds anything.
    """
    columns = list(values.values())
    if not columns or not items or any(None not in column for column in columns):
        return items, values, 0
    keep = [i for i, row in enumerate(zip(*columns, strict=True)) if row.count(None) != len(row)]
    if len(keep) == len(items):
        return items, values, 0
    kept = {name: [column[i] for i in keep] for name, column in values.items()}
    return [items[i] for i in keep], kept, len(items) - len(keep)


@frozen
class ParsedPage:
    """
    What one page of items gave.

    :ivar batches: the indicators read, one batch per type (in order of
        first appearance), each in ThreatConnect's order.
    :ivar skipped: items that could not be read as indicators.
    :ivar inactive: items left out because ThreatConnect marks them inactive.
    :ivar left_inactive: those items, read as indicators (for explaining
        why a value is not in the feed; never built into one).
    """

    batches: list[IndicatorBatch]
    skipped: int = 0
    inactive: int = 0
    left_inactive: list[IndicatorBatch] = field(factory=list)

    def __len__(self) -> int:
        return sum(map(len, self.batches))

    @property
    def indicators(self) -> list[Indicator]:
        """
        The indicators as records, batch after batch.
        """
        return [record for batch in self.batches for record in batch.records()]


def parse_typed(entity: str, items: Any, source: str, owner: str) -> tuple[list[Indicator], int]:
    """
    L{parse_typed_page} as C{(indicators, skipped)}; inactive items are left
    out and not counted.
    """
    page = parse_typed_page(entity, items, source, owner)
    return page.indicators, page.skipped


def parse_typed_page(
    entity: str, items: Any, source: str, owner: str, *, active_only: bool = True
) -> ParsedPage:
    """
    Parse one v2 per-type page (C{data.file}, C{data.address}, C{data.host})
    into one L{IndicatorBatch}, column by column.

    :param entity: the list key: C{"file"}, C{"address"} or C{"host"}.
    :param items: the JSON list under that key.
    :param source: L{IndicatorBatch.source} of the batch.
    :param owner: the owner name to use where an item names none.
    :param active_only: leave out (and count) items marked inactive.
    :raise ValueError: for an unknown C{entity} (a programming error).
    """
    try:
        type_name, fields = TYPED_ENTITIES[entity]
    except KeyError:
        raise ValueError(f"unknown ThreatConnect entity {entity!r}") from None
    walk, skipped = _items(items)
    usable, junk, inactive = _usable(walk, active_only)
    names = VALUE_COLUMNS[type_name]
    values = {
        name: _texts(_column(usable, field)) for name, field in zip(names, fields, strict=True)
    }
    usable, values, valueless = _drop_valueless(usable, values)
    batches = [_batch(usable, type_name, values, source, owner, True)] if usable else []
    left = (
        parse_typed_page(entity, inactive, source, owner, active_only=False) if inactive else None
    )
    return ParsedPage(
        batches,
        skipped + junk + valueless,
        len(inactive),
        left.batches if left is not None else [],
    )


def split_file_summary(summary: str) -> dict[str, str]:
    """
    Split a File summary (C{"md5 : sha1 : sha256"}, any subset, in that order)
    into C{{"md5": ..., "sha1": ..., "sha256": ...}}, classifying each part by
    its length (32, 40 or 64 hex digits).  Parts that are not hashes of one of
    those lengths are dropped; the first part of each kind wins.
    """
    found: dict[str, str] = {}
    for part in summary.split(":"):
        part = part.strip()
        kind = _HASH_BY_LENGTH.get(len(part))
        if kind is None or kind in found or not set(part) <= _HEX:
            continue
        found[kind] = part
    return found


def parse_generic(items: Any, source: str, owner: str) -> tuple[list[Indicator], int]:
    """
    L{parse_generic_page} as C{(indicators, skipped)}; inactive items are
    left out and not counted.
    """
    page = parse_generic_page(items, source, owner)
    return page.indicators, page.skipped


def _generic_values(type_name: str, items: list[dict[str, Any]]) -> dict[str, list[str | None]]:
    """
    The value columns of generic items of one type: File hashes from
    C{md5}/C{sha1}/C{sha256} if any is there, else from the summary;
    Address from the summary, else C{ip}; Host from the summary, else
    C{hostName}; nothing for other types.
    """
    summaries = _texts(_column(items, "summary"))
    if type_name == "File":
        hashes = [_texts(_column(items, name)) for name in ("md5", "sha1", "sha256")]
        for i, row in enumerate(zip(*hashes, strict=True)):
            if row == (None, None, None) and summaries[i] is not None:
                found = split_file_summary(summaries[i])  # type: ignore[arg-type]
                for column, name in zip(hashes, ("md5", "sha1", "sha256"), strict=True):
                    column[i] = found.get(name)
        return dict(zip(("md5", "sha1", "sha256"), hashes, strict=True))
    field = {"Address": "ip", "Host": "hostName"}.get(type_name)
    if field is None:
        return {}
    if None in summaries:
        fallback = _texts(_column(items, field))
        summaries = [s if s is not None else f for s, f in zip(summaries, fallback, strict=True)]
    return {VALUE_COLUMNS[type_name][0]: summaries}


def parse_generic_page(
    items: Any, source: str, owner: str, *, active_only: bool = True
) -> ParsedPage:
    """
    Parse one page of items that carry C{type}: a v1/v2 C{/indicators} page
    (C{data.indicator}, C{type} and C{summary}) or a v3 C{/v3/indicators}
    page (C{data}, C{type}, C{summary}, the per-type fields and
    C{tags.data}), into one L{IndicatorBatch} per type.

    File hashes come from C{md5}/C{sha1}/C{sha256} if any is there, else from
    the summary (any subset of C{"md5 : sha1 : sha256"}); Address gives
    C{ip} (summary, else C{ip}); Host gives C{host} (summary, else
    C{hostName}).  An item of a supported type with no value is skipped.
    Other types (URL, EmailAddress, ...) become indicators of that type with
    no values, so the feed side can count them as unsupported.

    :param active_only: leave out (and count) items marked inactive.
    """
    walk, skipped = _items(items)
    usable, junk, inactive = _usable(walk, active_only)
    skipped += junk
    left = parse_generic_page(inactive, source, owner, active_only=False) if inactive else None
    by_type: dict[str, list[dict[str, Any]]] = {}
    canonical: dict[Any, str | None] = {}
    for item in usable:
        raw = item.get("type")
        try:
            type_name = canonical[raw]
        except (KeyError, TypeError):
            text = _text(raw)
            type_name = None if text is None else _CANONICAL_TYPES.get(text.lower(), text)
            if raw.__class__ is str:
                canonical[raw] = type_name
        if type_name is None:
            skipped += 1
        else:
            by_type.setdefault(type_name, []).append(item)
    batches = []
    for type_name, members in by_type.items():
        values = _generic_values(type_name, members)
        if values:
            members, values, valueless = _drop_valueless(members, values)
            skipped += valueless
        if members:
            batches.append(_batch(members, type_name, values, source, owner, False))
    return ParsedPage(batches, skipped, len(inactive), left.batches if left is not None else [])


def parse_owners(data: Any) -> list[str]:
    """
    Owner names from a C{/v2/owners} answer: the whole document
    (C{{"status": ..., "data": {"owner": [...]}}}), its C{data} object, or the
    C{owner} list itself; or from a C{/v3/security/owners} answer (the whole
    document, or its C{data} list).  Names are stripped; blanks, junk and repeats are
    dropped; ThreatConnect's order is kept.
    """
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if isinstance(data, dict):
        data = data.get("owner")
    if not isinstance(data, list):
        return []
    names: list[str] = []
    seen: set[str] = set()
    for item in data:
        name = _text(item.get("name")) if isinstance(item, dict) else None
        if name is not None and name not in seen:
            seen.add(name)
            names.append(name)
    return names
