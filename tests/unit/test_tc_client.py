# -*- test-case-name: tests.unit.test_tc_client -*-
"""
Tests for L{tcbridge.threatconnect.client}: signing what is sent, error
mapping, timeouts on the injected clock, and secrets kept out of errors and
logs.  Everything runs over C{StubTreq} and a L{Clock}, except two loopback
tests that prove the same on a real socket.  Most tests here look at a
single exchange (L{NO_RETRY}); retries are tested in L{tests.unit.test_tc_retry}
and hints in L{tests.unit.test_tc_diagnosis}.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionLost, ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseNeverReceived

from tcbridge.logs import set_log_level
from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.errors import (
    ApiError,
    AuthError,
    ConnectionFailed,
    NotJSONError,
    RequestTimeout,
    ResponseError,
    ThreatConnectError,
    TruncatedResponseError,
)
from tests.helpers import failure_of, result_of
from tests.helpers_tc import (
    API_KEY,
    NO_RETRY,
    NOW,
    SECRET,
    Reply,
    always,
    in_order,
    json_reply,
    make_client,
    success,
)

OWNERS = {"owner": [{"id": 1, "name": "Common Community"}]}


def get(client: ThreatConnectClient, target: str) -> Deferred[Any]:
    """
    Start C{client.get_json(target)} as a Deferred.
    """
    return defer.ensureDeferred(client.get_json(target))


def error_of(client: ThreatConnectClient, target: str = "/v2/owners") -> ThreatConnectError:
    """
    The ThreatConnectError that C{GET target} fails with.
    """
    f = failure_of(get(client, target))
    assert isinstance(f.value, ThreatConnectError), f
    return f.value


# -- what is signed is what is sent --------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "target", "on_wire"),
    [
        (
            "http://127.0.0.1:8443/api",
            "/v2/owners?resultStart=0&resultLimit=10000",
            "/api/v2/owners?resultStart=0&resultLimit=10000",
        ),
        ("https://api.threatconnect.com", "/v2/owners", "/v2/owners"),
        ("https://app.threatconnect.com/api/", "/v2/owners", "/api/v2/owners"),
        (
            "https://app.threatconnect.com/api",
            "/v2/indicators/hosts?owner=Common%20Community&resultStart=0&resultLimit=100",
            "/api/v2/indicators/hosts?owner=Common%20Community&resultStart=0&resultLimit=100",
        ),
        (
            "https://app.threatconnect.com/api",
            "/v2/indicators/hosts?owner=Common+Community&resultStart=0&resultLimit=100",
            "/api/v2/indicators/hosts?owner=Common+Community&resultStart=0&resultLimit=100",
        ),
        (
            "https://tc.example/api",
            "/v2/indicators?owner=A%2CB&filters=rating%3E3&x=(y)&n=O'Brien&t=%27",
            "/api/v2/indicators?owner=A%2CB&filters=rating%3E3&x=(y)&n=O'Brien&t=%27",
        ),
        (
            "https://tc.example",
            "/v1/indicators/?owner=Common%%20Community",
            "/v1/indicators/?owner=Common%%20Community",
        ),
        (
            "https://tc.example",
            "/v1/indicators/?owner=Common Community&n=Caf\u00e9",
            "/v1/indicators/?owner=Common%20Community&n=Caf%C3%A9",
        ),
    ],
)
def test_signed_target_is_sent_target(base_url: str, target: str, on_wire: str) -> None:
    """
    The server receives exactly the request target that was signed, with the
    base URL's path prefix (or none), C{%20}, C{+}, C{%2C}, C{(}, C{'} and
    even C{%%} untouched; a raw space or non-ASCII letter is encoded before
    signing, so the signature still matches.
    """
    client, resource, _, _ = make_client(always(success(OWNERS)), base_url=base_url)
    assert result_of(get(client, target))["data"] == OWNERS
    [seen] = resource.seen
    assert seen.uri == on_wire
    assert client.request_target(target) == on_wire
    assert seen.signature_ok()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/v2/owners", "PXd4pJuGWXxmDlCrpJUeAqDoSkmQSk5E66jDY62GXjo="),
        (
            "/v2/indicators/hosts?owner=Common%20Community&resultStart=0&resultLimit=100",
            "d9PUx7wHwMEWZq5fq+XDZvdgUEwHgFYM7HrXYUx1Bms=",
        ),
        (
            "/v2/indicators/hosts?owner=Common+Community&resultStart=0&resultLimit=100",
            "6jJrtYyp8xYEhJt1F+ro3L07Witenc5zZu3q+SMaN80=",
        ),
    ],
)
def test_headers_match_vectors(target: str, expected: str) -> None:
    """
    With the clock at the vectors' time (plus a fraction), the request
    carries C{Timestamp} from the injected clock, the documented signature,
    and C{Accept: application/json}.
    """
    client, resource, _, _ = make_client(always(success(OWNERS)), now=NOW + 0.75)
    result_of(get(client, target))
    [seen] = resource.seen
    assert seen.method == "GET"
    assert seen.headers["timestamp"] == str(NOW)
    assert seen.headers["authorization"] == f"TC {API_KEY}:{expected}"
    assert seen.headers["accept"] == "application/json"


def test_timestamp_follows_clock() -> None:
    """
    Each request is signed with the clock's time when it is sent, never the
    wall clock.
    """
    client, resource, clock, _ = make_client(always(success(OWNERS)), now=1000)
    result_of(get(client, "/v2/owners"))
    clock.advance(600)
    result_of(get(client, "/v2/owners"))
    assert [s.headers["timestamp"] for s in resource.seen] == ["1000", "1600"]
    assert all(s.signature_ok() for s in resource.seen)


def test_requests_counted() -> None:
    """
    The client counts every request it sends, failed ones included.
    """
    client, _, _, _ = make_client(
        in_order(success(OWNERS), json_reply({"status": "Failure", "message": "x"}, 404))
    )
    assert client.requests == 0
    result_of(get(client, "/v2/owners"))
    failure_of(get(client, "/v2/owners"))
    assert client.requests == 2


def test_target_must_be_absolute() -> None:
    """
    A target without a leading C{/} is a programming error, reported at once.
    """
    client, resource, _, _ = make_client(always(success(OWNERS)))
    with pytest.raises(ValueError, match="must start with '/'"):
        client.request_target("v2/owners")
    assert resource.seen == []


# -- error mapping ----------------------------------------------------------------------


def test_401_v2_message() -> None:
    """
    A 401 with ThreatConnect's v2 error body is an AuthError carrying
    ThreatConnect's text, and reads as one line naming the request.
    """
    client, _, _, _ = make_client(
        always(
            Reply(
                401,
                b'{"status":"Failure","message":"Timestamp out of acceptable time range"}',
                headers=(("Date", "Tue, 19 Dec 2017 17:31:39 GMT"),),  # NOW + 912
            )
        )
    )
    err = error_of(client)
    assert isinstance(err, AuthError)
    assert err.status == 401
    assert err.message == "Timestamp out of acceptable time range"
    assert err.target == "/api/v2/owners"
    assert str(err) == (
        "ThreatConnect refused GET /api/v2/owners: HTTP 401: Timestamp out of acceptable "
        "time range. This host's clock is 912 seconds behind ThreatConnect; set the system "
        "clock (NTP)."
    )


def test_403_empty_error_message() -> None:
    """
    The 2015 form with an empty C{errorMessage} tells the user it is usually
    a wrong API key or secret key.
    """
    client, _, _, _ = make_client(
        always(json_reply({"status": "Failure", "errorMessage": ""}, 403))
    )
    err = error_of(client)
    assert isinstance(err, AuthError)
    assert err.status == 403
    assert err.message == (
        "ThreatConnect gave an empty error message (usually a wrong API key or secret key)"
    )
    assert str(err).startswith("ThreatConnect refused GET /api/v2/owners: HTTP 403: ")


def test_403_error_message_text() -> None:
    """
    The 2015 form's C{errorMessage} text is passed on as the message.
    """
    client, _, _, _ = make_client(
        always(json_reply({"status": "Failure", "errorMessage": "Access Denied"}, 403))
    )
    err = error_of(client)
    assert isinstance(err, AuthError)
    assert err.message == "Access Denied"


def test_v3_error() -> None:
    """
    A v3 error body gives ThreatConnect's message; the error code is shown
    in the one-line text.
    """
    client, _, _, _ = make_client(
        always(
            json_reply(
                {"status": "Error", "errCode": "0x1001", "message": "Resource not found"}, 404
            )
        )
    )
    err = error_of(client)
    assert isinstance(err, ApiError)
    assert (err.status, err.message) == (404, "Resource not found")
    assert str(err) == (
        "ThreatConnect refused GET /api/v2/owners: HTTP 404: Resource not found (errCode 0x1001)"
    )


def test_500_v2_message() -> None:
    """
    A 5xx with a JSON error body is an ApiError with ThreatConnect's text.
    """
    client, _, _, _ = make_client(
        always(json_reply({"status": "Failure", "message": "Internal error"}, 500)),
        retry=NO_RETRY,
    )
    err = error_of(client)
    assert type(err) is ApiError
    assert (err.status, err.message) == (500, "Internal error")


def test_503_not_licensed() -> None:
    """
    ThreatConnect's "not licensed" 503 is an ApiError with its text.
    """
    text = "API access has not been licensed for this system"
    client, _, _, _ = make_client(always(json_reply({"status": "Failure", "message": text}, 503)))
    err = error_of(client)
    assert isinstance(err, ApiError)
    assert err.message == text


def test_html_502() -> None:
    """
    A proxy's HTML 502 page becomes "HTTP 502 Bad Gateway: <first line>",
    tags stripped.
    """
    body = (
        b"\n\n<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
        b"<body><center><h1>502 Bad Gateway</h1></center><hr>nginx</body></html>"
    )
    client, _, _, _ = make_client(always(Reply(502, body, "text/html")), retry=NO_RETRY)
    err = error_of(client)
    assert isinstance(err, ApiError)
    assert err.status == 502
    assert err.message == "HTTP 502 Bad Gateway: 502 Bad Gateway"
    assert str(err) == (
        "ThreatConnect refused GET /api/v2/owners: HTTP 502 Bad Gateway: 502 Bad Gateway. "
        "ThreatConnect or a proxy in between is failing."
    )


def test_long_text_body_cut() -> None:
    """
    A long plain-text error body is cut to 200 characters on one line.
    """
    client, _, _, _ = make_client(
        always(Reply(500, b"x" * 1000 + b"\nsecond", "text/plain")), retry=NO_RETRY
    )
    err = error_of(client)
    line = err.message.split(": ", 1)[1]
    assert len(line) == 200
    assert "second" not in err.message


def test_empty_body_error() -> None:
    """
    An error status with an empty body says so.
    """
    client, _, _, _ = make_client(always(Reply(503, b"", "")), retry=NO_RETRY)
    err = error_of(client)
    assert isinstance(err, ApiError)
    assert err.message == "HTTP 503 Service Unavailable: empty response body"


def test_401_html_is_auth_error() -> None:
    """
    401 and 403 are AuthErrors even without a JSON body.
    """
    client, _, _, _ = make_client(always(Reply(401, b"<h1>Unauthorized</h1>", "text/html")))
    err = error_of(client)
    assert isinstance(err, AuthError)
    assert err.message == "HTTP 401 Unauthorized: Unauthorized"


def test_redirect_not_followed() -> None:
    """
    A redirect is reported, not followed: the signature covers one target and
    the Authorization header must not travel elsewhere.
    """
    client, resource, _, _ = make_client(always(Reply(302, b"", "")))
    err = error_of(client)
    assert isinstance(err, ApiError)
    assert err.status == 302
    assert len(resource.seen) == 1


def test_success_status_not_success() -> None:
    """
    HTTP 200 whose JSON status is not "Success" is an ApiError with
    ThreatConnect's text.
    """
    client, _, _, _ = make_client(
        always(json_reply({"status": "Failure", "message": "Invalid owner"}))
    )
    err = error_of(client)
    assert isinstance(err, ApiError)
    assert (err.status, err.message) == (200, "Invalid owner")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"<html><body>Please log in</body></html>", "body is not JSON"),
        (b'{"status":"Success","data":{"owner":[{"id":1,"na', "JSON truncated after"),
        (b"", "empty body"),
        (b"   \n", "empty body"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"data": {}}', "no 'status' field"),
        (b'{"status":"Success"} trailing', "body is not JSON"),
    ],
)
def test_unreadable_success(body: bytes, words: str) -> None:
    """
    A 2xx that is not JSON, is truncated, empty, or the wrong shape is a
    ResponseError whose message says which.
    """
    client, _, _, _ = make_client(always(Reply(200, body)), retry=NO_RETRY)
    err = error_of(client)
    assert isinstance(err, ResponseError)
    # Not JSON at all is worth another try; JSON of the wrong shape is not.
    not_json = words in ("body is not JSON", "JSON truncated after", "empty body")
    assert isinstance(err, NotJSONError) is not_json
    assert err.status == 200
    assert words in err.message


def test_html_success_first_line() -> None:
    """
    A 200 HTML page (a captive proxy) is shown by its first text line.
    """
    client, _, _, _ = make_client(
        always(Reply(200, b"<html><title>Proxy login</title></html>", "text/html")),
        retry=NO_RETRY,
    )
    err = error_of(client)
    assert err.message == "body is not JSON (HTTP 200 OK): Proxy login"


def test_body_cut_mid_way() -> None:
    """
    A connection that closes before the announced body length arrives gives
    a ResponseError saying how much of the body arrived.
    """
    client, _, _, stub = make_client(
        always(Reply(200, b'{"status":', cut_body=True)), retry=NO_RETRY
    )
    d = get(client, "/v2/owners")
    stub.flush()
    err = failure_of(d).value
    assert isinstance(err, TruncatedResponseError)
    assert err.message == "the response was cut off after 10 of 110 bytes"
    assert str(err).startswith(
        "ThreatConnect sent an unreadable response to GET /api/v2/owners: HTTP 200, but "
        "the response was cut off after 10 of 110 bytes ("
    )


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (ConnectionRefusedError("Connection refused"), "Connection refused"),
        (DNSLookupError("no such host"), "no such host"),
        (
            ResponseNeverReceived([Failure(ConnectionLost("Connection reset by peer"))]),
            "Connection reset by peer",
        ),
        (OSError("certificate verify failed"), "certificate verify failed"),
    ],
)
def test_connection_failures(exc: Exception, words: str) -> None:
    """
    Refused, reset, DNS and TLS failures are ConnectionFailed errors naming
    the host and port and the underlying reason.
    """

    class FailingHTTP:
        def get(self, url: Any, **kwargs: Any) -> Deferred[Any]:
            return fail(exc)

    client = ThreatConnectClient(
        FailingHTTP(), Clock(), "https://tc.example:8443/api", API_KEY, SECRET, retry=NO_RETRY
    )
    err = error_of(client)
    assert isinstance(err, ConnectionFailed)
    assert err.status is None
    assert "tc.example:8443" in err.message
    assert words in err.message
    assert str(err).startswith("Could not reach ThreatConnect for GET /api/v2/owners: ")


# -- timeouts ---------------------------------------------------------------------------


def test_timeout_on_clock() -> None:
    """
    When ThreatConnect does not answer, the request fails with RequestTimeout
    once the injected clock passes the timeout, and leaves no timer behind.
    """
    client, resource, clock, stub = make_client(
        always(Reply(hang=True)), timeout=30, retry=NO_RETRY
    )
    d = get(client, "/v2/owners")
    stub.flush()
    clock.advance(29.9)
    assert not d.called
    clock.advance(0.1)
    err = failure_of(d).value
    assert isinstance(err, RequestTimeout)
    assert err.message == "no answer within 30 seconds"
    assert str(err) == (
        "ThreatConnect did not answer GET /api/v2/owners: no answer within 30 seconds"
    )
    assert clock.getDelayedCalls() == []
    assert len(resource.pending) == 1


def test_timeout_while_body_stalls() -> None:
    """
    A body that stops arriving also times out on the clock: the timeout
    covers the whole request, not just the headers.
    """
    client, _, clock, stub = make_client(
        always(Reply(200, b'{"status":', stall_body=True)), timeout=10, retry=NO_RETRY
    )
    d = get(client, "/v2/owners")
    stub.flush()
    clock.advance(5)
    assert not d.called
    clock.advance(5)
    err = failure_of(d).value
    assert isinstance(err, RequestTimeout)
    assert err.status == 200
    assert clock.getDelayedCalls() == []


def test_answer_in_time_cancels_timer() -> None:
    """
    A timely answer leaves no pending timer on the clock.
    """
    client, _, clock, _ = make_client(always(success(OWNERS)))
    result_of(get(client, "/v2/owners"))
    assert clock.getDelayedCalls() == []


def test_caller_cancel_is_not_timeout() -> None:
    """
    Cancelling the request (e.g. at shutdown) is a cancellation, not a
    RequestTimeout.
    """
    client, _, _, stub = make_client(always(Reply(hang=True)))
    d = get(client, "/v2/owners")
    stub.flush()
    d.cancel()
    assert failure_of(d).check(CancelledError)


# -- secrets ----------------------------------------------------------------------------


def test_secret_never_shown() -> None:
    """
    The secret key appears in no repr, error text or log event, for
    successes and failures alike; nor does the Authorization header.
    """
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    set_log_level("DEBUG")
    try:
        client, resource, clock, stub = make_client(
            in_order(
                success(OWNERS),
                json_reply({"status": "Failure", "message": "Access Denied"}, 401),
                Reply(200, b"not json"),
                Reply(hang=True),
            ),
            retry=NO_RETRY,
        )
        errors: list[str] = []
        result_of(get(client, "/v2/owners"))
        for _ in range(2):
            err = error_of(client)
            errors += [str(err), repr(err), err.message]
        d = get(client, "/v2/owners")
        stub.flush()
        clock.advance(30)
        err = failure_of(d).value
        errors += [str(err), repr(err)]
    finally:
        globalLogPublisher.removeObserver(events.append)
        set_log_level("INFO")
    texts = [*errors, repr(client), *(formatEvent(e) for e in events), *map(repr, events)]
    authorization = resource.seen[0].headers["authorization"]
    for text in texts:
        assert SECRET not in text
        assert authorization.split(":", 1)[1] not in text
    debug = [e for e in events if e.get("target") == "/api/v2/owners"]
    assert debug and debug[0]["status"] == 200 and "elapsed" in debug[0]


# -- real sockets -----------------------------------------------------------------------
