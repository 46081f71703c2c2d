"""
Tests for L{tcbridge.sync}: one cycle against the ThreatConnect simulator
(in memory, through StubTreq, on a task.Clock), all-or-nothing publishing, the
timer, the disk cache and write mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tcbridge.cbserver import CbServerSync
from tcbridge.config import ExclusionFile
from tcbridge.feed import builder as builder_module
from tcbridge.feed.document import FeedInfo, empty_document
from tcbridge.feed.history import StoredHistory, history_from_reports
from tcbridge.feed.serialize import dumps
from tcbridge.feed.validator import validate_bytes
from tcbridge.logs import set_log_level
from tcbridge.model import Source
from tcbridge.simulator import Simulator, generate
from tcbridge.status import SyncStatus
from tcbridge.store import CACHE_FILE_NAME, HISTORY_FILE_NAME, META_FILE_NAME, FeedStore, count_iocs
from tcbridge.sync.cycle import SyncCycle
from tcbridge.sync.errors import FeedHeldBackError, FeedInvalidError, SyncDeadlineError
from tcbridge.sync.service import WriteOnceService, sync_timer, write_feed
from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.errors import AuthError
from tcbridge.web.app import FeedApp
from tcbridge.wiring import read_cached_feed
from tests.cbmock import CbMock, fetch_through
from tests.helpers import failure_of, result_of
from tests.helpers_config import make_config, with_settings

KEY = "12345678901234567890"
SECRET = "simulated-secret"
START = 1_800_000_000.0
OWNERS = ("Common Community", "Example Organization", "Subscriber Community")


class FailAfter(Resource):
    """
    Passes the first C{after} requests to C{inner}, then answers 500 with
    an HTML page, like a proxy in trouble.
    """

    isLeaf = True

    def __init__(self, inner: Any, after: int) -> None:
        super().__init__()
        self._inner = inner
        self._left = after

    def render(self, request: Any) -> Any:
        if self._left > 0:
            self._left -= 1
            return self._inner.render(request)
        request.setResponseCode(500)
        return b"<html><body><h1>Internal Server Error</h1></body></html>"


class Harness:
    """
    A bridge wired to the simulator in memory, on a fake clock.
    """

    def __init__(self, count: int = 300, cache_dir: str | None = None, **config: Any) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.simulator = Simulator(generate(count), self.clock, {KEY: SECRET}, prefix="/api")
        self.stub = StubTreq(self.simulator.resource())
        self.client = ThreatConnectClient(
            self.stub, self.clock, "https://tc.example/api", KEY, SECRET, 30, random=lambda: 0.5
        )
        defaults: dict[str, Any] = {
            "path": "test.conf",
            "layout": "v2",
            "api_url": "https://tc.example/api",
            "web_url": "https://tc.example/auth",
            "api_key": KEY,
            "secret_key": SECRET,
            "sources": (Source("*", "all", "*"),),
            "cache_folder": cache_dir,
        }
        defaults.update(config)
        self.config = make_config(**defaults)
        self.store = FeedStore(
            empty_body=dumps(empty_document(FeedInfo())), cache_dir=self.config.sync.cache_folder
        )
        self.status = SyncStatus(started_at=START)
        self.cycle = SyncCycle(self.config, self.client, self.store, self.status, self.clock)

    def settle(self, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
        """
        Let the in-memory HTTP exchanges run until C{d} has fired.
        """
        fired: list[Any] = []
        d.addBoth(lambda r: (fired.append(True), r)[1])
        for _ in range(10_000):
            self.stub.flush()
            if fired:
                break
            self.clock.advance(1)  # retry back-off waits
        return d

    def run(self) -> defer.Deferred[Any]:
        return self.settle(defer.ensureDeferred(self.cycle.run()))


def test_cycle_publishes_valid_feed_from_every_owner() -> None:
    """
    A cycle pulls every owner through signed requests, publishes a feed that
    passes the Carbon Black validator, and records counts per owner.
    """
    h = Harness()
    snapshot = result_of(h.run())
    assert h.store.current is snapshot
    assert validate_bytes(snapshot.body) == []
    doc = orjson.loads(snapshot.body)
    assert doc["feedinfo"]["name"] == "threatconnectintegration"
    assert len(doc["reports"]) > 0 and snapshot.iocs > 0
    assert {row.name for row in h.status.sources} == set(OWNERS)
    assert h.status.last_success == START and h.status.last_error is None
    assert h.status.requests == len(h.simulator.requests)
    assert sum(h.status.iocs_by_kind.values()) == snapshot.iocs
    assert count_iocs(doc["reports"]) == snapshot.iocs
    assert len(doc["reports"]) == snapshot.reports
    assert h.status.skipped, "the simulator's invalid values are counted as skipped"
    assert all(r.status == 200 for r in h.simulator.requests)
    assert {r.target.split("?")[0] for r in h.simulator.requests} == {
        "/api/v2/owners",
        "/api/v2/indicators/files",
        "/api/v2/indicators/addresses",
        "/api/v2/indicators/hosts",
    }


def test_same_data_gives_same_bytes() -> None:
    """
    Two cycles over the same ThreatConnect data publish byte-identical feeds.
    """
    h = Harness()
    first = result_of(h.run())
    h.clock.advance(3600)
    second = result_of(h.run())
    assert first.body == second.body and first.etag == second.etag


@pytest.mark.parametrize("grouping", ["Expanded", "Condensed", "MaxCondensed"])
def test_each_grouping_publishes_valid_feed(grouping: str) -> None:
    """
    Every grouping mode gives a valid feed holding the same IOCs.
    """
    h = Harness(grouping=grouping)
    snapshot = result_of(h.run())
    assert validate_bytes(snapshot.body) == []
    reference = result_of(Harness(grouping="Condensed").run())
    assert snapshot.iocs == reference.iocs


def test_failing_source_keeps_previous_feed() -> None:
    """
    If a page fails in the middle of a cycle, nothing is published: the
    previous feed stays, and the error is recorded for the page.
    """
    h = Harness(page_size=50)
    good = result_of(h.run())
    pages = len(h.simulator.requests)
    h.stub = StubTreq(FailAfter(h.simulator.resource(), pages // 2))
    h.client = ThreatConnectClient(h.stub, h.clock, "https://tc.example/api", KEY, SECRET)
    h.cycle = SyncCycle(h.config, h.client, h.store, h.status, h.clock)
    h.clock.advance(3600)
    failure_of(h.run())
    assert len(h.simulator.requests) == pages + pages // 2
    assert h.store.current is good
    assert h.status.last_success == START
    assert h.status.last_error is not None
    assert "HTTP 500" in h.status.last_error
    assert "gave up after 5 attempts" in h.status.last_error
    assert h.status.cycles_failed == 1


def test_clock_skew_reports_threatconnect_message() -> None:
    """
    ThreatConnect's 'Timestamp out of acceptable time range' reaches the
    status in its own words, and nothing is published.
    """
    h = Harness()
    h.simulator.clock_skew = 900
    failure = failure_of(h.run())
    assert failure.check(AuthError)
    assert h.store.current is None
    assert h.status.last_error is not None
    assert "Timestamp out of acceptable time range" in h.status.last_error


def test_wrong_secret_reports_signature_message() -> None:
    """
    A wrong secret key gives ThreatConnect's signature message, and the
    secret itself appears nowhere in it.
    """
    h = Harness()
    h.client = ThreatConnectClient(
        h.stub, h.clock, "https://tc.example/api", KEY, "wrong-secret", timeout=30
    )
    h.cycle = SyncCycle(h.config, h.client, h.store, h.status, h.clock)
    failure_of(h.run())
    assert h.status.last_error is not None
    assert "Signature data did not match expected result" in h.status.last_error
    assert "wrong-secret" not in h.status.last_error


def test_invalid_feed_is_not_published(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    If the built feed fails validation, the cycle fails and nothing is
    published.
    """
    h = Harness()
    monkeypatch.setattr(builder_module, "_check", lambda *args: "bad")
    failure = failure_of(h.run())
    assert failure.check(FeedInvalidError)
    assert h.store.current is None
    assert "failed validation" in (h.status.last_error or "")


def test_timer_runs_at_start_and_every_interval_and_survives_failures() -> None:
    """
    The timer syncs at start and every feed_retrieval_minutes; a failed
    cycle does not stop it.
    """
    h = Harness(feed_retrieval_minutes=30)
    timer = sync_timer(h.cycle, 30, h.clock)
    timer.startService()
    h.settle(defer.succeed(None))
    for _ in range(50):
        h.stub.flush()
    assert h.status.cycles_ok == 1
    h.simulator.clock_skew = 900
    h.clock.advance(30 * 60)
    for _ in range(50):
        h.stub.flush()
    assert h.status.cycles_failed == 1
    h.simulator.clock_skew = 0
    h.clock.advance(30 * 60)
    for _ in range(50):
        h.stub.flush()
    assert h.status.cycles_ok == 2
    assert timer.running
    timer.stopService()
    assert h.clock.getDelayedCalls() == []


def test_published_feed_is_cached_and_served_after_restart(tmp_path: Path) -> None:
    """
    The published feed is written to the cache folder, and a restarted
    bridge serves it at once.
    """
    cache = str(tmp_path / "cache")
    h = Harness(cache_dir=cache)
    snapshot = result_of(h.run())
    assert (tmp_path / "cache" / CACHE_FILE_NAME).read_bytes() == snapshot.body
    restarted = FeedStore(empty_body=b"{}", cache_dir=cache)
    loaded = restarted.load_cache(read_cached_feed)
    assert loaded is not None and loaded.from_cache
    assert restarted.body() == snapshot.body
    assert loaded.iocs == snapshot.iocs


def test_write_feed_writes_file(tmp_path: Path) -> None:
    """
    Write mode writes the complete, valid feed to the file.
    """
    h = Harness()
    out = tmp_path / "feed.json"
    written = result_of(h.settle(defer.ensureDeferred(write_feed(h.cycle, str(out)))))
    assert out.read_bytes() == result_of(Harness().run()).body
    assert validate_bytes(out.read_bytes()) == []
    assert (written.size, written.reports) == (out.stat().st_size, h.status.reports)
    assert os.listdir(tmp_path) == ["feed.json"]
    assert h.store.current is None


def test_write_feed_failure_leaves_file_untouched(tmp_path: Path) -> None:
    """
    When the sync fails, write mode leaves the existing file as it was.
    """
    h = Harness()
    h.simulator.clock_skew = -1000
    out = tmp_path / "feed.json"
    out.write_bytes(b"previous")
    failure = failure_of(h.settle(defer.ensureDeferred(write_feed(h.cycle, str(out)))))
    assert failure.check(AuthError)
    assert out.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["feed.json"]


@pytest.mark.parametrize("skew", [0, 1000])
def test_write_once_service_stops_reactor(tmp_path: Path, skew: int) -> None:
    """
    The twistd write mode stops the reactor after one cycle, whether it
    succeeded (file written) or failed (file absent, failure reported).
    """
    h = Harness()
    h.simulator.clock_skew = skew
    stops: list[bool] = []
    out = tmp_path / "feed.json"
    service = WriteOnceService(h.cycle, str(out), lambda: stops.append(True))
    service.startService()
    assert service.done is not None
    ok = result_of(h.settle(service.done))
    assert stops == [True]
    assert ok is (skew == 0)
    assert out.exists() is (skew == 0)


def test_write_once_service_stopped_early_says_so(tmp_path: Path) -> None:
    """
    twistd stopped (SIGTERM) while its one write waits on ThreatConnect:
    the sync is stopped, one critical line says the file was not written,
    nothing is written, and the service's stop waits for all that.
    """
    h = Harness(request_timeout=3600)
    h.stub = StubTreq(Hang())
    h.client = ThreatConnectClient(h.stub, h.clock, "https://tc.example/api", KEY, SECRET, 3600)
    h.cycle = SyncCycle(h.config, h.client, h.store, h.status, h.clock)
    events: list[dict[str, Any]] = []
    stops: list[bool] = []
    out = tmp_path / "feed.json"
    service = WriteOnceService(h.cycle, str(out), lambda: stops.append(True))
    globalLogPublisher.addObserver(events.append)
    try:
        service.startService()
        h.stub.flush()
        stopped = service.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert stopped.called and service.done is not None and result_of(service.done) is False
    critical = [e for e in events if e.get("log_level") == LogLevel.critical]
    assert len(critical) == 1 and critical[0]["error"] == "twistd was stopped before it finished"
    assert not out.exists() and stops == []


def test_owner_sources_and_2015_paths() -> None:
    """
    Named owners and 2015-style API paths are pulled as configured, and
    each appears in the per-source counts.
    """
    h = Harness(
        sources=(
            Source("Common Community", "owner", "Common Community"),
            Source("Subs", "path", "/v1/indicators/?owner=Subscriber%20Community"),
        ),
        layout="2015",
        score_source="confidence",
        min_score=1,
        grouping="Expanded",
    )
    snapshot = result_of(h.run())
    assert validate_bytes(snapshot.body) == []
    names = {row.name for row in h.status.sources}
    assert names == {"Common Community", "Subs"}
    targets = [r.target for r in h.simulator.requests]
    assert any(t.startswith("/api/v1/indicators/?owner=Subscriber%20Community&") for t in targets)


def test_config_evolve_keeps_secret_hidden() -> None:
    """
    The secret key never shows in the repr of the wired objects.
    """
    h = Harness()
    assert SECRET not in repr(h.client)
    assert SECRET not in repr(with_settings(h.config, listener_port=1))


class Hang(Resource):
    """
    Never answers, like a ThreatConnect that has stopped responding.
    """

    isLeaf = True

    def render(self, request: Any) -> Any:
        return NOT_DONE_YET


def test_sync_deadline_stops_a_hung_cycle() -> None:
    """
    A cycle that runs past sync_deadline_minutes is stopped, nothing is
    published, and the page says why.
    """
    h = Harness(sync_deadline_minutes=2, request_timeout=3600)
    h.stub = StubTreq(Hang())
    h.client = ThreatConnectClient(h.stub, h.clock, "https://tc.example/api", KEY, SECRET, 3600)
    h.cycle = SyncCycle(h.config, h.client, h.store, h.status, h.clock)
    d = defer.ensureDeferred(h.cycle.run())
    h.stub.flush()
    h.clock.advance(119)
    assert not d.called
    h.clock.advance(1)
    failure = failure_of(d)
    assert failure.check(SyncDeadlineError)
    assert h.store.current is None
    assert h.status.last_error == (
        "the sync did not finish within 2 minutes (sync_deadline_minutes) and was stopped"
    )
    assert h.clock.getDelayedCalls() == []


def test_a_sync_stopped_with_the_service_logs_one_line() -> None:
    """
    A cycle cancelled because the service stops is logged as one line,
    not as a failure with a traceback, and the page says what happened.
    """
    events: list[dict[str, Any]] = []
    h = Harness(request_timeout=3600)
    h.stub = StubTreq(Hang())
    h.client = ThreatConnectClient(h.stub, h.clock, "https://tc.example/api", KEY, SECRET, 3600)
    h.cycle = SyncCycle(h.config, h.client, h.store, h.status, h.clock)
    globalLogPublisher.addObserver(events.append)
    set_log_level("INFO")
    try:
        d = h.cycle.run_logged()
        h.stub.flush()
        h.cycle.cancel()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert d.called
    stopped = [e for e in events if "stays published" in e.get("log_format", "")]
    assert len(stopped) == 1 and "log_failure" not in stopped[0]
    assert h.status.last_error == "stopped before it finished (the service is stopping)"
    assert h.store.current is None


def _ioc_values(body: bytes) -> set[tuple[str, str]]:
    doc = orjson.loads(body)
    return {(kind, v) for r in doc["reports"] for kind, vs in r["iocs"].items() for v in vs}


def test_v3_gives_the_same_iocs_as_v2() -> None:
    """
    api_version = v3 pulls /v3/indicators with a TQL query and next links,
    and publishes the same IOCs as v2 over the same data.
    """
    v2 = Harness()
    v3 = Harness(api_version="v3")
    body2 = result_of(v2.run()).body
    body3 = result_of(v3.run()).body
    assert validate_bytes(body3) == []
    assert _ioc_values(body3) == _ioc_values(body2)
    paths = {r.target.split("?")[0] for r in v3.simulator.requests}
    assert paths == {"/api/v3/security/owners", "/api/v3/indicators"}
    assert any("tql=" in r.target for r in v3.simulator.requests)


def test_tql_source_pulled_as_written() -> None:
    """
    A [sources] tag = tql:<query> entry is pulled through v3 as written, and
    its IOCs are grouped under the tag.
    """
    h = Harness(sources=(Source("HostsOnly", "tql", 'typeName in ("Host")'),))
    snapshot = result_of(h.run())
    kinds = {kind for kind, _ in _ioc_values(snapshot.body)}
    assert kinds == {"dns"}
    assert {row.name for row in h.status.sources} == {"HostsOnly"}


@pytest.mark.parametrize("api_version", ["v2", "v3"])
@pytest.mark.parametrize("shift", [7, -7])
def test_data_changing_between_pages_loses_and_duplicates_nothing(
    api_version: str, shift: int
) -> None:
    """
    When indicators appear or disappear at the front of a listing while it
    is being paged, the feed still holds every indicator that was there when
    the sync started, each once.
    """
    steady = Harness(count=3000, page_size=200, api_version=api_version)
    expected = _ioc_values(result_of(steady.run()).body)
    h = Harness(count=3000, page_size=200, api_version=api_version)
    h.simulator.fault_next("changing", times=3, shift=shift)
    snapshot = result_of(h.run())
    assert _ioc_values(snapshot.body) == expected
    # Each indicator reached the feed builder exactly once.
    delivered = {row.name: row.indicators for row in h.status.sources}
    assert delivered == {row.name: row.indicators for row in steady.status.sources}


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("500", {}),
        ("502", {"body": b""}),
        ("503", {"retry_after": 7}),
        ("504", {}),
        ("429", {"retry_after": 3}),
        ("slow", {"delay": 45}),
        ("truncated", {}),
        ("reset", {}),
    ],
)
def test_transient_faults_are_retried(kind: str, options: dict[str, Any]) -> None:
    """
    Each transient fault (server errors, rate limiting, a slow answer past
    the request timeout, a cut-off body, a reset connection) is retried,
    re-signed, and the sync publishes the complete feed.
    """
    expected = result_of(Harness().run()).body
    h = Harness()
    h.simulator.fault_next(kind, **options)
    snapshot = result_of(h.run())
    assert snapshot.body == expected
    assert h.status.requests == len(h.simulator.requests)
    first, second = h.simulator.requests[0], h.simulator.requests[1]
    assert first.target == second.target
    assert first.fault is not None and second.fault is None


def test_html_page_instead_of_json_fails_the_cycle() -> None:
    """
    A 200 answer that is an HTML page (a captive proxy's login, or a
    corrupted answer) is tried again; one that does not go away fails the
    cycle with the page's first line, and the previous feed stays.
    """
    h = Harness()
    good = result_of(h.run())
    h.simulator.fault_next("html")
    again = result_of(h.run())
    assert again.body == good.body
    h.simulator.fault_next("html", times=100)
    failure_of(h.run())
    assert h.store.current is again
    assert h.status.last_error is not None and "HTTP 200" in h.status.last_error
    assert "gave up after" in h.status.last_error


def test_stopping_the_timer_stops_a_hung_cycle() -> None:
    """
    Stopping the bridge while ThreatConnect hangs does not wait for it: the
    cycle in progress is stopped, nothing is published, nothing is left
    scheduled.
    """
    h = Harness(request_timeout=3600)
    h.stub = StubTreq(Hang())
    h.client = ThreatConnectClient(h.stub, h.clock, "https://tc.example/api", KEY, SECRET, 3600)
    h.cycle = SyncCycle(h.config, h.client, h.store, h.status, h.clock)
    timer = sync_timer(h.cycle, 60, h.clock)
    timer.startService()
    h.stub.flush()
    assert h.status.running
    stopped = timer.stopService()
    result_of(stopped)
    assert not h.status.running
    assert h.store.current is None
    assert h.clock.getDelayedCalls() == []


def _serve(h: Harness, count: int) -> None:
    """
    Point the harness's bridge at a simulator holding C{count} indicators.
    """
    h.simulator = Simulator(generate(count), h.clock, {KEY: SECRET}, prefix="/api")
    h.stub = StubTreq(h.simulator.resource())
    h.client = ThreatConnectClient(
        h.stub, h.clock, "https://tc.example/api", KEY, SECRET, 30, random=lambda: 0.5
    )
    h.cycle.reconfigure(h.config, h.client)


def test_shrink_guard_holds_back_then_accepts(tmp_path: Path) -> None:
    """
    A new feed with more than max_shrink_percent fewer IOCs is held back:
    the published feed stays and the status says how to accept it; after
    'tcbridge accept-shrink' (its marker file) the next sync publishes it.
    """
    h = Harness(count=2000, cache_dir=str(tmp_path / "cache"))
    big = result_of(h.run())
    _serve(h, 600)
    failure = failure_of(h.run())
    assert failure.check(FeedHeldBackError)
    assert h.store.current is big
    assert h.status.held_back is not None
    assert "held back" in h.status.held_back and "accept-shrink" in h.status.held_back
    assert h.status.last_error == h.status.held_back
    (tmp_path / "cache" / "accept-shrink").write_text("")
    small = result_of(h.run())
    assert h.store.current is small and small.iocs < big.iocs
    assert h.status.held_back is None
    assert not (tmp_path / "cache" / "accept-shrink").exists()


def test_small_shrink_is_published() -> None:
    """
    A feed that shrinks less than max_shrink_percent is published normally.
    """
    h = Harness(count=2000)
    big = result_of(h.run())
    _serve(h, 1500)
    smaller = result_of(h.run())
    assert h.store.current is smaller and smaller.iocs < big.iocs


def test_empty_result_never_replaces_a_feed_silently() -> None:
    """
    Even with max_shrink_percent = 100, an empty result does not replace a
    non-empty feed without being accepted.
    """
    h = Harness(count=600, max_shrink_percent=100)
    good = result_of(h.run())
    _serve(h, 0)
    failure_of(h.run())
    assert h.store.current is good
    assert h.status.held_back is not None and "no IOCs at all" in h.status.held_back


def _with_cb(h: Harness, mock: CbMock) -> StubTreq:
    """
    Give the harness's cycle a Carbon Black server sync talking to C{mock},
    which fetches the feed from the bridge's own routes.
    """
    web = FeedApp(h.store, h.status, h.clock)
    mock.fetch = fetch_through(StubTreq(web.resource()))
    cb_stub = StubTreq(mock.resource())
    cb_sync = CbServerSync(
        cb_stub,
        h.clock,
        "https://cb.example",
        "cb-token-value",
        "http://127.0.0.1:6100/threatconnect/json",
    )
    h.cycle = SyncCycle(h.config, h.client, h.store, h.status, h.clock, cb_sync=cb_sync)
    return cb_stub


def test_publish_registers_and_synchronizes_on_carbon_black() -> None:
    """
    After a publish the bridge finds (here: creates) its feed on the Carbon
    Black server and asks it to synchronize; the page shows when.
    """
    h = Harness()
    mock = CbMock(token="cb-token-value")
    cb_stub = _with_cb(h, mock)
    result_of(h.run())
    for _ in range(20):
        cb_stub.flush()
    assert [call for call in mock.calls() if call[0] == "POST"] == [
        ("POST", "/api/v1/feed"),
        ("POST", "/api/v1/feed/1/synchronize"),
    ]
    assert h.status.cb_feed_id == 1 and h.status.cb_last_error is None
    assert mock.feeds[1]["name"] == "threatconnectintegration"


def test_carbon_black_failure_never_blocks_publishing() -> None:
    """
    A Carbon Black server that refuses the token does not stop the feed from
    being published; its error is shown, without the token.
    """
    h = Harness()
    mock = CbMock(token="another-token")
    cb_stub = _with_cb(h, mock)
    snapshot = result_of(h.run())
    for _ in range(20):
        cb_stub.flush()
    assert h.store.current is snapshot
    assert h.status.last_error is None
    assert h.status.cb_last_error is not None
    assert "refused the API token (401)" in h.status.cb_last_error
    assert "cb-token-value" not in h.status.cb_last_error


def test_secrets_never_reach_the_error_text() -> None:
    """
    Even if an error's text somehow contained the secret key (here: a proxy
    page echoing it), the recorded error shows *** instead.
    """
    h = Harness()
    page = f"<html><p>bad key {SECRET}</p></html>".encode()
    h.simulator.fault_next("html", times=100, body=page)
    failure_of(h.run())
    assert h.status.last_error is not None
    assert SECRET not in h.status.last_error and "***" in h.status.last_error


def test_exclusion_files_count_and_report_bad_lines(tmp_path: Path) -> None:
    """
    Exclusion files remove IOCs (counted per list on the page); a bad line
    is reported with its file and line number and skipped.
    """
    steady = Harness()
    doc = orjson.loads(result_of(steady.run()).body)
    hosts = sorted({v for r in doc["reports"] for v in r["iocs"].get("dns", [])})
    parent = ".".join(hosts[0].split(".")[1:])
    lines = ("# safe", hosts[1], f"*.{parent}", "not a host!", "")
    excluded = ExclusionFile("hosts", "filtered_hosts", "/etc/hosts.txt", lines)
    h = Harness(exclusions=(excluded,))
    body = result_of(h.run()).body
    left = {v for r in orjson.loads(body)["reports"] for v in r["iocs"].get("dns", [])}
    assert hosts[1] not in left and not any(v.endswith("." + parent) for v in left)
    assert h.status.excluded_by["filtered_hosts"] >= 2
    assert any("/etc/hosts.txt:4: 'not a host!'" in n for n in h.status.notices)


def test_report_timestamps_move_only_when_content_changes(tmp_path: Path) -> None:
    """
    Re-syncing the same data keeps every report's timestamp; a report whose
    IOCs change gets a later timestamp; a restart (history rebuilt from the
    cache) keeps them too.
    """
    cache = str(tmp_path / "cache")
    h = Harness(count=2000, cache_dir=cache)
    first = {r["id"]: r for r in orjson.loads(result_of(h.run()).body)["reports"]}
    h.clock.advance(3600)
    again = {r["id"]: r for r in orjson.loads(result_of(h.run()).body)["reports"]}
    assert {i: r["timestamp"] for i, r in again.items()} == {
        i: r["timestamp"] for i, r in first.items()
    }
    _serve(h, 1800)  # fewer indicators: some reports lose IOCs
    changed = {r["id"]: r for r in orjson.loads(result_of(h.run()).body)["reports"]}
    moved = [i for i in changed if i in first and changed[i]["iocs"] != first[i]["iocs"]]
    assert moved
    assert all(changed[i]["timestamp"] > first[i]["timestamp"] for i in moved)
    same = [i for i in changed if i in first and changed[i]["iocs"] == first[i]["iocs"]]
    assert all(changed[i]["timestamp"] == first[i]["timestamp"] for i in same)
    expected = {i: x["timestamp"] for i, x in changed.items()}
    for sidecars in (True, False):
        if not sidecars:
            # An older cache, with no history or meta file beside it: the
            # history is rebuilt from the feed itself.
            for name in (HISTORY_FILE_NAME, META_FILE_NAME):
                os.unlink(os.path.join(cache, name))
        restarted = FeedStore(empty_body=b"{}", cache_dir=cache)
        history: list[Any] = []

        def read(body: bytes, history: list[Any] = history) -> list[dict[str, Any]]:
            reports = read_cached_feed(body)
            history.append(history_from_reports(reports))
            return reports

        loaded = restarted.load_cache(read)
        assert loaded is not None
        assert (loaded.history is not None) is sidecars
        # Beside a matching feed, the history is left in its file until a
        # build reads it.
        assert isinstance(loaded.history, StoredHistory) is sidecars
        found = loaded.history if sidecars else history[0]
        r = Harness(count=1800, cache_dir=cache)
        r.store = restarted
        r.cycle = SyncCycle(r.config, r.client, r.store, r.status, r.clock, history=found)
        body = result_of(r.run()).body
        after = {x["id"]: x["timestamp"] for x in orjson.loads(body)["reports"]}
        assert after == expected


@pytest.mark.parametrize("api_version", ["v2", "v3"])
def test_threat_assess_scoring(api_version: str) -> None:
    """
    score_source = threatAssessScore scores from ThreatAssess (v3 asks for
    it with fields=threatAssess); every score is an integer 0-100.
    """
    h = Harness(api_version=api_version, score_source="max", min_rating=None, min_score=0)
    doc = orjson.loads(result_of(h.run()).body)
    assert all(isinstance(r["score"], int) and 0 <= r["score"] <= 100 for r in doc["reports"])
    if api_version == "v3":
        assert any("fields=threatAssess" in q.target for q in h.simulator.requests)


def test_min_rating_and_min_score_both_apply() -> None:
    """
    ioc_min_rating and ioc_min_score are both honoured.
    """
    loose = Harness(min_rating=None, min_score=0)
    strict = Harness(min_rating=3, min_score=70)
    all_scores = [r["score"] for r in orjson.loads(result_of(loose.run()).body)["reports"]]
    kept = [r["score"] for r in orjson.loads(result_of(strict.run()).body)["reports"]]
    assert min(all_scores) < 60 and min(kept) >= 70
    assert strict.status.skipped.get("below minimum rating", 0) > 0


def test_max_age_days_leaves_out_old_indicators() -> None:
    """
    With max_age_days, indicators last modified longer ago than that before
    the sync are left out and counted as aged out; every report left (one
    per indicator in Expanded, stamped with its lastModified) is recent
    enough, and without the limit the older ones are back.
    """
    days = 4 * 365
    aged = Harness(count=900, grouping="Expanded", max_age_days=days)
    result_of(aged.run())
    cutoff = START - days * 86400
    left_out = aged.status.skipped.get("aged out (max_age_days)", 0)
    doc = orjson.loads(aged.store.body())
    assert left_out > 0 and doc["reports"]
    assert all(report["timestamp"] >= cutoff for report in doc["reports"])
    everything = Harness(count=900, grouping="Expanded")
    result_of(everything.run())
    all_reports = orjson.loads(everything.store.body())["reports"]
    assert "aged out (max_age_days)" not in everything.status.skipped
    assert any(report["timestamp"] < cutoff for report in all_reports)
    assert len(all_reports) > len(doc["reports"])
