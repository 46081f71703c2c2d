# -*- test-case-name: tests.unit.test_cbserver -*-
"""
Register the feed on a Carbon Black EDR server and ask it to synchronize.

After each successful publish, L{CbServerSync.synchronize} does what the 2015
bridge and the v2 connector did (see C{reference/cb-feed.md} section 3), with
TLS verified and every failure reported in one line:

  1. C{GET /api/v1/feed} and find the feed whose C{name} (taken by the server
     from the feed's C{feedinfo}) is C{feed_name}, compared
     case-insensitively as cbapi does;
  2. if there is none, C{POST /api/v1/feed} with C{enabled}, C{feed_url},
     C{use_proxy} and C{validate_server_cert}; the server fetches and parses
     the feed before it answers;
  3. C{POST /api/v1/feed/<id>/synchronize} with C{{"full_sync": false}}.

Several feeds with the name is an error: which one the user meant is not
ours to guess.  Every call carries C{X-Auth-Token}; the token never appears in
logs, C{repr}s or error messages.

The caller builds the HTTP client (an agent from
L{tcbridge.net.agent.make_agent} with the server's CA bundle and
C{verify} setting, wrapped in treq's C{HTTPClient}); this module only takes
it.  L{feed_url_for} gives the URL the server should fetch.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
from attrs import define, field, frozen
from twisted.internet import error as ierror
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import CancelledError
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from tcbridge.logs import bridge_observer
from tcbridge.net.body import BodyReader
from tcbridge.net.errors import (
    first_line,
    is_cancellation,
    one_line,
    reason_text,
    tls_verification_failure,
)
from tcbridge.net.proxy import ProxyError
from tcbridge.secrets import redact

__all__ = ["CbServerSync", "CbSyncError", "CbSyncResult", "feed_url_for"]

log = Logger(observer=bridge_observer)

#: The feed name the ThreatConnect connectors have always used.
DEFAULT_FEED_NAME = "threatconnectintegration"
#: The path the bridge serves its feed on (as in 2015).
FEED_PATH = "/threatconnect/json"

_WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}  # noqa: S104 - compared, never bound


class CbSyncError(Exception):
    """
    Registering or synchronizing the feed on the Carbon Black server failed.

    C{str()} is one line: the step, then what the server (or the network)
    answered, e.g. C{synchronizing feed 7 (POST /api/v1/feed/7/synchronize):
    the feed is disabled in Carbon Black (409): enable it in the console}.
    It never contains the API token.

    :ivar step: the step that failed, e.g. C{listing feeds (GET
        /api/v1/feed)}.
    :ivar status: the HTTP status code, when the server answered.
    """

    def __init__(self, message: str, *, step: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.step = step
        self.status = status

    def __str__(self) -> str:
        return self.message


@frozen
class CbSyncResult:
    """
    A synchronize request the Carbon Black server accepted.

    :ivar feed_id: the feed's id on the server.
    :ivar created: whether this run registered the feed.
    :ivar at: when the server accepted the request (clock seconds).
    """

    feed_id: int
    created: bool
    at: float


def feed_url_for(
    listener_address: str, listener_port: int, host_address: str | None, tls: bool
) -> str:
    """
    The URL a Carbon Black server should fetch the feed from, as the 2015
    bridge built it: C{http://<feed_host|127.0.0.1>:<port>/threatconnect/json}.

    :param listener_address: the address the feed listener binds; a wildcard
        (C{0.0.0.0}, empty) becomes C{127.0.0.1}, C{::} becomes C{::1}.
    :param listener_port: the listener's port.
    :param host_address: the name or address the server should use instead
        (C{feed_host}), or C{None}.
    :param tls: whether the listener speaks TLS (then C{https}).
    """
    host = (host_address or "").strip()
    if not host:
        address = listener_address.strip()
        if address in ("::", "[::]"):
            host = "::1"
        elif address in _WILDCARDS:
            host = "127.0.0.1"
        else:
            host = address
    host = host.removeprefix("[").removesuffix("]")
    if isIPv6Address(host) or ":" in host:
        host = f"[{host}]"
    scheme = "https" if tls else "http"
    return f"{scheme}://{host}:{listener_port}{FEED_PATH}"


def _server_says(body: bytes) -> str:
    """
    What an error body says, in one line: the C{reason}/C{message}/C{error}
    of a JSON object, else the first non-empty line with HTML tags removed.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("reason", "message", "error", "result"):
            value = parsed.get(key)
            if isinstance(value, str) and value.strip():
                return one_line(value)
    return first_line(body)


def _strip_url(url: str) -> str:
    return url.rstrip("/")


@define
class CbServerSync:
    """
    Registers the bridge's feed on one Carbon Black EDR server and asks the
    server to synchronize it.

    :ivar http: a treq C{HTTPClient} (or C{StubTreq}) whose agent verifies
        TLS as configured.
    :ivar clock: the L{IReactorTime} for timeouts and result times.
    :ivar server_url: the server's base URL, e.g. C{https://cb.example}.
    :ivar token: the API token of a global administrator; never shown.
    :ivar feed_url: the URL the server should fetch the feed from (see
        L{feed_url_for}).
    :ivar feed_name: the feed's C{feedinfo} name.
    :ivar timeout: seconds allowed for each request, answer included.
    :ivar feed_username: with C{feed_password}, the credentials the server
        must send when it fetches the feed (the listener's basic auth).
    """

    # treq's HTTPClient or StubTreq; Any because StubTreq builds its methods
    # at run time.
    _http: Any
    _clock: IReactorTime
    server_url: str = field(converter=_strip_url)
    token: str = field(repr=False)
    feed_url: str
    feed_name: str = DEFAULT_FEED_NAME
    timeout: float = 30.0
    feed_username: str | None = None
    feed_password: str | None = field(default=None, repr=False)

    async def synchronize(self) -> CbSyncResult:
        """
        Find (or register) the feed, then ask the server to synchronize it
        incrementally.

        :return: the feed's id, whether it was registered now, and the time.
        :raise CbSyncError: for every failure, with a one-line message; the
            failure is also logged as a warning.
        """
        try:
            result = await self._synchronize()
        except CbSyncError as e:
            log.warn(
                "Carbon Black feed sync failed: {error}",
                error=str(e),
                step=e.step,
                status=e.status,
                server=self.server_url,
            )
            raise
        log.info(
            "Carbon Black server {server} is synchronizing feed {feed_id} ({name}{created})",
            server=self.server_url,
            feed_id=result.feed_id,
            name=self.feed_name,
            created=", registered now" if result.created else "",
            feed_url=self.feed_url,
        )
        return result

    async def _synchronize(self) -> CbSyncResult:
        created = False
        feed_id = await self._find_feed()
        if feed_id is None:
            feed_id = await self._create_feed()
            created = True
        await self._sync_feed(feed_id)
        return CbSyncResult(feed_id=feed_id, created=created, at=self._clock.seconds())

    async def _find_feed(self) -> int | None:
        """
        The id of the one feed named C{feed_name}, or C{None}.
        """
        step = "listing feeds (GET /api/v1/feed)"
        status, body = await self._call("GET", "/api/v1/feed", None, step)
        if status != 200:
            raise self._http_error(step, status, body)
        feeds = self._json(step, status, body)
        if not isinstance(feeds, list):
            raise CbSyncError(
                f"{step}: expected a JSON array of feeds, got {type(feeds).__name__}",
                step=step,
                status=status,
            )
        wanted = self.feed_name.lower()
        ids = [
            feed.get("id")
            for feed in feeds
            if isinstance(feed, dict)
            and isinstance(feed.get("name"), str)
            and feed["name"].lower() == wanted
        ]
        if len(ids) > 1:
            shown = ", ".join(str(i) for i in ids)
            raise CbSyncError(
                f"several feeds named {self.feed_name} on the Carbon Black server "
                f"(ids {shown}); remove the extra ones",
                step=step,
                status=status,
            )
        if not ids:
            log.info(
                "No feed named {name} on the Carbon Black server {server} yet",
                name=self.feed_name,
                server=self.server_url,
            )
            return None
        return self._feed_id(step, status, ids[0])

    async def _create_feed(self) -> int:
        """
        Register C{feed_url}; the server fetches and parses it first.
        """
        step = "creating the feed (POST /api/v1/feed)"
        request = {
            "enabled": True,
            "feed_url": self.feed_url,
            "use_proxy": False,
            "validate_server_cert": urlsplit(self.feed_url).scheme.lower() == "https",
        }
        if self.feed_username and self.feed_password:
            request["username"] = self.feed_username
            request["password"] = self.feed_password
        status, body = await self._call("POST", "/api/v1/feed", request, step)
        known = {
            409: f"Carbon Black could not read the feed at {self.feed_url} (409)"
            f"{self._said(body)}; check that the server can reach that URL "
            "and that the feed is valid",
            408: f"Carbon Black timed out fetching the feed at {self.feed_url} (408)",
            500: f"the Carbon Black server failed (500){self._said(body)}; "
            f"usually it cannot retrieve the feed at {self.feed_url}",
        }
        if status in known:
            raise CbSyncError(f"{step}: {known[status]}", step=step, status=status)
        if not 200 <= status < 300:
            raise self._http_error(step, status, body)
        feed = self._json(step, status, body)
        feed_id = self._feed_id(step, status, feed.get("id") if isinstance(feed, dict) else None)
        log.info(
            "Registered feed {feed_url} on the Carbon Black server {server} as feed {feed_id}",
            feed_url=self.feed_url,
            server=self.server_url,
            feed_id=feed_id,
        )
        return feed_id

    async def _sync_feed(self, feed_id: int) -> None:
        """
        Ask for an incremental synchronization of feed C{feed_id}.
        """
        path = f"/api/v1/feed/{feed_id}/synchronize"
        step = f"synchronizing feed {feed_id} (POST {path})"
        status, body = await self._call("POST", path, {"full_sync": False}, step)
        known = {
            409: "the feed is disabled in Carbon Black (409): enable it in the console",
            404: f"Carbon Black has no feed {feed_id} (404); it was probably removed "
            "meanwhile, the next sync registers it again",
        }
        if status in known:
            raise CbSyncError(f"{step}: {known[status]}", step=step, status=status)
        if not 200 <= status < 300:
            raise self._http_error(step, status, body)

    # -- HTTP --------------------------------------------------------------

    def _host(self) -> str:
        parts = urlsplit(self.server_url)
        host = parts.hostname or self.server_url
        if ":" in host:
            host = f"[{host}]"
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None:
            port = 443 if parts.scheme.lower() == "https" else 80
        return f"{host}:{port}"

    async def _call(self, method: str, path: str, payload: Any, step: str) -> tuple[int, bytes]:
        """
        Send one request and read the whole answer within C{timeout}.

        :return: the status code and the body.
        :raise CbSyncError: when no complete answer arrived.
        """
        clock = self._clock
        start = clock.seconds()
        headers = {
            "X-Auth-Token": [self.token],
            "Accept": ["application/json"],
            "User-Agent": ["tcbridge"],
        }
        kwargs: dict[str, Any] = {
            "headers": headers,
            "timeout": self.timeout,
            "reactor": clock,
            "allow_redirects": False,
        }
        if payload is not None:
            headers["Content-Type"] = ["application/json"]
            kwargs["data"] = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        url = self.server_url + path
        try:
            response = await self._http.request(method, url, **kwargs)
            remaining = max(self.timeout - (clock.seconds() - start), 0.0)
            length = getattr(response, "length", None)
            reader = BodyReader(length if isinstance(length, int) else None)
            response.deliverBody(reader)
            reader.finished.addTimeout(remaining, clock)
            body = bytes(await reader.finished)
        except Exception as e:
            raise self._transport_error(step, e, clock.seconds() - start) from None
        status = int(response.code)
        log.debug(
            "{method} {path} -> HTTP {status} ({size} bytes) in {elapsed:.3f}s",
            method=method,
            path=path,
            status=status,
            size=len(body),
            elapsed=clock.seconds() - start,
        )
        return status, body

    def _transport_error(self, step: str, exc: BaseException, elapsed: float) -> CbSyncError:
        """
        A one-line error for a request that got no complete answer.
        """
        host = self._host()
        if isinstance(exc, ProxyError):
            text = str(exc)
        elif isinstance(exc, ierror.TimeoutError | DeferredTimeoutError) or (
            is_cancellation(exc) and elapsed >= self.timeout
        ):
            text = f"no answer from {host} within {self.timeout:g} seconds"
        elif isinstance(exc, CancelledError) or is_cancellation(exc):
            text = f"the request to {host} was cancelled"
        else:
            tls = tls_verification_failure(exc)
            if tls is not None:
                text = (
                    f"TLS verification of {host} failed: {tls}; set the Carbon Black "
                    "server's CA bundle or turn verification off for it"
                )
            else:
                text = f"cannot connect to {host}: {reason_text(exc)}"
        return CbSyncError(redact(f"{step}: {text}", [self.token], "(token hidden)"), step=step)

    def _http_error(self, step: str, status: int, body: bytes) -> CbSyncError:
        """
        A one-line error for an unexpected HTTP status.
        """
        if status == 401:
            text = (
                "the Carbon Black server refused the API token (401); "
                "check carbonblack_server_token"
            )
        elif status == 403:
            text = (
                "the API token is not allowed to manage feeds (403); "
                "use the token of a global administrator"
            )
        elif 300 <= status < 400:
            text = (
                f"the Carbon Black server redirected (HTTP {status}); "
                "check carbonblack_server_url (https:// and the right host)"
            )
        else:
            text = f"the Carbon Black server answered HTTP {status}{self._said(body)}"
        return CbSyncError(f"{step}: {text}", step=step, status=status)

    def _said(self, body: bytes) -> str:
        said = redact(_server_says(body), [self.token], "(token hidden)")
        return f": {said}" if said else ""

    def _json(self, step: str, status: int, body: bytes) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise CbSyncError(
                f"{step}: the Carbon Black server's answer (HTTP {status}) is not JSON"
                f"{self._said(body)}",
                step=step,
                status=status,
            ) from None

    @staticmethod
    def _feed_id(step: str, status: int, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise CbSyncError(
                f"{step}: the Carbon Black server's answer has no feed id",
                step=step,
                status=status,
            )
        try:
            return int(value)
        except ValueError:
            raise CbSyncError(
                f"{step}: the Carbon Black server's feed id {value!r:.40} is not a number",
                step=step,
                status=status,
            ) from None
