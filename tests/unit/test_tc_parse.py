# -*- test-case-name: tests.unit.test_tc_parse -*-
"""
Tests for L{tcbridge.threatconnect.parse}: every ThreatConnect item shape
becomes an L{Indicator}, and junk is skipped and counted, never raised.
"""

from __future__ import annotations

from typing import Any

import pytest

from tcbridge.threatconnect.parse import (
    is_inactive,
    parse_date,
    parse_generic,
    parse_generic_page,
    parse_owners,
    parse_typed,
    parse_typed_page,
    split_file_summary,
)
from tcbridge.threatconnect.records import Indicator, IndicatorBatch

MD5 = "22202B566A725038BA2423C86B584428"
SHA1 = "222C3A4D0B06B1E8F6C3A4D0B06B1E8F6C3A4D0B"
SHA256 = "222D" + "a" * 60


def test_typed_file_full_item() -> None:
    """
    A v2 File item keeps its hashes, owner, rating, confidence, date, link,
    description and tags.
    """
    item = {
        "id": 258116,
        "ownerName": "Common Community",
        "dateAdded": "2014-08-11T19:12:10-04:00",
        "lastModified": "2014-08-11T19:12:36-04:00",
        "rating": 4.0,
        "confidence": 81,
        "webLink": "https://app.threatconnect.com/auth/indicators/details/file.xhtml?file=2220",
        "description": " bad file ",
        "md5": MD5,
        "sha1": SHA1,
        "sha256": SHA256,
        "tag": [{"name": "China", "webLink": "x"}, {"name": " APT "}],
    }
    [ind], skipped = parse_typed("file", [item], "Common Community", "fallback")
    assert skipped == 0
    assert ind == Indicator(
        source="Common Community",
        owner="Common Community",
        type="File",
        id="258116",
        md5=MD5,
        sha1=SHA1,
        sha256=SHA256,
        rating=4.0,
        confidence=81,
        last_modified=1407798756,
        web_link="https://app.threatconnect.com/auth/indicators/details/file.xhtml?file=2220",
        description="bad file",
        tags=("China", "APT"),
    )


def test_typed_file_hash_subset() -> None:
    """
    A File with only some hashes keeps those and leaves the rest empty.
    """
    [ind], skipped = parse_typed("file", [{"id": 1, "sha256": f" {SHA256}\n"}], "s", "o")
    assert skipped == 0
    assert (ind.md5, ind.sha1, ind.sha256) == (None, None, SHA256)


def test_typed_address_and_host() -> None:
    """
    Address items give C{ip}, Host items give C{host}, values stripped.
    """
    [addr], s1 = parse_typed("address", [{"id": "54321", "ip": " 10.0.0.1 "}], "src", "Own")
    [host], s2 = parse_typed("host", [{"id": 7, "hostName": "evil.example"}], "src", "Own")
    assert (s1, s2) == (0, 0)
    assert (addr.type, addr.ip, addr.id, addr.owner) == ("Address", "10.0.0.1", "54321", "Own")
    assert (host.type, host.host, host.id) == ("Host", "evil.example", "7")


def test_typed_ipv6() -> None:
    """
    IPv6 addresses are passed on as text.
    """
    [ind], _ = parse_typed("address", [{"ip": "2001:db8::1"}], "s", "o")
    assert ind.ip == "2001:db8::1"


def test_missing_optional_fields() -> None:
    """
    Missing rating, confidence, date, link, description and tags give
    None/empty, and a missing id gives "".
    """
    [ind], _ = parse_typed("host", [{"hostName": "a.example"}], "s", "Default Owner")
    assert ind == Indicator(source="s", owner="Default Owner", type="Host", host="a.example")


def test_owner_object_form() -> None:
    """
    Single-item responses carry C{owner: {name}} instead of C{ownerName}.
    """
    [ind], _ = parse_typed(
        "host", [{"hostName": "a.example", "owner": {"id": 2, "name": "Org"}}], "s", "x"
    )
    assert ind.owner == "Org"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2017-07-13T17:50:17", 1499968217),
        ("2017-07-13T17:50:17Z", 1499968217),
        ("2017-07-13T13:50:17-04:00", 1499968217),
        ("2017-07-13T17:50:17.123Z", 1499968217),
        ("2017-07-13T17:50:17+0000", 1499968217),
        ("yesterday", None),
        ("", None),
        (None, None),
        (12345, None),
    ],
)
def test_dates(value: Any, expected: int | None) -> None:
    """
    Dates with no zone (UTC), Z, or an offset all give the same UTC epoch
    seconds; unparseable dates give None.
    """
    assert parse_date(value) == expected
    [ind], _ = parse_typed("host", [{"hostName": "h", "lastModified": value}], "s", "o")
    assert ind.last_modified == expected


@pytest.mark.parametrize(
    ("rating", "confidence", "expected"),
    [
        (4, 81, (4.0, 81)),
        ("4.00", "81", (4.0, 81)),
        (None, None, (None, None)),
        (True, False, (None, None)),
        ("high", [], (None, None)),
        (float("nan"), 80.6, (None, 81)),
    ],
)
def test_rating_confidence(rating: Any, confidence: Any, expected: tuple[Any, Any]) -> None:
    """
    Rating is a float and confidence an int; junk values are treated as unset.
    """
    [ind], _ = parse_typed(
        "host", [{"hostName": "h", "rating": rating, "confidence": confidence}], "s", "o"
    )
    assert (ind.rating, ind.confidence) == expected


def test_ids_int_and_str() -> None:
    """
    Integer and string ids both become strings; junk ids become "".
    """
    items = [{"ip": "1.1.1.1", "id": i} for i in (5, " 6 ", True, 1.5, None)]
    inds, _ = parse_typed("address", items, "s", "o")
    assert [i.id for i in inds] == ["5", "6", "", "", ""]


def test_typed_junk_skipped() -> None:
    """
    Items that are not objects, or have no usable value, are skipped and
    counted; good items around them survive.
    """
    items = [
        None,
        "1.2.3.4",
        42,
        [],
        {"id": 1},
        {"id": 2, "ip": ""},
        {"id": 3, "ip": "   "},
        {"id": 4, "ip": 1234},
        {"id": 5, "ip": "9.9.9.9"},
    ]
    inds, skipped = parse_typed("address", items, "s", "o")
    assert [i.ip for i in inds] == ["9.9.9.9"]
    assert skipped == 8


def test_typed_not_a_list() -> None:
    """
    A missing list parses as an empty page; a non-list counts as one skip.
    """
    assert parse_typed("host", None, "s", "o") == ([], 0)
    assert parse_typed("host", {"hostName": "h"}, "s", "o") == ([], 1)


def test_typed_unknown_entity() -> None:
    """
    Asking for an entity this module does not know is a programming error.
    """
    with pytest.raises(ValueError, match="url"):
        parse_typed("url", [], "s", "o")


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        (MD5, {"md5": MD5}),
        (f"{MD5} : {SHA1} : {SHA256}", {"md5": MD5, "sha1": SHA1, "sha256": SHA256}),
        (f"{MD5} : {SHA256}", {"md5": MD5, "sha256": SHA256}),
        (f"{SHA1} : {SHA256}", {"sha1": SHA1, "sha256": SHA256}),
        (SHA256, {"sha256": SHA256}),
        (f"  {MD5}:{SHA1}  ", {"md5": MD5, "sha1": SHA1}),
        ("abc : " + "z" * 32, {}),
    ],
)
def test_file_summary_split(summary: str, expected: dict[str, str]) -> None:
    """
    Multi-hash File summaries are split on " : " and each part classified by
    its length, so "md5 : sha256" is read correctly.
    """
    assert split_file_summary(summary) == expected


def test_generic_each_type() -> None:
    """
    Generic items give File hashes, Address ip and Host host from the
    summary; other types become value-less indicators of that type.
    """
    items = [
        {
            "id": 47128,
            "type": "File",
            "summary": f"{MD5} : {SHA1} : {SHA256}",
            "ownerName": "Common Community",
            "rating": 3,
            "confidence": 50,
        },
        {"id": "2", "type": "Address", "summary": " 10.1.1.1 "},
        {"id": 3, "type": "Host", "summary": "bad.example", "webLink": "https://l"},
        {"id": 4, "type": "URL", "summary": "http://bad.example/x"},
        {"id": 5, "type": "EmailAddress", "summary": "a@b.example"},
    ]
    inds, skipped = parse_generic(items, "tag1", "Fallback")
    assert skipped == 0
    f, a, h, u, e = inds
    assert (f.type, f.md5, f.sha1, f.sha256, f.owner) == (
        "File",
        MD5,
        SHA1,
        SHA256,
        "Common Community",
    )
    assert (f.rating, f.confidence, f.source) == (3.0, 50, "tag1")
    assert (a.type, a.ip, a.id, a.owner) == ("Address", "10.1.1.1", "2", "Fallback")
    assert (h.type, h.host, h.web_link) == ("Host", "bad.example", "https://l")
    assert u == Indicator(source="tag1", owner="Fallback", type="URL", id="4")
    assert (e.type, e.md5, e.ip, e.host) == ("EmailAddress", None, None, None)


def test_generic_md5_sha256_summary() -> None:
    """
    A File summary of "md5 : sha256" gives md5 and sha256, not sha1.
    """
    [ind], _ = parse_generic([{"type": "File", "summary": f"{MD5} : {SHA256}"}], "s", "o")
    assert (ind.md5, ind.sha1, ind.sha256) == (MD5, None, SHA256)


def test_generic_junk_skipped() -> None:
    """
    Generic items with no type, no summary for a supported type, or a File
    summary with no recognisable hash are skipped and counted.
    """
    items = [
        "x",
        None,
        {"summary": "1.2.3.4"},
        {"type": "", "summary": "1.2.3.4"},
        {"type": "Address"},
        {"type": "Host", "summary": " "},
        {"type": "File", "summary": "not-a-hash"},
        {"type": "Address", "summary": "8.8.8.8", "tag": [{"name": "t"}, 42, {"x": 1}]},
    ]
    inds, skipped = parse_generic(items, "s", "o")
    assert skipped == 7
    [ind] = inds
    assert (ind.ip, ind.tags) == ("8.8.8.8", ("t",))


def test_generic_not_a_list() -> None:
    """
    A missing C{indicator} list is an empty page; a non-list is one skip.
    """
    assert parse_generic(None, "s", "o") == ([], 0)
    assert parse_generic("junk", "s", "o") == ([], 1)


def test_owners() -> None:
    """
    Owner names come from the whole /v2/owners answer or its C{data} object,
    stripped, de-duplicated, in ThreatConnect's order; junk is ignored.
    """
    data = {
        "resultCount": 5,
        "owner": [
            {"id": 1, "name": "Example Organization", "type": "Organization"},
            {"id": 2, "name": " Common Community ", "type": "Community"},
            {"id": 3, "name": ""},
            "junk",
            {"id": 4},
            {"id": 5, "name": "Common Community"},
        ],
    }
    expected = ["Example Organization", "Common Community"]
    assert parse_owners(data) == expected
    assert parse_owners({"status": "Success", "data": data}) == expected
    assert parse_owners(data["owner"]) == expected
    assert parse_owners(None) == []
    assert parse_owners({"data": {}}) == []


def test_v3_item_shape() -> None:
    """
    A v3 item (type, summary, the per-type field, tags.data, Z dates,
    decimal rating) gives the same record as its v2 form would.
    """
    item = {
        "id": 27,
        "ownerId": 1,
        "ownerName": "Demo Organization",
        "dateAdded": "2023-01-27T16:18:18Z",
        "lastModified": "2023-01-27T16:19:33Z",
        "type": "File",
        "summary": "9D67E81C18101FC266057CD7851604B8",
        "rating": 3.00,
        "confidence": 74,
        "description": "d",
        "privateFlag": False,
        "active": True,
        "activeLocked": False,
        "md5": "9D67E81C18101FC266057CD7851604B8",
        "webLink": "https://app.threatconnect.com/#/details/indicators/27/overview",
        "tags": {"data": [{"id": 11, "name": "Targeted Attack"}, {"id": 12, "name": "X"}]},
    }
    page = parse_generic_page([item], "tag", "")
    assert (page.skipped, page.inactive) == (0, 0)
    assert page.indicators == (
        [
            Indicator(
                source="tag",
                owner="Demo Organization",
                type="File",
                id="27",
                md5="9D67E81C18101FC266057CD7851604B8",
                rating=3.0,
                confidence=74,
                last_modified=1674836373,
                web_link="https://app.threatconnect.com/#/details/indicators/27/overview",
                description="d",
                tags=("Targeted Attack", "X"),
            )
        ]
    )


def test_v3_per_type_fields() -> None:
    """
    v3 Address and Host items give ip and host (from the summary, or the
    per-type field when there is no summary); boolean dnsActive is ignored.
    """
    items = [
        {"type": "Address", "summary": "10.0.0.1", "ip": "10.0.0.1"},
        {"type": "Address", "ip": "2001:db8::1"},
        {"type": "Host", "hostName": "h.example", "dnsActive": True, "whoisActive": False},
        {"type": "File", "sha1": SHA1, "sha256": SHA256, "summary": f"{SHA1} : {SHA256}"},
    ]
    page = parse_generic_page(items, "s", "o")
    a1, a2, h, f = page.indicators
    assert (a1.ip, a2.ip, h.host) == ("10.0.0.1", "2001:db8::1", "h.example")
    assert (f.md5, f.sha1, f.sha256) == (None, SHA1, SHA256)
    assert (page.skipped, page.inactive) == (0, 0)


@pytest.mark.parametrize(
    ("summary", "hashes"),
    [
        (MD5, (MD5, None, None)),
        (SHA1, (None, SHA1, None)),
        (SHA256, (None, None, SHA256)),
        (f"{MD5} : {SHA1}", (MD5, SHA1, None)),
        (f"{MD5} : {SHA256}", (MD5, None, SHA256)),
        (f"{SHA1} : {SHA256}", (None, SHA1, SHA256)),
        (f"{MD5} : {SHA1} : {SHA256}", (MD5, SHA1, SHA256)),
    ],
)
def test_generic_file_every_hash_subset(summary: str, hashes: tuple[Any, ...]) -> None:
    """
    A generic File summary with any subset of md5, sha1, sha256 gives
    exactly those hashes.
    """
    [ind], _ = parse_generic([{"type": "File", "summary": summary}], "s", "o")
    assert (ind.md5, ind.sha1, ind.sha256) == hashes


def test_single_item_owner_object_generic() -> None:
    """
    A single-item answer names its owner as owner:{id,name,type} instead of
    ownerName, in the generic and v3 shapes too.
    """
    item = {
        "id": "54321",
        "type": "Host",
        "summary": "a.example",
        "owner": {"id": 2, "name": "Common Community", "type": "Community"},
    }
    [ind] = parse_generic_page([item], "s", "fallback").indicators
    assert (ind.owner, ind.id) == ("Common Community", "54321")


@pytest.mark.parametrize(
    "value",
    [
        "2014-08-11T23:12:36",
        "2014-08-11T23:12:36Z",
        "2014-08-11T19:12:36-04:00",
        "2014-08-12T01:12:36+02:00",
    ],
)
def test_dates_every_zone_form_generic(value: str) -> None:
    """
    No zone (read as UTC), Z and offsets all give the same instant in the
    generic and v3 shapes.
    """
    [ind] = parse_generic_page(
        [{"type": "Host", "summary": "h", "lastModified": value}], "s", "o"
    ).indicators
    assert ind.last_modified == 1407798756


def test_rating_confidence_missing_generic() -> None:
    """
    Items without rating or confidence give None for them, never 0.
    """
    [ind] = parse_generic_page([{"type": "Host", "summary": "h"}], "s", "o").indicators
    assert (ind.rating, ind.confidence) == (None, None)


@pytest.mark.parametrize(
    ("flag", "inactive"),
    [
        (False, True),
        ("false", True),
        (" FALSE ", True),
        (True, False),
        ("true", False),
        (None, False),
    ],
)
def test_is_inactive(flag: Any, inactive: bool) -> None:
    """
    Only an explicit false (boolean or string) marks an item inactive.
    """
    item = {} if flag is None else {"active": flag}
    assert is_inactive(item) is inactive


def test_inactive_left_out_and_counted() -> None:
    """
    Inactive items are left out and counted as inactive, not as skipped, in
    the per-type, generic and v3 shapes; with active_only=False they are kept.
    """
    typed = [{"hostName": "a", "active": False}, {"hostName": "b"}, "junk"]
    page = parse_typed_page("host", typed, "s", "o")
    assert ([i.host for i in page.indicators], page.skipped, page.inactive) == (["b"], 1, 1)
    assert parse_typed("host", typed, "s", "o")[1] == 1
    generic = [
        {"type": "Host", "summary": "a", "active": False},
        {"type": "Host", "summary": "b", "active": True},
        {"type": "Host"},
    ]
    page = parse_generic_page(generic, "s", "o")
    assert ([i.host for i in page.indicators], page.skipped, page.inactive) == (["b"], 1, 1)
    page = parse_generic_page(generic, "s", "o", active_only=False)
    assert ([i.host for i in page.indicators], page.inactive) == (["a", "b"], 0)


def _key(indicator: Indicator) -> int | None:
    [batch] = IndicatorBatch.of([indicator])
    [key] = batch.keys()
    return key


def test_indicator_key() -> None:
    """
    Indicators are identified by owner, type and value (a File by its
    tuple of hashes; other types by id), not by the source label or rating.
    """
    a = Indicator(source="s1", owner="O", type="Host", host="h", rating=1.0)
    b = Indicator(source="s2", owner="O", type="Host", host="h", rating=5.0, id="9")
    assert _key(a) == _key(b)
    assert _key(a) != _key(Indicator(source="s", owner="P", type="Host", host="h"))
    f1 = Indicator(source="s", owner="O", type="File", md5=MD5)
    f2 = Indicator(source="s", owner="O", type="File", md5=MD5, sha256=SHA256)
    assert _key(f1) != _key(f2)
    url = Indicator(source="s", owner="O", type="URL", id="4")
    assert _key(url) is not None
    assert _key(Indicator(source="s", owner="O", type="URL")) is None


def test_batch_records_round_trip() -> None:
    """
    Records made into batches and back are the same records, and a
    selection keeps the chosen rows in the order asked for.
    """
    records = [
        Indicator(source="s", owner="O", type="File", md5=MD5, id="1", tags=("t",)),
        Indicator(source="s", owner="O", type="Host", host="h.example", id="2", rating=2.0),
        Indicator(source="s", owner="O", type="File", sha256=SHA256, id="3"),
    ]
    files, hosts = IndicatorBatch.of(records)
    assert files.records() == [records[0], records[2]]
    assert hosts.records() == [records[1]]
    assert files.select([1, 0]).records() == [records[2], records[0]]
