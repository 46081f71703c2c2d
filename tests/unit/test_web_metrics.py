"""
Tests for L{tcbridge.web.metrics} and the C{/metrics} route: the exposition
parses with prometheus_client's own parser and carries the bridge's numbers,
read at scrape time.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import REGISTRY
from treq.testing import StubTreq

from tcbridge.status import SyncStatus
from tcbridge.web.app import FeedApp
from tests.helpers import result_of
from tests.unit.test_web_health import HELD, START, Bridge, HeldStatus

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(stub: StubTreq) -> tuple[int, list[bytes], str]:
    d = stub.get("http://127.0.0.1:6100/metrics")
    stub.flush()
    response = result_of(d)
    content = response.content()
    stub.flush()
    return (
        response.code,
        response.headers.getRawHeaders(b"Content-Type"),
        result_of(content).decode(),
    )


def _samples(text: str) -> tuple[Samples, dict[str, str]]:
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, key
            samples[key] = sample.value
    return samples, types


def _metrics(bridge: Bridge) -> tuple[Samples, dict[str, str]]:
    code, content_type, text = _scrape(bridge.stub)
    assert code == 200
    assert content_type == [b"text/plain; version=0.0.4; charset=utf-8"]
    return _samples(text)


def test_before_any_sync() -> None:
    """
    Just started: up, no cycles, zero timestamps, no feed-age sample, and
    the health state as a 1 among 0s.
    """
    bridge = Bridge()
    samples, types = _metrics(bridge)
    assert samples[("tcbridge_up", ())] == 1
    assert samples[("tcbridge_sync_cycles_total", (("result", "success"),))] == 0
    assert samples[("tcbridge_sync_cycles_total", (("result", "failure"),))] == 0
    assert types["tcbridge_sync_cycles"] == "counter"
    assert samples[("tcbridge_last_success_timestamp_seconds", ())] == 0
    assert samples[("tcbridge_last_attempt_timestamp_seconds", ())] == 0
    assert samples[("tcbridge_feed_reports", ())] == 0
    assert samples[("tcbridge_feed_bytes", ())] > 0  # the empty document
    assert not any(name == "tcbridge_feed_age_seconds" for name, _ in samples)
    assert samples[("tcbridge_health_status", (("status", "degraded"),))] == 1
    assert samples[("tcbridge_health_status", (("status", "ok"),))] == 0
    assert samples[("tcbridge_feed_iocs", (("type", "md5"),))] == 0
    assert not any(name == "tcbridge_threatconnect_requests_total" for name, _ in samples)


def test_values_after_syncs() -> None:
    """
    After a success and a failure, every figure matches the status, the
    store and the client's request counts, read at scrape time.
    """
    counts: dict[int | str, int] = {200: 40, 401: 1}

    def request_counts() -> Mapping[int | str, int]:
        return counts

    bridge = Bridge(request_counts=request_counts)
    bridge.sync_ok(duration=12)
    bridge.status.skipped = {"invalid md5": 4, "excluded": 2}
    bridge.advance(100)
    bridge.sync_fails(duration=3)
    bridge.advance(20)
    counts["timeout"] = 2

    samples, types = _metrics(bridge)
    snapshot = bridge.store.current
    assert snapshot is not None
    assert samples[("tcbridge_sync_cycles_total", (("result", "success"),))] == 1
    assert samples[("tcbridge_sync_cycles_total", (("result", "failure"),))] == 1
    assert samples[("tcbridge_sync_duration_seconds", ())] == 12
    assert samples[("tcbridge_sync_cycle_seconds_sum", ())] == 15
    assert samples[("tcbridge_sync_cycle_seconds_count", ())] == 2
    assert types["tcbridge_sync_cycle_seconds"] == "summary"
    assert samples[("tcbridge_last_success_timestamp_seconds", ())] == START + 12
    assert samples[("tcbridge_last_attempt_timestamp_seconds", ())] == START + 112
    assert samples[("tcbridge_feed_reports", ())] == 2
    assert samples[("tcbridge_feed_iocs", (("type", "md5"),))] == 5
    assert samples[("tcbridge_feed_iocs", (("type", "dns"),))] == 2
    assert samples[("tcbridge_feed_iocs", (("type", "ipv6"),))] == 0
    assert samples[("tcbridge_feed_bytes", ())] == len(snapshot.body)
    assert samples[("tcbridge_feed_gzip_bytes", ())] == len(snapshot.gzip_body)
    assert samples[("tcbridge_feed_age_seconds", ())] == 123
    assert samples[("tcbridge_feed_held_back", ())] == 0
    assert samples[("tcbridge_sync_running", ())] == 0
    assert samples[("tcbridge_threatconnect_requests_total", (("status", "200"),))] == 40
    assert samples[("tcbridge_threatconnect_requests_total", (("status", "401"),))] == 1
    assert samples[("tcbridge_threatconnect_requests_total", (("status", "timeout"),))] == 2
    assert types["tcbridge_threatconnect_requests"] == "counter"
    assert samples[("tcbridge_skipped_iocs", (("reason", "invalid md5"),))] == 4
    assert samples[("tcbridge_skipped_iocs", (("reason", "excluded"),))] == 2
    assert samples[("tcbridge_health_status", (("status", "degraded"),))] == 1


def test_held_back_and_running() -> None:
    """
    The shrink guard's hold and a running sync show as 1.
    """
    status = HeldStatus(started_at=START)
    bridge = Bridge(status)
    bridge.sync_ok()
    status.held_back = HELD
    bridge.status.begin(bridge.clock.seconds())
    samples, _ = _metrics(bridge)
    assert samples[("tcbridge_feed_held_back", ())] == 1
    assert samples[("tcbridge_sync_running", ())] == 1


def test_registry_per_app() -> None:
    """
    Each FeedApp has its own registry: two bridges in one process report
    their own numbers and nothing lands in the global registry.
    """
    before = {m.name for m in REGISTRY.collect()}
    one, two = Bridge(), Bridge()
    one.sync_ok()
    assert _metrics(one)[0][("tcbridge_sync_cycles_total", (("result", "success"),))] == 1
    assert _metrics(two)[0][("tcbridge_sync_cycles_total", (("result", "success"),))] == 0
    assert {m.name for m in REGISTRY.collect()} == before
    assert not any(name.startswith("tcbridge") for name in before)


def test_head_metrics() -> None:
    """
    HEAD /metrics answers with the headers only.
    """
    bridge = Bridge()
    app = FeedApp(bridge.store, SyncStatus(started_at=START), bridge.clock)
    stub = StubTreq(app.resource())
    d = stub.request("HEAD", "http://127.0.0.1:6100/metrics")
    stub.flush()
    response = result_of(d)
    assert response.code == 200
    content = response.content()
    stub.flush()
    assert result_of(content) == b""
