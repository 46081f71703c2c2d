# -*- test-case-name: tests.test_tc_parse -*-
"""
Pure functions turning raw ThreatConnect JSON into L{Indicator} records.

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

import hashlib
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from attrs import frozen

from .records import Indicator


@frozen
class ParsedPage:
    """
    What one page of items gave.

    :ivar indicators: the indicators read, in ThreatConnect's order.
    :ivar skipped: items that could not be read as indicators.
    :ivar inactive: items left out because ThreatConnect marks them inactive.
    """

    indicators: list[Indicator]
    skipped: int = 0
    inactive: int = 0


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


def is_inactive(item: dict[str, Any]) -> bool:
    """
    Whether an item says it is inactive: C{"active": false} (or the string
    C{"false"}, as v2 sends some flags).  An item without C{active} is active.
    """
    active = item.get("active")
    if active is False:
        return True
    return isinstance(active, str) and active.strip().lower() == "false"


def _tags(item: dict[str, Any]) -> tuple[str, ...]:
    raw = item.get("tag")
    if raw is None:
        # v3 shape: "tags": {"data": [{"name": ...}]}
        v3 = item.get("tags")
        raw = v3.get("data") if isinstance(v3, dict) else v3
    if not isinstance(raw, list):
        return ()
    names = []
    for tag in raw:
        name = _text(tag.get("name")) if isinstance(tag, dict) else _text(tag)
        if name is not None:
            names.append(name)
    return tuple(names)


def _common(item: dict[str, Any], source: str, owner: str) -> dict[str, Any]:
    """
    The fields every indicator item shares, as L{Indicator} keyword arguments.

    This runs once per indicator (a million times in a big sync), so the
    usual shapes (a string owner name, an int id, float ratings, a known
    date string) take short paths; anything else goes through the general
    helpers above, with the same results.
    """
    get = item.get
    name = get("ownerName")
    if type(name) is str and (name := name.strip()):
        owner_name = name
    else:
        owner_name = _owner(item, owner)
    raw_id = get("id")
    rating = get("rating")
    confidence = get("confidence")
    modified = get("lastModified")
    link = get("webLink")
    description = get("description")
    assess = get("threatAssessScore")
    return {
        "source": source,
        "owner": owner_name,
        "id": str(raw_id) if type(raw_id) is int else _id(raw_id),
        "rating": None if rating is None else _rating(rating),
        "confidence": None if confidence is None else _confidence(confidence),
        "last_modified": _parse_date_text(modified) if type(modified) is str else None,
        "web_link": link.strip() if type(link) is str else "",
        "description": description.strip() if isinstance(description, str) else None,
        "tags": () if get("tag") is None and get("tags") is None else _tags(item),
        "threat_assess_score": None if assess is None else _threat_assess(assess),
    }


def _threat_assess(value: Any) -> int | None:
    """
    ThreatConnect's ThreatAssess score (0-1000), or C{None} if absent or out
    of range.
    """
    number = _number(value)
    if number is None or not 0 <= number <= 1000:
        return None
    return round(number)


def _items(items: Any) -> tuple[Iterable[Any], int]:
    """
    The list to walk, and how many to count as skipped up front (1 for a
    non-list that is not C{None}).
    """
    if items is None:
        return (), 0
    if isinstance(items, list):
        return items, 0
    return (), 1


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
    Parse one v2 per-type page (C{data.file}, C{data.address}, C{data.host}).

    :param entity: the list key: C{"file"}, C{"address"} or C{"host"}.
    :param items: the JSON list under that key.
    :param source: L{Indicator.source} for every record.
    :param owner: the owner name to use where an item names none.
    :param active_only: leave out (and count) items marked inactive.
    :raise ValueError: for an unknown C{entity} (a programming error).
    """
    try:
        type_name, fields = TYPED_ENTITIES[entity]
    except KeyError:
        raise ValueError(f"unknown ThreatConnect entity {entity!r}") from None
    walk, skipped = _items(items)
    inactive = 0
    out: list[Indicator] = []
    for item in walk:
        if not isinstance(item, dict):
            skipped += 1
            continue
        if active_only and is_inactive(item):
            inactive += 1
            continue
        values = {name: _text(item.get(name)) for name in fields}
        if all(v is None for v in values.values()):
            skipped += 1
            continue
        common = _common(item, source, owner)
        if type_name == "File":
            out.append(
                Indicator(
                    type="File",
                    md5=values["md5"],
                    sha1=values["sha1"],
                    sha256=values["sha256"],
                    **common,
                )
            )
        elif type_name == "Address":
            out.append(Indicator(type="Address", ip=values["ip"], **common))
        else:
            out.append(Indicator(type="Host", host=values["hostName"], **common))
    return ParsedPage(out, skipped, inactive)


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


def parse_generic_page(
    items: Any, source: str, owner: str, *, active_only: bool = True
) -> ParsedPage:
    """
    Parse one page of items that carry C{type}: a v1/v2 C{/indicators} page
    (C{data.indicator}, C{type} and C{summary}) or a v3 C{/v3/indicators}
    page (C{data}, C{type}, C{summary}, the per-type fields and
    C{tags.data}).

    File hashes come from C{md5}/C{sha1}/C{sha256} if any is there, else from
    the summary (any subset of C{"md5 : sha1 : sha256"}); Address gives
    C{ip} (summary, else C{ip}); Host gives C{host} (summary, else
    C{hostName}).  Other types (URL, EmailAddress, ...) become an
    L{Indicator} of that type with no values, so the feed side can count
    them as unsupported.

    :param active_only: leave out (and count) items marked inactive.
    """
    walk, skipped = _items(items)
    inactive = 0
    out: list[Indicator] = []
    for item in walk:
        if not isinstance(item, dict):
            skipped += 1
            continue
        if active_only and is_inactive(item):
            inactive += 1
            continue
        raw_type = _text(item.get("type"))
        if raw_type is None:
            skipped += 1
            continue
        type_name = _CANONICAL_TYPES.get(raw_type.lower(), raw_type)
        summary = _text(item.get("summary"))
        common = _common(item, source, owner)
        if type_name == "File":
            hashes = {
                name: value
                for name in ("md5", "sha1", "sha256")
                if (value := _text(item.get(name))) is not None
            }
            if not hashes and summary is not None:
                hashes = split_file_summary(summary)
            if not hashes:
                skipped += 1
                continue
            out.append(
                Indicator(
                    type="File",
                    md5=hashes.get("md5"),
                    sha1=hashes.get("sha1"),
                    sha256=hashes.get("sha256"),
                    **common,
                )
            )
        elif type_name == "Address":
            ip = summary or _text(item.get("ip"))
            if ip is None:
                skipped += 1
                continue
            out.append(Indicator(type="Address", ip=ip, **common))
        elif type_name == "Host":
            host = summary or _text(item.get("hostName"))
            if host is None:
                skipped += 1
                continue
            out.append(Indicator(type="Host", host=host, **common))
        else:
            out.append(Indicator(type=type_name, **common))
    return ParsedPage(out, skipped, inactive)


def indicator_key(indicator: Indicator) -> bytes | None:
    """
    A small digest of (owner, type, value) that identifies an indicator
    within one listing: the value is the tuple of hashes for a File, the
    address or host name otherwise, and the id for other types.  C{None}
    when there is nothing to identify it by (another type with no id).
    """
    if indicator.type == "File":
        value = [indicator.md5 or "", indicator.sha1 or "", indicator.sha256 or ""]
    elif indicator.type == "Address":
        value = [indicator.ip or ""]
    elif indicator.type == "Host":
        value = [indicator.host or ""]
    elif indicator.id:
        value = ["#", indicator.id]
    else:
        return None
    text = "\x1f".join([indicator.owner, indicator.type, *value])
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


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
