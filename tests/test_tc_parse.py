# -*- test-case-name: tests.test_tc_parse -*-
"""
Tests for L{tcbridge.threatconnect.parse}: every ThreatConnect item shape
becomes an L{Indicator}, and junk is skipped and counted, never raised.
"""

from __future__ import annotations

from typing import Any

import pytest

from tcbridge.threatconnect.parse import (
    parse_date,
    parse_generic,
    parse_owners,
    parse_typed,
    split_file_summary,
)
from tcbridge.threatconnect.records import Indicator

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
