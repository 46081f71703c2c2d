"""
Tests for the HTTP semantics of the feed route in L{tcbridge.web.app}:
validators, conditional requests, gzip negotiation, HEAD and
Content-Length, seen on the wire through treq's in-memory agent over the
real resource.

treq's own client always asks for gzip and decodes it, so these tests drive
L{treq.testing.RequestTraversalAgent} directly to see raw bytes and headers.
"""

from __future__ import annotations

import gzip
from email.utils import formatdate
from typing import Any

import orjson
import pytest
from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock
from twisted.web.client import readBody
from twisted.web.http_headers import Headers

from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore, Snapshot
from tcbridge.web.app import FeedApp
from tcbridge.web.conditional import accepts_gzip, none_match, not_modified_since
from tests.helpers import result_of

EMPTY = orjson.dumps({"feedinfo": {"name": "threatconnectintegration"}, "reports": []})
START = 1_800_000_000.0
URL = b"http://127.0.0.1:6100/threatconnect/json"


def _body(n: int) -> bytes:
    reports = [
        {
            "id": f"r{i:06d}",
            "link": f"https://app.threatconnect.com/auth/indicators/{i}",
            "title": f"Report {i}",
            "timestamp": 1700000000 + i,
            "score": 80,
            "iocs": {"md5": [f"{i:032x}"]},
        }
        for i in range(n)
    ]
    return orjson.dumps({"feedinfo": {"name": "threatconnectintegration"}, "reports": reports})


class Wire:
    """
    A FeedApp over a store, reached through the in-memory agent.
    """

    def __init__(self, reports: int | None = 3) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = FeedStore(empty_body=EMPTY)
        if reports is not None:
            self.publish(reports)
        self.app = FeedApp(self.store, SyncStatus(started_at=START), self.clock)
        self.agent = RequestTraversalAgent(self.app.resource())

    def publish(self, reports: int) -> Snapshot:
        """
        Publish a feed of C{reports} reports, now.
        """
        snapshot = Snapshot.of(_body(reports), reports, reports, self.clock.seconds())
        self.store.swap(snapshot)
        return snapshot

    def request(
        self, headers: dict[str, str] | None = None, method: bytes = b"GET", url: bytes = URL
    ) -> tuple[int, Headers, bytes]:
        """
        One exchange: the status, the raw response headers and the raw body.
        """
        raw = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
        d = self.agent.request(method, url, raw)
        self.agent.flush()
        response = result_of(d)
        body_d = readBody(response)
        self.agent.flush()
        headers = response.headers.copy()
        # Twisted's client keeps a GET's Content-Length as response.length
        # (unknown when the body was chunked); put it back with the rest.
        if isinstance(response.length, int) and not headers.hasHeader(b"Content-Length"):
            headers.setRawHeaders(b"Content-Length", [str(response.length).encode()])
        return response.code, headers, result_of(body_d)


def _one(headers: Headers, name: bytes) -> bytes | None:
    values = headers.getRawHeaders(name)
    if values is None:
        return None
    assert len(values) == 1, values
    value: bytes = values[0]
    return value


@pytest.fixture
def wire() -> Wire:
    """
    A bridge with a published three-report feed.
    """
    return Wire()


def _snapshot(wire: Wire) -> Snapshot:
    snapshot = wire.store.current
    assert snapshot is not None
    return snapshot


def test_plain_get_has_validators_and_length(wire: Wire) -> None:
    """
    A GET without Accept-Encoding gets the identity bytes with their ETag,
    Last-Modified, Vary and an exact Content-Length, and no Content-Encoding.
    """
    code, headers, body = wire.request()
    snapshot = _snapshot(wire)
    assert code == 200
    assert body == snapshot.body
    assert _one(headers, b"ETag") == snapshot.etag.encode()
    assert _one(headers, b"Last-Modified") == formatdate(START, usegmt=True).encode()
    assert _one(headers, b"Vary") == b"Accept-Encoding"
    assert _one(headers, b"Content-Length") == str(len(snapshot.body)).encode()
    assert _one(headers, b"Content-Type") == b"application/json"
    assert _one(headers, b"Content-Encoding") is None


def test_if_none_match_304(wire: Wire) -> None:
    """
    If-None-Match with the current ETag gets 304 with no body and the
    validators; a W/ form, a list and * match too; another tag does not.
    """
    etag = _snapshot(wire).etag
    for value in (etag, f"W/{etag}", f'"other", {etag}', '"a", W/"b",' + etag, "*"):
        code, headers, body = wire.request({"If-None-Match": value})
        assert (code, body) == (304, b""), value
        assert _one(headers, b"ETag") == etag.encode()
        assert _one(headers, b"Vary") == b"Accept-Encoding"
        assert _one(headers, b"Content-Encoding") is None
    code, _, body = wire.request({"If-None-Match": '"other", W/"nope"'})
    assert code == 200
    assert body == _snapshot(wire).body


def test_if_modified_since_304(wire: Wire) -> None:
    """
    If-Modified-Since at or after the publish time gets 304; before it, or
    unparsable, the feed.
    """
    at = formatdate(START, usegmt=True)
    later = formatdate(START + 60, usegmt=True)
    earlier = formatdate(START - 1, usegmt=True)
    assert wire.request({"If-Modified-Since": at})[0] == 304
    assert wire.request({"If-Modified-Since": later})[0] == 304
    assert wire.request({"If-Modified-Since": earlier})[0] == 200
    assert wire.request({"If-Modified-Since": "yesterday-ish"})[0] == 200


def test_if_none_match_wins_over_if_modified_since(wire: Wire) -> None:
    """
    When both are present, If-None-Match decides: a stale ETag gets the feed
    even though the date says not modified, and a matching one gets 304 even
    with an old date.
    """
    etag = _snapshot(wire).etag
    later = formatdate(START + 60, usegmt=True)
    earlier = formatdate(START - 3600, usegmt=True)
    code, _, _ = wire.request({"If-None-Match": '"old"', "If-Modified-Since": later})
    assert code == 200
    code, _, _ = wire.request({"If-None-Match": etag, "If-Modified-Since": earlier})
    assert code == 304


def test_new_publish_changes_etag(wire: Wire) -> None:
    """
    After a new feed is published, the old ETag and the old date no longer
    match: the client gets 200 and the new bytes with a new ETag.
    """
    old = _snapshot(wire)
    wire.clock.advance(3600)
    new = wire.publish(5)
    assert new.etag != old.etag
    code, headers, body = wire.request({"If-None-Match": old.etag})
    assert (code, body) == (200, new.body)
    assert _one(headers, b"ETag") == new.etag.encode()
    code, _, body = wire.request({"If-Modified-Since": old.last_modified})
    assert (code, body) == (200, new.body)
    assert wire.request({"If-None-Match": new.etag})[0] == 304


@pytest.mark.parametrize(
    "accept",
    ["gzip", "gzip, deflate", "deflate, gzip;q=0.5", "*", "br;q=1.0, *;q=0.1", "x-gzip", "GZIP"],
)
def test_gzip_when_accepted(wire: Wire, accept: str) -> None:
    """
    When Accept-Encoding allows gzip, the precomputed gzip bytes are sent
    with Content-Encoding, the gzip ETag and their own Content-Length; they
    decompress to the feed.
    """
    code, headers, body = wire.request({"Accept-Encoding": accept})
    snapshot = _snapshot(wire)
    assert code == 200
    assert body == snapshot.gzip_body
    assert gzip.decompress(body) == snapshot.body
    assert _one(headers, b"Content-Encoding") == b"gzip"
    assert _one(headers, b"ETag") == snapshot.gzip_etag.encode()
    assert _one(headers, b"Content-Length") == str(len(snapshot.gzip_body)).encode()
    assert _one(headers, b"Vary") == b"Accept-Encoding"


@pytest.mark.parametrize(
    "accept",
    [
        "identity",
        "gzip;q=0",
        "gzip; q=0.000",
        "deflate, br",
        "*;q=0, identity",
        "gzip;q=0.5, identity;q=1",
        "gzip;q=banana",
        "gzip;q=2",
        "",
    ],
)
def test_identity_when_gzip_not_accepted(wire: Wire, accept: str) -> None:
    """
    gzip;q=0, no gzip or * at all, or identity preferred: the plain bytes.
    """
    code, headers, body = wire.request({"Accept-Encoding": accept})
    snapshot = _snapshot(wire)
    assert (code, body) == (200, snapshot.body)
    assert _one(headers, b"Content-Encoding") is None
    assert _one(headers, b"ETag") == snapshot.etag.encode()
    assert _one(headers, b"Vary") == b"Accept-Encoding"


def test_gzip_etag_revalidates_gzip_only(wire: Wire) -> None:
    """
    The gzip ETag gets 304 on a gzip request; on an identity request it is
    another representation, so the client gets the plain bytes.
    """
    snapshot = _snapshot(wire)
    code, headers, body = wire.request(
        {"Accept-Encoding": "gzip", "If-None-Match": snapshot.gzip_etag}
    )
    assert (code, body) == (304, b"")
    assert _one(headers, b"ETag") == snapshot.gzip_etag.encode()
    code, _, body = wire.request({"If-None-Match": snapshot.gzip_etag})
    assert (code, body) == (200, snapshot.body)


def test_gzip_is_never_recompressed(wire: Wire, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The gzip form is the snapshot's own bytes object on every request: the
    route never compresses per request.
    """
    snapshot = _snapshot(wire)

    def refuse(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("compressed per request")

    monkeypatch.setattr(gzip, "compress", refuse)
    seen = []
    for _ in range(3):
        _, _, body = wire.request({"Accept-Encoding": "gzip"})
        seen.append(body)
    assert all(body == snapshot.gzip_body for body in seen)
    rep = wire.app._representation()
    assert rep.gzip_body is snapshot.gzip_body
    assert rep.body is snapshot.body


def test_empty_document_compressed_once() -> None:
    """
    Before the first publish, the empty document has an ETag, no
    Last-Modified, and its gzip form is computed once and reused.
    """
    wire = Wire(reports=None)
    code, headers, body = wire.request({"Accept-Encoding": "gzip"})
    assert code == 200
    assert gzip.decompress(body) == EMPTY
    etag = _one(headers, b"ETag")
    assert etag is not None and etag.endswith(b'-gzip"')
    assert _one(headers, b"Last-Modified") is None
    first = wire.app._representation()
    assert wire.app._representation() is first
    assert wire.request({"Accept-Encoding": "gzip", "If-None-Match": etag.decode()})[0] == 304
    code, headers, body = wire.request()
    assert (code, body) == (200, EMPTY)
    assert _one(headers, b"Content-Length") == str(len(EMPTY)).encode()
    # If-Modified-Since cannot match a document with no date.
    at = formatdate(START + 60, usegmt=True)
    assert wire.request({"If-Modified-Since": at})[0] == 200


@pytest.mark.parametrize("accept", ["", "gzip"])
def test_head_same_headers_no_body(wire: Wire, accept: str) -> None:
    """
    HEAD gets exactly the headers GET would, including Content-Length, and
    no body.
    """
    get_code, get_headers, get_body = wire.request({"Accept-Encoding": accept})
    code, headers, body = wire.request({"Accept-Encoding": accept}, b"HEAD")
    assert (code, body) == (get_code, b"")
    assert get_body
    for name in (
        b"Content-Length",
        b"Content-Type",
        b"Content-Encoding",
        b"ETag",
        b"Last-Modified",
        b"Vary",
    ):
        assert headers.getRawHeaders(name) == get_headers.getRawHeaders(name), name
    assert _one(headers, b"Content-Length") == str(len(get_body)).encode()


def test_head_conditional_304(wire: Wire) -> None:
    """
    A conditional HEAD gets 304 like a conditional GET.
    """
    etag = _snapshot(wire).etag
    code, _, body = wire.request({"If-None-Match": etag}, b"HEAD")
    assert (code, body) == (304, b"")


def test_bad_method_and_path() -> None:
    """
    PUT on the feed is 405 and an unknown path 404, as short pages.
    """
    wire = Wire()
    code, _, body = wire.request(method=b"PUT")
    assert code == 405 and b"Traceback" not in body
    code, _, body = wire.request(url=b"http://127.0.0.1:6100/threatconnect/xml")
    assert code == 404 and b"Traceback" not in body


def test_helpers_directly() -> None:
    """
    The header parsers on their own, including odd spacing and case.
    """
    assert accepts_gzip(b" GZip ; Q=0.3 ")
    assert not accepts_gzip(None)
    assert not accepts_gzip(b"gzip;q=0, *")
    assert accepts_gzip(b"identity;q=0.5, gzip")
    assert none_match(b' w/"x" ', b'"x"')
    assert not none_match(b'"x-gzip"', b'"x"')
    assert not none_match(b"", b'"x"')
    assert not not_modified_since(b"Sat, 28 Nov 2026 06:23:29 GMT", None)
    assert not not_modified_since(b"\xff\xfe", 1)


def test_gzip_with_parameters() -> None:
    """
    Parameters besides q after a coding do not hide it.
    """
    assert accepts_gzip(b"gzip;level=1")
    assert accepts_gzip(b"gzip;q=1;foo=bar, identity;q=0.5")
