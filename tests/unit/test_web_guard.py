# -*- test-case-name: tests.unit.test_web_guard -*-
"""
Tests for L{tcbridge.web.guard}: the IP allow-list and HTTP Basic / Bearer
authentication in front of the whole site, driven through StubTreq over a
small Klein app and over the real L{FeedApp}.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

import orjson
import pytest
from klein import Klein
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore, Snapshot, count_iocs
from tcbridge.web.app import FeedApp
from tcbridge.web.guard import LOG_INTERVAL, Guarded, client_ip, guard
from tests.helpers import result_of

USER = "carbonblack"
PASSWORD = "pw-Zq8!x:y"  # a colon in the password must work
TOKEN = "tok-3b1f0c9e-QWERTY"
#: Something only the feed holds, to prove a refusal leaks no feed data.
MARKER_MD5 = "0123456789abcdef0123456789abcdef"
MARKER_TITLE = "Marker report 7f3a"
EMPTY = orjson.dumps({"feedinfo": {"name": "threatconnectintegration"}, "reports": []})
PNG = b"\x89PNG\r\n\x1a\nfake"
ROUTES = ["/threatconnect/json", "/", "/feed.html", "/threatconnect.png", "/healthz", "/metrics"]


def _basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


@implementer(IResource)
class _From:
    """
    A leaf in front of the guarded site that makes each request look as if
    it came from C{address}.
    """

    isLeaf = True

    def __init__(self, wrapped: IResource, address: Any) -> None:
        self._wrapped = wrapped
        self._address = address

    def render(self, request: Any) -> Any:
        request.client = self._address
        return self._wrapped.render(request)

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        raise AssertionError("a leaf is never traversed")

    def putChild(self, path: bytes, child: IResource) -> None:
        raise AssertionError("not used")


class _Small:
    """
    A small Klein app that shows which route and path it was asked for.
    """

    app = Klein()

    @app.route("/", methods=["GET", "HEAD"])
    def root(self, request: IRequest) -> bytes:
        return b"root"

    @app.route("/a/b/<string:name>", methods=["GET", "HEAD"])
    def deep(self, request: IRequest, name: str) -> bytes:
        return f"deep {name} {request.path.decode()}".encode()


def _feed_app() -> FeedApp:
    clock = Clock()
    clock.advance(1_800_000_000)
    store = FeedStore(empty_body=EMPTY)
    reports = [
        {
            "id": "r000001",
            "link": "https://app.threatconnect.com/auth/indicators/1",
            "title": MARKER_TITLE,
            "timestamp": 1700000000,
            "score": 80,
            "iocs": {"md5": [MARKER_MD5]},
        }
    ]
    body = orjson.dumps({"feedinfo": {"name": "threatconnectintegration"}, "reports": reports})
    store.swap(Snapshot.of(body, 1, count_iocs(reports), clock.seconds()))
    return FeedApp(
        store,
        SyncStatus(started_at=clock.seconds()),
        clock,
        [("api_key", "1234")],
        {"name": "threatconnectintegration", "display_name": "ThreatConnect"},
        {"threatconnect.png": PNG, "carbonblack.png": PNG},
    )


def _stub(resource: IResource, address: Any = None) -> StubTreq:
    if address is not None:
        resource = _From(resource, address)
    return StubTreq(resource)


def _request(
    stub: StubTreq,
    path: str,
    authorization: bytes | None = None,
    method: str = "GET",
) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    headers = {} if authorization is None else {b"Authorization": [authorization]}
    d = stub.request(method, "http://127.0.0.1:6100" + path, headers=headers)
    stub.flush()
    response = result_of(d)
    content = response.content()
    stub.flush()
    return response.code, dict(response.headers.getAllRawHeaders()), result_of(content)


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    """
    Every log event published during the test.
    """
    seen: list[LogEvent] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def _refusals(events: Sequence[LogEvent]) -> list[LogEvent]:
    return [e for e in events if "reason" in e and e.get("log_namespace", "").endswith("guard")]


def _nets(*texts: str) -> list[IPv4Network | IPv6Network]:
    return [ip_network(t) for t in texts]


# -- No configuration ---------------------------------------------------------


def test_nothing_configured_returns_the_resource_itself() -> None:
    """
    With no allow-list and no credentials (the default on 127.0.0.1) the
    site is served unchanged.
    """
    resource = _Small.app.resource()
    assert guard(resource) is resource


# -- Allow-list ---------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        IPv4Address("TCP", "10.1.2.3", 5000),
        IPv6Address("TCP", "2001:db8::5", 5000),
        IPv6Address("TCP", "::ffff:10.1.2.3", 5000),
    ],
)
def test_allowed_addresses_are_served(address: Any) -> None:
    """
    Clients inside an allowed network are served, including an IPv4 client
    seen through an IPv6 socket as an IPv4-mapped address.
    """
    site = guard(_Small().app.resource(), allow=_nets("10.0.0.0/8", "2001:db8::/32"))
    code, _, body = _request(_stub(site, address), "/a/b/x")
    assert (code, body) == (200, b"deep x /a/b/x")


@pytest.mark.parametrize(
    "address",
    [
        IPv4Address("TCP", "192.0.2.9", 5000),
        IPv6Address("TCP", "2001:db9::5", 5000),
        IPv6Address("TCP", "::ffff:192.0.2.9", 5000),
        IPv6Address("TCP", "::1", 5000),
        UNIXAddress(b"/tmp/sock"),
    ],
)
def test_refused_addresses_get_403_without_data(address: Any, events: list[LogEvent]) -> None:
    """
    Clients outside the allow-list get a short 403 from every route, even
    with valid credentials; the refusal is logged with the client, the
    path and the reason.
    """
    site = guard(
        _feed_app().resource(),
        username=USER,
        password=PASSWORD,
        allow=_nets("10.0.0.0/8", "2001:db8::/32"),
    )
    stub = _stub(site, address)
    for path in ROUTES:
        code, headers, body = _request(stub, path, _basic(USER, PASSWORD))
        assert code == 403, path
        assert headers[b"Content-Type"] == [b"text/plain; charset=utf-8"]
        assert b"WWW-Authenticate" not in headers
        assert MARKER_MD5.encode() not in body and MARKER_TITLE.encode() not in body
        assert len(body) < 100
    refusals = _refusals(events)
    assert [e["path"] for e in refusals] == ROUTES
    assert {e["reason"] for e in refusals} == {"address not allowed"}
    assert all(e["log_level"] == LogLevel.warn for e in refusals)
    if not isinstance(address, UNIXAddress):
        assert refusals[0]["client"] == address.host


def test_mapped_allow_list_entry_matches_ipv4_client() -> None:
    """
    An allow-list entry written as an IPv4-mapped IPv6 network also admits
    the plain IPv4 client.
    """
    site = guard(_Small().app.resource(), allow=_nets("::ffff:10.0.0.0/104"))
    code, _, _ = _request(_stub(site, IPv4Address("TCP", "10.9.9.9", 1)), "/")
    assert code == 200
    code, _, _ = _request(_stub(site, IPv4Address("TCP", "11.9.9.9", 1)), "/")
    assert code == 403


def test_stubtreq_client_is_loopback() -> None:
    """
    Without an allow-list entry for it, even the loopback client is
    refused; with one it is served.
    """
    refused = guard(_Small().app.resource(), allow=_nets("10.0.0.0/8"))
    assert _request(StubTreq(refused), "/")[0] == 403
    allowed = guard(_Small().app.resource(), allow=_nets("127.0.0.1/32"))
    assert _request(StubTreq(allowed), "/")[:3:2] == (200, b"root")


def test_client_ip_parsing() -> None:
    """
    L{client_ip} unwraps IPv4-mapped addresses, drops IPv6 zone ids and
    gives C{None} for non-IP peers.
    """

    class _Req:
        def __init__(self, address: Any) -> None:
            self.address = address

        def getClientAddress(self) -> Any:
            return self.address

    def ip(address: Any) -> str | None:
        found = client_ip(_Req(address))  # type: ignore[arg-type]
        return None if found is None else str(found)

    assert ip(IPv6Address("TCP", "::ffff:1.2.3.4", 1)) == "1.2.3.4"
    assert ip(IPv6Address("TCP", "fe80::1%eth0", 1)) == "fe80::1"
    assert ip(IPv4Address("TCP", "1.2.3.4", 1)) == "1.2.3.4"
    assert ip(UNIXAddress(b"/tmp/s")) is None
    assert ip(None) is None


# -- Basic and Bearer -----------------------------------------------------------


def _basic_site(**kwargs: Any) -> StubTreq:
    return StubTreq(guard(_Small().app.resource(), **kwargs))


def test_basic_ok_keeps_klein_routing() -> None:
    """
    Correct Basic credentials reach the Klein app, which still sees the
    full path.
    """
    stub = _basic_site(username=USER, password=PASSWORD)
    assert _request(stub, "/a/b/zz", _basic(USER, PASSWORD))[::2] == (200, b"deep zz /a/b/zz")
    assert _request(stub, "/", _basic(USER, PASSWORD))[::2] == (200, b"root")


def test_basic_scheme_is_case_insensitive() -> None:
    """
    The scheme name is matched without regard to case.
    """
    stub = _basic_site(username=USER, password=PASSWORD)
    header = b"bAsIc " + _basic(USER, PASSWORD).split(b" ", 1)[1]
    assert _request(stub, "/", header)[0] == 200


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "no credentials"),
        (_basic(USER, "wrong"), "wrong credentials"),
        (_basic("someone", PASSWORD), "wrong credentials"),
        (_basic(USER, PASSWORD + "x"), "wrong credentials"),
        (_basic(USER, ""), "wrong credentials"),
        (b"Basic", "malformed credentials"),
        (b"Basic !!!not-base64!!!", "malformed credentials"),
        (b"Basic " + base64.b64encode(b"no-colon-here"), "malformed credentials"),
        (b"Bearer " + TOKEN.encode(), "unsupported authentication scheme"),
        (b"Digest username=x", "unsupported authentication scheme"),
        (b"", "no credentials"),
    ],
)
def test_basic_refusals(authorization: bytes | None, reason: str, events: list[LogEvent]) -> None:
    """
    Missing, wrong or malformed Basic credentials get a short 401 with a
    Basic challenge, and the reason is logged.
    """
    stub = _basic_site(username=USER, password=PASSWORD)
    code, headers, body = _request(stub, "/a/b/x", authorization)
    assert code == 401
    assert headers[b"WWW-Authenticate"] == [b'Basic realm="tcbridge", charset="UTF-8"']
    assert b"deep" not in body and len(body) < 100
    assert [e["reason"] for e in _refusals(events)] == [reason]


def test_bearer_ok_and_wrong() -> None:
    """
    A token alone: the right Bearer token is served, a wrong or missing one
    gets a 401 with only a Bearer challenge.
    """
    stub = _basic_site(token=TOKEN)
    assert _request(stub, "/a/b/t", b"Bearer " + TOKEN.encode())[::2] == (200, b"deep t /a/b/t")
    for header in [b"Bearer nope", b"Bearer " + TOKEN.encode() + b"x", b"Bearer", None]:
        code, headers, _ = _request(stub, "/a/b/t", header)
        assert code == 401
        assert headers[b"WWW-Authenticate"] == [b'Bearer realm="tcbridge"']


def test_both_configured_accepts_either() -> None:
    """
    With Basic credentials and a token both configured, either is accepted
    and the challenge offers both.
    """
    stub = _basic_site(username=USER, password=PASSWORD, token=TOKEN, realm="cb feed")
    assert _request(stub, "/", _basic(USER, PASSWORD))[0] == 200
    assert _request(stub, "/", b"Bearer " + TOKEN.encode())[0] == 200
    code, headers, _ = _request(stub, "/", _basic(USER, TOKEN))
    assert code == 401
    assert headers[b"WWW-Authenticate"] == [
        b'Basic realm="cb feed", charset="UTF-8"',
        b'Bearer realm="cb feed"',
    ]


def test_non_ascii_credentials() -> None:
    """
    Configured credentials are compared as UTF-8.
    """
    stub = _basic_site(username="bjørn", password="pässwörd")
    assert _request(stub, "/", _basic("bjørn", "pässwörd"))[0] == 200


# -- The real site ------------------------------------------------------------


def test_every_feedapp_route_refused_without_data() -> None:
    """
    On the real FeedApp, every route (feed, pages, images, health, metrics,
    unknown paths) is refused with no feed data when unauthenticated, and
    served normally when authenticated.
    """
    stub = StubTreq(guard(_feed_app().resource(), username=USER, password=PASSWORD, token=TOKEN))
    for path in [*ROUTES, "/nope", "/feed.html?page=1&report=r000001"]:
        for method in ["GET", "HEAD", "POST"]:
            code, _, body = _request(stub, path, method=method)
            assert code == 401, (path, method)
            assert MARKER_MD5.encode() not in body and MARKER_TITLE.encode() not in body
    code, headers, body = _request(stub, "/threatconnect/json", _basic(USER, PASSWORD))
    assert code == 200 and headers[b"Content-Type"] == [b"application/json"]
    assert orjson.loads(body)["reports"][0]["iocs"]["md5"] == [MARKER_MD5]
    code, _, body = _request(stub, "/feed.html", b"Bearer " + TOKEN.encode())
    assert code == 200 and MARKER_TITLE.encode() in body
    assert _request(stub, "/threatconnect.png", _basic(USER, PASSWORD))[::2] == (200, PNG)
    assert _request(stub, "/nope", _basic(USER, PASSWORD))[0] == 404


def test_head_gets_the_same_answers() -> None:
    """
    HEAD is refused with the same code and headers as GET and no body; an
    authorised HEAD reaches the route.
    """
    stub = StubTreq(guard(_feed_app().resource(), username=USER, password=PASSWORD))
    get = _request(stub, "/threatconnect/json")
    head = _request(stub, "/threatconnect/json", method="HEAD")
    assert head[0] == get[0] == 401
    assert head[1][b"WWW-Authenticate"] == get[1][b"WWW-Authenticate"]
    assert head[1][b"Content-Length"] == [str(len(get[2])).encode()]
    assert head[2] == b""
    ok = _request(stub, "/threatconnect/json", _basic(USER, PASSWORD), method="HEAD")
    assert ok[0] == 200 and ok[2] == b""
    forbidden = StubTreq(guard(_feed_app().resource(), allow=_nets("10.0.0.0/8")))
    assert _request(forbidden, "/", method="HEAD")[::2] == (403, b"")


def test_secrets_never_in_responses_or_logs(events: list[LogEvent]) -> None:
    """
    Neither the configured secrets nor the presented ones appear in any
    response or log event.
    """
    presented = "presented-Secret-99"
    stub = StubTreq(
        guard(
            _feed_app().resource(),
            username=USER,
            password=PASSWORD,
            token=TOKEN,
            allow=_nets("127.0.0.0/8"),
        )
    )
    seen = b""
    for header in [
        None,
        _basic(USER, presented),
        _basic(presented, PASSWORD),
        b"Bearer " + presented.encode(),
        b"Basic " + presented.encode(),
        b"Weird " + presented.encode(),
    ]:
        for path in ROUTES:
            code, headers, body = _request(stub, path, header)
            assert code == 401
            seen += body + repr(headers).encode()
    denied = StubTreq(guard(_feed_app().resource(), token=TOKEN, allow=_nets("10.0.0.0/8")))
    code, headers, body = _request(denied, "/", b"Bearer " + TOKEN.encode())
    assert code == 403
    seen += body + repr(headers).encode()
    logged = "".join(repr(e) + (formatEvent(e) or "") for e in events)
    assert len(_refusals(events)) == 6 * len(ROUTES) + 1
    for secret in [PASSWORD, TOKEN, presented, "presented"]:
        assert secret.encode() not in seen
        assert secret not in logged
    for encoded in [_basic(USER, PASSWORD), _basic(USER, presented)]:
        assert encoded.split(b" ")[1] not in seen
        assert encoded.split(b" ")[1].decode() not in logged


def test_refusal_logging_is_rate_limited(events: list[LogEvent]) -> None:
    """
    With a clock, one client refused for one reason is logged once per
    interval; the next warning counts the ones skipped.  Other clients and
    other reasons are logged on their own.
    """
    clock = Clock()
    site = guard(_Small().app.resource(), token=TOKEN, clock=clock)
    stub = StubTreq(site)
    for _ in range(5):
        _request(stub, "/")
    _request(stub, "/", b"Bearer bad")
    other = _stub(site, IPv4Address("TCP", "10.0.0.7", 1))
    _request(other, "/")
    assert [(e["client"], e["reason"]) for e in _refusals(events)] == [
        ("127.0.0.1", "no credentials"),
        ("127.0.0.1", "wrong credentials"),
        ("10.0.0.7", "no credentials"),
    ]
    clock.advance(LOG_INTERVAL)
    _request(stub, "/")
    last = _refusals(events)[-1]
    assert last["suppressed"] == 4
    assert "4 more" in (formatEvent(last) or "")


def test_every_refusal_logged_without_clock(events: list[LogEvent]) -> None:
    """
    Without a clock every refusal is logged.
    """
    stub = _basic_site(token=TOKEN)
    for _ in range(3):
        _request(stub, "/")
    assert len(_refusals(events)) == 3


# -- Wrapping and configuration ----------------------------------------------


def test_non_leaf_resource_tree() -> None:
    """
    A plain (non-leaf) resource tree is guarded too: traversal goes through
    the guard's checks, and allowed requests reach the right child.
    """
    root = Resource()
    child = Resource()
    leaf = Resource()
    leaf.isLeaf = True
    leaf.render_GET = lambda request: b"leaf"  # type: ignore[attr-defined]
    child.putChild(b"leaf", leaf)
    root.putChild(b"child", child)
    site = guard(root, token=TOKEN)
    assert isinstance(site, Guarded) and not site.isLeaf
    stub = StubTreq(site)
    assert _request(stub, "/child/leaf")[0] == 401
    assert _request(stub, "/child/leaf", b"Bearer " + TOKEN.encode())[::2] == (200, b"leaf")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"username": USER}, "set together"),
        ({"password": PASSWORD}, "set together"),
        ({"username": "", "password": PASSWORD}, "username"),
        ({"username": "a:b", "password": PASSWORD}, "username"),
        ({"username": USER, "password": ""}, "password must not be empty"),
        ({"token": ""}, "token"),
        ({"token": "two words"}, "token"),
        ({"token": TOKEN, "realm": 'bad"realm'}, "realm"),
        ({"allow": ["10.0.0.0/8"]}, "IP networks"),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], message: str) -> None:
    """
    An incomplete or unusable configuration is refused with a message that
    holds no secret.
    """
    with pytest.raises(ValueError, match=message) as raised:
        guard(_Small().app.resource(), **kwargs)
    for secret in [PASSWORD, TOKEN]:
        assert secret not in str(raised.value)
