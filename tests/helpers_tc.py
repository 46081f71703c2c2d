# -*- test-case-name: tests.unit.test_tc_client -*-
"""
Test helpers for the ThreatConnect side: a scripted ThreatConnect resource
that records the raw request target (and headers) of every request, answers
with scripted statuses, headers, hangs, stalled or cut bodies, and checks
signatures, with pluggable handlers: a tiny v2 paging ThreatConnect over
in-memory data (L{PagingTC}), a tiny v3 one (L{V3TC}: C{/v3/indicators} by
decoded TQL, C{/v3/security/owners}, absolute C{next} links), and a wrapper
that changes the data between requests (L{changing}); and L{make_client}, a
client over all that on a L{Clock}.  This is the tests' one ThreatConnect
fake besides the simulator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

import orjson
from attrs import define, field, frozen
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.retry import RetryPolicy
from tcbridge.threatconnect.signing import authorization

T = TypeVar("T")

API_KEY = "12345678901234567890"
SECRET = "example-secret-key"
NOW = 1513703787

#: A policy that never retries, for tests of a single exchange.
NO_RETRY = RetryPolicy(attempts=1)


@frozen
class Reply:
    """
    One scripted HTTP answer.

    :ivar hang: answer nothing at all (until the request is cancelled).
    :ivar stall_body: send the headers with a C{Content-Length} bigger than
        C{body}, write C{body}, then wait forever.
    :ivar cut_body: like C{stall_body}, but then close the connection.
    :ivar headers: extra response headers, e.g. C{("Retry-After", "30")};
        a value of C{None} removes the header (C{("Date", None)} removes the
        C{Date} twisted.web adds).
    :ivar close_delimited: answer in raw HTTP/1.1 with neither
        C{Content-Length} nor chunking, write C{body} and close: the client
        cannot tell a complete body from a cut one.
    """

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    hang: bool = False
    stall_body: bool = False
    cut_body: bool = False
    headers: tuple[tuple[str, str | None], ...] = ()
    close_delimited: bool = False


def json_reply(doc: Any, status: int = 200) -> Reply:
    """
    A JSON answer.
    """
    return Reply(status=status, body=orjson.dumps(doc))


def success(data: Any) -> Reply:
    """
    ThreatConnect's success envelope around C{data}.
    """
    return json_reply({"status": "Success", "data": data})


@frozen
class Seen:
    """
    A request as the server received it: C{uri} is the raw request target.
    """

    method: str
    uri: str
    headers: dict[str, str]

    def signature_ok(self, secret: str = SECRET, api_key: str = API_KEY) -> bool:
        """
        Whether the Authorization header signs exactly C{uri} with the
        C{Timestamp} header, the way a ThreatConnect server checks it.
        """
        stamp = self.headers.get("timestamp", "")
        if not stamp.isdigit():
            return False
        expected = authorization(api_key, secret, self.uri, self.method, int(stamp))
        return self.headers.get("authorization") == expected["Authorization"]


class ScriptedTC(Resource):
    """
    A leaf resource that records each request and answers with
    C{handler(raw_target)}.
    """

    isLeaf = True

    def __init__(self, handler: Callable[[str], Reply]) -> None:
        super().__init__()
        self.handler = handler
        self.seen: list[Seen] = []
        self.pending: list[Request] = []

    def render(self, request: Request) -> bytes | int:  # type: ignore[override]
        assert request.uri is not None and request.method is not None
        uri = request.uri.decode("ascii")
        headers = {
            k.decode("ascii").lower(): v[-1].decode("latin-1")
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.seen.append(Seen(request.method.decode("ascii"), uri, headers))
        reply = self.handler(uri)
        if reply.hang:
            self.pending.append(request)
            return NOT_DONE_YET
        if reply.close_delimited:
            assert request.channel is not None
            transport = request.channel.transport
            assert transport is not None
            transport.write(
                b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\n\r\n" % reply.status
                + reply.body
            )
            transport.loseConnection()
            self.pending.append(request)
            return NOT_DONE_YET
        request.setResponseCode(reply.status)
        if reply.content_type:
            request.setHeader(b"content-type", reply.content_type.encode("ascii"))
        for name, value in reply.headers:
            if value is None:
                request.responseHeaders.removeHeader(name.encode("ascii"))
            else:
                request.setHeader(name.encode("ascii"), value.encode("latin-1"))
        if reply.stall_body or reply.cut_body:
            request.setHeader(b"content-length", str(len(reply.body) + 100).encode())
            request.write(reply.body)
            self.pending.append(request)
            if reply.cut_body:
                assert request.channel is not None
                request.channel.transport.loseConnection()  # type: ignore[union-attr]
            return NOT_DONE_YET
        return reply.body


def always(reply: Reply) -> Callable[[str], Reply]:
    """
    A handler that gives the same answer to everything.
    """
    return lambda uri: reply


def in_order(*replies: Reply) -> Callable[[str], Reply]:
    """
    A handler that gives C{replies} one after the other.
    """
    queue = list(replies)

    def handler(uri: str) -> Reply:
        assert queue, f"unexpected extra request {uri}"
        return queue.pop(0)

    return handler


def query_of(uri: str) -> dict[str, str]:
    """
    The decoded query parameters of a raw target (last value wins).
    """
    return dict(parse_qsl(uri.partition("?")[2], keep_blank_values=True))


@define
class PagingTC:
    """
    A minimal ThreatConnect over in-memory data that pages like v2:
    C{resultCount} only on the first page, C{data.<entity>} lists.

    :ivar owners: owner name -> entity (C{"file"}, C{"address"},
        C{"host"}) -> items.
    :ivar generic: raw path (before C{?}) -> items for C{/indicators} pages.
    """

    owners: dict[str, dict[str, list[Any]]] = field(factory=dict)
    generic: dict[str, list[Any]] = field(factory=dict)
    prefix: str = "/api"

    def __call__(self, uri: str) -> Reply:
        path, _, _ = uri.partition("?")
        assert path.startswith(self.prefix), uri
        path = path[len(self.prefix) :]
        query = query_of(uri)
        start = int(query.get("resultStart", "0"))
        limit = int(query.get("resultLimit", "100"))
        if path == "/v2/owners":
            key = "owner"
            items: list[Any] = [{"id": i, "name": n} for i, n in enumerate(self.owners, 1)]
        elif path.startswith("/v2/indicators/"):
            branch = path.rsplit("/", 1)[1]
            key = {"files": "file", "addresses": "address", "hosts": "host"}[branch]
            owner = query.get("owner", "")
            if owner not in self.owners:
                return json_reply(
                    {"status": "Failure", "message": "The requested owner was not found"}, 403
                )
            items = self.owners[owner].get(key, [])
        else:
            key = "indicator"
            items = self.generic[unquote(path)]
        data: dict[str, Any] = {key: items[start : start + limit]}
        if start == 0:
            data["resultCount"] = len(items)
        return success(data)


def make_client(
    handler: Callable[[str], Reply],
    base_url: str = "https://app.threatconnect.com/api",
    timeout: float = 30.0,
    now: float = NOW,
    retry: RetryPolicy | None = None,
    random: Callable[[], float] = lambda: 0.5,
) -> tuple[ThreatConnectClient, ScriptedTC, Clock, Any]:
    """
    A client over C{StubTreq} over a L{ScriptedTC}, with a L{Clock} at C{now}.

    :param retry: the client's retry policy (default: L{RetryPolicy}()).
    :param random: the jitter source (default: always 0.5, so the backoff
        waits are 0.5, 1, 2, 4 ... seconds).
    :return: the client, the resource, the clock and the StubTreq.
    """
    from treq.testing import StubTreq

    resource = ScriptedTC(handler)
    stub = StubTreq(resource)
    clock = Clock()
    clock.advance(now)
    client = ThreatConnectClient(
        stub,
        clock,
        base_url,
        API_KEY,
        SECRET,
        timeout=timeout,
        retry=retry if retry is not None else RetryPolicy(),
        random=random,
    )
    return client, resource, clock, stub


def real_client(reactor: Any, base_url: str) -> tuple[ThreatConnectClient, Any]:
    """
    A client on the real reactor over real sockets (for the few loopback
    tests), and its connection pool, which the caller closes.
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    client = ThreatConnectClient(
        HTTPClient(Agent(reactor, pool=pool)), reactor, base_url, API_KEY, SECRET, timeout=10
    )
    return client, pool


def _with_start(query: str, start: int) -> str:
    parts = query.split("&")
    for i, part in enumerate(parts):
        if part.partition("=")[0] == "resultStart":
            parts[i] = f"resultStart={start}"
    return "&".join(parts)


@define
class V3TC:
    """
    A ThreatConnect v3 over in-memory data.

    :ivar by_tql: decoded TQL -> the items it selects (a live list: tests
        may change it between requests).
    :ivar owners: the names C{/v3/security/owners} lists.
    :ivar link_base: scheme, host, port and prefix of the C{next} links.
    :ivar forbidden: status to answer C{/v3/indicators} with, if not 200.
    """

    by_tql: dict[str, list[Any]] = field(factory=dict)
    owners: list[str] = field(factory=list)
    link_base: str = "https://app.threatconnect.com/api"
    prefix: str = "/api"
    forbidden: int | None = None

    def _page(self, uri: str, items: list[Any]) -> Reply:
        path, _, query = uri.partition("?")
        params = query_of(uri)
        start = int(params.get("resultStart", "0"))
        limit = int(params.get("resultLimit", "100"))
        doc: dict[str, Any] = {"data": items[start : start + limit], "status": "Success"}
        if start + limit < len(items):
            doc["next"] = f"{self.link_base}{path[len(self.prefix) :]}?" + _with_start(
                query, start + limit
            )
        return json_reply(doc)

    def __call__(self, uri: str) -> Reply:
        path = uri.partition("?")[0]
        assert path.startswith(self.prefix), uri
        path = path[len(self.prefix) :]
        if path == "/v3/security/owners":
            return self._page(uri, [{"id": i, "name": n} for i, n in enumerate(self.owners, 1)])
        assert path == "/v3/indicators", uri
        if self.forbidden is not None:
            return json_reply(
                {"status": "Error", "errCode": "0x1001", "message": "Access Denied"},
                self.forbidden,
            )
        tql = query_of(uri).get("tql", "")
        return self._page(uri, self.by_tql.get(tql, []))


def changing(
    handler: Callable[[str], Reply], change: Callable[[int], None]
) -> Callable[[str], Reply]:
    """
    C{handler}, calling C{change(n)} right after answering the C{n}-th
    request (1-based), so the data differs between pages.
    """
    count = [0]

    def wrapped(uri: str) -> Reply:
        reply = handler(uri)
        count[0] += 1
        change(count[0])
        return reply

    return wrapped


def v3_item(n: int, owner: str = "Common Community", **extra: Any) -> dict[str, Any]:
    """
    A v3 Host item C{h<n>.example} with id C{n}.
    """
    item: dict[str, Any] = {
        "id": n,
        "ownerName": owner,
        "type": "Host",
        "summary": f"h{n}.example",
        "hostName": f"h{n}.example",
        "active": True,
    }
    item.update(extra)
    return item
