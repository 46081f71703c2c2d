# -*- test-case-name: tests.unit.test_feed_validator -*-
"""
Check a feed document against the Carbon Black feed rules (items 1-20 of the
"Validator checklist" in reference/cb-feed.md) before it is published.

Every problem is one line naming where it is (C{document}, C{feedinfo} or
C{report 'id'}, or C{report #n} when the report has no usable id) and what is
wrong.  An empty list means the document is valid.

Decisions the checklist leaves open:
 - Strict mode (the default) reports unknown C{feedinfo} and report keys as
   errors; lenient mode ignores them (Carbon Black would drop them).
 - IOC values are judged by L{tcbridge.feed.iocs}, the one place validity is
   defined.  That is slightly stricter than cbfeeds for host names: a label
   may not end with a hyphen and names are not trimmed of white space.
 - C{query} IOCs take the README's shape: a list holding exactly one object
   with C{index_type} (C{events} or C{modules}) and a C{search_query}
   string.  tcbridge itself never emits query IOCs.
 - Item 21 (exclusion lists) is the builder's job, not this module's.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Sequence
from typing import Any, Final

import orjson

from tcbridge.feed.iocs import invalid_feed_values

FEEDINFO_REQUIRED: Final = ("name", "display_name", "provider_url", "summary", "tech_data")
FEEDINFO_OPTIONAL: Final = ("category", "icon", "icon_small", "provider_rating", "version")
_FEEDINFO_NUMBERS: Final = frozenset({"provider_rating", "version"})
_FEEDINFO_NON_EMPTY: Final = ("name", "display_name", "summary", "tech_data", "category")
REPORT_REQUIRED: Final = ("id", "timestamp", "link", "title", "score", "iocs")
REPORT_OPTIONAL: Final = ("description", "tags")
IOC_KEYS: Final = ("md5", "sha256", "ipv4", "ipv6", "dns", "ja3", "ja3s", "query")

_FEEDINFO_KEYS: Final = frozenset(FEEDINFO_REQUIRED + FEEDINFO_OPTIONAL)
_REPORT_KEYS: Final = frozenset(REPORT_REQUIRED + REPORT_OPTIONAL)
_IOC_KEYS: Final = frozenset(IOC_KEYS)

_NAME: Final = re.compile(r"[A-Za-z0-9]+").fullmatch
_REPORT_ID: Final = re.compile(r"[A-Za-z0-9_.-]+").fullmatch
_TAG: Final = re.compile(r"[A-Za-z0-9]{1,32}").fullmatch
_QUERY_VALUE: Final = re.compile(r"[A-Za-z0-9\-_.~%*()]*").fullmatch
_IMAGE_MAGIC: Final = (b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"\xff\xd8\xff")
_MAX_EXAMPLES: Final = 3


def _show(value: object) -> str:
    """
    A short, one-line rendering of an untrusted value for a problem line.
    """
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and not math.isfinite(value))
    )


def _is_image(data: object) -> bool:
    if not isinstance(data, str):
        return False
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return raw.startswith(_IMAGE_MAGIC)


def validate_feedinfo(info: Any, *, strict: bool = True) -> list[str]:
    """
    Check a C{feedinfo} object (checklist items 2-7).
    """
    if not isinstance(info, dict):
        return ["feedinfo: is not an object"]
    problems: list[str] = []
    for key in FEEDINFO_REQUIRED:
        if key not in info:
            problems.append(f"feedinfo: required key {key!r} is missing")
    for key, value in info.items():
        if key not in _FEEDINFO_KEYS:
            if strict:
                problems.append(f"feedinfo: unknown key {_show(key)}")
            continue
        if key in _FEEDINFO_NUMBERS:
            if not _is_number(value):
                problems.append(f"feedinfo: {key} must be a number, not {_show(value)}")
        elif not isinstance(value, str):
            problems.append(f"feedinfo: {key} must be a string, not {_show(value)}")
    for key in _FEEDINFO_NON_EMPTY:
        if info.get(key) == "":
            problems.append(f"feedinfo: {key} must not be empty")
    name = info.get("name")
    if isinstance(name, str) and name and _NAME(name) is None:
        problems.append(f"feedinfo: name {_show(name)} must be letters and digits only")
    for key in ("icon", "icon_small"):
        if key in info and isinstance(info[key], str) and not _is_image(info[key]):
            problems.append(f"feedinfo: {key} is not base64 of a PNG, GIF or JPEG image")
    return problems


def _check_query(where: str, query: object, problems: list[str]) -> None:
    if not isinstance(query, list) or len(query) != 1 or not isinstance(query[0], dict):
        problems.append(f"{where}: iocs.query must be a list holding exactly one object")
        return
    item = query[0]
    if item.get("index_type") not in ("events", "modules"):
        problems.append(f"{where}: iocs.query index_type must be 'events' or 'modules'")
    search = item.get("search_query")
    if not isinstance(search, str):
        problems.append(f"{where}: iocs.query search_query must be a string")
        return
    if "q=" not in search and "cb.q." not in search:
        problems.append(f"{where}: iocs.query search_query has no q= or cb.q. term")
    for part in search.split("&"):
        key, sep, value = part.partition("=")
        if sep and (key == "q" or key.startswith("cb.q.")) and _QUERY_VALUE(value) is None:
            problems.append(f"{where}: iocs.query term {_show(key)} is not percent-encoded")


def _check_iocs(where: str, iocs: object, problems: list[str]) -> None:
    if not isinstance(iocs, dict):
        problems.append(f"{where}: iocs must be an object")
        return
    if not iocs:
        problems.append(f"{where}: iocs must hold at least one IOC key")
        return
    for key, values in iocs.items():
        if key not in _IOC_KEYS:
            problems.append(f"{where}: unknown IOC key {_show(key)}")
            continue
        if key == "query":
            if len(iocs) > 1:
                problems.append(f"{where}: iocs.query may not be combined with other IOC keys")
            _check_query(where, values, problems)
            continue
        if not isinstance(values, list) or not values:
            problems.append(f"{where}: iocs.{key} must be a non-empty list of strings")
            continue
        bad = invalid_feed_values(key, values)
        if bad:
            shown = ", ".join(_show(value) for value in bad[:_MAX_EXAMPLES])
            more = f" and {len(bad) - _MAX_EXAMPLES} more" if len(bad) > _MAX_EXAMPLES else ""
            problems.append(f"{where}: invalid {key} value(s) {shown}{more}")


def validate_report(
    report: Any,
    index: int = 0,
    *,
    strict: bool = True,
    allow_negative_scores: bool = False,
) -> list[str]:
    """
    Check one report (checklist items 8-19).  C{index} is its position in
    the C{reports} array, used to name a report whose id is unusable.
    """
    if not isinstance(report, dict):
        return [f"report #{index}: is not an object"]
    report_id = report.get("id")
    where = f"report {_show(report_id)}" if isinstance(report_id, str) else f"report #{index}"
    problems: list[str] = []
    for key in REPORT_REQUIRED:
        if key not in report:
            problems.append(f"{where}: required key {key!r} is missing")
    if strict:
        for key in report:
            if key not in _REPORT_KEYS:
                problems.append(f"{where}: unknown key {_show(key)}")
    for key in ("id", "link", "title", "description"):
        if key in report and not isinstance(report[key], str):
            problems.append(f"{where}: {key} must be a string, not {_show(report[key])}")
    if isinstance(report_id, str) and _REPORT_ID(report_id) is None:
        problems.append(f"{where}: id may only hold letters, digits, '_', '.' and '-'")
    for key in ("timestamp", "score"):
        if key in report and not _is_number(report[key]):
            problems.append(f"{where}: {key} must be a number, not {_show(report[key])}")
    score = report.get("score")
    if isinstance(score, (int, float)) and _is_number(score):
        low = -100 if allow_negative_scores else 0
        if not low <= int(score) <= 100:
            problems.append(f"{where}: score {_show(score)} is outside {low}..100")
    if "tags" in report:
        tags = report["tags"]
        if not isinstance(tags, list):
            problems.append(f"{where}: tags must be a list of strings")
        else:
            for tag in tags:
                if not isinstance(tag, str) or (_TAG(tag) is None and tag.lower() != "event_query"):
                    problems.append(f"{where}: tag {_show(tag)} must be 1-32 letters and digits")
    if "iocs" in report:
        _check_iocs(where, report["iocs"], problems)
    return problems


def validate_document(
    doc: Any, *, strict: bool = True, allow_negative_scores: bool = False
) -> list[str]:
    """
    Check a whole feed document (checklist items 1-20) and return one line
    per problem; an empty list means Carbon Black will accept it.
    """
    if not isinstance(doc, dict):
        return ["document: is not a JSON object"]
    problems: list[str] = []
    for key in ("feedinfo", "reports"):
        if key not in doc:
            problems.append(f"document: required key {key!r} is missing")
    if strict:
        for key in doc:
            if key not in ("feedinfo", "reports"):
                problems.append(f"document: unknown key {_show(key)}")
    if "feedinfo" in doc:
        problems.extend(validate_feedinfo(doc["feedinfo"], strict=strict))
    reports = doc.get("reports")
    if "reports" in doc and not isinstance(reports, list):
        problems.append("document: reports must be a list")
    elif isinstance(reports, list):
        seen: set[str] = set()
        for index, report in enumerate(reports):
            problems.extend(
                validate_report(
                    report, index, strict=strict, allow_negative_scores=allow_negative_scores
                )
            )
            if isinstance(report, dict):
                report_id = report.get("id")
                if isinstance(report_id, str):
                    if report_id in seen:
                        problems.append(
                            f"report {_show(report_id)}: id is used by an earlier report"
                        )
                    seen.add(report_id)
    return problems


def validate_bytes(
    data: bytes, *, strict: bool = True, allow_negative_scores: bool = False
) -> list[str]:
    """
    Parse C{data} as JSON and check it with L{validate_document}.  Data that
    is not JSON gives a single problem line.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        return [f"document: is not valid JSON ({error})"]
    return validate_document(doc, strict=strict, allow_negative_scores=allow_negative_scores)


__all__: Sequence[str] = [
    "validate_bytes",
    "validate_document",
    "validate_feedinfo",
    "validate_report",
]
