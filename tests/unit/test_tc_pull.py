# -*- test-case-name: tests.unit.test_tc_pull -*-
"""
Tests for L{tcbridge.threatconnect.pull}: paging each kind of source through
the real signed client over C{StubTreq}, page by page.
"""

from __future__ import annotations

from typing import Any

import pytest
from attrs import evolve
from twisted.internet import defer
from twisted.logger import LogLevel, capturedLogs

from tcbridge.model import Source
from tcbridge.threatconnect.errors import ApiError, AuthError, ResponseError
from tcbridge.threatconnect.listing import MAX_RESTARTS, SeenKeys
from tcbridge.threatconnect.owners import list_owners
from tcbridge.threatconnect.pull import PullOptions, pull_source
from tcbridge.threatconnect.records import Indicator, SourcePull
from tcbridge.threatconnect.v2 import paged_target
from tests.helpers import Pages, failure_of, result_of
from tests.helpers_tc import (
    V3TC,
    PagingTC,
    ScriptedTC,
    changing,
    in_order,
    json_reply,
    make_client,
    success,
    v3_item,
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
    pages = Pages()
    options = PullOptions(types=types, page_size=page_size)
    d = defer.ensureDeferred(pull_source(client, source, options, pages))
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
        "/api/v2/indicators/files?owner=Common%20Community&includes=tags"
        "&resultStart=0&resultLimit=2",
        "/api/v2/indicators/files?owner=Common%20Community&includes=tags"
        "&resultStart=2&resultLimit=2",
        "/api/v2/indicators/files?owner=Common%20Community&includes=tags"
        "&resultStart=4&resultLimit=2",
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
            success({"host": [{"hostName": "h2.example"}]}),
        )
    )
    pages = Pages()
    options = PullOptions(types=frozenset({"Host"}), page_size=2)
    d = defer.ensureDeferred(pull_source(client, Source(CC, "owner", CC), options, pages))
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
        pull_source(client, Source(CC, "owner", CC), PullOptions(types=["Host"]), lambda p: None)
    )
    err = failure_of(d).value
    assert isinstance(err, ResponseError)
    assert words in err.message
    assert err.target.startswith("/api/v2/indicators/hosts?owner=Common%20Community&")


def test_error_propagates_after_pages() -> None:
    """
    An error part-way through fails the whole pull (the caller keeps the old
    feed); pages already handed on were delivered once each.  A 403 for an
    owner the API user can see keeps ThreatConnect's own message.
    """
    client, _, _, _ = make_client(
        in_order(
            success({"file": files(1)}),
            json_reply({"status": "Failure", "message": "Access Denied"}, 403),
            success({"owner": [{"name": CC}]}),
        )
    )
    pages = Pages()
    options = PullOptions(types=ALL_TYPES, page_size=2)
    d = defer.ensureDeferred(pull_source(client, Source(CC, "owner", CC), options, pages))
    err = failure_of(d).value
    assert isinstance(err, AuthError)
    assert err.message == "Access Denied"
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


def pull_with(
    handler: Any, source: Source, options: PullOptions
) -> tuple[SourcePull, list[list[Indicator]], ScriptedTC]:
    """
    Pull C{source} with L{PullOptions} (the new call form).
    """
    client, resource, _, _ = make_client(handler)
    pages = Pages()
    d = defer.ensureDeferred(pull_source(client, source, options, pages))
    return result_of(d), pages, resource


def test_pull_options_defaults_and_checks() -> None:
    """
    PullOptions defaults to v2, 10000 a page, File/Address/Host, active
    only, an overlap of 100; nonsense values are refused.
    """
    options = PullOptions()
    assert (options.api_version, options.page_size, options.types) == (
        "v2",
        10000,
        frozenset({"File", "Address", "Host"}),
    )
    assert (options.min_rating, options.active_only, options.overlap) == (None, True, 100)
    assert options.effective_overlap == 100
    assert PullOptions(page_size=40).effective_overlap == 10
    assert PullOptions(types=["Host"]).types == frozenset({"Host"})
    for bad in (
        {"api_version": "v4"},
        {"page_size": 0},
        {"overlap": -1},
        {"min_rating": float("nan")},
    ):
        with pytest.raises(ValueError):
            PullOptions(**bad)
    with pytest.raises(TypeError):
        PullOptions(types="Host")


def test_v2_inactive_skipped_and_counted() -> None:
    """
    v2 items marked "active": false (boolean or string) are left out and
    counted as inactive, not as unreadable; items without the flag are kept.
    """
    items = [
        {"hostName": "a.example", "active": True},
        {"hostName": "b.example", "active": False},
        {"hostName": "c.example", "active": "false"},
        {"hostName": "d.example"},
        {"id": 9},
    ]
    tc = PagingTC(owners={CC: {"host": items}})
    result, pages, _ = pull(tc, Source(CC, "owner", CC), frozenset({"Host"}), page_size=10)
    assert [i.host for i in pages[0]] == ["a.example", "d.example"]
    assert (result.indicators, result.skipped, result.inactive) == (2, 1, 2)
    result, pages, _ = pull_with(
        tc,
        Source(CC, "owner", CC),
        PullOptions(types=frozenset({"Host"}), page_size=10, active_only=False),
    )
    assert (result.indicators, result.inactive) == (4, 0)


# -- offset paging over data that changes between pages -----------------------

OVERLAP = PullOptions(types=frozenset({"Host"}), page_size=8, overlap=2)


def host_items(numbers: Any) -> list[dict[str, Any]]:
    """
    v2 Host items C{h<n>.example} for each C{n}.
    """
    return [{"id": n, "hostName": f"h{n}.example"} for n in numbers]


def delivered(pages: list[list[Indicator]]) -> list[str]:
    """
    Every host handed on, in order.
    """
    return [i.host or "" for p in pages for i in p]


def test_v2_overlap_targets() -> None:
    """
    With an overlap of 2 and pages of 8, each page after a full one starts 2
    items before its end (0, 6, 12, 18); unchanged data is delivered once,
    in order, and the overlap is not counted as duplicates.
    """
    tc = PagingTC(owners={CC: {"host": host_items(range(20))}})
    result, pages, resource = pull_with(tc, Source(CC, "owner", CC), OVERLAP)
    starts = [s.uri.split("resultStart=")[1].split("&")[0] for s in resource.seen]
    assert starts == ["0", "6", "12", "18"]
    assert delivered(pages) == [f"h{n}.example" for n in range(20)]
    assert (result.indicators, result.duplicates, result.restarts, result.pages) == (20, 0, 0, 4)


def test_v2_insertions_at_front_not_duplicated() -> None:
    """
    Indicators added in front between pages (fewer than the overlap, or
    more) push already-read ones onto the next page: none reaches the feed
    twice.
    """
    for inserted in (1, 5):
        data = host_items(range(20))
        tc = PagingTC(owners={CC: {"host": data}})

        def change(n: int, data: list[Any] = data, inserted: int = inserted) -> None:
            if n == 1:
                data[0:0] = host_items(range(100, 100 + inserted))

        result, pages, _ = pull_with(changing(tc, change), Source(CC, "owner", CC), OVERLAP)
        hosts_out = delivered(pages)
        assert len(hosts_out) == len(set(hosts_out))
        assert set(hosts_out) >= {f"h{n}.example" for n in range(20)}
        assert result.restarts == 0
        assert result.indicators == len(hosts_out)


def test_v2_deletions_within_overlap_lose_nothing() -> None:
    """
    Up to the overlap's worth of indicators deleted in front between pages
    loses none of the others, and nothing is read twice.  Fewer than the
    overlap is seen to be safe from the overlap itself; exactly the overlap
    cannot be told apart from more, so that listing is read again.
    """
    for deleted in (1, 2):
        data = host_items(range(20))
        tc = PagingTC(owners={CC: {"host": data}})

        def change(n: int, data: list[Any] = data, deleted: int = deleted) -> None:
            if n == 1:
                del data[0:deleted]

        result, pages, _ = pull_with(changing(tc, change), Source(CC, "owner", CC), OVERLAP)
        hosts_out = delivered(pages)
        assert sorted(hosts_out) == sorted(f"h{n}.example" for n in range(20))
        assert len(hosts_out) == len(set(hosts_out))
        assert result.restarts == (0 if deleted < 2 else 1)


def test_v2_deletions_beyond_overlap_restart() -> None:
    """
    When more indicators vanish in front than the overlap covers, the
    listing is read again from the start (once here, with a warning), and
    every indicator still there is delivered exactly once.
    """
    data = host_items(range(20))
    tc = PagingTC(owners={CC: {"host": data}})

    def change(n: int) -> None:
        if n == 1:
            del data[0:3]

    with capturedLogs() as events:
        result, pages, resource = pull_with(changing(tc, change), Source(CC, "owner", CC), OVERLAP)
    hosts_out = delivered(pages)
    assert len(hosts_out) == len(set(hosts_out))
    assert set(hosts_out) == {f"h{n}.example" for n in range(20)}
    assert result.restarts == 1
    [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
    assert (warning["listing"], warning["restart"]) == ("Common Community Host", 1)
    assert result.duplicates == 0
    starts = [s.uri.split("resultStart=")[1].split("&")[0] for s in resource.seen]
    assert starts[:3] == ["0", "6", "0"]


def test_inactive_indicators_come_once_across_a_restart() -> None:
    """
    A listing read again after a restart meets its inactive indicators
    again: they are handed on (for explanations) and counted once.
    """
    data = host_items(range(20))
    for n in (4, 12):
        data[n]["active"] = False
    tc = PagingTC(owners={CC: {"host": data}})

    def change(n: int) -> None:
        if n == 1:
            del data[0:3]

    inactive: list[str] = []
    options = evolve(
        OVERLAP,
        on_inactive=lambda batches: inactive.extend(h for b in batches for h in b.values["host"]),
    )
    result, _, _ = pull_with(changing(tc, change), Source(CC, "owner", CC), options)
    assert result.restarts == 1
    assert sorted(inactive) == ["h12.example", "h4.example"]
    assert result.inactive == 2


def test_v2_changing_too_much_fails() -> None:
    """
    If the listing keeps losing more than the overlap between pages, it is
    read again at most twice, then the pull fails saying which listing
    changed.
    """
    data = host_items(range(1000))
    tc = PagingTC(owners={CC: {"host": data}})

    def change(n: int) -> None:
        del data[0:5]

    client, resource, _, _ = make_client(changing(tc, change))
    pages = Pages()
    d = defer.ensureDeferred(pull_source(client, Source(CC, "owner", CC), OVERLAP, pages))
    err = failure_of(d).value
    assert isinstance(err, ResponseError)
    assert err.message == (
        "the indicators of Common Community Host changed too much while being read; try again"
    )
    assert err.target.startswith("/api/v2/indicators/hosts?")
    assert len(resource.seen) == 2 * (MAX_RESTARTS + 1)
    out = delivered(pages)
    assert len(out) == len(set(out))


def test_v2_empty_page_after_full_page_restarts() -> None:
    """
    A page asked for with an overlap that comes back empty means at least
    the overlap vanished: the listing is read again rather than trusted.
    """
    data = host_items(range(8))
    tc = PagingTC(owners={CC: {"host": data}})

    def change(n: int) -> None:
        if n == 1:
            del data[0:4]

    result, pages, _ = pull_with(changing(tc, change), Source(CC, "owner", CC), OVERLAP)
    assert result.restarts == 1
    assert sorted(delivered(pages)) == sorted(f"h{n}.example" for n in range(8))


def test_v3_overlap_rewrites_next_link() -> None:
    """
    v3 follows ThreatConnect's next link with every parameter kept and only
    resultStart moved back by the overlap; deletions within the overlap lose
    nothing, insertions duplicate nothing.
    """
    tql = 'ownerName EQ "Common Community" AND typeName IN ("Host") AND indicatorActive EQ true'
    data = [v3_item(n) for n in range(20)]
    tc = V3TC(by_tql={tql: data})

    def change(n: int) -> None:
        if n == 1:
            del data[0:1]
        if n == 2:
            data[0:0] = [v3_item(n) for n in range(100, 103)]

    options = PullOptions(api_version="v3", types=frozenset({"Host"}), page_size=8, overlap=2)
    result, pages, resource = pull_with(changing(tc, change), Source(CC, "owner", CC), options)
    out = delivered(pages)
    assert len(out) == len(set(out))
    assert set(out) >= {f"h{n}.example" for n in range(20)}
    second = resource.seen[1].uri
    first = resource.seen[0].uri
    assert second == first.replace("resultStart=0", "resultStart=6")
    assert result.restarts == 0


# -- v3 sources ------------------------------------------------------------------


def test_v3_owner_source() -> None:
    """
    A v3 owner source is one TQL query over the wanted types, with the
    minimum rating pushed into it, fields=tags, and the owner as the label;
    inactive items that come anyway are left out and counted.
    """
    tql = (
        'ownerName EQ "Common Community" AND typeName IN ("File","Host") '
        "AND rating >= 2.5 AND indicatorActive EQ true"
    )
    items = [
        v3_item(1, tags={"data": [{"id": 11, "name": "Targeted Attack"}]}),
        v3_item(2, active=False),
        {"id": "3", "ownerName": CC, "type": "File", "summary": "9D67E81C18101FC266057CD7851604B8"},
    ]
    tc = V3TC(by_tql={tql: items})
    options = PullOptions(
        api_version="v3", types=frozenset({"Host", "File"}), page_size=10, min_rating=2.5
    )
    result, pages, resource = pull_with(tc, Source(CC, "owner", CC), options)
    [uri] = [s.uri for s in resource.seen]
    assert uri.startswith("/api/v3/indicators?tql=ownerName%20EQ%20%22Common%20Community%22")
    assert uri.endswith("&fields=tags&resultStart=0&resultLimit=10")
    [[host, file]] = pages
    assert (host.host, host.tags, host.source) == ("h1.example", ("Targeted Attack",), CC)
    assert (file.md5, file.id) == ("9D67E81C18101FC266057CD7851604B8", "3")
    assert result == SourcePull(CC, (CC,), 2, 0, 1, inactive=1)


def test_v3_all_owners() -> None:
    """
    A v3 C{*} source lists owners through /v3/security/owners (following
    its next links) and pulls each with its own TQL.
    """
    by_tql = {
        f'ownerName EQ "{o}" AND typeName IN ("Host") AND indicatorActive EQ true': [
            v3_item(i, o) for i in range(n)
        ]
        for o, n in (("Org A", 3), ("Org B", 1))
    }
    tc = V3TC(by_tql=by_tql, owners=["Org A", "Org B", "Org C"])
    options = PullOptions(api_version="v3", types=frozenset({"Host"}), page_size=2, overlap=0)
    result, pages, resource = pull_with(tc, Source("*", "all", "*"), options)
    uris = [s.uri for s in resource.seen]
    assert uris[:2] == [
        "/api/v3/security/owners?resultStart=0&resultLimit=2",
        "/api/v3/security/owners?resultStart=2&resultLimit=2",
    ]
    assert result.owners == ("Org A", "Org B", "Org C")
    assert result.indicators == 4
    assert [[i.source for i in p] for p in pages] == [
        ["Org A", "Org A"],
        ["Org A"],
        ["Org B"],
        [],
    ]
    assert all(s.signature_ok() for s in resource.seen)


def test_tql_source_as_written() -> None:
    """
    A tql: source is sent exactly as written (percent-encoded), with
    fields=tags and paging; every type comes through, labelled with the tag.
    """
    query = 'typeName IN ("URL","Host") AND summary CONTAINS "a\\"b"'
    items = [
        {"id": 1, "type": "URL", "summary": "http://x.example/", "ownerName": "Org A"},
        v3_item(2, "Org B"),
    ]
    tc = V3TC(by_tql={query: items})
    result, pages, resource = pull_with(
        tc, Source("mytag", "tql", query), PullOptions(api_version="v2", page_size=5)
    )
    [seen] = resource.seen
    assert seen.uri == (
        "/api/v3/indicators?tql=typeName%20IN%20%28%22URL%22%2C%22Host%22%29%20AND%20summary"
        "%20CONTAINS%20%22a%5C%22b%22&fields=tags&resultStart=0&resultLimit=5"
    )
    assert seen.signature_ok()
    assert [(i.type, i.source, i.owner) for i in pages[0]] == [
        ("URL", "mytag", "Org A"),
        ("Host", "mytag", "Org B"),
    ]
    assert (result.source, result.owners, result.indicators) == ("mytag", (), 2)


# -- unknown owners -------------------------------------------------------------


def test_v2_unknown_owner_names_visible_owners() -> None:
    """
    When ThreatConnect refuses an owner (403) the API user cannot see, the
    error says so and lists the owners it can see.
    """
    tc = PagingTC(owners={"Org A": {}, "Org B": {}})
    client, resource, _, _ = make_client(tc)
    d = defer.ensureDeferred(
        pull_source(client, Source("Nope", "owner", "Nope"), OVERLAP, lambda p: None)
    )
    err = failure_of(d).value
    assert isinstance(err, AuthError)
    assert err.status == 403
    assert err.message == ("owner 'Nope' is not visible to this API user; it can see: Org A, Org B")
    assert err.target.startswith("/api/v2/indicators/hosts?owner=Nope&")
    assert "The requested owner was not found" in str(err)
    assert resource.seen[-1].uri.startswith("/api/v2/owners?")


def test_v3_unknown_owner_names_visible_owners() -> None:
    """
    On v3 a 404 for an owner's indicators is explained from
    /v3/security/owners.
    """
    tc = V3TC(owners=["Org A", "Common Community"], forbidden=404)
    client, resource, _, _ = make_client(tc)
    options = PullOptions(api_version="v3")
    d = defer.ensureDeferred(
        pull_source(client, Source("Org Z", "owner", "Org Z"), options, lambda p: None)
    )
    err = failure_of(d).value
    assert isinstance(err, ApiError)
    assert err.status == 404
    assert err.message == (
        "owner 'Org Z' is not visible to this API user; it can see: Org A, Common Community"
    )
    assert resource.seen[-1].uri.startswith("/api/v3/security/owners?")


def test_unknown_owner_keeps_error_when_owner_list_fails() -> None:
    """
    If listing owners fails too, the original refusal is reported as is.
    """
    denied = json_reply({"status": "Failure", "message": "Access Denied"}, 403)
    client, _, _, _ = make_client(in_order(denied, denied))
    d = defer.ensureDeferred(
        pull_source(client, Source("X", "owner", "X"), OVERLAP, lambda p: None)
    )
    err = failure_of(d).value
    assert isinstance(err, AuthError)
    assert err.message == "Access Denied"
    assert err.target.startswith("/api/v2/indicators/hosts?owner=X&")


def test_unknown_owner_other_status_untouched() -> None:
    """
    Errors other than 403/404 are not explained with the owner list.
    """
    client, resource, _, _ = make_client(
        in_order(json_reply({"status": "Failure", "message": "bad"}, 400))
    )
    d = defer.ensureDeferred(
        pull_source(client, Source("X", "owner", "X"), OVERLAP, lambda p: None)
    )
    err = failure_of(d).value
    assert isinstance(err, ApiError)
    assert err.message == "bad"
    assert len(resource.seen) == 1


def test_v3_owner_hidden_by_empty_answer() -> None:
    """
    On v3 a TQL naming an owner the API user cannot see just matches
    nothing; an owner source that gets nothing at all checks the owners
    and fails with the same message instead of publishing nothing.
    """
    tc = V3TC(owners=["Org A"])
    options = PullOptions(api_version="v3")
    client, resource, _, _ = make_client(tc)
    d = defer.ensureDeferred(
        pull_source(client, Source("Org Z", "owner", "Org Z"), options, lambda p: None)
    )
    err = failure_of(d).value
    assert isinstance(err, AuthError)
    assert err.message == "owner 'Org Z' is not visible to this API user; it can see: Org A"
    assert err.target == resource.seen[0].uri


def test_v3_empty_visible_owner_is_fine() -> None:
    """
    A visible owner with no indicators is an empty pull, not an error.
    """
    tc = V3TC(owners=["Org A"])
    result, pages, resource = pull_with(
        tc, Source("Org A", "owner", "Org A"), PullOptions(api_version="v3")
    )
    assert (result.indicators, pages) == (0, [[]])
    assert [s.uri.split("?")[0] for s in resource.seen] == [
        "/api/v3/indicators",
        "/api/v3/security/owners",
    ]


def test_pause_hands_pages_on_in_chunks() -> None:
    """
    With a pause set, each page is parsed and handed on in chunks, pausing
    between them (so the reactor serves requests during a big sync); every
    indicator still arrives exactly once.
    """
    pauses: list[int] = []

    async def pause() -> None:
        pauses.append(1)

    tc = PagingTC(owners={CC: {"file": files(250)}})
    client, _, _, _ = make_client(tc)
    handed = Pages()
    options = PullOptions(page_size=100, types=frozenset({"File"}), pause=pause, chunk=40)
    d = defer.ensureDeferred(pull_source(client, Source(CC, "owner", CC), options, handed))
    result = result_of(d)
    assert result.indicators == 250
    assert sorted(i.md5 or "" for chunk in handed for i in chunk) == sorted(
        f"{i:032x}" for i in range(250)
    )
    assert max(len(chunk) for chunk in handed) <= 40
    assert len(pauses) >= 250 // 40


def test_seen_keys_recent_pages_and_earlier_passes() -> None:
    """
    Within a pass, the keys of the current and the previous page are
    recognised; after a restart, every key of the earlier passes is, with
    the pass that read it.
    """
    seen = SeenKeys()
    pages = [[page * 100_000 + n for n in range(1000)] for page in range(5)]
    for page in pages:
        seen.next_page(0)
        assert not seen.any_read(page)
        seen.mark(page, 0)
    seen.next_page(0)
    assert seen.any_read(pages[4][:1])
    assert seen.last_read([pages[4][0], -1]) == [0, None]
    seen.next_page(1)
    assert seen.last_read([pages[0][5], pages[4][9], -1]) == [0, 0, None]
    seen.mark(pages[0][:10], 1)
    assert seen.last_read([pages[0][5], pages[1][5]]) == [1, 0]
