# -*- test-case-name: tests.test_tc_client -*-
"""
A signed ThreatConnect HTTP client over an injected treq client and clock.

The string that is signed is the request target exactly as it goes on the
wire: the URL is normalised the way treq and hyperlink normalise it I{before}
signing, and the target is taken from that normalised form the way
L{twisted.web.client.Agent} takes it, so the server sees precisely the bytes
that were signed (C{%20}, C{+}, C{%2C}, C{(}, C{'} and even a stray C{%%} are
left alone; a raw space or non-ASCII character is percent-encoded first and
the encoded form is signed).
"""

from __future__ import annotations

import html
import re
from typing import Any, Protocol

import orjson
from attrs import define, field
from hyperlink import EncodedURL
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import URI, ResponseDone
from twisted.web.http import PotentialDataLoss

from tcbridge.logs import bridge_observer

from .errors import (
    ApiError,
    AuthError,
    ConnectionFailed,
    RequestTimeout,
    ResponseError,
    ThreatConnectError,
)
from .signing import authorization

log = Logger(observer=bridge_observer)

_MAX_LINE = 200
_TAG = re.compile(r"<[^>]*>")
_EMPTY_ERROR_MESSAGE = (
    "ThreatConnect gave an empty error message (usually a wrong API key or secret key)"
)


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


def _first_line(body: bytes) -> str:
    """
    The first non-empty line of C{body}, HTML tags stripped, entities
    unescaped, white space collapsed, at most 200 characters.
    """
    text = _TAG.sub(" ", body.decode("utf-8", errors="replace"))
    for line in text.splitlines():
        clean = " ".join(html.unescape(line).split())
        if clean:
            if len(clean) > _MAX_LINE:
                clean = clean[: _MAX_LINE - 3] + "..."
            return clean
    return ""


def _reason_text(exc: BaseException) -> str:
    """
    A short, single-line description of a transport error, unwrapping
    Twisted's wrapper exceptions (C{ResponseNeverReceived} and friends).
    """
    reasons = getattr(exc, "reasons", None)
    if isinstance(reasons, list) and reasons:
        parts = []
        for reason in reasons:
            value = reason.value if isinstance(reason, Failure) else reason
            if isinstance(value, BaseException):
                parts.append(_reason_text(value))
        if parts:
            return "; ".join(parts)
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if not text:
        return name
    if len(text) > _MAX_LINE:
        text = text[: _MAX_LINE - 3] + "..."
    return text


def _is_cancellation(exc: BaseException) -> bool:
    """
    Whether C{exc} is, or wraps, a cancellation (which is how treq's timeout
    shows up).
    """
    if isinstance(exc, CancelledError | ierror.ConnectingCancelledError):
        return True
    reasons = getattr(exc, "reasons", None)
    if isinstance(reasons, list):
        for reason in reasons:
            value = reason.value if isinstance(reason, Failure) else reason
            if isinstance(value, BaseException) and _is_cancellation(value):
                return True
    return False


class _BodyReader(TwistedProtocol):
    """
    Collect a response body into a L{Deferred}; cancelling the Deferred stops
    the transport, so a stalled body does not keep a connection forever.
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.received = 0
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[bytes]) -> None:
        transport = self.transport
        if transport is not None:
            transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)
        self.received += len(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)


@define
class ThreatConnectClient:
    """
    Signed GETs against one ThreatConnect API base URL.

    :ivar http: an L{HTTPGetter} (treq C{HTTPClient} or C{StubTreq}).
    :ivar clock: the L{IReactorTime} for timestamps and timeouts.
    :ivar base_url: e.g. C{https://app.threatconnect.com/api} (any trailing
        C{/} removed); its path prefix is part of every signed target.
    :ivar api_key: the Access ID.
    :ivar secret_key: the secret key; never shown in C{repr}, logs or errors.
    :ivar timeout: seconds allowed for a whole request, headers and body.
    :ivar requests: how many requests this client has sent.
    """

    # An HTTPGetter: treq's HTTPClient or StubTreq.  Typed Any because
    # StubTreq sets its methods at run time, so mypy cannot match it.
    _http: Any
    _clock: IReactorTime
    base_url: str = field(converter=_strip_base)
    api_key: str
    secret_key: str = field(repr=False)
    timeout: float = 30.0
    requests: int = field(default=0, init=False)

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

    async def get_json(self, target: str) -> Any:
        """
        GET C{target}, signed, and return the parsed JSON document.

        :param target: path and query relative to C{base_url}, starting with
            C{/}, already percent-encoded (e.g.
            C{/v2/indicators/hosts?owner=Common%20Community&resultStart=0}).
        :return: the parsed JSON (a dict whose C{status} is C{"Success"}).
        :raise ThreatConnectError: one of its subclasses, for every failure.
        """
        url = self.url_for(target)
        wire = self._wire_target(url)
        clock = self._clock
        start = clock.seconds()
        headers = authorization(self.api_key, self.secret_key, wire, "GET", int(start))
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
        phrase = response.phrase
        reason = phrase.decode("latin-1") if isinstance(phrase, bytes) else str(phrase or "")
        body = await self._read_body(response, url, wire, start, status)
        elapsed = clock.seconds() - start
        log.debug(
            "GET {target} -> HTTP {status} ({size} bytes) in {elapsed:.3f}s",
            target=wire,
            status=status,
            size=len(body),
            elapsed=elapsed,
        )
        return self._interpret(wire, status, reason, body)

    async def _read_body(
        self, response: Any, url: str, wire: str, start: float, status: int
    ) -> bytes:
        """
        Read the whole body within what is left of the timeout.
        """
        reader = _BodyReader()
        response.deliverBody(reader)
        remaining = max(self.timeout - (self._clock.seconds() - start), 0.0)
        reader.finished.addTimeout(remaining, self._clock)
        try:
            return await reader.finished
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
            raise ResponseError(
                f"response body truncated: the connection closed after "
                f"{reader.received} bytes ({_reason_text(e)})",
                status=status,
                target=wire,
            ) from e

    def _transport_error(
        self, exc: BaseException, url: str, wire: str, start: float
    ) -> ThreatConnectError | None:
        """
        Map an exception from sending the request or waiting for the response
        headers to a L{ThreatConnectError}; C{None} for a cancellation that
        was not our timeout (the caller cancelled: pass it through).
        """
        timed_out = self._clock.seconds() - start >= self.timeout
        if isinstance(exc, ierror.TimeoutError | DeferredTimeoutError) or (
            _is_cancellation(exc) and timed_out
        ):
            return RequestTimeout(f"no answer within {self.timeout:g} seconds", target=wire)
        if _is_cancellation(exc):
            return None
        host = self._host(url)
        return ConnectionFailed(
            f"connection to {host} failed: {_reason_text(exc)}",
            target=wire,
        )

    def _interpret(self, wire: str, status: int, reason: str, body: bytes) -> Any:
        """
        Turn a complete HTTP response into parsed JSON or a typed error.
        """
        ok = 200 <= status < 300
        parsed: Any = None
        parse_error: orjson.JSONDecodeError | None = None
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
            line = _first_line(body) or "empty response body"
            message = f"{head}: {line}"
            raise error_class(message, status=status, target=wire)

        if parse_error is not None:
            if not body.strip():
                message = f"{head} with an empty body, expected JSON"
            elif parse_error.pos >= len(body.rstrip()):
                message = f"JSON truncated after {len(body)} bytes ({head})"
            else:
                message = f"body is not JSON ({head}): {_first_line(body)}"
            raise ResponseError(message, status=status, target=wire)

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
            text = " ".join(str(value).split()) if value is not None else ""
            if not text:
                text = _EMPTY_ERROR_MESSAGE
            if len(text) > 2 * _MAX_LINE:
                text = text[: 2 * _MAX_LINE - 3] + "..."
            code = parsed.get("errCode")
            suffix = f" (errCode {code!s:.20})" if code not in (None, "") else ""
            return text, suffix
    return None
