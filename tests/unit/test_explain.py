"""
"Why is this IOC (not) in my feed?": L{tcbridge.explain} from what the last
sync saw (L{tcbridge.seen}), the console command and C{/explain}.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock

from tcbridge.cli import run_explain
from tcbridge.config import ExclusionFile
from tcbridge.explain import INACTIVE, canonical, explain
from tcbridge.model import Source
from tcbridge.seen import CHANGES_NAME, FILE_NAME, SeenWriter, seen_rows, trailer
from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore
from tcbridge.sync.cycle import SyncCycle
from tcbridge.sync.work import as_of, feed_settings
from tcbridge.synclog import SyncLog
from tcbridge.threatconnect.records import Indicator, IndicatorBatch
from tcbridge.web.app import FeedApp
from tests.helpers import result_of
from tests.helpers_config import with_settings
from tests.unit.test_sync import Harness
from tests.unit.test_web import _get

COLUMNS = ("owners", "ids", "ratings", "confidences", "assess", "links", "modified")


def _cycle(h: Harness, tmp_path: Path, **kw: Any) -> SyncCycle:
    """
    The harness's cycle, keeping what it saw in C{tmp_path}.
    """
    return SyncCycle(
        h.config, h.client, h.store, h.status, h.clock, seen_folder=str(tmp_path), **kw
    )


def _synced(tmp_path: Path, **config: Any) -> tuple[Harness, list[list[Any]]]:
    """
    A service sync into C{tmp_path}; the indicators it kept, each as
    [keys, type, source, owner, id, rating, confidence, assess, link,
    modified, values].
    """
    h = Harness(count=600, cache_dir=str(tmp_path), **config)
    h.cycle = _cycle(h, tmp_path, sync_log=SyncLog(str(tmp_path)))
    result_of(h.run())
    rows = []
    for line in (tmp_path / FILE_NAME).read_bytes().splitlines():
        page = orjson.loads(line)
        for i in range(len(page["ids"])):
            keys = [column[i] for column in page["keys"].values() if column[i]]
            values = {name: column[i] for name, column in page["values"].items() if column[i]}
            rows.append(
                [keys, page["type"], page["source"]]
                + [page[name][i] for name in COLUMNS]
                + [values]
            )
    return h, rows


def _ask(h: Harness, tmp_path: Path, value: str, **kw: Any) -> Any:
    settings, _ = feed_settings(h.config)
    return explain(
        value,
        feed=h.store.body(),
        seen_path=str(tmp_path / FILE_NAME),
        settings=settings,
        exclusions=h.config.feed.exclusions,
        **kw,
    )


def test_in_the_feed(tmp_path: Path) -> None:
    """
    A value in the feed: its report and score, and every owner that sent
    it with its ThreatConnect id, rating and link; found in any case.
    """
    h, rows = _synced(tmp_path)
    assert sum(1 for _ in rows) == h.status.pulls[0].indicators
    row = next(r for r in rows if r[1] == "File" and r[5] and r[5] >= 1 and "md5" in r[10])
    value = row[10]["md5"]
    answer = _ask(h, tmp_path, value.upper())
    assert answer.kind == "md5" and answer.value == value.lower()
    assert answer.in_feed is not None and answer.in_feed[0] in answer.verdict
    doc = orjson.loads(h.store.body())
    report = next(r for r in doc["reports"] if r["id"] == answer.in_feed[0])
    assert value.lower() in report["iocs"]["md5"] and answer.in_feed[1] == report["score"]
    reporter = next(r for r in answer.reporters if r.id == row[4])
    assert (reporter.owner, reporter.rating, reporter.link) == (row[3], row[5], row[8])
    assert reporter.left_out is None
    assert answer.lines()[0].startswith(f"{value.lower()} (md5): in the published feed")


def test_why_not(tmp_path: Path) -> None:
    """
    Each reason comes with its numbers or its rule: below the minimum
    rating, left out by an exclusion rule (file:line), not sent at all,
    not a Carbon Black value, a SHA-1.
    """
    h, rows = _synced(tmp_path, min_rating=3.0)
    low = next(r for r in rows if r[5] is not None and r[5] < 3 and r[0])
    answer = _ask(h, tmp_path, low[0][0])
    assert answer.in_feed is None
    assert f"below the minimum rating (rated {low[5]:g}; ioc_min_rating is 3)" in answer.verdict
    assert _ask(h, tmp_path, "8.8.8.8").verdict.endswith(
        "ThreatConnect did not send it at the last sync "
        "(no configured owner has it, or it is inactive there)"
    )
    assert canonical("not a value!")[1] == "invalid"
    assert "SHA-1" in _ask(h, tmp_path, "a" * 40).verdict
    host = next(r for r in rows if r[1] == "Host" and r[5] and r[5] >= 3)[0][0]
    excluded = ExclusionFile("hosts", "filtered_hosts", "/etc/tcbridge/hosts.txt", ("# x", host))
    h.config = with_settings(h.config, exclusions=(excluded,))
    h.store = FeedStore(empty_body=b'{"feedinfo":{},"reports":[]}')
    answer = _ask(h, tmp_path, host)
    assert f"left out by the exclusion rule /etc/tcbridge/hosts.txt:2: {host}" in answer.verdict


def test_held_back_or_cut(tmp_path: Path) -> None:
    """
    A value the last sync kept but the published feed lacks is explained by
    the shrink guard when it held the result back, else by max_reports.
    """
    h, rows = _synced(tmp_path)
    value = next(r for r in rows if r[1] == "File" and r[5] and r[5] >= 1)[0][0]
    h.store = FeedStore(empty_body=b'{"feedinfo":{},"reports":[]}')
    answer = _ask(h, tmp_path, value, held_back="it has no IOCs at all")
    assert "held back by the shrink guard (it has no IOCs at all)" in answer.verdict
    h.config = with_settings(h.config, max_reports=5)
    assert "cut by max_reports (5 reports kept" in _ask(h, tmp_path, value).verdict


def test_console_command(tmp_path: Path) -> None:
    """
    tcbridge explain answers from the cache folder, one block per value;
    without a cache folder it says there is nothing to explain.
    """
    h, rows = _synced(tmp_path)
    out = io.StringIO()
    assert run_explain(h.config, [rows[0][0][0], "8.8.8.8"], out) == 0
    text = out.getvalue()
    assert text.startswith(rows[0][0][0]) and "\n8.8.8.8 (ipv4): not in the published feed" in text
    out = io.StringIO()
    assert run_explain(with_settings(h.config, cache_folder=None), ["8.8.8.8"], out) == 1
    assert "no cache_folder" in out.getvalue()


def test_http(tmp_path: Path) -> None:
    """
    GET /explain answers as a page (the diagnostics page has the form) or as
    JSON; without a cache folder it is a 404 that says why.
    """
    h, rows = _synced(tmp_path)
    value = rows[0][0][0]
    clock = Clock()

    def answer(v: str) -> Any:
        return _ask(h, tmp_path, v)

    app = FeedApp(h.store, h.status, clock, explain=answer)
    stub = StubTreq(app.resource())
    assert b'<form action="/explain"' in _get(stub, "/")[2]
    code, _, body = _get(stub, f"/explain?value={value}")
    assert code == 200 and value.encode() in body and b"Left out" in body
    code, _, body = _get(stub, f"/explain?value={value}&value=8.8.8.8&format=json")
    found = orjson.loads(body)
    assert [f["value"] for f in found] == [value, "8.8.8.8"] and found[0]["reporters"]
    bare = StubTreq(FeedApp(h.store, SyncStatus(started_at=0.0), clock).resource())
    assert _get(bare, "/explain?value=x")[0] == 404


def test_inactive_in_threatconnect(tmp_path: Path) -> None:
    """
    A value ThreatConnect sent but marks inactive (here through a TQL
    source that asks for inactive indicators) is kept in what the last sync
    saw, flagged, and explained as inactive with its owner and id; it never
    reaches the feed.
    """
    sources = (
        Source("*", "all", "*"),
        Source("old", "tql", 'ownerName EQ "Common Community" AND indicatorActive EQ false'),
    )
    h, _ = _synced(tmp_path, sources=sources)
    assert h.status.pulls[1].inactive > 0
    lines = [orjson.loads(line) for line in (tmp_path / FILE_NAME).read_bytes().splitlines()]
    flagged = [page for page in lines if page.get("inactive")]
    assert sum(len(page["ids"]) for page in flagged) == h.status.pulls[1].inactive
    page = next(p for p in flagged if p["type"] == "Host")
    value = page["values"]["host"][0]
    answer = _ask(h, tmp_path, value)
    assert answer.in_feed is None
    assert answer.verdict == f"not in the published feed: {INACTIVE}"
    [reporter] = answer.reporters
    assert (reporter.owner, reporter.id) == ("Common Community", page["ids"][0])
    assert value not in h.store.body().decode()


def test_aged_out(tmp_path: Path) -> None:
    """
    A value whose indicator was last modified longer ago than max_age_days
    before the sync is explained as aged out, with both dates.
    """
    days = 4 * 365
    h, rows = _synced(tmp_path, max_age_days=days)
    cutoff = int(h.status.last_attempt or 0) - days * 86400
    old = next(r for r in rows if r[1] == "Host" and r[9] is not None and r[9] < cutoff)
    settings, _ = feed_settings(h.config)
    answer = explain(
        old[0][0],
        feed=h.store.body(),
        seen_path=str(tmp_path / FILE_NAME),
        settings=as_of(settings, h.config, h.status.last_attempt or 0),
    )
    assert answer.in_feed is None
    assert "aged out: last modified " in answer.verdict
    assert "(max_age_days before the last sync)" in answer.verdict
    out = io.StringIO()
    assert run_explain(h.config, [old[0][0]], out) == 0
    assert "aged out" in out.getvalue()


def test_the_file_of_what_a_sync_saw_reaches_the_disk_off_the_reactor(tmp_path: Path) -> None:
    """
    Writing out and syncing to disk what a sync saw (hundreds of megabytes
    at a million indicators) is heavy work, handed to the service's worker
    threads like the other disk writes, not done on the reactor.
    """
    h = Harness(count=300, cache_dir=str(tmp_path))
    heavy: list[str] = []

    def run_heavy(f: Any, *args: Any) -> Any:
        heavy.append(getattr(f, "__qualname__", repr(f)))
        return defer.maybeDeferred(f, *args)

    h.cycle = _cycle(h, tmp_path, run_heavy=run_heavy)
    result_of(h.run())
    assert "SeenWriter.finish" in heavy
    assert (tmp_path / FILE_NAME).exists()


def test_a_delta_s_changes_are_appended_only_once_committed(tmp_path: Path) -> None:
    """
    A delta's changes go to the changes file only with the store's states
    (a held-back or failed delta's are dropped); a changes file that names
    another file's trailer is replaced, not appended to; explanations read
    the file's rows with the changes laid over them: a new version
    replaces the old, a value taken out goes (its inactive row stays), a
    source pulled whole loses the rows of earlier syncs (not the inactive
    ones the same delta reported).
    """

    def batch(rating: float, ident: str = "1", source: str = "Owner") -> list[IndicatorBatch]:
        one = Indicator(
            source=source, owner=source, type="Host", id=ident, host="a.example", rating=rating
        )
        return IndicatorBatch.of([one])

    full = SeenWriter(str(tmp_path))
    full.add(batch(1.0), origin="*")
    full.add(batch(2.0, "2", "Other"), origin="tql")
    full.finish([["default", "*", 1, 1.0, None]])
    base = trailer(str(tmp_path / FILE_NAME))
    assert base is not None
    path = str(tmp_path / FILE_NAME)
    held = SeenWriter(str(tmp_path))
    held.add(batch(5.0), origin="*")
    held.journal(base, 2)
    held.finish(None)
    assert not (tmp_path / CHANGES_NAME).exists()
    assert [row[4] for row in seen_rows(path, "a.example", 10)] == [1.0, 2.0]
    delta = SeenWriter(str(tmp_path))
    delta.add_inactive(batch(3.0, "2", "Other"), origin="tql")
    delta.add_replaced(["tql"])
    delta.add_gone([("*", "Owner", "Host", "a.example")])
    delta.add(batch(4.0, "3"), origin="*")
    delta.journal(base, 1)
    delta.finish([["default", "*", 2, 1.0, 2.0]])
    rows = seen_rows(path, "a.example", 10)
    assert [(row[3], row[4], row[-1]) for row in rows] == [("2", 3.0, True), ("3", 4.0, False)]
    (tmp_path / CHANGES_NAME).write_bytes(b'{"changes_of":{"committed":[]}}\n')
    again = SeenWriter(str(tmp_path))
    again.add(batch(5.0), origin="*")
    again.journal(base, 2)
    again.finish([["default", "*", 3, 1.0, 3.0]])
    lines = (tmp_path / CHANGES_NAME).read_bytes().splitlines()
    assert orjson.loads(lines[0]) == {"changes_of": base} and len(lines) == 3
    assert {row[4] for row in seen_rows(path, "a.example", 10)} == {5.0, 2.0}
