"""
The sync history: every cycle recorded (published, held back, failed),
kept in the cache folder across restarts (the last 500), drawn on the page
as SVG charts with a table of the last 20, and served as /history.json.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
from treq.testing import StubTreq
from twisted.internet.task import Clock

from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore
from tcbridge.sync.cycle import SyncCycle
from tcbridge.synclog import FILE_NAME, KEEP, SyncLog, SyncRecord
from tcbridge.web.app import FeedApp
from tests.helpers import failure_of, result_of
from tests.unit.test_sync import Harness
from tests.unit.test_web import _get


def _record(n: int, result: str = "published") -> SyncRecord:
    return SyncRecord(
        started=1_800_000_000.0 + 3600 * n,
        seconds=12.5 + n,
        result=result,
        requests=10,
        iocs=1000 + n,
        iocs_by_type={"md5": 1000 + n},
        change=None if n == 0 else 1,
        error=None if result == "published" else "ThreatConnect said no",
    )


def test_kept_across_restarts(tmp_path: Path) -> None:
    """
    Records written by one bridge are read by the next; a damaged line is
    skipped; only the last 500 are kept, and the file does not grow
    without end.
    """
    log = SyncLog(str(tmp_path))
    for n in range(3):
        log.add(_record(n))
    with open(tmp_path / FILE_NAME, "ab") as f:
        f.write(b"{not json\n")
    again = SyncLog(str(tmp_path))
    again.load()
    assert again.records == log.records
    for n in range(3, KEEP + 200):
        again.add(_record(n, "failed" if n % 7 == 0 else "published"))
    assert len(again.records) == KEEP and again.records[-1] == _record(KEEP + 199, "published")
    lines = (tmp_path / FILE_NAME).read_bytes().splitlines()
    assert len(lines) <= KEEP + KEEP // 5
    third = SyncLog(str(tmp_path))
    third.load()
    assert third.records == again.records
    assert SyncLog(None).path is None


def test_cycles_are_recorded(tmp_path: Path) -> None:
    """
    A published sync records its IOCs and the change from the last one; a
    failed one records the error; the records survive in the cache folder.
    """
    h = Harness(count=300)
    log = SyncLog(str(tmp_path))
    h.cycle = SyncCycle(h.config, h.client, h.store, h.status, h.clock, sync_log=log)
    result_of(h.run())
    h.simulator.fault_next("500", times=5)  # every try of one request
    failure_of(h.run())
    result_of(h.run())
    first, failed, second = log.records
    assert first.result == "published" and first.iocs == sum(first.iocs_by_type.values()) > 0
    assert first.change is None and second.change == 0 and second.requests > 0
    assert failed.result == "failed" and failed.error and "500" in failed.error
    assert failed.iocs == 0 and failed.change is None
    restarted = SyncLog(str(tmp_path))
    restarted.load()
    assert restarted.records == log.records


def _app(records: list[SyncRecord]) -> StubTreq:
    clock = Clock()
    clock.advance(1_900_000_000)
    log = SyncLog(None, records)
    app = FeedApp(FeedStore(empty_body=b"{}"), SyncStatus(started_at=0.0), clock, sync_log=log)
    return StubTreq(app.resource())


def test_page_draws_history_and_serves_json() -> None:
    """
    The page has two SVG charts (a point per sync, failures in red) and a
    table of the last 20 syncs, newest first; /history.json has them all.
    """
    records = [_record(n, "failed" if n == 5 else "published") for n in range(30)]
    stub = _app(records)
    code, _, body = _get(stub, "/")
    assert code == 200
    text = body.decode()
    assert text.count("<svg") == 2 and "<script" not in text
    for svg in text.split("<svg")[1:]:
        root = ET.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")  # noqa: S314 (ours)
        circles = [e for e in root.iter() if e.tag.endswith("circle")]
        assert len(circles) == 30
        assert sum(c.get("fill") == "#c0392b" for c in circles) == 1
    history = text.split("Sync history")[1].split("</table>")[0]
    assert history.count("<tr>") == 21  # header + 20
    assert history.index("1,029") < history.index("1,028")
    code, headers, body = _get(stub, "/history.json")
    assert code == 200 and headers[b"Content-Type"] == [b"application/json"]
    syncs = orjson.loads(body)["syncs"]
    assert [SyncRecord.from_json(s) for s in syncs] == records


def test_no_history_yet() -> None:
    """
    Before any sync the page says so, and /history.json is an empty list.
    """
    stub = _app([])
    assert "No sync recorded yet." in _get(stub, "/")[2].decode()
    assert orjson.loads(_get(stub, "/history.json")[2]) == {"syncs": []}
