# -*- test-case-name: tests.unit.test_simulator_v3 -*-
"""
Tests for the simulator's v3 API (C{/v3/indicators} with TQL, fields,
paging links and counts; C{/v3/security/owners}) and for inactive indicators,
driven in memory through StubTreq with a L{Clock}.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from tcbridge.simulator.data import Dataset
from tcbridge.simulator.tables import TYPES
from tcbridge.simulator.tql import TqlError, parse
from tests.helpers import result_of
from tests.unit.test_simulator import Harness, Reply, harness, sign

CC = "Common Community"


def fetch(h: Harness, url: str) -> Reply:
    """
    GET absolute C{url}, signed over its path and raw query.
    """
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    d = h.stub.get(url, headers=sign(target, int(h.clock.seconds())))
    d.addCallback(lambda r: r.content().addCallback(lambda body: Reply(r.code, r.headers, body)))
    h.stub.flush()
    reply: Reply = result_of(d)
    return reply


def v3(h: Harness, query: str = "", **params: str) -> Reply:
    """
    GET C{/api/v3/indicators} with TQL C{query} (percent-encoded) and
    C{params}.
    """
    pieces = [f"tql={quote(query, safe='')}"] if query else []
    pieces += [f"{k}={v}" for k, v in params.items()]
    return h.get("/api/v3/indicators" + ("?" + "&".join(pieces) if pieces else ""))


def follow(h: Harness, url: str) -> list[dict[str, Any]]:
    """
    Follow C{next} links from C{url} to the end; return every item.
    """
    items: list[dict[str, Any]] = []
    while True:
        reply = fetch(h, url)
        assert reply.code == 200, reply.body
        body = reply.json()
        assert body["status"] == "Success"
        items.extend(body["data"])
        if "next" not in body:
            return items
        url = body["next"]


def expected_ids(ds: Dataset, owner: str, types: tuple[str, ...] = TYPES) -> list[int]:
    """
    Return the v3 ids of C{owner}'s active items of C{types}, in order.
    """
    first = {t: ds.v3_item(owner, t, 0)["id"] for t in types}
    return [first[t] + i for t in types for i in ds.active_indexes(owner, t)]


def test_follow_next_returns_every_active_item_once() -> None:
    """
    Following C{next} from a first request returns exactly the active items
    of the query, in order, with no duplicates; every item has the v3 shape.
    """
    h = harness(count=3000)
    ds = h.sim.dataset
    url = "https://tc.example/api/v3/indicators?resultLimit=70"
    items = follow(h, url)
    assert [item["id"] for item in items] == expected_ids(ds, CC)
    assert len(items) == ds.active_total(CC)
    assert all(item["active"] is True and item["ownerName"] == CC for item in items)
    item = items[0]
    assert isinstance(item["id"], int) and item["ownerId"] == 1
    assert item["dateAdded"].endswith("Z") and item["lastModified"].endswith("Z")
    assert item["webLink"] == (
        f"https://app.threatconnect.com/#/details/indicators/{item['id']}/overview"
    )
    assert item["legacyLink"].startswith("https://app.threatconnect.com/auth/indicators/details/")
    hosts = [i for i in items if i["type"] == "Host"]
    assert hosts and all(isinstance(i["dnsActive"], bool) for i in hosts)
    assert all(isinstance(i["whoisActive"], bool) for i in hosts)
    files = [i for i in items if i["type"] == "File"]
    for i in files:
        hashes = [i[k] for k in ("md5", "sha1", "sha256") if k in i]
        assert i["summary"] == " : ".join(hashes)


def test_next_keeps_every_param_and_uses_request_host() -> None:
    """
    C{next} is absolute, built from the request's scheme and host and the
    prefix, and carries every original parameter byte for byte with
    C{resultStart} moved on; C{prev} appears once C{resultStart > 0}.
    """
    h = harness(count=3000)
    tql = quote('typeName in ("Address","Host") AND rating >= 1', safe="")
    query = f"tql={tql}&fields=tags&fields=threatAssess&owner=Example+Organization"
    query += "&sorting=dateAdded%20ASC&count=true&resultLimit=25"
    first = fetch(h, f"https://tc.example:8443/api/v3/indicators?{query}").json()
    assert "prev" not in first
    assert first["next"] == f"https://tc.example:8443/api/v3/indicators?{query}&resultStart=25"
    second = fetch(h, first["next"]).json()
    assert "count" not in second
    assert second["next"] == f"https://tc.example:8443/api/v3/indicators?{query}&resultStart=50"
    assert second["prev"] == f"https://tc.example:8443/api/v3/indicators?{query}&resultStart=0"
    plain = fetch(h, "http://127.0.0.1/api/v3/indicators?resultStart=100&resultLimit=10").json()
    assert plain["next"] == "http://127.0.0.1/api/v3/indicators?resultStart=110&resultLimit=10"
    assert plain["prev"] == "http://127.0.0.1/api/v3/indicators?resultStart=90&resultLimit=10"


def test_count_only_at_start_zero_and_no_next_at_end() -> None:
    """
    C{count=true} adds C{count} only when C{resultStart=0}; without it there
    is no C{count}; the last page has no C{next}; defaults are 0 and 100.
    """
    h = harness(count=600)
    total = h.sim.dataset.active_total(CC)
    first = v3(h, count="true").json()
    assert first["count"] == total and len(first["data"]) == 100 and "next" in first
    assert "count" not in v3(h).json()
    assert "count" not in v3(h, count="true", resultStart="5").json()
    last = v3(h, resultStart=str(total - 3)).json()
    assert len(last["data"]) == 3 and "next" not in last and "prev" in last


def test_result_limit_bounds_v3_envelope() -> None:
    """
    C{resultLimit=10000} is served; over it, or non-integer paging, is a 400
    in the v3 error envelope.
    """
    h = harness(count=300)
    assert v3(h, resultLimit="10000").code == 200
    for params in ({"resultLimit": "10001"}, {"resultStart": "x"}):
        reply = v3(h, **params)
        assert reply.code == 400
        assert reply.header("Content-Type") == "application/json"
        body = reply.json()
        assert body["status"] == "Error" and body["errCode"] == "0x1001" and body["message"]


def _ids(h: Harness, query: str, **params: str) -> list[dict[str, Any]]:
    """
    Return every item of a v3 query, following C{next}.
    """
    pieces = [f"tql={quote(query, safe='')}", "resultLimit=10000"]
    pieces += [f"{k}={v}" for k, v in params.items()]
    return follow(h, "http://127.0.0.1/api/v3/indicators?" + "&".join(pieces))


def test_tql_type_and_owner() -> None:
    """
    C{typeName} (EQ, IN, case-insensitive names) restricts types; with
    C{ownerName} conditions the owners are chosen among all owners; with
    C{owner=} only that owner is searched; without either, the default
    owner.
    """
    h = harness(count=1500)
    ds = h.sim.dataset
    files = _ids(h, 'typeName EQ "File"')
    assert {i["type"] for i in files} == {"File"} and len(files) == ds.active_count(CC, "File")
    two = _ids(h, 'TYPENAME in ("address", "Host")')
    assert len(two) == ds.active_count(CC, "Address") + ds.active_count(CC, "Host")
    owners = ("Example Organization", "Subscriber Community")
    both = _ids(h, 'ownerName IN ("Example Organization","Subscriber Community")')
    assert [i["ownerName"] for i in both] == [o for o in owners for _ in range(ds.active_total(o))]
    one = _ids(h, 'ownerName EQ "Example Organization" and typeName = "Host"')
    assert len(one) == ds.active_count("Example Organization", "Host")
    scoped = _ids(h, 'typeName EQ "Host"', owner="Subscriber%20Community")
    assert {i["ownerName"] for i in scoped} == {"Subscriber Community"}
    assert _ids(h, 'ownerName EQ "Nobody"') == []
    assert v3(h, owner="Nobody").code == 403


def _all_items(ds: Dataset, owner: str, active: bool = True) -> list[dict[str, Any]]:
    """
    Return C{owner}'s items (active or not) in v3 form with tags, in order.
    """
    return [
        ds.v3_item(owner, t, i, tags=True)
        for t in TYPES
        for i in range(ds.count(owner, t))
        if ds.is_active(owner, t, i) == active
    ]


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        ("rating >= 4", lambda i: i.get("rating", -1) >= 4),
        ("rating > 4", lambda i: i.get("rating", -1) > 4),
        ("rating < 1", lambda i: "rating" in i and i["rating"] < 1),
        ("rating <= 1", lambda i: "rating" in i and i["rating"] <= 1),
        ("rating = 2.5", lambda i: i.get("rating") == 2.5),
        ("rating EQ 3", lambda i: i.get("rating") == 3),
        ("confidence >= 50", lambda i: i.get("confidence", -1) >= 50),
        (
            "confidence GEQ 50 and rating LT 2",
            lambda i: i.get("confidence", -1) >= 50 and "rating" in i and i["rating"] < 2,
        ),
        ('lastModified > "2020-07-01"', lambda i: i["lastModified"] > "2020-07-01T00:00:00Z"),
        ('dateAdded < "2016-01-01 12:00:00"', lambda i: i["dateAdded"] < "2016-01-01T12:00:00Z"),
        ('dateAdded >= "2019-03-01T00:00:00Z"', lambda i: i["dateAdded"] >= "2019-03-01T00:00:00Z"),
        ('tag EQ "Phishing"', lambda i: "Phishing" in _tags(i)),
        ('tag in ("C2", "APT28")', lambda i: {"C2", "APT28"} & _tags(i)),
        ("indicatorActive EQ true", lambda i: True),
    ],
)
def test_tql_slot_conditions(query: str, keep: Any) -> None:
    """
    Each comparison form selects exactly the active items that satisfy it,
    in listing order.
    """
    h = harness(count=2000)
    expected = [i["id"] for i in _all_items(h.sim.dataset, CC) if keep(i)]
    got = [i["id"] for i in _ids(h, query)]
    assert got == expected
    assert 0 < len(got) or query.startswith("rating >")


def _tags(item: dict[str, Any]) -> set[str]:
    """
    Return the names of an item's v3 tags.
    """
    return {t["name"] for t in item.get("tags", {}).get("data", [])}


def test_tql_summary_and_escapes() -> None:
    """
    C{summary EQ} and C{IN} select items by value; backslash escapes work in
    strings.
    """
    h = harness(count=600)
    ds = h.sim.dataset
    a = ds.v3_item(CC, "Host", ds.active_indexes(CC, "Host")[3])
    b = ds.v3_item(CC, "File", ds.active_indexes(CC, "File")[7])
    assert [i["id"] for i in _ids(h, f'summary EQ "{a["summary"]}"')] == [a["id"]]
    both = _ids(h, f'summary in ("{b["summary"]}", "{a["summary"]}")')
    assert [i["id"] for i in both] == [b["id"], a["id"]]
    assert _ids(h, r'summary EQ "no \"such\" \\ thing"') == []
    assert parse(r'summary EQ "a\"b\\c"')[0].values == ('a"b\\c',)


def test_inactive_items_hidden_unless_asked_v3() -> None:
    """
    Inactive items are hidden by default; C{indicatorActive EQ false} gives
    exactly them, with C{"active": false}.
    """
    h = harness(count=6000)
    ds = h.sim.dataset
    inactive = _ids(h, "indicatorActive EQ false")
    assert [i["id"] for i in inactive] == [i["id"] for i in _all_items(ds, CC, active=False)]
    assert inactive and all(i["active"] is False for i in inactive)
    total = sum(ds.count(CC, t) for t in TYPES)
    assert len(inactive) == total - ds.active_total(CC)
    assert 0.01 < len(inactive) / total < 0.04
    assert _ids(h, "indicatorActive EQ false and indicatorActive EQ true") == []


def test_or_of_one_field_asks_for_both() -> None:
    """
    C{(indicatorActive EQ true OR indicatorActive EQ false)} gives active
    and inactive items in one listing (each marked as it is), and ORs of
    one field's values read as C{IN}.
    """
    h = harness(count=3000)
    ds = h.sim.dataset
    both = _ids(
        h,
        'ownerName EQ "Common Community" AND (indicatorActive EQ true OR indicatorActive EQ false)',
    )
    expected = _all_items(ds, CC, active=True) + _all_items(ds, CC, active=False)
    assert sorted(i["id"] for i in both) == sorted(i["id"] for i in expected)
    assert {i["active"] for i in both} == {True, False}
    assert parse('typeName EQ "File" OR typeName IN ("Host")') == parse(
        'typeName IN ("File", "Host")'
    )


@pytest.mark.parametrize(
    "query",
    [
        "bogus EQ 1",
        'typeName EQ "File" OR rating > 1',
        '(typeName EQ "File" OR rating > 1)',
        'typeName EQ "File" OR typeName EQ "Host" AND rating > 1',
        "(rating EQ 1 OR rating EQ 2)",
        '(typeName NE "File" OR typeName EQ "Host")',
        '(typeName EQ "File"',
        'typeName EQ "File")',
        'typeName EQ "File" rating > 1',
        "rating >= high",
        'rating >= "4"',
        'typeName > "File"',
        'summary EQ "unterminated',
        "typeName in (",
        'typeName in ("File" "Host")',
        'lastModified > "yesterday"',
        "indicatorActive EQ maybe",
        "rating",
        "rating ~ 3",
    ],
)
def test_bad_tql_is_400(query: str) -> None:
    """
    Unknown fields, OR but between EQ or IN of one field (grouped or not),
    AND and OR mixed, unbalanced parentheses, wrong value
    kinds, operators a field does not take and syntax errors answer 400 in
    the v3 envelope with a message naming the problem.
    """
    h = harness(count=30)
    reply = v3(h, query)
    assert reply.code == 400, query
    assert reply.header("Content-Type") == "application/json"
    body = reply.json()
    assert body["status"] == "Error" and body["errCode"] == "0x1001"
    assert body["message"].startswith("Invalid TQL")
    with pytest.raises(TqlError):
        parse(query)


def test_fields_tags_and_threat_assess() -> None:
    """
    C{fields=tags} adds C{tags.data[]} with ids and names; C{fields=threatAssess}
    adds a C{threatAssessScore} from 0 to 1000; neither appears unasked.
    """
    h = harness(count=600)
    plain = v3(h, resultLimit="300").json()["data"]
    assert not any("tags" in i or "threatAssessScore" in i for i in plain)
    rich = v3(h, resultLimit="300", fields="tags&fields=threatAssess").json()["data"]
    tagged = [i for i in rich if "tags" in i]
    assert tagged
    assert all(t["name"] and isinstance(t["id"], int) for i in tagged for t in i["tags"]["data"])
    assert all(0 <= i["threatAssessScore"] <= 1000 for i in rich)
    assert all("threatAssessRating" in i and "threatAssessConfidence" in i for i in rich)


def test_v3_owners() -> None:
    """
    C{/v3/security/owners} lists the owners with role and permission, pages
    with C{next}, and counts with C{count=true}.
    """
    h = harness()
    body = h.get("/api/v3/security/owners").json()
    assert body == {
        "status": "Success",
        "data": [
            {
                "id": 1,
                "name": "Common Community",
                "type": "Community",
                "ownerRole": "Director",
                "permIndicator": "FULL",
            },
            {
                "id": 2,
                "name": "Example Organization",
                "type": "Organization",
                "ownerRole": "Director",
                "permIndicator": "FULL",
            },
            {
                "id": 3,
                "name": "Subscriber Community",
                "type": "Community",
                "ownerRole": "Director",
                "permIndicator": "FULL",
            },
        ],
    }
    paged = h.get("/api/v3/security/owners?resultLimit=2&count=true").json()
    assert paged["count"] == 3 and len(paged["data"]) == 2
    assert [o["name"] for o in follow(h, paged["next"])] == ["Subscriber Community"]


def test_v3_auth_error_uses_v3_envelope() -> None:
    """
    An authentication failure on a v3 path answers in the v3 envelope.
    """
    h = harness()
    reply = h.get("/api/v3/indicators", {})
    assert reply.code == 401
    assert reply.json() == {"status": "Error", "errCode": "0x1001", "message": "Invalid timestamp"}


def test_inactive_items_hidden_unless_filtered_v2() -> None:
    """
    v2 listings hide inactive items; C{filters=active%3Dfalse} gives only
    them, and C{active=true,active=false} with C{orParams=true} gives all.
    """
    h = harness(count=6000)
    ds = h.sim.dataset
    base = "/api/v2/indicators/hosts?resultLimit=10000"
    default = h.get(base).json()["data"]
    assert default["resultCount"] == ds.active_count(CC, "Host") == len(default["host"])
    off = h.get(base + "&filters=active%3Dfalse").json()["data"]
    inactive = ds.count(CC, "Host") - ds.active_count(CC, "Host")
    assert off["resultCount"] == inactive == len(off["host"]) > 0
    both = h.get(base + "&filters=active%3Dtrue,active%3Dfalse&orParams=true").json()["data"]
    assert both["resultCount"] == ds.count(CC, "Host")
    generic = h.get("/api/v2/indicators?resultLimit=10000").json()["data"]
    assert generic["resultCount"] == ds.active_total(CC)
    assert h.sim.visible_count(CC, "Host") == ds.active_count(CC, "Host")
    assert h.sim.visible_count(CC, "Host", active=False) == inactive


def test_parentheses_group_and_ed_clauses() -> None:
    """
    Parentheses around AND-ed clauses (as a client adds a term to a query
    it did not write) select what the clauses without them select.
    """
    h = harness(count=300)
    plain = _ids(h, 'typeName EQ "Host" AND rating >= 3')
    grouped = _ids(h, '(typeName EQ "Host" AND (rating >= 3)) AND indicatorActive EQ true')
    assert plain and grouped == plain
