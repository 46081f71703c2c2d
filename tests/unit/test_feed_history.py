# -*- test-case-name: tests.unit.test_feed_history -*-
"""
Tests for L{tcbridge.feed.history} and how the builder uses it: report
timestamps move only when a report's content changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tcbridge.feed.builder import FeedBuilder, FeedSettings
from tcbridge.feed.history import ReportHistory, history_from_reports, split_id
from tcbridge.feed.render import digest_of as report_digest
from tcbridge.feed.serialize import dumps_pretty
from tests.unit.test_feed_builder import MD5, file, host


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


def test_history_ids_by_head() -> None:
    """
    Ids ending in a plain number are kept per head; every other id as it
    is; both read back the same.
    """
    assert split_id("common_community-1a2b3c4d-12345") == ("common_community-1a2b3c4d", 12345)
    assert split_id("x-md5-80") == ("x-md5", 80)
    assert split_id("x-007") is None
    assert split_id("x-h0123456789abcdef") is None
    assert split_id("x-" + "9" * 20) is None
    assert split_id("plain") is None
    entries = [("a-1", 5, b"12345678"), ("a-2", 6, b"abcdefgh"), ("a-h1", 7, b"ABCDEFGH")]
    history = ReportHistory(entries)
    assert sorted(history.entries()) == sorted(entries)
    found, stamps, digests = history.lookup("a", np.array([2, 3, 1], dtype=np.uint64))
    assert found.tolist() == [True, False, True]
    assert stamps.tolist() == [6, 0, 5]
    assert int(digests[0]).to_bytes(8, "big") == b"abcdefgh"
    history.set("a-2", 9, b"zzzzzzzz")
    assert history.get("a-2") == (9, b"zzzzzzzz")
    assert len(history) == 3


def test_history_file(tmp_path: Path) -> None:
    """
    A history saved to a file loads back equal; a damaged file is refused
    with a reason.
    """
    builder = _build([file(MD5, id="1"), host("evil.example", id="x7")], grouping="Expanded")
    builder.build_bytes()
    path = str(tmp_path / "history")
    builder.history.save(path)
    assert ReportHistory.load(path) == builder.history
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:-5])
    with pytest.raises(ValueError, match=r"damaged|truncated"):
        ReportHistory.load(path)
    Path(path).write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a tcbridge history"):
        ReportHistory.load(path)
