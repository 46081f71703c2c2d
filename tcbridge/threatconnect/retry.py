# -*- test-case-name: tests.unit.test_tc_retry -*-
"""
When and how long the ThreatConnect client waits before trying a request
again.

Everything here is pure: the policy is a frozen value, L{backoff} is a
function of the policy, the attempt number and a random number the caller
draws, and L{retry_after_seconds} reads a C{Retry-After} header against a
given time.  The client (L{tcbridge.threatconnect.client}) does the waiting,
on its injected clock.

Which failures are retried (L{retry_reason}):

    =========================================  =========
    failure                                    retried?
    =========================================  =========
    connection refused / reset, DNS, TLS       yes
    handshake error other than verification
    TLS certificate verification failure       no
    timeout (headers or body)                  yes
    body cut short (connection closed early)   yes
    HTTP 429, 500, 502, 503, 504               yes
    HTTP 503 "API access has not been          no
    licensed"
    HTTP 400, 401, 403, 404 and every other    no
    non-2xx
    2xx whose body is not JSON (empty, cut,    yes
    corrupted on the way)
    2xx JSON of the wrong shape; 2xx with      no
    JSON status not "Success"
    =========================================  =========
"""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime

from attrs import field, frozen, validators

from .errors import (
    ApiError,
    ConnectionFailed,
    NotJSONError,
    RequestTimeout,
    ThreatConnectError,
    TLSVerificationError,
    TruncatedResponseError,
)

#: HTTP statuses that say "try again later".
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

#: Statuses whose C{Retry-After} header is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 503})

_NOT_LICENSED = "has not been licensed"


@frozen
class RetryPolicy:
    """
    How many times to try a request and how long to wait in between.

    :ivar attempts: total tries, the first included (1 means never retry).
    :ivar base: the longest wait, in seconds, after the first failed try.
    :ivar factor: each further failure multiplies the longest wait by this.
    :ivar cap: no backoff wait is longer than this many seconds.
    :ivar retry_after_cap: a C{Retry-After} longer than this many seconds is
        cut to it.
    """

    attempts: int = field(default=5, validator=validators.ge(1))
    base: float = field(default=1.0, validator=validators.ge(0.0))
    factor: float = field(default=2.0, validator=validators.ge(1.0))
    cap: float = field(default=60.0, validator=validators.ge(0.0))
    retry_after_cap: float = field(default=300.0, validator=validators.ge(0.0))


def backoff(policy: RetryPolicy, attempt: int, rand: float) -> float:
    """
    Seconds to wait after try number C{attempt} failed: exponential backoff
    with I{full jitter}, C{rand * min(cap, base * factor ** (attempt - 1))}.

    The ceiling doubles (with the default C{factor}) after each failure, 1,
    2, 4, 8 ... seconds, up to C{cap}; the wait itself is a uniformly random
    fraction of that ceiling, so many bridges that failed together do not
    come back together.

    :param policy: the retry policy.
    :param attempt: the number of the try that just failed, 1 for the first.
    :param rand: a number in [0, 1), e.g. from C{random.random()}.
    :return: the wait in seconds, between 0 and C{policy.cap}.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, not {attempt}")
    try:
        ceiling = min(policy.cap, policy.base * policy.factor ** (attempt - 1))
    except OverflowError:
        ceiling = policy.cap
    return max(0.0, min(rand, 1.0)) * ceiling


def retry_after_seconds(
    value: str | None, now: float, date: str | None = None, cap: float = 300.0
) -> float | None:
    """
    The wait a C{Retry-After} header asks for, in seconds.

    :param value: the header: delta-seconds (C{"120"}) or an HTTP-date
        (C{"Wed, 21 Oct 2015 07:28:00 GMT"}); C{None} if absent.
    :param now: this host's time (the injected clock), used when the
        response has no usable C{Date} header.
    :param date: the response's C{Date} header; an HTTP-date in
        C{Retry-After} is measured from it, so this host's clock does not
        matter.
    :param cap: the longest wait returned.
    :return: the wait, between 0 and C{cap}; C{None} if C{value} is absent
        or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        wait = float(int(text))
    else:
        when = http_date(text)
        if when is None:
            return None
        reference = http_date(date) if date is not None else None
        wait = when - (reference if reference is not None else now)
    return min(max(wait, 0.0), cap)


def http_date(text: str) -> float | None:
    """
    An HTTP-date (IMF-fixdate, RFC 850 or asctime form) as POSIX seconds,
    or C{None} if C{text} is not one.
    """
    try:
        parsed = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        # asctime and "-0000" forms: HTTP-dates are always UTC.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def retry_reason(error: ThreatConnectError) -> str | None:
    """
    Why C{error} is worth another try (a few words for the log), or C{None}
    if it is final.  See the module docstring for the table.
    """
    if isinstance(error, TLSVerificationError):
        return None
    if isinstance(error, ConnectionFailed):
        return "connection failed"
    if isinstance(error, RequestTimeout):
        return "timeout"
    if isinstance(error, TruncatedResponseError):
        return "response cut off"
    if isinstance(error, NotJSONError):
        return "response not JSON"
    if isinstance(error, ApiError) and error.status in RETRY_STATUSES:
        if error.status == 503 and _NOT_LICENSED in error.message:
            return None
        return f"HTTP {error.status}"
    return None
