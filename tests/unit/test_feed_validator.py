# -*- test-case-name: tests.unit.test_feed_validator -*-
"""
Tests for L{tcbridge.feed.validator}: each rule of the Validator checklist
(reference/cb-feed.md) is caught with a hand-made bad document.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

import pytest

from tcbridge.feed.document import FeedInfo, feedinfo_dict
from tcbridge.feed.serialize import dumps
from tcbridge.feed.validator import validate_bytes, validate_document

MD5 = "9d67e81c0a6f1b5e4e1f2d3c4b5a6978"


def good() -> dict[str, Any]:
    """
    A small valid document with two reports.
    """
    return {
        "feedinfo": feedinfo_dict(FeedInfo()),
        "reports": [
            {
                "id": "r-1",
                "timestamp": 1700000000,
                "link": "https://app.threatconnect.com/",
                "title": "ThreatConnect: md5 IOCs, score 80",
                "score": 80,
                "iocs": {"md5": [MD5], "sha256": ["A" * 64], "ipv4": ["1.2.3.4"]},
                "description": "plain",
                "tags": ["malware", "event_query", "APT28"],
            },
            {
                "id": "r.2_x",
                "timestamp": 1.5,
                "link": "",
                "title": "",
                "score": 0,
                "iocs": {"ipv6": ["2001:DB8::1"], "dns": ["Example.com."], "ja3": [MD5]},
            },
        ],
    }


def test_good_document() -> None:
    """
    A well-formed document, as dict or bytes, has no problems.
    """
    assert validate_document(good()) == []
    assert validate_bytes(dumps(good())) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """
    A mutation setting C{value} at a dotted path (C{-} deletes).
    """

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value == "-":
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


def _query(value: Any) -> Callable[[dict[str, Any]], None]:
    return _set("reports.0.iocs", {"query": value})


ONE_QUERY = [{"index_type": "events", "search_query": "cb.urlver=1&q=process_name%3Aevil.exe"}]

CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    # 1: shape of the document
    ("1 keys missing", _set("feedinfo", "-"), "required key 'feedinfo'"),
    ("1 unknown top key", _set("num_reports", 3), "document: unknown key 'num_reports'"),
    ("1 no reports", _set("reports", "-"), "required key 'reports'"),
    ("1 reports not a list", _set("reports", {}), "reports must be a list"),
    ("1 report not an object", _set("reports.0", "r-1"), "report #0: is not an object"),
    ("1 feedinfo not an object", _set("feedinfo", []), "feedinfo: is not an object"),
    # 2-7: feedinfo
    ("2 missing tech_data", _set("feedinfo.tech_data", "-"), "'tech_data' is missing"),
    ("3 unknown key", _set("feedinfo.num_reports", 3), "feedinfo: unknown key 'num_reports'"),
    ("4 string expected", _set("feedinfo.provider_url", 5), "provider_url must be a string"),
    ("4 number expected", _set("feedinfo.version", "1"), "version must be a number"),
    ("4 boolean is no number", _set("feedinfo.provider_rating", True), "must be a number"),
    ("5 empty summary", _set("feedinfo.summary", ""), "summary must not be empty"),
    ("5 empty category", _set("feedinfo.category", ""), "category must not be empty"),
    ("6 name with space", _set("feedinfo.name", "threat connect"), "letters and digits"),
    ("6 non-ASCII name", _set("feedinfo.name", "thréat"), "letters and digits"),
    ("7 icon not base64", _set("feedinfo.icon", "!!!"), "icon is not base64"),
    (
        "7 icon not an image",
        _set("feedinfo.icon_small", base64.b64encode(b"hello").decode()),
        "icon_small is not base64",
    ),
    # 8-13: reports
    ("8 missing score", _set("reports.0.score", "-"), "report 'r-1': required key 'score'"),
    ("8 unknown key", _set("reports.0.num_iocs", 3), "report 'r-1': unknown key 'num_iocs'"),
    ("9 integer id", _set("reports.0.id", 12), "report #0: id must be a string"),
    ("9 link not a string", _set("reports.0.link", None), "link must be a string"),
    ("9 title not a string", _set("reports.0.title", ["x"]), "title must be a string"),
    ("9 description", _set("reports.0.description", 1), "description must be a string"),
    ("10 id with space", _set("reports.0.id", "r 1"), "id may only hold"),
    ("10 id with newline", _set("reports.0.id", "r-1\n"), "id may only hold"),
    ("10 empty id", _set("reports.0.id", ""), "id may only hold"),
    ("11 timestamp string", _set("reports.0.timestamp", "1700000000"), "timestamp must be"),
    ("11 score boolean", _set("reports.0.score", True), "score must be a number"),
    ("11 score infinite", _set("reports.0.score", float("inf")), "score must be a number"),
    ("12 score too high", _set("reports.0.score", 101), "outside 0..100"),
    ("12 score negative", _set("reports.0.score", -5), "outside 0..100"),
    ("13 tags not a list", _set("reports.0.tags", "a,b"), "tags must be a list"),
    ("13 tag too long", _set("reports.0.tags", ["a" * 33]), "tag 'aaaa"),
    ("13 tag punctuation", _set("reports.0.tags", ["bad-tag"]), "tag 'bad-tag'"),
    ("13 tag empty", _set("reports.0.tags", [""]), "tag ''"),
    # 14-18: iocs
    ("14 iocs not an object", _set("reports.0.iocs", ["x"]), "iocs must be an object"),
    ("14 iocs empty", _set("reports.0.iocs", {}), "at least one IOC key"),
    ("14 unknown IOC key", _set("reports.0.iocs.sha1", ["a" * 40]), "unknown IOC key 'sha1'"),
    ("15 empty list", _set("reports.0.iocs.md5", []), "iocs.md5 must be a non-empty list"),
    ("15 not a list", _set("reports.0.iocs.md5", MD5), "iocs.md5 must be a non-empty list"),
    ("15 not strings", _set("reports.0.iocs.md5", [1]), "invalid md5 value(s) 1"),
    ("16 md5 newline", _set("reports.0.iocs.md5", [MD5 + "\n"]), "invalid md5"),
    ("16 sha256 short", _set("reports.0.iocs.sha256", ["a" * 63]), "invalid sha256"),
    ("16 ja3s", _set("reports.1.iocs.ja3", ["x" * 32]), "invalid ja3"),
    ("17 ipv4 lenient form", _set("reports.0.iocs.ipv4", ["1.2.3"]), "invalid ipv4"),
    ("17 ipv6 in ipv4", _set("reports.0.iocs.ipv4", ["::1"]), "invalid ipv4"),
    ("17 ipv6 scoped", _set("reports.1.iocs.ipv6", ["fe80::1%eth0"]), "invalid ipv6"),
    ("18 dns underscore", _set("reports.1.iocs.dns", ["a_b.example"]), "invalid dns"),
    ("18 dns no dot", _set("reports.1.iocs.dns", ["localhost"]), "invalid dns"),
    ("18 dns long label", _set("reports.1.iocs.dns", ["a" * 64 + ".x"]), "invalid dns"),
    ("18 dns two dots", _set("reports.1.iocs.dns", ["a.example.."]), "invalid dns"),
    ("18 dns too long", _set("reports.1.iocs.dns", [("a" * 60 + ".") * 5]), "invalid dns"),
    # 19: query
    ("19 query with others", _set("reports.0.iocs.query", ONE_QUERY), "may not be combined"),
    ("19 query not a list", _query(ONE_QUERY[0]), "exactly one object"),
    ("19 two queries", _query(ONE_QUERY * 2), "exactly one object"),
    (
        "19 bad index_type",
        _query([{"index_type": "binaries", "search_query": "q=a"}]),
        "index_type",
    ),
    ("19 no search_query", _query([{"index_type": "events"}]), "search_query must be"),
    ("19 no q term", _query([{"index_type": "modules", "search_query": "cb.urlver=1"}]), "no q="),
    (
        "19 not encoded",
        _query([{"index_type": "events", "search_query": "cb.urlver=1&q=process_name:evil exe"}]),
        "not percent-encoded",
    ),
    (
        "19 cb.q not encoded",
        _query([{"index_type": "events", "search_query": "cb.q.name=a b"}]),
        "not percent-encoded",
    ),
    # 20: unique ids
    ("20 duplicate id", _set("reports.1.id", "r-1"), "report 'r-1': id is used by an earlier"),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_rule(name: str, mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    """
    Each kind of mistake gives a problem line naming where it is and what
    is wrong.
    """
    doc = copy.deepcopy(good())
    mutate(doc)
    problems = validate_document(doc)
    assert any(expected in problem for problem in problems), problems


def test_valid_query() -> None:
    """
    A query IOC in the README's shape, alone in its report, is accepted.
    """
    doc = good()
    doc["reports"][0]["iocs"] = {"query": ONE_QUERY}
    assert validate_document(doc) == []


def test_negative_scores_when_enabled() -> None:
    """
    Negative scores down to -100 are accepted only when explicitly enabled.
    """
    doc = good()
    doc["reports"][0]["score"] = -50
    assert validate_document(doc) != []
    assert validate_document(doc, allow_negative_scores=True) == []


def test_lenient_mode_ignores_unknown_keys() -> None:
    """
    In lenient mode unknown feedinfo and report keys (which Carbon Black
    drops) are not problems.
    """
    doc = good()
    doc["feedinfo"]["num_reports"] = 2
    doc["reports"][0]["extra"] = True
    assert len(validate_document(doc)) == 2
    assert validate_document(doc, strict=False) == []


def test_not_json() -> None:
    """
    Bytes that are not JSON give one problem; JSON that is not an object
    gives one too.
    """
    assert len(validate_bytes(b"{not json")) == 1
    assert validate_bytes(b"[]") == ["document: is not a JSON object"]


def test_many_bad_values_are_summarised() -> None:
    """
    A list with many bad values gives one line with a few examples and a
    count, not one line per value.
    """
    doc = good()
    doc["reports"][0]["iocs"]["md5"] = ["bad"] * 1000
    problems = validate_document(doc)
    assert len(problems) == 1
    assert "and 997 more" in problems[0]
