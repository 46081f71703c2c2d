# -*- test-case-name: tests.test_tc_pull -*-
"""
Tests for L{tcbridge.threatconnect.pull}: paging each kind of source through
the real signed client over C{StubTreq}, page by page.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer

from tcbridge.config import Source
from tcbridge.threatconnect.errors import AuthError, ResponseError
from tcbridge.threatconnect.pull import list_owners, paged_target, pull_source
from tcbridge.threatconnect.records import Indicator, SourcePull
from tests.helpers import failure_of, result_of
from tests.helpers_tc import (
    PagingTC,
    ScriptedTC,
    in_order,
    json_reply,
    make_client,
    success,
)

ALL_TYPES = frozenset({"File", "Address", "Host"})
CC = "Common Community"


def files(n: int, owner: str = CC) -> list[dict[str, Any]]:
    """
    C{n} File items with distinct md5s.
    """
    return [{"id": i, "ownerName": owner, "md5": f"{i:032x}"} for i in range(n)]


def hosts(n: int, owner: str = CC) -> list[dict[str, Any]]:
    """
    C{n} Host items.
    """
    return [{"id": i, "ownerName": owner, "hostName": f"h{i}.example"} for i in range(n)]


def pull(
    handler: Any, source: Source, types: frozenset[str] = ALL_TYPES, page_size: int = 2
) -> tuple[SourcePull, list[list[Indicator]], ScriptedTC]:
    """
    Pull C{source} to completion; return the result, the pages handed to
    C{on_page}, and the resource (for the raw targets seen).
    """
    client, resource, _, _ = make_client(handler)
    pages: list[list[Indicator]] = []
    d = defer.ensureDeferred(pull_source(client, source, types, pages.append, page_size))
    return result_of(d), pages, resource


def test_owner_three_pages_short_last() -> None:
    """
    An owner with 5 files and a page size of 2 is read in 3 pages (2, 2, 1),
    each handed on separately, with the owner %20-encoded and every request
    signed over what was sent.
    """
    tc = PagingTC(owners={CC: {"file": files(5)}})
    result, pages, resource = pull(tc, Source(CC, "owner", CC), frozenset({"File"}))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [s.uri for s in resource.seen] == [
        "/api/v2/indicators/files?owner=Common%20Community&resultStart=0&resultLimit=2",
        "/api/v2/indicators/files?owner=Common%20Community&resultStart=2&resultLimit=2",
        "/api/v2/indicators/files?owner=Common%20Community&resultStart=4&resultLimit=2",
    ]
    assert all(s.signature_ok() for s in resource.seen)
    assert result == SourcePull(source=CC, owners=(CC,), indicators=5, skipped=0, pages=3)
    assert [i.md5 for p in pages for i in p] == [f"{i:032x}" for i in range(5)]
    assert {i.source for p in pages for i in p} == {CC}


def test_exact_page_boundary() -> None:
    """
    When the last page is exactly full, one more (empty) page is fetched and
    paging stops there.
    """
    tc = PagingTC(owners={CC: {"host": hosts(4)}})
    result, pages, resource = pull(tc, Source(CC, "owner", CC), frozenset({"Host"}))
    assert [len(p) for p in pages] == [2, 2, 0]
    assert len(resource.seen) == 3
    assert (result.indicators, result.pages) == (4, 3)


def test_types_in_fixed_order() -> None:
    """
    An owner is pulled File, Address, Host in that order, and only the
    types asked for.
    """
    tc = PagingTC(owners={CC: {"file": files(1), "address": [{"ip": "1.2.3.4"}], "host": hosts(1)}})
    _, pages, resource = pull(tc, Source(CC, "owner", CC), frozenset({"Host", "File"}))
    assert [s.uri.split("?")[0] for s in resource.seen] == [
        "/api/v2/indicators/files",
        "/api/v2/indicators/hosts",
    ]
    _, pages, resource = pull(tc, Source(CC, "owner", CC))
    assert [p[0].type for p in pages] == ["File", "Address", "Host"]


def test_owner_name_encoded() -> None:
    """
    Owner names with punctuation are percent-encoded (space as %20, / & '
    encoded too) and still reach the right owner.
    """
    owner = "O'Brien & Co/Intel"
    tc = PagingTC(owners={owner: {"host": hosts(1, owner)}})
    result, pages, resource = pull(tc, Source(owner, "owner", owner), frozenset({"Host"}))
    assert resource.seen[0].uri.startswith(
        "/api/v2/indicators/hosts?owner=O%27Brien%20%26%20Co%2FIntel&"
    )
    assert resource.seen[0].signature_ok()
    assert pages[0][0].source == owner
    assert result.indicators == 1


def test_all_owners() -> None:
    """
    C{*} lists owners (paged) and pulls each; every indicator is labelled
    with its own owner and the result lists the owners pulled.
    """
    tc = PagingTC(
        owners={
            "Org A": {"host": hosts(3, "Org A")},
            "Org B": {"host": hosts(1, "Org B")},
            "Org C": {},
        }
    )
    result, pages, resource = pull(tc, Source("*", "all", "*"), frozenset({"Host"}))
    uris = [s.uri for s in resource.seen]
    assert uris[:2] == [
        "/api/v2/owners?resultStart=0&resultLimit=2",
        "/api/v2/owners?resultStart=2&resultLimit=2",
    ]
    assert result.owners == ("Org A", "Org B", "Org C")
    assert result.source == "*"
    assert result.indicators == 4
    assert result.pages == len(uris) == 2 + 2 + 1 + 1
    assert [[i.source for i in p] for p in pages] == [
        ["Org A", "Org A"],
        ["Org A"],
        ["Org B"],
        [],
    ]


def test_list_owners() -> None:
    """
    list_owners returns every owner across pages, without repeats.
    """
    client, resource, _, _ = make_client(
        in_order(
            success({"resultCount": 3, "owner": [{"name": "A"}, {"name": "B"}]}),
            success({"owner": [{"name": "B"}, {"name": "C"}]}),
            success({"owner": []}),
        )
    )
    owners = result_of(defer.ensureDeferred(list_owners(client, page_size=2)))
    assert owners == ["A", "B", "C"]
    assert len(resource.seen) == 3


def test_path_with_query() -> None:
    """
    A 2015-style path is pulled as written, with paging appended by "&", the
    generic envelope parsed, and the source's tag as the label.
    """
    path = "/v1/indicators/?owner=Common%20Community"
    items = [
        {"id": 1, "type": "Host", "summary": "a.example"},
        {"id": 2, "type": "Address", "summary": "1.2.3.4", "ownerName": "Other"},
        {"id": 3, "type": "URL", "summary": "http://x"},
    ]
    tc = PagingTC(generic={"/v1/indicators/": items})
    result, pages, resource = pull(tc, Source("tag1", "path", path))
    assert [s.uri for s in resource.seen] == [
        "/api/v1/indicators/?owner=Common%20Community&resultStart=0&resultLimit=2",
        "/api/v1/indicators/?owner=Common%20Community&resultStart=2&resultLimit=2",
    ]
    assert all(s.signature_ok() for s in resource.seen)
    flat = [i for p in pages for i in p]
    assert [(i.type, i.source, i.owner) for i in flat] == [
        ("Host", "tag1", CC),
        ("Address", "tag1", "Other"),
        ("URL", "tag1", CC),
    ]
    assert result == SourcePull("tag1", (CC,), 3, 0, 2)


def test_path_without_query() -> None:
    """
    A path with no query gets its paging parameters after "?".
    """
    tc = PagingTC(generic={"/v2/indicators": [{"type": "Host", "summary": "h"}]})
    result, _, resource = pull(tc, Source("t", "path", "/v2/indicators"))
    assert [s.uri for s in resource.seen] == ["/api/v2/indicators?resultStart=0&resultLimit=2"]
    assert result.owners == ()


def test_path_plus_form_not_reencoded() -> None:
    """
    A path written with "+" for spaces goes out with "+", signed as such.
    """
    tc = PagingTC(generic={"/v2/indicators": []})
    _, _, resource = pull(tc, Source("t", "path", "/v2/indicators?owner=Common+Community"))
    assert resource.seen[0].uri == (
        "/api/v2/indicators?owner=Common+Community&resultStart=0&resultLimit=2"
    )
    assert resource.seen[0].signature_ok()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/indicators", "/v2/indicators?resultStart=4&resultLimit=2"),
        ("/v1/indicators/?", "/v1/indicators/?resultStart=4&resultLimit=2"),
        ("/v1/indicators/?owner=A%20B", "/v1/indicators/?owner=A%20B&resultStart=4&resultLimit=2"),
        (
            "/v2/indicators?resultLimit=100&owner=X&resultStart=5",
            "/v2/indicators?owner=X&resultStart=4&resultLimit=2",
        ),
        ("/v2/indicators?resultStart=0", "/v2/indicators?resultStart=4&resultLimit=2"),
        ("/v2/i?a=%%20&b=(c)", "/v2/i?a=%%20&b=(c)&resultStart=4&resultLimit=2"),
    ],
)
def test_paged_target(path: str, expected: str) -> None:
    """
    Paging parameters are appended (or replace ones already written), and
    nothing else in the path is changed.
    """
    assert paged_target(path, 4, 2) == expected


def test_result_count_not_relied_on() -> None:
    """
    A wrong resultCount on the first page does not stop paging: only a short
    page does.
    """
    client, resource, _, _ = make_client(
        in_order(
            success({"resultCount": 1, "host": hosts(2)}),
            success({"host": hosts(1)}),
        )
    )
    pages: list[list[Indicator]] = []
    d = defer.ensureDeferred(
        pull_source(client, Source(CC, "owner", CC), frozenset({"Host"}), pages.append, 2)
    )
    assert result_of(d).indicators == 3
    assert len(resource.seen) == 2


@pytest.mark.parametrize("data", [{}, {"host": None}, {"host": []}, {"resultCount": 0}])
def test_empty_page_shapes(data: dict[str, Any]) -> None:
    """
    A missing or empty list inside a present data object is an empty page.
    """
    result, pages, _ = pull(in_order(success(data)), Source(CC, "owner", CC), frozenset({"Host"}))
    assert pages == [[]]
    assert (result.indicators, result.pages) == (0, 1)


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"status": "Success"}, "no 'data' object"),
        ({"status": "Success", "data": [1]}, "no 'data' object"),
        ({"status": "Success", "data": {"host": {"hostName": "x"}}}, "'data.host' is a dict"),
    ],
)
def test_bad_envelope(doc: dict[str, Any], words: str) -> None:
    """
    A success answer with no data object, or a non-list under the list key,
    is a ResponseError naming the request.
    """
    client, _, _, _ = make_client(in_order(json_reply(doc)))
    d = defer.ensureDeferred(
        pull_source(client, Source(CC, "owner", CC), frozenset({"Host"}), lambda p: None)
    )
    err = failure_of(d).value
    assert isinstance(err, ResponseError)
    assert words in err.message
    assert err.target.startswith("/api/v2/indicators/hosts?owner=Common%20Community&")


def test_error_propagates_after_pages() -> None:
    """
    An error part-way through fails the whole pull (the caller keeps the old
    feed); pages already handed on were delivered once each.
    """
    client, _, _, _ = make_client(
        in_order(
            success({"file": files(1)}),
            json_reply({"status": "Failure", "message": "Access Denied"}, 403),
        )
    )
    pages: list[list[Indicator]] = []
    d = defer.ensureDeferred(
        pull_source(client, Source(CC, "owner", CC), ALL_TYPES, pages.append, 2)
    )
    err = failure_of(d).value
    assert isinstance(err, AuthError)
    assert err.target.startswith("/api/v2/indicators/addresses?")
    assert [len(p) for p in pages] == [1]


def test_skipped_counted() -> None:
    """
    Junk items are skipped and counted in the result, not delivered.
    """
    tc = PagingTC(owners={CC: {"host": [{"hostName": "ok"}, "junk", {"id": 1}]}})
    result, pages, _ = pull(tc, Source(CC, "owner", CC), frozenset({"Host"}), page_size=10)
    assert (result.indicators, result.skipped) == (1, 2)
    assert [i.host for i in pages[0]] == ["ok"]
