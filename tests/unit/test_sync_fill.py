"""
Tests for L{tcbridge.sync.fill} and L{tcbridge.storechild.serve}: a full
sync's store rows, made by the store's child from the file of what the
sync saw, are the rows the pull itself would store; the child runs the
store's calls in order, reports failures, and drops a transaction it was
not told to commit.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from twisted.internet import defer

from tcbridge.indicatordb import IndicatorDB
from tcbridge.indicatorrows import SourceState, sort_rows
from tcbridge.model import Source
from tcbridge.seen import SeenWriter
from tcbridge.storechild import serve
from tcbridge.sync.delta import rows_of
from tcbridge.sync.fill import fill_from_seen
from tcbridge.threatconnect.pull import PullOptions, pull_source
from tests.helpers import result_of, store_row
from tests.unit.test_sync import Harness


def _pages(count: int) -> list[Any]:
    """
    The pages a pull of every owner of a simulator with C{count}
    indicators hands on (with tags, links, descriptions, inactive ones).
    """
    h = Harness(count=count)
    pages: list[Any] = []
    d = defer.ensureDeferred(
        pull_source(h.client, Source("*", "all", "*"), PullOptions(), pages.append)
    )
    result_of(h.settle(d))
    return pages


def test_rows_read_back_from_the_file_are_the_rows_of_the_pull(tmp_path: Path) -> None:
    """
    Every row the child makes from the file (written page by page, read a
    few pages at a time) is the row the pull's own batches give, and the
    newest C{lastModified} it reports is theirs.
    """
    pages = _pages(1500)
    seen = SeenWriter(str(tmp_path / "seen"))
    db = IndicatorDB.open(str(tmp_path / "store"))
    db.begin([("main", "all")], True)
    start = 0
    added = 0
    newest: dict[str, int] = {}
    for number, batches in enumerate(pages):
        seen.add(batches, origin="all")
        if number % 3 == 2 or number == len(pages) - 1:
            path, end = seen.written()
            count, stamps = fill_from_seen(db, path, start, end, {"all": "main"})
            added += count
            for source, stamp in stamps.items():
                newest[source] = max(newest.get(source, 0), stamp)
            start = end
    expected = sort_rows([row for batches in pages for row in rows_of("main", "all", batches)])
    assert added == len(expected) > 1000
    assert sorted(db.raw_page(None, 10**6)) == sorted(expected)
    assert newest == {"all": max(row[10] for row in expected)}


def _frames(*calls: tuple[str, tuple[Any, ...]]) -> io.BytesIO:
    out = io.BytesIO()
    for call in calls:
        data = pickle.dumps(call)
        out.write(len(data).to_bytes(8, "big") + data)
    out.seek(0)
    return out


def _replies(raw: bytes) -> list[Any]:
    replies, at = [], 0
    while at < len(raw):
        size = int.from_bytes(raw[at : at + 8], "big")
        replies.append(pickle.loads(raw[at + 8 : at + 8 + size]))  # noqa: S301
        at += 8 + size
    return replies


ROW = store_row("a.example")


def test_the_child_runs_calls_in_order_and_commits_only_when_told(tmp_path: Path) -> None:
    folder = str(tmp_path)
    IndicatorDB.open(folder).close()
    replies = io.BytesIO()
    serve(
        IndicatorDB.for_writing(folder),
        _frames(("begin", ([("main", "all")], True)), ("add_rows", ([ROW],)), ("nonsense", ())),
        replies,
    )
    answers = _replies(replies.getvalue())
    assert answers[:2] == [("ok", None), ("ok", None)]
    assert answers[2][0] == "error" and "nonsense" in answers[2][1]
    assert IndicatorDB.open(folder).raw_page(None, 10) == []  # never committed: dropped

    replies = io.BytesIO()
    state = {("main", "all"): SourceState(watermark=1700000000, last_full=5.0)}
    serve(
        IndicatorDB.for_writing(folder),
        _frames(("begin", ([("main", "all")], True)), ("add_rows", ([ROW],)), ("commit", (state,))),
        replies,
    )
    assert [a[0] for a in _replies(replies.getvalue())] == ["ok", "ok", "ok"]
    store = IndicatorDB.open(folder)
    assert [row[4] for row in store.raw_page(None, 10)] == ["a.example"]
    assert store.state("main", "all").watermark == 1700000000


def test_calls_after_a_failed_begin_are_refused_not_kept(tmp_path: Path) -> None:
    """
    When the child's transaction cannot start (another writer holds the
    store), the rows sent after are refused, not stored one by one.
    """
    folder = str(tmp_path)
    holder = IndicatorDB.open(folder)
    holder.begin()
    replies = io.BytesIO()
    serve(
        IndicatorDB.for_writing(folder, wait=0),
        _frames(("begin", ([("main", "all")], True)), ("add_rows", ([ROW],))),
        replies,
    )
    answers = _replies(replies.getvalue())
    assert [a[0] for a in answers] == ["error", "error"]
    assert "locked" in answers[0][1] and "no transaction" in answers[1][1]
    holder.abort()
    assert holder.count() == 0
