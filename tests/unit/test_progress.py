"""
Progress of a running sync: kept in the status while it runs, shown on
/healthz and the page, and as one live line on a terminal (never in a
pipe or a log).
"""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from twisted.internet.task import Clock

from tcbridge.feed.builder import FeedBuilder
from tcbridge.progress import EVERY, ProgressLine
from tcbridge.status import SyncProgress, SyncStatus
from tcbridge.web.health import assess, health_document
from tests.helpers import Terminal, result_of
from tests.unit.test_sync import Harness


def _running(clock: Clock) -> SyncStatus:
    status = SyncStatus(started_at=0.0)
    status.begin(clock.seconds(), sources=3)
    assert status.progress is not None
    status.progress.source, status.progress.pages, status.progress.indicators = "Acme", 2, 20000
    return status


def test_line_on_a_terminal() -> None:
    """
    On a terminal the line is rewritten in place a few times a second and
    cleared at the end.
    """
    clock = Clock()
    clock.advance(100)
    out = Terminal()
    status = _running(clock)
    line = ProgressLine(status, clock, out)
    line.start()
    assert out.getvalue() == ""
    for _ in range(8):
        clock.advance(EVERY)
    text = out.getvalue()
    assert text.endswith("tcbridge: pulling Acme (source 1 of 3): 2 pages, 20,000 indicators, 2 s")
    assert text.count("\r\x1b[K") == 8
    line.stop()
    assert out.getvalue().endswith("\r\x1b[K")
    assert clock.getDelayedCalls() == []


def test_nothing_off_a_terminal() -> None:
    """
    In a pipe or a file nothing is written and no timer runs.
    """
    clock = Clock()
    out = io.StringIO()
    line = ProgressLine(_running(clock), clock, out)
    line.start()
    clock.advance(10)
    line.stop()
    assert out.getvalue() == "" and clock.getDelayedCalls() == []


def test_healthz_shows_progress() -> None:
    """
    While a sync runs, /healthz says how far it has got; between syncs
    there is no progress.
    """
    clock = Clock()
    clock.advance(1000)
    status = _running(clock)
    clock.advance(7)
    _, body = health_document(assess(status, None, clock.seconds()), status, None, clock.seconds())
    assert orjson.loads(body)["progress"] == {
        "phase": "pulling",
        "source": "Acme",
        "sources_done": 0,
        "sources": 3,
        "pages": 2,
        "indicators": 20000,
        "elapsed_seconds": 7.0,
    }
    status.succeeded(clock.seconds())
    health = assess(status, None, clock.seconds())
    assert (
        orjson.loads(health_document(health, status, None, clock.seconds())[1])["progress"] is None
    )


def test_cycle_counts_pages_and_indicators(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A sync keeps its progress up to date page by page, says when it
    builds, and clears it when done.
    """
    h = Harness(count=900)
    seen: list[str] = []
    add = FeedBuilder.add

    def watching(self: FeedBuilder, batches: Any) -> None:
        add(self, batches)
        assert h.status.progress is not None
        seen.append(h.status.progress.describe())

    monkeypatch.setattr(FeedBuilder, "add", watching)
    result_of(h.run())
    assert seen and seen[0].startswith("pulling ") and "(source 1 of 1): 0 pages" in seen[0]
    # Each page is counted once it is taken in.
    assert f"): {len(seen) - 1} pages, " in seen[-1]
    assert h.status.progress is None
    assert SyncProgress(sources=1, phase="building", pages=3).describe() == (
        "building: 3 pages, 0 indicators"
    )
