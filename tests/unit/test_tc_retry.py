# -*- test-case-name: tests.unit.test_tc_retry -*-
"""
Tests for L{tcbridge.threatconnect.retry} and the client's retries: the
backoff function, C{Retry-After}, which failures are retried and which are
final, exact waits on a L{Clock}, re-signing, giving up, cancellation,
truncated bodies and the per-status counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from OpenSSL import SSL
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseNeverReceived

from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.errors import (
    ApiError,
    AuthError,
    ConnectionFailed,
    RequestTimeout,
    ResponseError,
    ThreatConnectError,
    TLSVerificationError,
    TruncatedResponseError,
)
from tcbridge.threatconnect.retry import (
    RetryPolicy,
    backoff,
    retry_after_seconds,
    retry_reason,
)
from tests.helpers import failure_of, result_of
from tests.helpers_tc import (
    API_KEY,
    NOW,
    SECRET,
    Reply,
    ScriptedTC,
    always,
    in_order,
    json_reply,
    make_client,
    success,
)

OWNERS = {"owner": [{"id": 1, "name": "Common Community"}]}
EPSILON = 0.001


def get(client: ThreatConnectClient, target: str = "/v2/owners") -> Deferred[Any]:
    """
    Start C{client.get_json(target)} as a Deferred.
    """
    return defer.ensureDeferred(client.get_json(target))


def http_date(seconds: float) -> str:
    """
    C{seconds} (POSIX) as an IMF-fixdate.
    """
    from email.utils import formatdate

    return formatdate(seconds, usegmt=True)


class Flaky:
    """
    An HTTP client that fails the first requests with the given exceptions,
    then hands the rest to C{then}.
    """

    def __init__(self, errors: list[BaseException], then: Any) -> None:
        self.errors = list(errors)
        self.then = then
        self.calls = 0

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        self.calls += 1
        if self.errors:
            return fail(self.errors.pop(0))
        return self.then.get(url, **kwargs)


def assert_next_request_after(
    wait: float, clock: Clock, resource: ScriptedTC, before: int, flush: Callable[[], Any]
) -> None:
    """
    No request is sent until C{wait} seconds have passed on C{clock}, and
    one is sent exactly then.
    """
    clock.advance(wait - EPSILON)
    flush()
    assert len(resource.seen) == before, f"a request went out before {wait} seconds"
    clock.advance(EPSILON)
    flush()
    assert len(resource.seen) == before + 1, f"no request after {wait} seconds"


# -- the backoff function -------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (1, 0.0, 0.0),
        (1, 0.5, 0.5),
        (1, 0.999, 0.999),
        (2, 0.5, 1.0),
        (3, 0.5, 2.0),
        (4, 0.25, 2.0),
        (6, 1.0, 32.0),
        (7, 0.5, 30.0),  # ceiling 64 capped at 60
        (7, 1.0, 60.0),
        (100, 0.5, 30.0),
        (10_000, 0.5, 30.0),  # factor ** 9999 overflows: the cap still holds
    ],
)
def test_backoff_default_policy(attempt: int, rand: float, expected: float) -> None:
    """
    The default policy waits C{rand} times 1, 2, 4, 8 ... seconds, capped at
    60 (exponential backoff with full jitter).
    """
    assert backoff(RetryPolicy(), attempt, rand) == pytest.approx(expected)


def test_backoff_custom_policy() -> None:
    """
    C{base}, C{factor} and C{cap} shape the ceiling: C{min(cap, base *
    factor ** (attempt - 1))}.
    """
    policy = RetryPolicy(base=0.25, factor=3.0, cap=5.0)
    assert [backoff(policy, n, 1.0) for n in range(1, 6)] == [0.25, 0.75, 2.25, 5.0, 5.0]
    assert backoff(RetryPolicy(factor=1.0), 9, 0.5) == 0.5


def test_backoff_rejects_attempt_zero() -> None:
    """
    Attempts are numbered from 1.
    """
    with pytest.raises(ValueError, match="attempt must be 1 or more"):
        backoff(RetryPolicy(), 0, 0.5)


def test_policy_defaults_and_validation() -> None:
    """
    The defaults are 5 tries, 1 s base, factor 2, 60 s cap, 300 s
    Retry-After cap; nonsense values are refused.
    """
    assert RetryPolicy() == RetryPolicy(5, 1.0, 2.0, 60.0, 300.0)
    for bad in ({"attempts": 0}, {"base": -1.0}, {"factor": 0.5}, {"cap": -1.0}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


# -- Retry-After parsing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "date", "expected"),
    [
        (None, None, None),
        ("120", None, 120.0),
        (" 7 ", None, 7.0),
        ("0", None, 0.0),
        ("99999", None, 300.0),
        ("-5", None, None),
        ("soon", None, None),
        (http_date(NOW + 45), None, 45.0),
        (http_date(NOW - 45), None, 0.0),
        # Measured from the response's Date, not from this host's clock.
        (http_date(NOW + 5000 + 20), http_date(NOW + 5000), 20.0),
        ("Tue Dec 19 17:17:27 2017", None, 60.0),  # asctime form, NOW + 60
        (http_date(NOW + 20), "garbage", 20.0),
    ],
)
def test_retry_after_seconds(value: str | None, date: str | None, expected: float | None) -> None:
    """
    Retry-After is read as delta-seconds or as an HTTP-date (relative to
    the Date header, else the clock), never negative, capped.
    """
    assert retry_after_seconds(value, NOW, date, cap=300.0) == expected


# -- which failures are retried -------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConnectionFailed("x"), "connection failed"),
        (TLSVerificationError("x"), None),
        (RequestTimeout("x"), "timeout"),
        (TruncatedResponseError("x", status=200), "response cut off"),
        (ResponseError("x", status=200), None),
        (ApiError("x", status=500), "HTTP 500"),
        (ApiError("x", status=502), "HTTP 502"),
        (ApiError("x", status=503), "HTTP 503"),
        (ApiError("x", status=504), "HTTP 504"),
        (ApiError("x", status=429), "HTTP 429"),
        (ApiError("API access has not been licensed for this system", status=503), None),
        (ApiError("x", status=400), None),
        (AuthError("x", status=401), None),
        (AuthError("x", status=403), None),
        (ApiError("x", status=404), None),
        (ApiError("x", status=501), None),
        (ApiError("x", status=200), None),
    ],
)
def test_retry_reason(error: ThreatConnectError, reason: str | None) -> None:
    """
    Transport failures, timeouts, cut bodies, 429 and 500/502/503/504 are
    retried; everything else is final.
    """
    assert retry_reason(error) == reason


# -- the client's retry sequence ------------------------------------------------------


HTML_500 = Reply(500, b"<h1>Internal Server Error</h1>", "text/html")


@pytest.mark.parametrize(
    "first",
    [
        HTML_500,
        json_reply({"status": "Failure", "message": "Internal error"}, 500),
        Reply(502, b"<h1>Bad Gateway</h1>", "text/html"),
        Reply(503, b"", ""),
        Reply(504, b"Gateway Timeout", "text/plain"),
        json_reply({"status": "Error", "message": "Too many requests"}, 429),
        Reply(200, b'{"status":"Success","da', cut_body=True),
        Reply(200, b'{"status":"Success","da', close_delimited=True),
        Reply(200, b'{"status":"Success","data":'),  # whole body, JSON cut: corrupted
        Reply(200, b"<html>Proxy login</html>", "text/html"),
        Reply(200, b""),
    ],
)
def test_retried_until_success_with_exact_waits(first: Reply) -> None:
    """
    After a transient failure the client waits exactly the backoff (0.5 s,
    then 1 s with C{rand} = 0.5) on the clock, sends again, and returns the
    page that finally arrives; no request goes out early.
    """
    client, resource, clock, stub = make_client(in_order(first, first, success(OWNERS)))
    d = get(client)
    stub.flush()
    assert len(resource.seen) == 1 and not d.called
    assert_next_request_after(0.5, clock, resource, 1, stub.flush)
    assert not d.called
    assert_next_request_after(1.0, clock, resource, 2, stub.flush)
    assert result_of(d)["data"] == OWNERS
    assert client.requests == 3
    assert clock.getDelayedCalls() == []


def test_timeout_retried() -> None:
    """
    A request that times out is sent again after the backoff.
    """
    client, resource, clock, stub = make_client(
        in_order(Reply(hang=True), success(OWNERS)), timeout=10
    )
    d = get(client)
    stub.flush()
    clock.advance(10)
    assert len(resource.seen) == 1 and not d.called
    assert_next_request_after(0.5, clock, resource, 1, stub.flush)
    assert result_of(d)["data"] == OWNERS
    assert client.status_counts == {"timeout": 1, 200: 1}


def test_connection_failure_retried() -> None:
    """
    A refused or reset connection is tried again after the backoff.
    """
    resource = ScriptedTC(always(success(OWNERS)))
    flaky = Flaky(
        [
            ConnectionRefusedError("Connection refused"),
            ResponseNeverReceived([Failure(ConnectionRefusedError("reset"))]),
        ],
        StubTreq(resource),
    )
    clock = Clock()
    clock.advance(NOW)
    client = ThreatConnectClient(
        flaky, clock, "https://tc.example/api", API_KEY, SECRET, random=lambda: 0.5
    )
    d = get(client)
    assert flaky.calls == 1
    clock.advance(0.5 - EPSILON)
    assert flaky.calls == 1
    clock.advance(EPSILON)
    assert flaky.calls == 2
    clock.advance(1.0 - EPSILON)
    assert flaky.calls == 2
    clock.advance(EPSILON)
    assert result_of(d)["data"] == OWNERS
    assert client.requests == 3
    assert client.status_counts == {"connection": 2, 200: 1}


def test_tls_verification_failure_not_retried() -> None:
    """
    A certificate that does not verify will not verify a second later: the
    TLSVerificationError is final.
    """
    error = ResponseNeverReceived(
        [Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))]
    )
    flaky = Flaky([error], None)
    clock = Clock()
    client = ThreatConnectClient(flaky, clock, "https://tc.example/api", API_KEY, SECRET)
    err = failure_of(get(client)).value
    assert isinstance(err, TLSVerificationError)
    assert flaky.calls == 1
    assert clock.getDelayedCalls() == []
    assert "gave up" not in str(err)


@pytest.mark.parametrize(
    "reply",
    [
        json_reply({"status": "Failure", "message": "Bad request"}, 400),
        json_reply({"status": "Failure", "message": "Access Denied"}, 401),
        Reply(401, b"<h1>Unauthorized</h1>", "text/html"),
        json_reply({"status": "Failure", "message": "Access Denied"}, 403),
        json_reply({"status": "Failure", "message": "The requested resource was not found"}, 404),
        Reply(200, b"[1, 2]"),  # JSON, but not an object
        json_reply({"status": "Failure", "message": "Invalid owner"}),
        json_reply(
            {
                "status": "Failure",
                "message": "API access has not been licensed for this system, please contact "
                "sales@threatconnect.com if you wish to enable it",
            },
            503,
        ),
    ],
)
def test_final_errors_not_retried(reply: Reply) -> None:
    """
    400, 401, 403, 404, a 2xx that is JSON but not Success (or not the
    expected shape) and the "not licensed" 503 fail at once: one request, no timer, no suffix.
    """
    client, resource, clock, _ = make_client(always(reply))
    err = failure_of(get(client)).value
    assert isinstance(err, ThreatConnectError)
    assert len(resource.seen) == 1
    assert clock.getDelayedCalls() == []
    assert err.attempts == 1
    assert "gave up" not in err.message
    clock.advance(1000)
    assert len(resource.seen) == 1


def test_gives_up_after_attempts_with_suffix() -> None:
    """
    After C{attempts} tries the last error is raised with "(gave up after N
    attempts)" in its message and text, and a hint saying how often it was
    retried.
    """
    client, resource, clock, stub = make_client(always(HTML_500))
    d = get(client)
    for n, wait in enumerate([0.5, 1.0, 2.0, 4.0], start=1):
        assert_next_request_after(wait, clock, resource, n, stub.flush)
    err = failure_of(d).value
    assert isinstance(err, ApiError)
    assert err.status == 500
    assert err.attempts == 5
    assert err.message == (
        "HTTP 500 Internal Server Error: Internal Server Error (gave up after 5 attempts)"
    )
    assert str(err) == (
        "ThreatConnect refused GET /api/v2/owners: HTTP 500 Internal Server Error: "
        "Internal Server Error (gave up after 5 attempts). ThreatConnect or a proxy in "
        "between is failing; tcbridge retried 4 times."
    )
    assert client.requests == 5
    assert client.status_counts == {500: 5}
    assert clock.getDelayedCalls() == []


def test_cut_off_every_time_gives_up() -> None:
    """
    A body that is cut off on every try ends in a ResponseError saying how
    much of it arrived.
    """
    client, resource, clock, stub = make_client(
        always(Reply(200, b'{"status":', cut_body=True)), retry=RetryPolicy(attempts=3)
    )
    d = get(client)
    stub.flush()
    for wait in (0.5, 1.0):
        clock.advance(wait)
        stub.flush()
    err = failure_of(d).value
    assert isinstance(err, ResponseError)
    assert (
        err.message == "the response was cut off after 10 of 110 bytes (gave up after 3 attempts)"
    )
    assert len(resource.seen) == 3


def test_close_delimited_complete_json_is_accepted() -> None:
    """
    A body without a length that ends with the connection is fine when it
    is complete JSON (an HTTP/1.0-style proxy).
    """
    client, resource, _, stub = make_client(
        always(Reply(200, b'{"status":"Success","data":{}}', close_delimited=True))
    )
    d = get(client)
    stub.flush()
    assert result_of(d) == {"status": "Success", "data": {}}
    assert len(resource.seen) == 1


def test_close_delimited_cut_json_is_truncated() -> None:
    """
    A body without a length that ends mid-JSON was cut off: an error (after
    the tries), never a short page.
    """
    client, _, _, stub = make_client(
        always(Reply(200, b'{"status":"Success","data":{"owner":[', close_delimited=True)),
        retry=RetryPolicy(attempts=1),
    )
    d = get(client)
    stub.flush()
    err = failure_of(d).value
    assert isinstance(err, TruncatedResponseError)
    assert err.message == "the response was cut off after 37 bytes"


# -- Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_honoured(status: int) -> None:
    """
    On a 429 or 503 the client waits exactly the Retry-After seconds
    instead of the backoff.
    """
    busy = Reply(status, b"", "", headers=(("Retry-After", "7"),))
    client, resource, clock, stub = make_client(in_order(busy, success(OWNERS)))
    d = get(client)
    assert_next_request_after(7.0, clock, resource, 1, stub.flush)
    assert result_of(d)["data"] == OWNERS


def test_retry_after_date_relative_to_response_date() -> None:
    """
    An HTTP-date Retry-After is measured from the response's Date header,
    so a skewed host clock does not change the wait.
    """
    server_now = NOW + 3600
    busy = Reply(
        429,
        b"",
        "",
        headers=(("Date", http_date(server_now)), ("Retry-After", http_date(server_now + 12))),
    )
    client, resource, clock, stub = make_client(in_order(busy, success(OWNERS)))
    d = get(client)
    assert_next_request_after(12.0, clock, resource, 1, stub.flush)
    assert result_of(d)["data"] == OWNERS


def test_retry_after_date_relative_to_clock_without_date() -> None:
    """
    Without a Date header an HTTP-date Retry-After is measured from the
    injected clock.
    """
    busy = Reply(503, b"", "", headers=(("Date", None), ("Retry-After", http_date(NOW + 30))))
    client, resource, clock, stub = make_client(in_order(busy, success(OWNERS)))
    d = get(client)
    assert_next_request_after(30.0, clock, resource, 1, stub.flush)
    assert result_of(d)["data"] == OWNERS


def test_retry_after_capped() -> None:
    """
    A Retry-After longer than C{retry_after_cap} is cut to the cap.
    """
    busy = Reply(503, b"", "", headers=(("Retry-After", "86400"),))
    client, resource, clock, stub = make_client(
        in_order(busy, success(OWNERS)), retry=RetryPolicy(retry_after_cap=120.0)
    )
    d = get(client)
    assert_next_request_after(120.0, clock, resource, 1, stub.flush)
    assert result_of(d)["data"] == OWNERS


def test_retry_after_ignored_on_500() -> None:
    """
    Retry-After is honoured on 429 and 503 only; a 500 waits the backoff.
    """
    busy = Reply(500, b"", "", headers=(("Retry-After", "60"),))
    client, resource, clock, stub = make_client(in_order(busy, success(OWNERS)))
    d = get(client)
    assert_next_request_after(0.5, clock, resource, 1, stub.flush)
    assert result_of(d)["data"] == OWNERS


def test_unreadable_retry_after_uses_backoff() -> None:
    """
    A Retry-After that is neither seconds nor a date falls back to the
    backoff.
    """
    busy = Reply(503, b"", "", headers=(("Retry-After", "later"),))
    client, resource, clock, stub = make_client(in_order(busy, success(OWNERS)))
    d = get(client)
    assert_next_request_after(0.5, clock, resource, 1, stub.flush)
    assert result_of(d)["data"] == OWNERS


# -- re-signing, cancellation, counts, logs ---------------------------------------------


def test_each_try_signed_afresh() -> None:
    """
    Every try carries the clock's time at sending as its Timestamp, and a
    signature that verifies for it.
    """
    client, resource, clock, _ = make_client(
        in_order(HTML_500, HTML_500, success(OWNERS)),
        retry=RetryPolicy(base=10.0),
        random=lambda: 0.9,
    )
    d = get(client)
    clock.advance(9)
    clock.advance(18)
    assert result_of(d)["data"] == OWNERS
    assert [s.headers["timestamp"] for s in resource.seen] == [
        str(NOW),
        str(NOW + 9),
        str(NOW + 27),
    ]
    assert all(s.signature_ok() for s in resource.seen)
    assert len({s.headers["authorization"] for s in resource.seen}) == 3


def test_cancel_during_wait() -> None:
    """
    Cancelling the request while it waits to retry ends it at once with a
    cancellation, leaves no timer, and sends nothing more.
    """
    client, resource, clock, stub = make_client(always(HTML_500))
    d = get(client)
    assert len(resource.seen) == 1
    assert clock.getDelayedCalls() != []
    d.cancel()
    assert failure_of(d).check(CancelledError)
    assert clock.getDelayedCalls() == []
    clock.advance(1000)
    stub.flush()
    assert len(resource.seen) == 1
    assert client.requests == 1


def test_status_counts() -> None:
    """
    status_counts counts each request by HTTP status, or by "timeout" /
    "connection" when no response came; requests counts them all.
    """
    resource = ScriptedTC(
        in_order(Reply(hang=True), HTML_500, json_reply({"status": "Failure"}, 404))
    )
    flaky = Flaky([ConnectionRefusedError("Connection refused")], StubTreq(resource))
    clock = Clock()
    client = ThreatConnectClient(
        flaky, clock, "https://tc.example/api", API_KEY, SECRET, timeout=5, random=lambda: 0.0
    )
    d = get(client)
    clock.advance(0)
    clock.advance(5)
    clock.advance(0)
    assert isinstance(failure_of(d).value, ApiError)
    assert client.status_counts == {"connection": 1, "timeout": 1, 500: 1, 404: 1}
    assert client.requests == 4


def test_retries_logged_without_secrets() -> None:
    """
    Each retry is a warning event naming the target, the next try, the wait
    and the reason; no event, error or repr shows the secret key or the
    signature.
    """
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        client, resource, clock, _ = make_client(
            in_order(HTML_500, Reply(503, b"", "", headers=(("Retry-After", "3"),)), HTML_500),
            retry=RetryPolicy(attempts=3),
        )
        d = get(client)
        clock.advance(0.5)
        clock.advance(3)
        err = failure_of(d).value
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [e for e in events if e.get("log_level") == LogLevel.warn and "attempt" in e]
    assert [(e["target"], e["attempt"], e["wait"], e["reason"]) for e in warnings] == [
        ("/api/v2/owners", 2, 0.5, "HTTP 500"),
        ("/api/v2/owners", 3, 3.0, "HTTP 503"),
    ]
    assert formatEvent(warnings[1]).startswith(
        "GET /api/v2/owners failed (HTTP 503); try 3 of 3 in 3.00 seconds: "
    )
    signatures = {s.headers["authorization"].split(":", 1)[1] for s in resource.seen}
    texts = [str(err), repr(err), repr(client), *map(formatEvent, events), *map(repr, events)]
    for text in texts:
        assert SECRET not in text
        assert not any(sig in text for sig in signatures)


def test_not_json_gives_up_with_the_first_message() -> None:
    """
    A 2xx that stays not JSON fails after the last try with the message it
    always had, and the number of tries.
    """
    client, resource, clock, stub = make_client(
        always(Reply(200, b"<html><title>Proxy login</title></html>", "text/html"))
    )
    d = get(client)
    for _ in range(10):
        stub.flush()
        clock.advance(60)
    err = failure_of(d).value
    assert isinstance(err, ThreatConnectError)
    assert len(resource.seen) == err.attempts == RetryPolicy().attempts
    assert err.message.startswith("body is not JSON (HTTP 200 OK): Proxy login")
    assert err.message.endswith(f"(gave up after {err.attempts} attempts)")
