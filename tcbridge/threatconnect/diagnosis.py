# -*- test-case-name: tests.unit.test_tc_diagnosis -*-
"""
Hints that turn ThreatConnect's terse errors into something a user can act
on.

The 2015 connector's documentation listed the usual suspects ("Common
Issues"): a host clock that is off, a C{%%} typo in a source path, a wrong
API key or secret key.  L{diagnose} recognises each from the error and the
exchange that caused it and returns one or more sentences to show after the
message; it never includes a secret (it is only given the error, the
Timestamp that was sent and the response's C{Date} header).
"""

from __future__ import annotations

from .errors import (
    ApiError,
    AuthError,
    ThreatConnectError,
    TLSVerificationError,
)
from .retry import http_date

#: ThreatConnect accepts a Timestamp this many seconds either side of its
#: own time.
CLOCK_WINDOW = 300

#: What the client says when ThreatConnect's error message is empty.
EMPTY_ERROR_MESSAGE = (
    "ThreatConnect gave an empty error message (usually a wrong API key or secret key)"
)

TLS_HINT = (
    "ThreatConnect's certificate is not trusted by this host: set ca_file to your "
    "ThreatConnect CA bundle, or ssl_verify_api_requests = false for a named test host."
)

ACCESS_HINT = (
    "Check api_key (the API Access ID) and secret_key; if both are right, the API "
    "user lacks access to this owner or endpoint."
)

NOT_LICENSED_HINT = "The API is not licensed on this ThreatConnect instance; ask its administrator."

_CLOCK_MESSAGES = ("timestamp out of acceptable time range", "invalid timestamp")
_SIGNATURE_MESSAGE = "signature data did not match expected result"
_ACCESS_MESSAGES = ("access denied", EMPTY_ERROR_MESSAGE.lower())
_NOT_LICENSED = "has not been licensed"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def clock_hint(sent: int | None, date: str | None) -> str:
    """
    Advice for "Timestamp out of acceptable time range" or "Invalid
    timestamp".

    :param sent: the C{Timestamp} header that was sent (this host's clock).
    :param date: the response's C{Date} header (ThreatConnect's clock), if
        it sent one.
    :return: how far and which way this host's clock is off, or (without a
        usable C{Date}) what ThreatConnect accepts.
    """
    server = http_date(date) if date is not None else None
    if sent is None or server is None:
        return (
            "Check this host's clock: ThreatConnect accepts a Timestamp within "
            f"{CLOCK_WINDOW // 60} minutes of its own time."
        )
    skew = round(sent - server)
    if skew == 0:
        return (
            "This host's clock agrees with ThreatConnect's Date header, so something "
            "between them (a proxy?) delayed the request or changed its Timestamp."
        )
    way = "ahead of" if skew > 0 else "behind"
    return (
        f"This host's clock is {_plural(abs(skew), 'second')} {way} ThreatConnect; "
        "set the system clock (NTP)."
    )


def signature_hint(target: str) -> str:
    """
    Advice for "Signature data did not match expected result": the likely
    causes, most likely first.

    :param target: the request target that was signed and sent; shown if it
        holds an escaped or doubled percent sign.
    """
    bad = next((s for s in ("%%", "%25") if s in target.upper()), None)
    if bad is not None:
        first = (
            f"a bad escape in the source path: {target} contains {bad} "
            "(write %20, not %%20, for a space)"
        )
    else:
        first = "a source path with a bad escape such as %% (write %20, not %%20)"
    return f"Likely causes: (1) {first}; (2) a wrong secret_key; (3) a proxy rewriting the URL."


def server_hint(status: int, retries: int) -> str:
    """
    Advice for an HTTP 5xx or 429 that did not go away.

    :param status: the HTTP status of the last answer.
    :param retries: how many times the request was sent again.
    """
    retried = f"; tcbridge retried {_times(retries)}" if retries > 0 else ""
    if status == 429:
        return f"ThreatConnect is limiting the request rate{retried}."
    return f"ThreatConnect or a proxy in between is failing{retried}."


def diagnose(
    error: ThreatConnectError,
    *,
    sent: int | None = None,
    date: str | None = None,
    retries: int = 0,
) -> str | None:
    """
    A hint for C{error}, or C{None} when there is nothing useful to add.

    :param error: the final error of a request.
    :param sent: the C{Timestamp} sent with the request that failed.
    :param date: that response's C{Date} header, if any.
    :param retries: how many times the request was retried.
    """
    if isinstance(error, TLSVerificationError):
        return TLS_HINT
    if not isinstance(error, AuthError | ApiError):
        return None
    text = error.message.lower()
    if any(text.startswith(m) for m in _CLOCK_MESSAGES):
        return clock_hint(sent, date)
    if text.startswith(_SIGNATURE_MESSAGE):
        return signature_hint(error.target)
    if any(text.startswith(m) for m in _ACCESS_MESSAGES):
        return ACCESS_HINT
    status = error.status or 0
    if status == 503 and _NOT_LICENSED in text:
        return NOT_LICENSED_HINT
    if status == 429 or status >= 500:
        return server_hint(status, retries)
    return None
