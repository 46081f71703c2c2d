# -*- test-case-name: tests.test_feed_history -*-
"""
Tests for L{tcbridge.feed.history} and how the builder uses it: report
timestamps move only when a report's content changes.
"""

from __future__ import annotations

from typing import Any

import orjson

from tcbridge.feed.builder import FeedBuilder, FeedSettings
from tcbridge.feed.history import ReportHistory, history_from_reports, report_digest
from tcbridge.feed.serialize import dumps_pretty
from tests.test_feed_builder import MD5, file, host


def _build(indicators: list[Any], history: ReportHistory | None = None, **kw: Any) -> FeedBuilder:
    builder = FeedBuilder(FeedSettings(**kw), history=history)
    builder.add(indicators)
    return builder


def test_unchanged_report_keeps_its_timestamp() -> None:
    """
    With the previous history, a report whose content is unchanged keeps
    its recorded timestamp, even if an IOC's lastModified moved.
    """
    first = _build([file(MD5, last_modified=100)])
    doc = first.build()
    assert doc["reports"][0]["timestamp"] == 100
    again = _build([file(MD5, last_modified=500)], history=first.history)
    assert again.build()["reports"][0]["timestamp"] == 100


def test_changed_report_gets_a_later_timestamp() -> None:
    """
    A changed report takes the newest lastModified of its IOCs, or the
    previous timestamp + 1 when the data is not newer, so Carbon Black's
    incremental sync always sees the change.
    """
    first = _build([file(MD5, last_modified=100)])
    first.build()
    newer = _build([file(MD5, last_modified=100), file("a" * 32, last_modified=300)], first.history)
    assert newer.build()["reports"][0]["timestamp"] == 300
    older = _build([file(MD5, last_modified=100), file("a" * 32, last_modified=50)], first.history)
    doc = older.build()
    assert doc["reports"][0]["timestamp"] == 101
    same = _build([file(MD5, last_modified=100), file("a" * 32, last_modified=50)], older.history)
    assert same.build()["reports"][0]["timestamp"] == 101


def test_history_from_cached_reports_matches() -> None:
    """
    A history rebuilt from the reports of a cached feed file (compact or
    pretty, parsed back) equals the one the builder produced, for every
    grouping, tags and descriptions included.
    """
    for grouping in ("Expanded", "Condensed", "MaxCondensed"):
        indicators = [
            file(MD5, id="1", tags=("APT 28", "x"), description="d\u00e9j\u00e0", last_modified=9),
            host("evil.example", id="2", tags=("APT 28",), source="Other"),
        ]
        builder = _build(indicators, grouping=grouping)
        data = builder.build_bytes()
        parsed = orjson.loads(data)["reports"]
        assert history_from_reports(parsed) == builder.history
        pretty = orjson.loads(dumps_pretty(orjson.loads(data)))["reports"]
        assert history_from_reports(pretty) == builder.history
        again = _build(indicators, history=history_from_reports(parsed), grouping=grouping)
        assert again.build_bytes() == data


def test_history_api() -> None:
    """
    A history maps report ids to (timestamp, 8-byte digest); malformed
    cached reports are skipped; the digest ignores the timestamp.
    """
    history = ReportHistory([("a", 5, b"12345678")])
    assert history.get("a") == (5, b"12345678")
    assert history.get("b") is None
    assert "a" in history and len(history) == 1
    report = {"id": "r", "timestamp": 1, "iocs": {"md5": [MD5]}}
    assert report_digest(report) == report_digest({**report, "timestamp": 2})
    assert len(report_digest(report)) == 8
    rebuilt = history_from_reports(
        [report, {"id": 3, "timestamp": 1}, {"id": "x", "timestamp": "1"}, {"id": "y"}]
    )
    assert len(rebuilt) == 1
    assert rebuilt.get("r") == (1, report_digest(report))
