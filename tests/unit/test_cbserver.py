"""
Tests for L{tcbridge.cbserver}: registering and synchronizing the feed on a
Carbon Black EDR server, against the mock in L{tests.cbmock} through
StubTreq, on a L{Clock}; and L{feed_url_for}.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from OpenSSL import SSL
from treq.testing import StubTreq
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseNeverReceived
from twisted.web.resource import Resource

from tcbridge.cbserver import CbServerSync, CbSyncError, CbSyncResult, feed_url_for
from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore, Snapshot
from tcbridge.web.app import FeedApp
from tests.cbmock import CbMock, Recorded, fetch_from, fetch_through
from tests.helpers import failure_of, result_of

TOKEN = "s3cr3t-api-token-0123456789abcdef"
FEED_URL = "http://127.0.0.1:6100/threatconnect/json"
FEEDINFO = {
    "name": "threatconnectintegration",
    "display_name": "ThreatConnect",
    "provider_url": "https://www.threatconnect.com",
    "summary": "IOCs from ThreatConnect",
    "tech_data": "None",
    "category": "Partner",
}
FEED = orjson.dumps({"feedinfo": FEEDINFO, "reports": []})
#: The wildcard listen address (only ever a string here).
ANY = "0.0.0.0"  # noqa: S104


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    """
    Every log event published during the test.
    """
    seen: list[LogEvent] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(seen.append)


def _setup(
    *, feed: bytes = FEED, feed_url: str = FEED_URL, token: str = TOKEN
) -> tuple[CbServerSync, CbMock, Clock]:
    clock = Clock()
    clock.advance(1_800_000_000)
    mock = CbMock(token=TOKEN, fetch=fetch_from({feed_url: feed}))
    sync = CbServerSync(StubTreq(mock.resource()), clock, "https://cb.example/", token, feed_url)
    return sync, mock, clock


def _run(sync: CbServerSync) -> Deferred[CbSyncResult]:
    return Deferred.fromCoroutine(sync.synchronize())


def _error(sync: CbServerSync) -> CbSyncError:
    error = failure_of(_run(sync)).value
    assert isinstance(error, CbSyncError)
    assert TOKEN not in str(error) and TOKEN not in repr(error)
    assert "\n" not in str(error)
    return error


class _Failing:
    """
    An HTTP client whose every request fails with C{error}.
    """

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        return fail(self.error)


def test_creates_missing_feed_then_synchronizes() -> None:
    """
    With no feed of that name, the feed is registered with the four fields
    the connectors sent (the server fetches it), then synchronized
    incrementally; every call carries the token, POSTs are JSON.
    """
    sync, mock, _ = _setup()
    result = result_of(_run(sync))
    assert result == CbSyncResult(feed_id=1, created=True, at=1_800_000_000)
    assert mock.calls() == [
        ("GET", "/api/v1/feed"),
        ("POST", "/api/v1/feed"),
        ("POST", "/api/v1/feed/1/synchronize"),
    ]
    for r in mock.requests:
        assert r.headers["x-auth-token"] == TOKEN
    create, synchronize = mock.requests[1], mock.requests[2]
    assert create.headers["content-type"] == "application/json"
    assert create.json() == {
        "enabled": True,
        "feed_url": FEED_URL,
        "use_proxy": False,
        "validate_server_cert": False,
    }
    assert synchronize.headers["content-type"] == "application/json"
    assert synchronize.json() == {"full_sync": False}
    # The server fetched the feed on creation and again on synchronize, and
    # took its name and display name from the feedinfo.
    assert mock.fetched == [FEED_URL, FEED_URL]
    feed = mock.feeds[1]
    assert feed["name"] == "threatconnectintegration"
    assert feed["display_name"] == "ThreatConnect"
    assert feed["manually_added"] is True


def test_https_feed_url_is_registered_with_certificate_validation() -> None:
    """
    An C{https} feed URL is registered with C{validate_server_cert: true}.
    """
    url = "https://bridge.example:6100/threatconnect/json"
    sync, mock, _ = _setup(feed_url=url)
    result_of(_run(sync))
    assert mock.requests[1].json()["validate_server_cert"] is True


def test_existing_feed_found_case_insensitively_is_only_synchronized() -> None:
    """
    A feed whose name matches in another case is used: no feed is created.
    """
    sync, mock, clock = _setup()
    mock.add_feed("SomeOtherFeed")
    mock.add_feed("ThreatConnectIntegration", id=42, feed_url=FEED_URL)
    clock.advance(5)
    result = result_of(_run(sync))
    assert result == CbSyncResult(feed_id=42, created=False, at=1_800_000_005)
    assert mock.calls() == [("GET", "/api/v1/feed"), ("POST", "/api/v1/feed/42/synchronize")]
    assert mock.requests[1].json() == {"full_sync": False}


def test_second_run_reuses_the_registered_feed() -> None:
    """
    The feed registered by a first run is found by the next one.
    """
    sync, mock, _ = _setup()
    result_of(_run(sync))
    second = result_of(_run(sync))
    assert second.feed_id == 1 and not second.created
    assert len(mock.feeds) == 1


def test_several_matches_is_an_error() -> None:
    """
    Several feeds with the name: nothing is synchronized or created, and the
    error names the ids.
    """
    sync, mock, _ = _setup()
    mock.add_feed("threatconnectintegration", id=3)
    mock.add_feed("THREATCONNECTINTEGRATION", id=9)
    error = _error(sync)
    assert str(error) == (
        "several feeds named threatconnectintegration on the Carbon Black server "
        "(ids 3, 9); remove the extra ones"
    )
    assert mock.calls() == [("GET", "/api/v1/feed")]


def test_bad_token(events: list[LogEvent]) -> None:
    """
    A 401 says the token was refused, and neither the error nor the log nor
    the C{repr} shows the token.
    """
    sync, _, _ = _setup(token="wrong-" + TOKEN)
    error = failure_of(_run(sync)).value
    assert isinstance(error, CbSyncError)
    assert str(error) == (
        "listing feeds (GET /api/v1/feed): the Carbon Black server refused the API "
        "token (401); check carbonblack_server_token"
    )
    assert error.status == 401
    assert "wrong-" not in str(error) and TOKEN not in repr(sync)
    texts = [formatEvent(e) + repr(e) for e in events]
    assert any("refused the API token" in t for t in texts)
    assert not any(TOKEN in t for t in texts)


def test_disabled_feed() -> None:
    """
    A 409 on synchronize means the feed is disabled in the console.
    """
    sync, mock, _ = _setup()
    mock.add_feed("threatconnectintegration", id=7, enabled=False)
    error = _error(sync)
    assert str(error) == (
        "synchronizing feed 7 (POST /api/v1/feed/7/synchronize): the feed is disabled "
        "in Carbon Black (409): enable it in the console"
    )
    assert error.status == 409


def test_invalid_feed_on_create() -> None:
    """
    When the server cannot parse what it fetched, creation fails with 409
    and the error names the feed URL.
    """
    sync, mock, _ = _setup(feed=b"<html>not a feed</html>")
    error = _error(sync)
    assert str(error).startswith(
        f"creating the feed (POST /api/v1/feed): Carbon Black could not read the feed at "
        f"{FEED_URL} (409): FeedSyncJsonError: feed is not JSON"
    )
    assert mock.feeds == {}
    assert mock.calls() == [("GET", "/api/v1/feed"), ("POST", "/api/v1/feed")]


def test_unreachable_feed_on_create() -> None:
    """
    When the server cannot fetch the feed at all (a 500), the error says
    that is the usual cause.
    """
    sync, mock, _ = _setup()
    mock.fetch = fetch_from({})
    error = _error(sync)
    assert error.status == 500
    assert f"usually it cannot retrieve the feed at {FEED_URL}" in str(error)


def test_unknown_feed_id() -> None:
    """
    A 404 on synchronize (the feed was deleted in the console between the
    two calls) is reported in one line.
    """
    sync, mock, _ = _setup()
    mock.add_feed("threatconnectintegration", id=5, feed_url=FEED_URL)

    def delete_on_synchronize(request: Recorded) -> None:
        if request.path.endswith("/synchronize"):
            mock.feeds.clear()

    mock.on_request = delete_on_synchronize
    error = _error(sync)
    assert str(error) == (
        "synchronizing feed 5 (POST /api/v1/feed/5/synchronize): Carbon Black has no "
        "feed 5 (404); it was probably removed meanwhile, the next sync registers it again"
    )
    assert error.status == 404


def test_timeout() -> None:
    """
    A server that never answers fails after C{timeout} seconds of the
    injected clock, naming the host.
    """
    sync, mock, clock = _setup()
    mock.stall = True
    d = _run(sync)
    assert not d.called
    clock.advance(29.9)
    assert not d.called
    clock.advance(0.1)
    error = failure_of(d).value
    assert isinstance(error, CbSyncError)
    assert str(error) == (
        "listing feeds (GET /api/v1/feed): no answer from cb.example:443 within 30 seconds"
    )
    assert clock.getDelayedCalls() == []


def test_connection_refused() -> None:
    """
    A refused connection names the host and the reason.
    """
    clock = Clock()
    http = _Failing(ierror.ConnectionRefusedError("Connection refused"))
    sync = CbServerSync(http, clock, "https://cb.example:8443", TOKEN, FEED_URL)
    error = _error(sync)
    assert str(error).startswith(
        "listing feeds (GET /api/v1/feed): cannot connect to cb.example:8443: "
    )
    assert "Connection refused" in str(error)
    assert error.status is None


def test_tls_verification_failure() -> None:
    """
    An untrusted certificate is reported as a TLS verification failure.
    """
    clock = Clock()
    tls = SSL.Error([("SSL routines", "", "certificate verify failed")])
    http = _Failing(ResponseNeverReceived([Failure(tls)]))
    sync = CbServerSync(http, clock, "https://cb.example", TOKEN, FEED_URL)
    error = _error(sync)
    assert str(error).startswith(
        "listing feeds (GET /api/v1/feed): TLS verification of cb.example:443 failed: "
        "certificate verify failed"
    )


def test_unexpected_status_quotes_the_server() -> None:
    """
    Any other status is shown with what the server said, token removed.
    """
    http = StubTreq(_Teapot().resource())
    sync = CbServerSync(http, Clock(), "https://cb.example", TOKEN, FEED_URL)
    error = _error(sync)
    assert str(error) == (
        "listing feeds (GET /api/v1/feed): the Carbon Black server answered HTTP 418: "
        "no tea for (token hidden)"
    )


def test_not_a_list() -> None:
    """
    A feed list that is not a JSON array is an error, not a crash.
    """
    http = StubTreq(_Teapot(code=200, body=b'{"feeds": []}').resource())
    sync = CbServerSync(http, Clock(), "https://cb.example", TOKEN, FEED_URL)
    error = _error(sync)
    assert str(error) == (
        "listing feeds (GET /api/v1/feed): expected a JSON array of feeds, got dict"
    )


class _Teapot:
    """
    A server that gives every request the same answer.
    """

    def __init__(self, code: int = 418, body: bytes | None = None) -> None:
        answer = body if body is not None else orjson.dumps({"reason": f"no tea for {TOKEN}"})

        class Leaf(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                request.setResponseCode(code)
                return answer

        self._leaf = Leaf()

    def resource(self) -> Any:
        return self._leaf


def test_through_the_bridge_feed_app() -> None:
    """
    End to end in memory: the mock fetches the feed from the bridge's own
    L{FeedApp}; an invalid document there gives the 409 error, a valid one
    registers the feed under its feedinfo name.
    """
    clock = Clock()
    clock.advance(1_800_000_000)
    store = FeedStore(empty_body=b'{"reports": []}')
    app = FeedApp(store, SyncStatus(started_at=clock.seconds()), clock)
    mock = CbMock(token=TOKEN, fetch=fetch_through(StubTreq(app.resource())))
    sync = CbServerSync(StubTreq(mock.resource()), clock, "https://cb.example", TOKEN, FEED_URL)

    error = _error(sync)
    assert "Carbon Black could not read the feed at" in str(error)
    assert "(409): FeedSyncJsonError: feed has no feedinfo" in str(error)

    store.swap(Snapshot.of(FEED, 0, 0, clock.seconds()))
    result = result_of(_run(sync))
    assert result.created and mock.feeds[result.feed_id]["summary"] == FEEDINFO["summary"]


@pytest.mark.parametrize(
    ("address", "port", "host", "tls", "expected"),
    [
        (ANY, 6100, None, False, "http://127.0.0.1:6100/threatconnect/json"),
        ("127.0.0.1", 6100, None, False, "http://127.0.0.1:6100/threatconnect/json"),
        (ANY, 6100, "bridge.example", False, "http://bridge.example:6100/threatconnect/json"),
        ("10.1.2.3", 8443, None, True, "https://10.1.2.3:8443/threatconnect/json"),
        ("::", 6100, None, False, "http://[::1]:6100/threatconnect/json"),
        (ANY, 6100, "fe80::1", True, "https://[fe80::1]:6100/threatconnect/json"),
        (ANY, 6100, "[2001:db8::5]", False, "http://[2001:db8::5]:6100/threatconnect/json"),
        ("", 6100, "", False, "http://127.0.0.1:6100/threatconnect/json"),
    ],
)
def test_feed_url_for(address: str, port: int, host: str | None, tls: bool, expected: str) -> None:
    """
    The URL the server fetches: the host address if given, else the listen
    address with wildcards made loopback, IPv6 in brackets, https with TLS.
    """
    assert feed_url_for(address, port, host, tls) == expected


def test_listener_credentials_are_given_to_carbon_black() -> None:
    """
    When the listener asks for basic authentication, the feed is registered
    with that username and password so Carbon Black can fetch it; the
    password is not in the sync's repr.
    """
    sync, mock, _ = _setup()
    sync = CbServerSync(
        StubTreq(mock.resource()),
        Clock(),
        "https://cb.example",
        TOKEN,
        FEED_URL,
        feed_username="carbonblack",
        feed_password="listener-pw",
    )
    result_of(_run(sync))
    create = mock.requests[1].json()
    assert (create["username"], create["password"]) == ("carbonblack", "listener-pw")
    assert "listener-pw" not in repr(sync)
