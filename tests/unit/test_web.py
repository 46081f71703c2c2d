"""
Tests for L{tcbridge.web}: the routes, driven through the real twisted.web
Site with StubTreq, as Carbon Black and a browser would see them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
import treq
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from tcbridge.status import SourceRow, SyncStatus
from tcbridge.store import FeedStore, Snapshot, count_iocs
from tcbridge.threatconnect.records import SourcePull
from tcbridge.web.app import FeedApp
from tcbridge.web.stream import STREAM_OVER
from tests.helpers import result_of

EMPTY = orjson.dumps({"feedinfo": {"name": "threatconnectintegration"}, "reports": []})
HOSTILE = '<script>alert("x")</script> & <b>bold</b>'
PNG = b"\x89PNG\r\n\x1a\nfake"


def _report(i: int, **extra: Any) -> dict[str, Any]:
    report = {
        "id": f"r{i:06d}",
        "link": f"https://app.threatconnect.com/auth/indicators/{i}",
        "title": f"Report {i}",
        "timestamp": 1700000000 + i,
        "score": 80,
        "iocs": {"md5": [f"{i:032x}"]},
    }
    report.update(extra)
    return report


def _app(
    reports: list[dict[str, Any]] | None = None, status: SyncStatus | None = None
) -> tuple[StubTreq, FeedStore, SyncStatus, Clock]:
    app, store, status, clock = _feed_app(reports, status)
    return StubTreq(app.resource()), store, status, clock


def _feed_app(
    reports: list[dict[str, Any]] | None = None, status: SyncStatus | None = None
) -> tuple[FeedApp, FeedStore, SyncStatus, Clock]:
    clock = Clock()
    clock.advance(1_800_000_000)
    store = FeedStore(empty_body=EMPTY)
    if reports is not None:
        body = orjson.dumps({"feedinfo": {"name": "threatconnectintegration"}, "reports": reports})
        store.swap(Snapshot.of(body, len(reports), count_iocs(reports), clock.seconds()))
    status = status or SyncStatus(started_at=clock.seconds())
    app = FeedApp(
        store,
        status,
        clock,
        [("api_key", "1234"), ("secret_key", "(set, hidden)")],
        {"name": "threatconnectintegration", "display_name": "ThreatConnect", "icon": "AAAA"},
        {"threatconnect.png": PNG, "carbonblack.png": PNG},
    )
    return app, store, status, clock


def _get(
    stub: StubTreq, path: str, method: str = "GET"
) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    d = stub.request(method, "http://127.0.0.1:6100" + path)
    stub.flush()
    response = result_of(d)
    content = response.content()
    stub.flush()
    body = result_of(content)
    return response.code, dict(response.headers.getAllRawHeaders()), body


def test_feed_before_first_sync_is_valid_and_empty() -> None:
    """
    Before the first successful sync, the feed route serves valid feedinfo
    with no reports, as JSON.
    """
    stub, _, _, _ = _app()
    code, headers, body = _get(stub, "/threatconnect/json")
    assert code == 200
    assert headers[b"Content-Type"] == [b"application/json"]
    assert orjson.loads(body) == {"feedinfo": {"name": "threatconnectintegration"}, "reports": []}


def test_feed_serves_published_bytes() -> None:
    """
    The feed route serves the published bytes exactly; treq asks for gzip,
    so it gets the precomputed gzip form with its own ETag and decodes it
    (tests/test_web_http.py checks the raw exchange).
    """
    stub, store, _, _ = _app([_report(1)])
    code, headers, body = _get(stub, "/threatconnect/json")
    assert code == 200
    assert store.current is not None
    assert body == store.current.body
    assert headers[b"ETag"] == [store.current.gzip_etag.encode()]
    assert headers[b"Vary"] == [b"Accept-Encoding"]


def test_head_on_feed_has_no_body() -> None:
    """
    HEAD on the feed answers with the headers only.
    """
    stub, _, _, _ = _app([_report(1)])
    code, headers, body = _get(stub, "/threatconnect/json", "HEAD")
    assert (code, body) == (200, b"")
    assert headers[b"Content-Type"] == [b"application/json"]


def test_post_is_refused() -> None:
    """
    Methods other than GET and HEAD get 405.
    """
    stub, _, _, _ = _app()
    code, _, _ = _get(stub, "/threatconnect/json", "POST")
    assert code == 405


def test_unknown_path_404() -> None:
    """
    An unknown path is a 404 page, not a traceback.
    """
    stub, _, _, _ = _app()
    code, _, body = _get(stub, "/nothing/here")
    assert code == 404
    assert b"Traceback" not in body


def test_index_before_any_sync() -> None:
    """
    The diagnostics page says no sync was performed yet and links to both
    views of the feed.
    """
    stub, _, _, _ = _app()
    code, headers, body = _get(stub, "/")
    text = body.decode()
    assert code == 200
    assert headers[b"Content-Type"] == [b"text/html; charset=utf-8"]
    assert "No sync performed" in text
    assert 'href="/threatconnect/json"' in text and 'href="/feed.html"' in text
    assert "(set, hidden)" in text


def test_index_shows_thread_connect_error_and_counts() -> None:
    """
    After a failed sync following a good one, the page shows the failing
    state, ThreatConnect's own message, and the counts of the last success.
    """
    clock_start = 1_800_000_000
    status = SyncStatus(started_at=clock_start, notices=("[bridge] https_proxy: not active",))
    status.begin(clock_start)
    status.sources = (SourceRow("Common Community", 120, 150),)
    status.pulls = (SourcePull("*", ("Common Community",), 120, 2, 3),)
    status.iocs_by_kind = {"md5": 100, "dns": 50}
    status.skipped = {"invalid md5": 4}
    status.succeeded(clock_start + 5)
    status.begin(clock_start + 3600)
    status.failed(
        clock_start + 3601,
        "ThreatConnect refused GET /api/v2/owners: HTTP 401: "
        "Timestamp out of acceptable time range",
    )
    stub, _, _, _ = _app([_report(1)], status)
    _, _, body = _get(stub, "/")
    text = body.decode()
    assert "Degraded: the last sync did not publish; the previous feed is still served" in text
    assert "failed (ThreatConnect refused GET /api/v2/owners: HTTP 401: Timestamp" in text
    assert "Common Community" in text and "invalid md5" in text
    assert "https_proxy: not active" in text


def test_first_sync_failure_in_last_sync_row() -> None:
    """
    When no sync has succeeded yet, the last-sync row says 'No sync
    performed' with ThreatConnect's message, as the 2015 page did.
    """
    status = SyncStatus(started_at=1_800_000_000)
    status.begin(1_800_000_000)
    status.failed(
        1_800_000_001, "ThreatConnect refused GET /api/v2/owners: HTTP 401: Access Denied"
    )
    stub, _, _, _ = _app(None, status)
    text = _get(stub, "/")[2].decode()
    assert "No sync performed (ThreatConnect refused GET /api/v2/owners: HTTP 401: Access" in text


def test_hostile_text_is_escaped() -> None:
    """
    Descriptions and titles from ThreatConnect are escaped on every page, and
    a javascript: link is never made clickable.
    """
    reports = [_report(1, title=HOSTILE, description=HOSTILE, link="javascript:alert(1)")]
    status = SyncStatus(started_at=0)
    status.failed(1, HOSTILE)
    stub, _, _, _ = _app(reports, status)
    for path in ("/", "/feed.html", "/feed.html?report=r000001"):
        _, _, body = _get(stub, path)
        text = body.decode()
        assert "<script>" not in text, path
        assert "&lt;script&gt;" in text, path
        assert 'href="javascript:' not in text, path


def test_feed_html_paginates() -> None:
    """
    A 100,000-report feed renders one page of 100 reports, with every IOC
    type shown and links to the next page.
    """
    reports = [_report(i) for i in range(100_000)]
    reports[0]["iocs"] = {
        "md5": ["a" * 32],
        "sha256": ["b" * 64],
        "ipv4": ["10.1.2.3"],
        "ipv6": ["2001:db8::1"],
        "dns": ["evil.example"],
    }
    stub, _, _, _ = _app(reports)
    code, _, body = _get(stub, "/feed.html")
    text = body.decode()
    assert code == 200
    assert text.count("<tr") == 101
    assert "Page 1 of 1000" in text
    for value in ("a" * 32, "b" * 64, "10.1.2.3", "2001:db8::1", "evil.example"):
        assert value in text
    _, _, last = _get(stub, "/feed.html?page=1000")
    assert "r099999" in last.decode() and "Page 1000 of 1000" in last.decode()


def test_big_report_cell_is_cut_with_link() -> None:
    """
    A Condensed report with many IOCs shows the first ones and links to the
    report's own page, which lists them 1000 at a time.
    """
    report = _report(7, iocs={"dns": [f"h{i:05d}.example" for i in range(2500)]})
    stub, _, _, _ = _app([report])
    _, _, body = _get(stub, "/feed.html")
    text = body.decode()
    assert "h00024.example" in text and "h00025.example" not in text
    assert "2475 more" in text and "/feed.html?report=r000007" in text
    _, _, page3 = _get(stub, "/feed.html?report=r000007&page=3")
    assert "h02499.example" in page3.decode() and "h01999.example" not in page3.decode()


@pytest.mark.parametrize("query", ["page=abc", "page=0", "page=-2"])
def test_bad_page_is_400(query: str) -> None:
    """
    A page parameter that is not a positive whole number gets 400 with a
    message, not a traceback.
    """
    stub, _, _, _ = _app([_report(1)])
    code, _, body = _get(stub, "/feed.html?" + query)
    assert code == 400
    assert b"whole number" in body


def test_unknown_report_404() -> None:
    """
    Asking for a report that is not in the feed is a 404 page.
    """
    stub, _, _, _ = _app([_report(1)])
    code, _, body = _get(stub, "/feed.html?report=nope")
    assert code == 404
    assert b"no report" in body


def test_images() -> None:
    """
    The two logos are served as PNG; other image names are 404.
    """
    stub, _, _, _ = _app()
    code, headers, body = _get(stub, "/threatconnect.png")
    assert (code, body) == (200, PNG)
    assert headers[b"Content-Type"] == [b"image/png"]
    assert _get(stub, "/carbonblack.png")[0] == 200
    assert _get(stub, "/other.png")[0] == 404


def test_index_links_health_metrics_and_feed_age() -> None:
    """
    The diagnostics page links to /healthz and /metrics, shows the health
    verdict and the feed's age.
    """
    status = SyncStatus(started_at=1_800_000_000)
    status.begin(1_800_000_000)
    status.succeeded(1_800_000_000)
    stub, _, _, clock = _app([_report(1)], status)
    clock.advance(300)
    text = _get(stub, "/")[2].decode()
    assert 'href="/healthz"' in text and 'href="/metrics"' in text
    assert "Feed age" in text and "5 min ago (stale after 3 h)" in text
    assert '<span class="ok">ok</span>' in text


def test_index_shows_held_back_in_state_row() -> None:
    """
    When the shrink guard holds a new feed back, the state row says so with
    the status's message on how to accept it, and health is degraded.
    """
    from tests.unit.test_web_health import HELD, HeldStatus

    status = HeldStatus(started_at=1_800_000_000)
    status.begin(1_800_000_000)
    status.succeeded(1_800_000_000)
    status.held_back = HELD
    stub, _, _, _ = _app([_report(1)], status)
    text = _get(stub, "/")[2].decode()
    state_row = text.split("<td>State</td>")[1].split("</tr>")[0]
    assert "New feed held back" in state_row and "tcbridge accept-shrink" in state_row
    assert '<span class="warn">degraded</span>' in text


def test_index_before_any_sync_has_no_feed_age() -> None:
    """
    Before any feed, the feed-age row says there is none.
    """
    stub, _, _, _ = _app()
    text = _get(stub, "/")[2].decode()
    assert "no feed published" in text


def test_page_shows_exclusions_shared_and_warnings() -> None:
    """
    The page shows how many IOCs each exclusion list removed, how many were
    shared by several owners, and the feed's warnings.
    """
    status = SyncStatus(started_at=1_800_000_000)
    status.begin(1_800_000_000)
    status.sources = (SourceRow("Common Community", 10, 8),)
    status.excluded_by = {"filtered_hosts": 3, "[exclusions] md5": 2}
    status.shared_iocs = 4
    status.feed_warnings = ("12000 reports: Carbon Black advises fewer than 10,000 per feed",)
    status.truncated_reports = 7
    status.succeeded(1_800_000_001)
    stub, _, _, _ = _app([_report(1)], status)
    text = _get(stub, "/")[2].decode()
    assert '<td>filtered_hosts</td><td class="num">3</td>' in text
    assert "4 IOCs were reported by more than one owner" in text
    assert "Carbon Black advises fewer than 10,000 per feed" in text
    assert "7 reports were left out by max_reports" in text


def test_big_feed_is_served_whole_piece_by_piece() -> None:
    """
    A feed of several megabytes (written to the connection in pieces, not
    joined with the headers into a second copy) arrives byte for byte with
    its Content-Length, plain and gzip-compressed.
    """
    noise = [hashlib.sha256(str(i).encode()).hexdigest() * 4 for i in range(24_000)]
    reports = [_report(i, description=text) for i, text in enumerate(noise)]
    app, store, _, _ = _feed_app(reports)
    snapshot = store.current
    assert snapshot is not None
    assert len(snapshot.body) > 3 * STREAM_OVER
    assert len(snapshot.gzip_body) > STREAM_OVER
    agent = RequestTraversalAgent(app.resource())
    for encoding, expected in ((b"identity", snapshot.body), (b"gzip", snapshot.gzip_body)):
        d = agent.request(
            b"GET",
            b"http://127.0.0.1:6100/threatconnect/json",
            Headers({b"Accept-Encoding": [encoding]}),
        )
        agent.flush()
        response = result_of(d)
        body = treq.content(response)
        agent.flush()
        assert response.code == 200
        assert response.length == len(expected)  # from Content-Length
        assert result_of(body) == expected
