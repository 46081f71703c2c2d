# -*- test-case-name: tests.unit.test_tc_v3 -*-
"""
Tests for L{tcbridge.threatconnect.v3} and v3 paging through the real signed
client: C{next} links followed only back to the configured API, their
C{resultStart} moved, and the exact targets signed and sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer

from tcbridge.model import Source
from tcbridge.threatconnect.errors import ResponseError
from tcbridge.threatconnect.pull import PullOptions, pull_source
from tcbridge.threatconnect.tql import build_tql, indicators_target
from tcbridge.threatconnect.v3 import (
    NextLinkRefused,
    next_link,
    page_data,
    relative_target,
    result_start_of,
    with_result_start,
)
from tests.helpers import Pages, failure_of, result_of
from tests.helpers_tc import V3TC, in_order, json_reply, make_client, v3_item

BASE = "https://app.threatconnect.com/api"
CC = "Common Community"


@pytest.mark.parametrize(
    ("base", "link", "expected"),
    [
        (
            BASE,
            f"{BASE}/v3/indicators?tql=a%20b&resultStart=15",
            "/v3/indicators?tql=a%20b&resultStart=15",
        ),
        (BASE + "/", f"{BASE}/v3/indicators", "/v3/indicators"),
        (BASE, "HTTPS://APP.threatconnect.com:443/api/v3/x?a=+%2B", "/v3/x?a=+%2B"),
        ("https://tc.example", "https://tc.example/v3/indicators?x=1", "/v3/indicators?x=1"),
        ("http://127.0.0.1:8080/api", "http://127.0.0.1:8080/api/v3/i?q", "/v3/i?q"),
    ],
)
def test_relative_target(base: str, link: str, expected: str) -> None:
    """
    A next link back to the same scheme, host, port and prefix becomes a
    target relative to the base URL, its query kept byte for byte.
    """
    assert relative_target(base, link) == expected


@pytest.mark.parametrize(
    ("link", "why"),
    [
        ("http://app.threatconnect.com/api/v3/indicators", "scheme"),
        ("https://evil.example/api/v3/indicators", "host"),
        ("https://app.threatconnect.com.evil.example/api/v3/indicators", "host"),
        ("https://app.threatconnect.com:8443/api/v3/indicators", "port"),
        ("https://app.threatconnect.com/v3/indicators", "path"),
        ("https://app.threatconnect.com/apix/v3/indicators", "path"),
        ("https://app.threatconnect.com/api", "path"),
        ("https://app.threatconnect.com/api/../admin", "'..'"),
        ("https://app.threatconnect.com/api/%2E%2E/admin", "'..'"),
        ("https://user:pw@app.threatconnect.com/api/v3/indicators", "user info"),
        ("/api/v3/indicators?resultStart=5", "absolute"),
        ("ftp://app.threatconnect.com/api/v3/indicators", "absolute"),
        ("https://app.threatconnect.com:notaport/api/v3", "valid URL"),
    ],
)
def test_relative_target_refuses(link: str, why: str) -> None:
    """
    A next link to another scheme, host or port, outside the base path, or
    that is not an absolute URL is refused, naming the link and why.
    """
    with pytest.raises(NextLinkRefused) as info:
        relative_target(BASE, link)
    assert isinstance(info.value, ResponseError)
    assert why in info.value.message
    assert link in info.value.message


def test_result_start_rewrite() -> None:
    """
    resultStart is read and replaced in place (any key case), every other
    byte of the target untouched; it is appended if missing.
    """
    target = "/v3/indicators?tql=a%20b&fields=tags&resultStart=15&resultLimit=10&sorting=x%20ASC"
    assert result_start_of(target) == 15
    assert with_result_start(target, 13) == target.replace("resultStart=15", "resultStart=13")
    assert with_result_start("/v3/i?ResultStart=4", 2) == "/v3/i?ResultStart=2"
    assert with_result_start("/v3/i?a=1", 2) == "/v3/i?a=1&resultStart=2"
    assert with_result_start("/v3/i", 2) == "/v3/i?resultStart=2"
    assert result_start_of("/v3/i?a=1") is None
    assert result_start_of("/v3/i?resultStart=x") is None


def test_page_data_and_next_link() -> None:
    """
    A v3 answer's data list and next link are read; null or missing ones are
    an empty page and no next; a wrong shape is a ResponseError.
    """
    assert page_data({"data": [1]}, "/t") == [1]
    assert page_data({"data": None}, "/t") == []
    assert page_data({}, "/t") == []
    with pytest.raises(ResponseError, match="'data' is a dict"):
        page_data({"data": {"indicator": []}}, "/t")
    assert next_link({"next": " https://x/ "}, "/t") == "https://x/"
    assert next_link({"next": None}, "/t") is None
    assert next_link({"next": ""}, "/t") is None
    assert next_link({}, "/t") is None
    with pytest.raises(ResponseError, match="'next' is a int"):
        next_link({"next": 5}, "/t")


def _pull(handler: Any, source: Source, options: PullOptions) -> Any:
    client, resource, _, _ = make_client(handler)
    pages = Pages()
    d = defer.ensureDeferred(pull_source(client, source, options, pages))
    return client, resource, pages, d


def test_follows_next_across_three_pages() -> None:
    """
    Pages are read by following next links (3 pages here) until an answer
    has none; each request is exactly what the client signs.
    """
    tql = build_tql(owner=CC, types=["Host"])
    tc = V3TC(by_tql={tql: [v3_item(n) for n in range(5)]})
    options = PullOptions(api_version="v3", types=frozenset({"Host"}), page_size=2, overlap=0)
    client, resource, pages, d = _pull(tc, Source(CC, "owner", CC), options)
    result = result_of(d)
    first = indicators_target(tql, start=0, limit=2)
    targets = [first, first.replace("resultStart=0", "resultStart=2")]
    targets.append(first.replace("resultStart=0", "resultStart=4"))
    assert [s.uri for s in resource.seen] == [client.request_target(t) for t in targets]
    assert resource.seen[0].uri == (
        "/api/v3/indicators?tql=ownerName%20EQ%20%22Common%20Community%22%20AND%20typeName"
        "%20IN%20%28%22Host%22%29%20AND%20indicatorActive%20EQ%20true"
        "&fields=tags&resultStart=0&resultLimit=2"
    )
    assert all(s.signature_ok() for s in resource.seen)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert (result.indicators, result.pages) == (5, 3)


def test_next_link_keeps_server_params() -> None:
    """
    The server's next link is followed as sent (its own parameters, order
    and encoding), with only resultStart moved back by the overlap.
    """
    next_url = f"{BASE}/v3/indicators?owner=Common+Community&resultLimit=4&tql=x%3D1&resultStart=4"
    _, resource, pages, d = _pull(
        in_order(
            json_reply(
                {"status": "Success", "data": [v3_item(n) for n in range(4)], "next": next_url}
            ),
            json_reply({"status": "Success", "data": [v3_item(n) for n in range(3, 6)]}),
        ),
        Source("t", "tql", "x=1"),
        PullOptions(page_size=4, overlap=1),
    )
    result = result_of(d)
    assert resource.seen[1].uri == (
        "/api/v3/indicators?owner=Common+Community&resultLimit=4&tql=x%3D1&resultStart=3"
    )
    assert resource.seen[1].signature_ok()
    assert [i.id for p in pages for i in p] == [str(n) for n in range(6)]
    assert (result.indicators, result.duplicates) == (6, 0)


@pytest.mark.parametrize(
    "link_base",
    [
        "https://evil.example/api",
        "http://app.threatconnect.com/api",
        "https://app.threatconnect.com:444/api",
        "https://app.threatconnect.com/other",
    ],
)
def test_pull_refuses_foreign_next_link(link_base: str) -> None:
    """
    A next link to another host, scheme, port or prefix fails the pull with
    NextLinkRefused before anything is sent there.
    """
    tql = build_tql(owner=CC, types=["Host"])
    tc = V3TC(by_tql={tql: [v3_item(n) for n in range(5)]}, link_base=link_base)
    options = PullOptions(api_version="v3", types=frozenset({"Host"}), page_size=2)
    _, resource, pages, d = _pull(tc, Source(CC, "owner", CC), options)
    err = failure_of(d).value
    assert isinstance(err, NextLinkRefused)
    assert len(resource.seen) == 1
    assert [len(p) for p in pages] == [2]


def test_next_link_must_move_on() -> None:
    """
    A next link that does not move past the page just read fails the pull
    instead of looping.
    """
    stuck = f"{BASE}/v3/indicators?tql=x&resultStart=0&resultLimit=2"
    _, _, _, d = _pull(
        in_order(json_reply({"status": "Success", "data": [v3_item(1)], "next": stuck})),
        Source("t", "tql", "x"),
        PullOptions(page_size=2),
    )
    err = failure_of(d).value
    assert isinstance(err, ResponseError)
    assert "does not move past resultStart=0" in err.message


def test_v3_changing_data_restarts() -> None:
    """
    On v3, more indicators vanishing between pages than the overlap covers
    makes the listing be read again from the first target; the result holds
    each indicator once.
    """
    tql = build_tql(owner=CC, types=["Host"])
    data = [v3_item(n) for n in range(20)]
    tc = V3TC(by_tql={tql: data})
    calls = [0]

    def handler(uri: str) -> Any:
        reply = tc(uri)
        calls[0] += 1
        if calls[0] == 1:
            del data[0:5]
        return reply

    options = PullOptions(api_version="v3", types=frozenset({"Host"}), page_size=8, overlap=2)
    _, resource, pages, d = _pull(handler, Source(CC, "owner", CC), options)
    result = result_of(d)
    out = [i.host for p in pages for i in p]
    assert len(out) == len(set(out)) == 20
    assert result.restarts == 1
    assert resource.seen[2].uri == resource.seen[0].uri
