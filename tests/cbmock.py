# -*- test-case-name: tests.unit.test_cbserver -*-
"""
A small, faithful mock of the Carbon Black EDR server's feed API
(C{reference/cb-feed.md} section 3, "Minimal faithful mock"), served with
Klein so tests can reach it through C{StubTreq(mock.resource())}.

  - Every call needs C{X-Auth-Token: <token>}; otherwise 401.
  - C{GET /api/info}, C{GET /api/v1/storage/events/partition}.
  - C{GET /api/v1/feed}: a JSON array of the feeds held in memory.
  - C{POST /api/v1/feed}: the body is parsed as JSON whatever the
    C{Content-Type} (the legacy client sent none); the mock fetches
    C{feed_url} itself through the injected C{fetch}, answers 409 when it is
    not a feed, copies the C{feedinfo} fields, assigns an C{id}, sets
    C{manually_added} and returns the feed object.
  - C{GET/PUT/DELETE /api/v1/feed/<id>}.
  - C{POST /api/v1/feed/<id>/synchronize}: the body must be JSON;
    C{{"result": "success"}} after fetching the feed again, 409 "Cannot
    synchronize a disabled feed", 404 for an unknown id.

Every request is recorded (method, path, headers, body) in C{requests}.
Setting C{stall} makes every answer wait forever (for timeout tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import treq
from attrs import define, field, frozen
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.web.server import Request

#: feedinfo fields the server keeps on the feed object.
FEEDINFO_FIELDS = (
    "name",
    "display_name",
    "summary",
    "tech_data",
    "provider_url",
    "category",
    "icon",
    "icon_small",
    "provider_rating",
    "version",
)

Fetch = Callable[[str], "Deferred[bytes]"]


def fetch_through(http: Any) -> Fetch:
    """
    A C{fetch} that GETs the URL with C{http} (treq's C{HTTPClient} or a
    C{StubTreq}, e.g. over the bridge's L{tcbridge.web.app.FeedApp}) and
    fails on a status other than 200.
    """

    async def fetch(url: str) -> bytes:
        response = await http.get(url)
        body: bytes = await treq.content(response)
        if response.code != 200:
            raise ValueError(f"HTTP {response.code} from {url}")
        return body

    return lambda url: Deferred.fromCoroutine(fetch(url))


def fetch_from(pages: dict[str, bytes]) -> Fetch:
    """
    A C{fetch} that answers from C{pages} (URL -> body) and fails for any
    other URL, as a connection error would.
    """

    def fetch(url: str) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        if url in pages:
            d.callback(pages[url])
        else:
            d.errback(ConnectionRefusedError(f"cannot fetch {url}"))
        return d

    return fetch


@frozen
class Recorded:
    """
    One request the mock received.

    :ivar method: e.g. C{"POST"}.
    :ivar path: the path and query, e.g. C{"/api/v1/feed"}.
    :ivar headers: header name (lower case) -> last value.
    :ivar body: the raw request body.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """
        The body, parsed as JSON.
        """
        return orjson.loads(self.body)


class _InvalidFeedError(Exception):
    """
    The fetched document is not a feed.
    """


def _parse_feed(body: bytes) -> dict[str, Any]:
    """
    The feed's feedinfo, or L{_InvalidFeedError} when the document is not a feed
    (the server's C{FeedSyncJsonError}).
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise _InvalidFeedError(f"feed is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise _InvalidFeedError("feed is not a JSON object")
    info = doc.get("feedinfo")
    if not isinstance(info, dict):
        raise _InvalidFeedError("feed has no feedinfo")
    if not isinstance(doc.get("reports"), list):
        raise _InvalidFeedError("feed has no reports array")
    name = info.get("name")
    if not isinstance(name, str) or not name.isalnum():
        raise _InvalidFeedError("feedinfo name is missing or not alphanumeric")
    return info


@define
class CbMock:
    """
    The mock server.

    :ivar token: the API token it accepts.
    :ivar fetch: fetches a C{feed_url}: returns a Deferred of the body.
    :ivar feeds: the feed objects by id.
    :ivar requests: every request received, in order.
    :ivar fetched: every URL the mock fetched, in order.
    :ivar stall: when true, requests get no answer.
    :ivar on_request: called with each request once it is recorded, before
        it is handled (e.g. to change the server's state in between calls).
    """

    app = Klein()

    token: str
    fetch: Fetch = field(factory=lambda: fetch_from({}))
    version: str = "7.7.0.0"
    feeds: dict[int, dict[str, Any]] = field(factory=dict)
    requests: list[Recorded] = field(factory=list)
    fetched: list[str] = field(factory=list)
    stall: bool = False
    on_request: Callable[[Recorded], None] | None = None
    _next_id: int = 1

    def resource(self) -> Any:
        """
        The twisted.web resource to serve (or to give to C{StubTreq}).
        """
        return self.app.resource()

    def add_feed(self, name: str, **fields: Any) -> dict[str, Any]:
        """
        Put a feed on the server directly (as the console would); return it.
        """
        feed: dict[str, Any] = {
            "id": self._next_id,
            "name": name,
            "display_name": name,
            "feed_url": f"http://feeds.example/{name}",
            "enabled": True,
            "use_proxy": False,
            "validate_server_cert": False,
            "manually_added": True,
        }
        feed.update(fields)
        self.feeds[feed["id"]] = feed
        self._next_id = max(self._next_id, feed["id"]) + 1
        return feed

    def calls(self) -> list[tuple[str, str]]:
        """
        C{(method, path)} of every request so far.
        """
        return [(r.method, r.path) for r in self.requests]

    # -- plumbing ----------------------------------------------------------

    def _record(self, request: Request) -> bool:
        """
        Record C{request}; C{True} if its token is right (else answer 401).
        """
        body = request.content.read() if request.content is not None else b""
        headers = {
            name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        method = request.method.decode("ascii")
        path = request.uri.decode("ascii")
        recorded = Recorded(method, path, headers, body)
        self.requests.append(recorded)
        if self.on_request is not None:
            self.on_request(recorded)
        request.setHeader(b"Content-Type", b"application/json")
        if headers.get("x-auth-token") != self.token:
            request.setResponseCode(401)
            return False
        return True

    def _answer(self, request: Request, code: int, value: Any) -> Any:
        request.setResponseCode(code)
        data = orjson.dumps(value)
        if self.stall:
            return Deferred()
        return data

    def _error(self, request: Request, code: int, reason: str) -> Any:
        return self._answer(request, code, {"reason": reason})

    async def _fetch(self, url: str) -> dict[str, Any]:
        self.fetched.append(url)
        body = await self.fetch(url)
        return _parse_feed(body)

    # -- routes ------------------------------------------------------------

    @app.route("/api/info", methods=["GET"])
    def info(self, request: Request) -> Any:
        """
        The server's version.
        """
        if not self._record(request):
            return self._error(request, 401, "Unauthorized")
        return self._answer(request, 200, {"version": self.version, "cblr_enabled": True})

    @app.route("/api/v1/storage/events/partition", methods=["GET"])
    def partitions(self, request: Request) -> Any:
        """
        The event partitions cbapi reads at start.
        """
        if not self._record(request):
            return self._error(request, 401, "Unauthorized")
        return self._answer(request, 200, {"writer": {"status": "hot"}})

    @app.route("/api/v1/feed", methods=["GET"])
    def list_feeds(self, request: Request) -> Any:
        """
        Every feed, as a JSON array.
        """
        if not self._record(request):
            return self._error(request, 401, "Unauthorized")
        return self._answer(request, 200, [self.feeds[i] for i in sorted(self.feeds)])

    @app.route("/api/v1/feed", methods=["POST"])
    async def create_feed(self, request: Request) -> Any:
        """
        Fetch C{feed_url}, and keep the feed if it parses.
        """
        if not self._record(request):
            return self._error(request, 401, "Unauthorized")
        try:
            sent = orjson.loads(self.requests[-1].body)
        except orjson.JSONDecodeError:
            return self._error(request, 400, "request body is not JSON")
        if not isinstance(sent, dict) or not isinstance(sent.get("feed_url"), str):
            return self._error(request, 400, "feed_url is required")
        try:
            info = await self._fetch(sent["feed_url"])
        except _InvalidFeedError as e:
            return self._error(request, 409, f"FeedSyncJsonError: {e}")
        except Exception as e:
            return self._error(request, 500, f"cannot retrieve feed: {e}")
        feed: dict[str, Any] = {"id": self._next_id}
        self._next_id += 1
        feed.update({k: info[k] for k in FEEDINFO_FIELDS if k in info})
        feed.update(
            {
                "feed_url": sent["feed_url"],
                "enabled": bool(sent.get("enabled", True)),
                "use_proxy": bool(sent.get("use_proxy", False)),
                "validate_server_cert": bool(sent.get("validate_server_cert", False)),
                "manually_added": True,
            }
        )
        for key in ("username", "password", "ssl_client_crt", "ssl_client_key"):
            if key in sent:
                feed[key] = sent[key]
        self.feeds[feed["id"]] = feed
        return self._answer(request, 200, feed)

    @app.route("/api/v1/feed/<int:feed_id>", methods=["GET", "PUT", "DELETE"])
    def one_feed(self, request: Request, feed_id: int) -> Any:
        """
        Read, replace or delete one feed.
        """
        if not self._record(request):
            return self._error(request, 401, "Unauthorized")
        feed = self.feeds.get(feed_id)
        if feed is None:
            return self._error(request, 404, f"no feed {feed_id}")
        if request.method == b"GET":
            return self._answer(request, 200, feed)
        if request.method == b"DELETE":
            del self.feeds[feed_id]
            return self._answer(request, 200, {"result": "success"})
        try:
            sent = orjson.loads(self.requests[-1].body)
        except orjson.JSONDecodeError:
            return self._error(request, 400, "request body is not JSON")
        if not isinstance(sent, dict):
            return self._error(request, 400, "expected a feed object")
        feed.update({k: v for k, v in sent.items() if k != "id"})
        return self._answer(request, 200, {"result": "success"})

    @app.route("/api/v1/feed/<int:feed_id>/synchronize", methods=["POST"])
    async def synchronize(self, request: Request, feed_id: int) -> Any:
        """
        Fetch the feed again, unless it is disabled.
        """
        if not self._record(request):
            return self._error(request, 401, "Unauthorized")
        try:
            sent = orjson.loads(self.requests[-1].body)
        except orjson.JSONDecodeError:
            return self._error(request, 400, "request body is not JSON")
        if not isinstance(sent, dict):
            return self._error(request, 400, "expected a JSON object")
        feed = self.feeds.get(feed_id)
        if feed is None:
            return self._error(request, 404, f"no feed {feed_id}")
        if not feed.get("enabled"):
            return self._error(request, 409, "Cannot synchronize a disabled feed")
        try:
            await self._fetch(feed["feed_url"])
        except _InvalidFeedError as e:
            return self._error(request, 409, f"FeedSyncJsonError: {e}")
        except Exception as e:
            return self._error(request, 500, f"cannot retrieve feed: {e}")
        feed["last_full_sync" if sent.get("full_sync") else "last_sync"] = "now"
        return self._answer(request, 200, {"result": "success"})
