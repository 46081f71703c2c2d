# -*- test-case-name: tests.unit.test_tc_client -*-
"""
A signed ThreatConnect HTTP client over an injected treq client and clock.

The string that is signed is the request target exactly as it goes on the
wire: the URL is normalised the way treq and hyperlink normalise it I{before}
signing, and the target is taken from that normalised form the way
L{twisted.web.client.Agent} takes it, so the server sees precisely the bytes
that were signed (C{%20}, C{+}, C{%2C}, C{(}, C{'} and even a stray C{%%} are
left alone; a raw space or non-ASCII character is percent-encoded first and
the encoded form is signed).

Transient failures are retried on the injected clock (see
L{tcbridge.threatconnect.retry} for the table and the backoff), each try
signed afresh; the final error carries a hint from
L{tcbridge.threatconnect.diagnosis} where tcbridge can tell what is wrong.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from attrs import define, field
from hyperlink import EncodedURL
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.client import URI

from tcbridge.logs import bridge_observer
from tcbridge.net.body import BodyReader
from tcbridge.net.errors import (
    MAX_LINE,
    first_line,
    is_cancellation,
    one_line,
    reason_text,
    tls_verification_failure,
)
from tcbridge.net.proxy import ProxyError

from .diagnosis import EMPTY_ERROR_MESSAGE, diagnose
from .errors import (
    ApiError,
    AuthError,
    ConnectionFailed,
    NotJSONError,
    RequestTimeout,
    ResponseError,
    ThreatConnectError,
    TLSVerificationError,
    TruncatedResponseError,
)
from .retry import RETRY_AFTER_STATUSES, RetryPolicy, backoff, retry_after_seconds, retry_reason
from .signing import authorization
from .slices import parse_in_slices

log = Logger(observer=bridge_observer)

_EMPTY_ERROR_MESSAGE = EMPTY_ERROR_MESSAGE
#: C{_interpret}'s "the body has not been parsed yet"
_UNPARSED: Any = object()


class HTTPGetter(Protocol):
    """
    The part of treq's L{treq.client.HTTPClient} (or L{treq.testing.StubTreq})
    that the client uses.
    """

    def get(
        self,
        url: str,
        /,
        *,
        headers: Any = ...,
        timeout: float | None = ...,
        reactor: Any = ...,
        allow_redirects: bool = ...,
        unbuffered: bool = ...,
    ) -> Deferred[Any]:
        """
        Issue a GET; see L{treq.client.HTTPClient.get}.
        """


def _strip_base(base_url: str) -> str:
    return base_url.rstrip("/")


def _header(response: Any, name: bytes) -> str | None:
    """
    The last value of header C{name} in C{response}, or C{None}.
    """
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    values = headers.getRawHeaders(name)
    if not values:
        return None
    value = values[-1]
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


@define
class _Exchange:
    """
    What one try learnt, for the hint on the final error.

    :ivar sent: the C{Timestamp} it was signed with.
    :ivar date: the response's C{Date} header, if a response arrived.
    """

    sent: int | None = None
    date: str | None = None


@define
class ThreatConnectClient:
    """
    Signed GETs against one ThreatConnect API base URL, retried on transient
    failures.

    :ivar http: an L{HTTPGetter} (treq C{HTTPClient} or C{StubTreq}).
    :ivar clock: the L{IReactorTime} for timestamps, timeouts and the waits
        between tries.
    :ivar base_url: e.g. C{https://app.threatconnect.com/api} (any trailing
        C{/} removed); its path prefix is part of every signed target.
    :ivar api_key: the Access ID.
    :ivar secret_key: the secret key; never shown in C{repr}, logs or errors.
    :ivar timeout: seconds allowed for each try, headers and body.
    :ivar retry: how many tries and how long to wait between them
        (keyword-only).
    :ivar random: a function returning a float in [0, 1) for the backoff's
        jitter (keyword-only; injected so tests are deterministic).
    :ivar slice_pause: if set (keyword-only), a big page's items are parsed
        in slices of about C{slice_size} bytes with this pause before each
        (the bridge passes a zero-delay wait on the reactor), so a page
        never holds the reactor for long.
    :ivar requests: how many HTTP requests this client has sent (each try
        counts).
    :ivar received: how many bytes of response bodies it has read.
    :ivar last_exchange: the C{Timestamp} this host sent and the C{Date}
        ThreatConnect answered with, for the latest response that had a
        C{Date}; C{tcbridge check-config} compares them.
    :ivar status_counts: how each request ended: the HTTP status code when a
        response arrived, C{"timeout"} or C{"connection"} when none did,
        C{"cancelled"} when the caller cancelled it first.
    """

    # An HTTPGetter: treq's HTTPClient or StubTreq.  Typed Any because
    # StubTreq sets its methods at run time, so mypy cannot match it.
    _http: Any
    _clock: IReactorTime
    base_url: str = field(converter=_strip_base)
    api_key: str
    secret_key: str = field(repr=False)
    timeout: float = 30.0
    retry: RetryPolicy = field(factory=RetryPolicy, kw_only=True)
    _random: Callable[[], float] = field(default=random.random, kw_only=True, repr=False)
    slice_pause: Callable[[], Awaitable[None]] | None = field(
        default=None, kw_only=True, repr=False
    )
    slice_size: int = field(default=512 * 1024, kw_only=True)
    requests: int = field(default=0, init=False)
    received: int = field(default=0, init=False)
    status_counts: dict[int | str, int] = field(factory=dict, init=False)
    last_exchange: tuple[int | None, str] | None = field(default=None, init=False)

    def url_for(self, target: str) -> str:
        """
        The absolute URL for C{target}, normalised exactly as treq will send
        it (hyperlink C{to_uri}).

        :param target: path and query relative to C{base_url}, starting
            with C{/}.
        """
        if not target.startswith("/"):
            raise ValueError(f"request target must start with '/': {target!r}")
        return EncodedURL.from_text(self.base_url + target).to_uri().to_text()

    def request_target(self, target: str) -> str:
        """
        The request target (base path prefix + path + raw query) that goes on
        the wire for C{target}: the string that is signed.
        """
        return self._wire_target(self.url_for(target))

    @staticmethod
    def _wire_target(url: str) -> str:
        # Agent sends URI.fromBytes(url).originForm: do exactly the same.
        return URI.fromBytes(url.encode("ascii")).originForm.decode("ascii")

    def _host(self, url: str) -> str:
        uri = URI.fromBytes(url.encode("ascii"))
        return f"{uri.host.decode('ascii', 'replace')}:{uri.port}"

    def _count(self, outcome: int | str) -> None:
        self.status_counts[outcome] = self.status_counts.get(outcome, 0) + 1

    async def get_json(self, target: str, items: str | None = None) -> Any:
        """
        GET C{target}, signed, and return the parsed JSON document.

        Transient failures (see L{tcbridge.threatconnect.retry.retry_reason})
        are tried again up to C{retry.attempts} tries in all, after a wait on
        the clock: the C{Retry-After} ThreatConnect asked for on a 429 or
        503, otherwise L{backoff}.  Each try is signed with a fresh
        C{Timestamp}.  Cancelling the returned coroutine's Deferred during a
        wait stops at once; no further request is sent.

        :param target: path and query relative to C{base_url}, starting with
            C{/}, already percent-encoded (e.g.
            C{/v2/indicators/hosts?owner=Common%20Community&resultStart=0}).
        :param items: the key of the answer's list of items (C{"host"},
            C{"data"}...): with C{slice_pause} set, a big answer's list is
            parsed a slice at a time (L{tcbridge.threatconnect.slices}).
        :return: the parsed JSON (a dict whose C{status} is C{"Success"}).
        :raise ThreatConnectError: one of its subclasses, for every failure:
            the first final one, or the last transient one with
            C{"(gave up after N attempts)"} added to its message.
        """
        url = self.url_for(target)
        wire = self._wire_target(url)
        policy = self.retry
        attempt = 1
        while True:
            exchange = _Exchange()
            try:
                return await self._attempt(url, wire, exchange, items)
            except ThreatConnectError as e:
                error = e
            reason = retry_reason(error)
            if reason is None or attempt >= policy.attempts:
                error.gave_up(attempt)
                if error.hint is None:
                    error.set_hint(
                        diagnose(error, sent=exchange.sent, date=exchange.date, retries=attempt - 1)
                    )
                raise error
            if error.retry_after is not None:
                wait = error.retry_after
            else:
                wait = backoff(policy, attempt, self._random())
            attempt += 1
            log.warn(
                "GET {target} failed ({reason}); try {attempt} of {attempts} "
                "in {wait:.2f} seconds: {error}",
                target=wire,
                reason=reason,
                attempt=attempt,
                attempts=policy.attempts,
                wait=wait,
                status=error.status,
                error=str(error),
            )
            await deferLater(self._clock, wait, lambda: None)

    async def _attempt(
        self, url: str, wire: str, exchange: _Exchange, items: str | None = None
    ) -> Any:
        """
        One signed try: send, read, interpret.

        :param exchange: filled in with what the hint may need.
        """
        clock = self._clock
        start = clock.seconds()
        exchange.sent = int(start)
        headers = authorization(self.api_key, self.secret_key, wire, "GET", exchange.sent)
        headers["Accept"] = "application/json"
        self.requests += 1
        try:
            response = await self._http.get(
                url,
                headers=headers,
                timeout=self.timeout,
                reactor=clock,
                allow_redirects=False,
                unbuffered=True,
            )
        except ThreatConnectError:
            raise
        except Exception as e:
            mapped = self._transport_error(e, url, wire, start)
            if mapped is None:
                self._count("cancelled")
            else:
                self._count("timeout" if isinstance(mapped, RequestTimeout) else "connection")
            log.debug(
                "GET {target} failed after {elapsed:.3f}s: {error}",
                target=wire,
                status=None,
                elapsed=clock.seconds() - start,
                error=str(mapped) if mapped is not None else "cancelled",
            )
            if mapped is None:
                # The caller cancelled: surface a plain cancellation.
                raise CancelledError() from e
            raise mapped from e

        status = int(response.code)
        self._count(status)
        exchange.date = _header(response, b"date")
        if exchange.date is not None:
            self.last_exchange = (exchange.sent, exchange.date)
        phrase = response.phrase
        reason = phrase.decode("latin-1") if isinstance(phrase, bytes) else str(phrase or "")
        try:
            body, close_delimited = await self._read_body(response, wire, start, status)
            self.received += len(body)
            elapsed = clock.seconds() - start
            log.debug(
                "GET {target} -> HTTP {status} ({size} bytes) in {elapsed:.3f}s",
                target=wire,
                status=status,
                size=len(body),
                elapsed=elapsed,
            )
            parsed = _UNPARSED
            pause = self.slice_pause
            if items is not None and pause is not None and 200 <= status < 300:
                if len(body) > 2 * self.slice_size:
                    parsed = await parse_in_slices(body, items, self.slice_size, pause)
                    parsed = _UNPARSED if parsed is None else parsed
            return self._interpret(wire, status, reason, body, close_delimited, parsed)
        except ThreatConnectError as e:
            if status in RETRY_AFTER_STATUSES:
                e.retry_after = retry_after_seconds(
                    _header(response, b"retry-after"),
                    clock.seconds(),
                    exchange.date,
                    self.retry.retry_after_cap,
                )
            raise

    async def _read_body(
        self, response: Any, wire: str, start: float, status: int
    ) -> tuple[bytearray, bool]:
        """
        Read the whole body within what is left of the timeout.

        :return: the body, and whether it was close-delimited (no length to
            check it against, so possibly cut short).
        :raise TruncatedResponseError: if the connection closed before the
            announced length arrived.
        """
        length = getattr(response, "length", None)
        expected = length if isinstance(length, int) else None
        reader = BodyReader(expected)
        response.deliverBody(reader)
        remaining = max(self.timeout - (self._clock.seconds() - start), 0.0)
        reader.finished.addTimeout(remaining, self._clock)
        try:
            body = await reader.finished
        except (CancelledError, DeferredTimeoutError) as e:
            if isinstance(e, DeferredTimeoutError):
                raise RequestTimeout(
                    f"no complete answer within {self.timeout:g} seconds",
                    status=status,
                    target=wire,
                    detail=(
                        f"HTTP {status} but the body was not complete within "
                        f"{self.timeout:g} seconds ({reader.received} bytes read)"
                    ),
                ) from e
            raise
        except Exception as e:
            raise self._cut_off(wire, status, reader.received, expected, reason_text(e)) from e
        if expected is not None and len(body) < expected:
            raise self._cut_off(wire, status, len(body), expected, None)
        return body, reader.close_delimited

    @staticmethod
    def _cut_off(
        wire: str, status: int, received: int, expected: int | None, why: str | None
    ) -> TruncatedResponseError:
        """
        The error for a body that ended early.
        """
        of = f" of {expected}" if expected is not None else ""
        message = f"the response was cut off after {received}{of} bytes"
        detail = f"HTTP {status}, but {message}" + (f" ({why})" if why else "")
        return TruncatedResponseError(message, status=status, target=wire, detail=detail)

    def _transport_error(
        self, exc: BaseException, url: str, wire: str, start: float
    ) -> ThreatConnectError | None:
        """
        Map an exception from sending the request or waiting for the response
        headers to a L{ThreatConnectError}; C{None} for a cancellation that
        was not our timeout (the caller cancelled: pass it through).
        """
        if isinstance(exc, ProxyError):
            # Before the timeout check: a proxy timeout names the proxy.
            return ConnectionFailed(str(exc), target=wire)
        timed_out = self._clock.seconds() - start >= self.timeout
        if isinstance(exc, ierror.TimeoutError | DeferredTimeoutError) or (
            is_cancellation(exc) and timed_out
        ):
            return RequestTimeout(f"no answer within {self.timeout:g} seconds", target=wire)
        if is_cancellation(exc):
            return None
        host = self._host(url)
        tls = tls_verification_failure(exc)
        if tls is not None:
            return TLSVerificationError(f"connection to {host} failed: TLS {tls}", target=wire)
        return ConnectionFailed(
            f"connection to {host} failed: {reason_text(exc)}",
            target=wire,
        )

    def _interpret(
        self,
        wire: str,
        status: int,
        reason: str,
        body: bytes | bytearray,
        close_delimited: bool = False,
        parsed: Any = _UNPARSED,
    ) -> Any:
        """
        Turn a complete HTTP response into parsed JSON or a typed error.

        :param close_delimited: the body ended with the connection and had no
            length: if it is not valid JSON it was probably cut short.
        :param parsed: the body already parsed, if it was.
        """
        ok = 200 <= status < 300
        parse_error: orjson.JSONDecodeError | None = None
        if parsed is _UNPARSED:
            parsed = None
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                parse_error = e

        head = f"HTTP {status} {reason}".rstrip()
        if not ok:
            error_class: type[ThreatConnectError] = AuthError if status in (401, 403) else ApiError
            tc_message = _tc_message(parsed) if parse_error is None else None
            if tc_message is not None:
                text, suffix = tc_message
                return_detail = f"HTTP {status}: {text}{suffix}"
                raise error_class(text, status=status, target=wire, detail=return_detail)
            line = first_line(body) or "empty response body"
            message = f"{head}: {line}"
            raise error_class(message, status=status, target=wire)

        if parse_error is not None:
            if close_delimited and body.strip():
                raise self._cut_off(wire, status, len(body), None, "the connection closed mid-JSON")
            if not body.strip():
                message = f"{head} with an empty body, expected JSON"
            elif parse_error.pos >= len(body.rstrip()):
                message = f"JSON truncated after {len(body)} bytes ({head})"
            else:
                message = f"body is not JSON ({head}): {first_line(body)}"
            raise NotJSONError(message, status=status, target=wire)

        if not isinstance(parsed, dict):
            raise ResponseError(
                f"expected a JSON object, got {type(parsed).__name__} ({head})",
                status=status,
                target=wire,
            )
        tc_status = parsed.get("status")
        if tc_status == "Success":
            return parsed
        if tc_status is None:
            raise ResponseError(
                f"JSON object has no 'status' field ({head})", status=status, target=wire
            )
        tc_message = _tc_message(parsed)
        if tc_message is None:
            text, suffix = f"ThreatConnect status {tc_status!s:.50}", ""
        else:
            text, suffix = tc_message
        raise ApiError(
            text,
            status=status,
            target=wire,
            detail=f"HTTP {status}, status {tc_status!s:.50}: {text}{suffix}",
        )


def _tc_message(parsed: Any) -> tuple[str, str] | None:
    """
    ThreatConnect's error text from a JSON error body (v2 C{message}, 2015
    C{errorMessage}, v3 C{message} + C{errCode}), and a suffix naming the
    error code; C{None} if the body carries no such field.
    """
    if not isinstance(parsed, dict):
        return None
    for key in ("message", "errorMessage"):
        if key in parsed:
            value = parsed[key]
            text = one_line(str(value), 2 * MAX_LINE) if value is not None else ""
            if not text:
                text = _EMPTY_ERROR_MESSAGE
            code = parsed.get("errCode")
            suffix = f" (errCode {code!s:.20})" if code not in (None, "") else ""
            return text, suffix
    return None
