# -*- test-case-name: tests.unit.test_tc_diagnosis -*-
"""
Tests for L{tcbridge.threatconnect.diagnosis} and the hints the client puts
on its errors: clock skew measured against ThreatConnect's Date header, the
causes of a signature mismatch, wrong keys, failing servers and untrusted
TLS certificates (the last against a real TLS server on 127.0.0.1).
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from tcbridge.simulator import Simulator, generate
from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.diagnosis import (
    ACCESS_HINT,
    TLS_HINT,
    clock_hint,
    diagnose,
    server_hint,
    signature_hint,
)
from tcbridge.threatconnect.errors import (
    ApiError,
    AuthError,
    ConnectionFailed,
    ThreatConnectError,
    TLSVerificationError,
)
from tests.helpers import failure_of
from tests.helpers_tc import (
    API_KEY,
    NO_RETRY,
    NOW,
    SECRET,
    Reply,
    always,
    json_reply,
    make_client,
)


def error_for(reply: Reply, target: str = "/v2/owners", **kwargs: Any) -> ThreatConnectError:
    """
    The error a client (clock at L{NOW}, no retries) gets for C{reply}.
    """
    client, _, _, _ = make_client(always(reply), retry=NO_RETRY, **kwargs)
    f = failure_of(defer.ensureDeferred(client.get_json(target)))
    assert isinstance(f.value, ThreatConnectError), f
    return f.value


def tc_failure(message: str, status: int, *headers: tuple[str, str | None]) -> Reply:
    """
    ThreatConnect's v2 error body with C{message}.
    """
    body = json_reply({"status": "Failure", "message": message}, status).body
    return Reply(status, body, headers=headers)


# -- clock skew -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_time", "hint"),
    [
        (
            NOW + 912,
            "This host's clock is 912 seconds behind ThreatConnect; set the system clock (NTP).",
        ),
        (
            NOW - 400,
            "This host's clock is 400 seconds ahead of ThreatConnect; set the system clock (NTP).",
        ),
        (
            NOW - 86400 * 365,
            "This host's clock is 31536000 seconds ahead of ThreatConnect; "
            "set the system clock (NTP).",
        ),
    ],
)
@pytest.mark.parametrize("message", ["Timestamp out of acceptable time range", "Invalid timestamp"])
def test_clock_skew_measured(server_time: int, hint: str, message: str) -> None:
    """
    The hint compares the Timestamp that was sent (the clock) with the
    response's Date header and says by how many seconds, and which way,
    this host's clock is off.
    """
    date = formatdate(server_time, usegmt=True)
    err = error_for(tc_failure(message, 401, ("Date", date)))
    assert isinstance(err, AuthError)
    assert err.message == message
    assert err.hint == hint
    assert str(err) == f"ThreatConnect refused GET /api/v2/owners: HTTP 401: {message}. {hint}"


def test_clock_skew_without_date_header() -> None:
    """
    Without a Date header the hint says what ThreatConnect accepts.
    """
    err = error_for(tc_failure("Timestamp out of acceptable time range", 403, ("Date", None)))
    assert err.hint == (
        "Check this host's clock: ThreatConnect accepts a Timestamp within 5 minutes of "
        "its own time."
    )


def test_clock_hint_wording() -> None:
    """
    One second is singular; an unreadable Date is treated as absent; no
    measurable skew points at something in between.
    """
    date = formatdate(NOW + 1, usegmt=True)
    assert clock_hint(NOW, date).startswith("This host's clock is 1 second behind")
    assert clock_hint(NOW, "yesterday").startswith("Check this host's clock")
    assert "agrees with ThreatConnect's Date header" in clock_hint(
        NOW, formatdate(NOW, usegmt=True)
    )


def test_clock_skew_against_simulator() -> None:
    """
    Against the simulator with a host clock 900 seconds slow, the hint says
    exactly that.
    """
    clock = Clock()
    clock.advance(1_800_000_000)
    simulator = Simulator(generate(10), clock, {API_KEY: SECRET}, prefix="/api")
    simulator.clock_skew = 900
    client = ThreatConnectClient(
        StubTreq(simulator.resource()), clock, "https://tc.example/api", API_KEY, SECRET
    )
    err = failure_of(defer.ensureDeferred(client.get_json("/v2/owners"))).value
    assert isinstance(err, AuthError)
    assert err.hint == (
        "This host's clock is 900 seconds behind ThreatConnect; set the system clock (NTP)."
    )
    assert client.requests == 1


# -- signatures and keys --------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "sent", "shown"),
    [
        (
            "/v1/indicators/?owner=Common%2520Community",
            "/api/v1/indicators/?owner=Common%2520Community",
            "%25",
        ),
        (
            "/v1/indicators/?owner=Common%%20Community",
            "/api/v1/indicators/?owner=Common%%20Community",
            "%%",
        ),
    ],
)
def test_signature_mismatch_names_bad_escape(target: str, sent: str, shown: str) -> None:
    """
    A signature mismatch on a target with an escaped or doubled percent sign
    names that target first, then the other causes in order.
    """
    err = error_for(tc_failure("Signature data did not match expected result", 401), target)
    assert err.target == sent
    assert err.hint == (
        f"Likely causes: (1) a bad escape in the source path: {sent} contains {shown} "
        "(write %20, not %%20, for a space); (2) a wrong secret_key; (3) a proxy "
        "rewriting the URL."
    )


def test_signature_mismatch_plain_target() -> None:
    """
    Without a suspicious escape the causes are listed in the same order.
    """
    err = error_for(tc_failure("Signature data did not match expected result", 403))
    assert err.hint == (
        "Likely causes: (1) a source path with a bad escape such as %% (write %20, not "
        "%%20); (2) a wrong secret_key; (3) a proxy rewriting the URL."
    )
    assert signature_hint("/api/v2/owners") == err.hint


@pytest.mark.parametrize(
    "reply",
    [
        tc_failure("Access Denied", 401),
        json_reply({"status": "Failure", "errorMessage": ""}, 403),
        json_reply({"status": "Failure", "errorMessage": None}, 401),
    ],
)
def test_access_denied_and_empty_message(reply: Reply) -> None:
    """
    "Access Denied" and the 2015 empty errorMessage point at the API access
    ID, the secret key and the API user's access.
    """
    err = error_for(reply)
    assert err.hint == ACCESS_HINT
    assert str(err).endswith(ACCESS_HINT)


def test_owner_not_found_left_to_caller() -> None:
    """
    An owner that is missing or hidden is recognisable by status and
    message; the client adds no hint of its own.
    """
    err = error_for(tc_failure("The requested owner was not found", 403))
    assert isinstance(err, AuthError)
    assert (err.status, err.message, err.hint) == (
        403,
        "The requested owner was not found",
        None,
    )


# -- failing servers --------------------------------------------------------------------


def test_server_hints() -> None:
    """
    5xx and 429 hints say who is failing and how often tcbridge retried.
    """
    assert server_hint(502, 0) == "ThreatConnect or a proxy in between is failing."
    assert server_hint(500, 1) == (
        "ThreatConnect or a proxy in between is failing; tcbridge retried once."
    )
    assert server_hint(503, 4).endswith("tcbridge retried 4 times.")
    assert (
        server_hint(429, 2) == "ThreatConnect is limiting the request rate; tcbridge retried twice."
    )


def test_empty_5xx_after_retries() -> None:
    """
    An empty 503 that never goes away reads "HTTP 503 <reason>: empty
    response body", with the retry count in the hint.
    """
    client, _, clock, _ = make_client(always(Reply(503, b"", "")))
    d = defer.ensureDeferred(client.get_json("/v2/owners"))
    for _ in range(4):
        clock.advance(60)
    err = failure_of(d).value
    assert isinstance(err, ApiError)
    assert err.message == (
        "HTTP 503 Service Unavailable: empty response body (gave up after 5 attempts)"
    )
    assert err.hint == "ThreatConnect or a proxy in between is failing; tcbridge retried 4 times."


def test_no_hint_for_plain_errors() -> None:
    """
    Errors tcbridge cannot explain further carry no hint, and their text is
    unchanged.
    """
    err = error_for(tc_failure("Bad request", 400))
    assert err.hint is None
    assert str(err) == "ThreatConnect refused GET /api/v2/owners: HTTP 400: Bad request"
    assert diagnose(ConnectionFailed("connection to x:443 failed: refused")) is None


def test_hints_never_show_secrets() -> None:
    """
    No hint, message, text or repr contains the secret key, whatever the
    error.
    """
    replies = [
        tc_failure("Timestamp out of acceptable time range", 401),
        tc_failure("Signature data did not match expected result", 401),
        tc_failure("Access Denied", 403),
        Reply(503, b"", ""),
    ]
    for reply in replies:
        err = error_for(reply, "/v1/indicators/?owner=A%%20B")
        for text in (str(err), repr(err), err.message, err.hint or ""):
            assert SECRET not in text


# -- TLS, for real -------------------------------------------------------------------


def test_tls_detail_kept() -> None:
    """
    When the TLS layer reports the verification error in detail (e.g. from
    a verify callback), the message keeps it.
    """
    from OpenSSL import SSL
    from twisted.internet.defer import fail
    from twisted.python.failure import Failure
    from twisted.web._newclient import ResponseNeverReceived

    class Refusing:
        def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
            error = SSL.Error(
                [("SSL routines", "", "certificate verify failed: self-signed certificate")]
            )
            return fail(ResponseNeverReceived([Failure(error)]))

    client = ThreatConnectClient(Refusing(), Clock(), "https://tc.example/api", API_KEY, SECRET)
    err = failure_of(defer.ensureDeferred(client.get_json("/v2/owners"))).value
    assert isinstance(err, TLSVerificationError)
    assert err.message == (
        "connection to tc.example:443 failed: TLS certificate verify failed: "
        "self-signed certificate"
    )
    assert err.hint == TLS_HINT


def test_host_name_mismatch_is_tls_verification_error() -> None:
    """
    A certificate for another host name (Twisted's service_identity check)
    is a TLSVerificationError too, with the same hint.
    """
    from service_identity import VerificationError
    from service_identity.hazmat import DNS_ID, DNSMismatch
    from twisted.internet.defer import fail
    from twisted.python.failure import Failure
    from twisted.web._newclient import ResponseNeverReceived

    class Mismatch:
        def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
            error = VerificationError(errors=[DNSMismatch(mismatched_id=DNS_ID("tc.example"))])
            return fail(ResponseNeverReceived([Failure(error)]))

    client = ThreatConnectClient(Mismatch(), Clock(), "https://tc.example/api", API_KEY, SECRET)
    err = failure_of(defer.ensureDeferred(client.get_json("/v2/owners"))).value
    assert isinstance(err, TLSVerificationError)
    assert err.message.startswith(
        "connection to tc.example:443 failed: TLS certificate does not match the host name ("
    )
    assert err.hint == TLS_HINT
    assert client.requests == 1
