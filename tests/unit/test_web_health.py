"""
Tests for L{tcbridge.web.health} and the C{/healthz} route: one test per
state of the rules table, through the real resource with StubTreq and a
task.Clock.
"""

from __future__ import annotations

from typing import Any

import orjson
from attrs import define
from treq.testing import StubTreq
from twisted.internet.task import Clock

from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore, Snapshot
from tcbridge.web.app import FeedApp
from tcbridge.web.health import assess
from tests.helpers import result_of

EMPTY = orjson.dumps({"feedinfo": {"name": "threatconnectintegration"}, "reports": []})
START = 1_800_000_000.0
HOUR = 3600.0
HELD = (
    "A new feed with 10 IOCs was held back: it has 90% fewer than the "
    "published 100. To accept it, run `tcbridge accept-shrink` or raise "
    "max_shrink_percent."
)


@define
class HeldStatus(SyncStatus):
    """
    A SyncStatus with the shrink guard's C{held_back}, whether or not the
    real one has the field yet.
    """

    held_back: str | None = None


class Bridge:
    """
    A FeedApp with a store, a status and a clock the test drives the way a
    sync cycle would.
    """

    def __init__(self, status: SyncStatus | None = None, **app_kwargs: Any) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = FeedStore(empty_body=EMPTY)
        self.status = status or SyncStatus(started_at=START)
        self.app = FeedApp(self.store, self.status, self.clock, **app_kwargs)
        self.stub = StubTreq(self.app.resource())

    def advance(self, seconds: float) -> None:
        """
        Let time pass.
        """
        self.clock.advance(seconds)

    def sync_ok(self, duration: float = 10.0, iocs: int = 7) -> None:
        """
        A whole successful sync of C{duration} seconds, starting now.
        """
        self.status.begin(self.clock.seconds())
        self.advance(duration)
        self.store.swap(Snapshot.of(b'{"reports": []}', 2, iocs, self.clock.seconds()))
        self.status.iocs_by_kind = {"md5": iocs - 2, "dns": 2}
        self.status.succeeded(self.clock.seconds())

    def sync_fails(self, duration: float = 10.0, message: str = "HTTP 401: Access Denied") -> None:
        """
        A whole failed sync of C{duration} seconds, starting now.
        """
        self.status.begin(self.clock.seconds())
        self.advance(duration)
        self.status.failed(self.clock.seconds(), message)

    def load_cache(self, age: float) -> None:
        """
        Publish a feed loaded from the cache, written C{age} seconds ago.
        """
        self.store.swap(
            Snapshot.of(b'{"reports": []}', 1, 3, self.clock.seconds() - age, from_cache=True)
        )

    def health(self, method: str = "GET") -> tuple[int, dict[str, Any]]:
        """
        GET /healthz: the HTTP status and the parsed document.
        """
        d = self.stub.request(method, "http://127.0.0.1:6100/healthz")
        self.stub.flush()
        response = result_of(d)
        assert response.headers.getRawHeaders(b"Content-Type") == [b"application/json"]
        content = response.content()
        self.stub.flush()
        body = result_of(content)
        return response.code, (orjson.loads(body) if body else {})


def test_never_synced_within_first_interval() -> None:
    """
    Just started, nothing cached, no sync yet: degraded with 200, no feed
    age, every time null.
    """
    bridge = Bridge()
    code, doc = bridge.health()
    assert (code, doc["status"]) == (200, "degraded")
    assert doc["feed_age_seconds"] is None
    assert doc["published_at"] is None
    assert doc["last_attempt"] is None and doc["last_success"] is None
    assert doc["last_error"] is None and doc["last_error_at"] is None
    assert doc["reports"] == 0 and doc["iocs"] == 0
    assert doc["stale_after_seconds"] == 3 * HOUR
    assert doc["held_back"] is None
    assert "first sync has not finished" in doc["reasons"][0]


def test_never_synced_after_one_interval_is_failing() -> None:
    """
    More than one interval after start with no feed and no sync ever
    started (a timer that never ran): failing with 503.
    """
    bridge = Bridge()
    bridge.advance(HOUR + 1)
    code, doc = bridge.health()
    assert (code, doc["status"]) == (503, "failing")
    assert "no feed is published" in doc["reasons"][0]


def test_first_attempt_running() -> None:
    """
    The first sync is running: degraded while within one interval of the
    start, failing once it runs past that with still no feed.
    """
    bridge = Bridge()
    bridge.status.begin(START)
    bridge.advance(600)
    code, doc = bridge.health()
    assert (code, doc["status"], doc["running"]) == (200, "degraded", True)
    assert doc["last_attempt"] == "2027-01-15T08:00:00Z"
    bridge.advance(HOUR)
    code, doc = bridge.health()
    assert (code, doc["status"]) == (503, "failing")
    assert any("running for" in r for r in doc["reasons"])


def test_first_attempt_failed_without_feed() -> None:
    """
    The first sync failed and nothing was cached: failing at once, with the
    error.
    """
    bridge = Bridge()
    bridge.sync_fails()
    code, doc = bridge.health()
    assert (code, doc["status"]) == (503, "failing")
    assert doc["last_error"] == "HTTP 401: Access Denied"
    assert doc["last_error_at"] == "2027-01-15T08:00:10Z"
    assert doc["cycles_failed"] == 1


def test_ok() -> None:
    """
    A fresh feed from a successful last sync: ok with every figure.
    """
    bridge = Bridge()
    bridge.sync_ok()
    bridge.advance(50)
    code, doc = bridge.health()
    assert (code, doc["status"], doc["reasons"]) == (200, "ok", [])
    assert doc["feed_age_seconds"] == 50
    assert doc["published_at"] == "2027-01-15T08:00:10Z"
    assert doc["last_success"] == "2027-01-15T08:00:10Z"
    assert doc["reports"] == 2 and doc["iocs"] == 7
    assert doc["iocs_by_type"] == {"dns": 2, "md5": 5}
    assert (doc["cycles_ok"], doc["cycles_failed"], doc["running"]) == (1, 0, False)
    assert set(doc) >= {
        "status",
        "feed_age_seconds",
        "published_at",
        "last_attempt",
        "last_success",
        "last_error",
        "last_error_at",
        "running",
        "reports",
        "iocs",
        "iocs_by_type",
        "stale_after_seconds",
        "cycles_ok",
        "cycles_failed",
        "held_back",
    }


def test_ok_during_the_next_sync_without_flapping() -> None:
    """
    While the next scheduled sync runs, the feed may pass one interval of age
    without the bridge turning degraded.
    """
    bridge = Bridge()
    bridge.sync_ok(duration=5)
    bridge.advance(HOUR - 5)
    bridge.status.begin(bridge.clock.seconds())
    bridge.advance(300)
    code, doc = bridge.health()
    assert (code, doc["status"], doc["running"]) == (200, "ok", True)
    assert doc["feed_age_seconds"] > HOUR


def test_failed_after_success_is_degraded() -> None:
    """
    A sync failed after a good one: the previous feed is still served, so
    degraded with 200 and ThreatConnect's message.
    """
    bridge = Bridge()
    bridge.sync_ok()
    bridge.advance(HOUR)
    bridge.sync_fails(message="HTTP 503 from ThreatConnect")
    code, doc = bridge.health()
    assert (code, doc["status"]) == (200, "degraded")
    assert doc["last_error"] == "HTTP 503 from ThreatConnect"
    assert doc["reasons"][0] == "the last sync failed: HTTP 503 from ThreatConnect"
    bridge.advance(HOUR - 10)
    bridge.sync_ok()
    assert bridge.health()[1]["status"] == "ok"


def test_running_past_one_interval_is_degraded() -> None:
    """
    A sync that has been running for more than one interval makes a bridge
    with a fresh-enough feed degraded.
    """
    bridge = Bridge()
    bridge.sync_ok()
    bridge.status.begin(bridge.clock.seconds())
    bridge.advance(HOUR + 1)
    code, doc = bridge.health()
    assert (code, doc["status"]) == (200, "degraded")
    assert any("running for" in r for r in doc["reasons"])


def test_old_feed_without_sync_is_degraded() -> None:
    """
    A feed older than one interval with no sync running (a timer that
    stopped) is degraded; past stale_after it is failing with 503.
    """
    bridge = Bridge()
    bridge.sync_ok()
    bridge.advance(HOUR + 1)
    code, doc = bridge.health()
    assert (code, doc["status"]) == (200, "degraded")
    assert "a scheduled sync did not publish" in doc["reasons"][0]
    bridge.advance(2 * HOUR)
    code, doc = bridge.health()
    assert (code, doc["status"]) == (503, "failing")
    assert doc["reasons"][0].startswith("the feed is stale")


def test_stale_after_failures() -> None:
    """
    Every sync failing for more than three intervals: the feed is stale and
    /healthz is failing, even though a feed is served.
    """
    bridge = Bridge()
    bridge.sync_ok()
    for _ in range(3):
        bridge.advance(HOUR - 10)
        bridge.sync_fails()
    bridge.advance(1)
    code, doc = bridge.health()
    assert doc["feed_age_seconds"] > 3 * HOUR
    assert (code, doc["status"]) == (503, "failing")
    assert doc["cycles_failed"] == 3


def test_custom_interval_and_stale_after() -> None:
    """
    interval_seconds and stale_after_intervals change the thresholds.
    """
    bridge = Bridge(interval_seconds=600, stale_after_intervals=2)
    bridge.sync_ok()
    bridge.advance(700)
    code, doc = bridge.health()
    assert (code, doc["status"], doc["stale_after_seconds"]) == (200, "degraded", 1200)
    assert doc["interval_seconds"] == 600
    bridge.advance(600)
    assert bridge.health()[0] == 503


def test_held_back() -> None:
    """
    The shrink guard holding a new feed back makes the bridge degraded, and
    its message (how to accept the feed) is in the document.
    """
    status = HeldStatus(started_at=START)
    bridge = Bridge(status)
    bridge.sync_ok()
    assert bridge.health()[1]["status"] == "ok"
    status.held_back = HELD
    code, doc = bridge.health()
    assert (code, doc["status"], doc["held_back"]) == (200, "degraded", HELD)
    assert HELD in doc["reasons"]


def test_held_back_too_long_is_failing() -> None:
    """
    A feed held back until the served one is stale is failing: someone must
    accept it or fix the source.
    """
    status = HeldStatus(started_at=START)
    bridge = Bridge(status)
    bridge.sync_ok()
    status.held_back = HELD
    bridge.advance(3 * HOUR + 1)
    code, doc = bridge.health()
    assert (code, doc["status"]) == (503, "failing")
    assert HELD in doc["reasons"]


def test_from_cache() -> None:
    """
    A feed loaded from the cache at start is served: degraded until the
    first sync confirms it, then ok; failing at once if the cache is stale.
    """
    bridge = Bridge()
    bridge.load_cache(age=1200)
    code, doc = bridge.health()
    assert (code, doc["status"], doc["from_cache"]) == (200, "degraded", True)
    assert doc["feed_age_seconds"] == 1200
    assert "loaded from the cache" in doc["reasons"][0]
    bridge.sync_ok()
    assert bridge.health()[1]["status"] == "ok"

    stale = Bridge()
    stale.load_cache(age=4 * HOUR)
    assert stale.health()[0] == 503

    failed = Bridge()
    failed.load_cache(age=60)
    failed.sync_fails()
    code, doc = failed.health()
    assert (code, doc["status"]) == (200, "degraded")
    assert doc["reasons"] == ["the last sync failed: HTTP 401: Access Denied"]


def test_head_healthz() -> None:
    """
    HEAD /healthz has the status code and no body.
    """
    bridge = Bridge()
    bridge.sync_fails()
    code, doc = bridge.health("HEAD")
    assert (code, doc) == (503, {})


def test_health_never_reads_the_feed() -> None:
    """
    /healthz reads only metadata: a published body that is not even JSON
    makes no difference.
    """
    bridge = Bridge()
    bridge.store.swap(Snapshot.of(b"\x00 not json", 1, 1, START))
    bridge.status.begin(START)
    bridge.status.succeeded(START)
    assert bridge.health()[1]["status"] == "ok"


def test_assess_directly() -> None:
    """
    The verdict object carries the HTTP code.
    """
    status = SyncStatus(started_at=START)
    assert assess(status, None, START).code == 200
    assert assess(status, None, START + HOUR + 1).code == 503
