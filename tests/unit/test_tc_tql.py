# -*- test-case-name: tests.unit.test_tc_tql -*-
"""
Tests for L{tcbridge.threatconnect.tql}: TQL built from the settings, string
escaping, and the percent-encoded C{/v3/indicators} targets.
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from tcbridge.threatconnect.tql import (
    build_tql,
    encode_param,
    indicators_target,
    ordered_types,
    owners_target,
    tql_number,
    tql_string,
)


def test_default_query() -> None:
    """
    An owner source asks for its owner, the three types in a fixed order, a
    minimum rating and active indicators only.
    """
    assert build_tql(owner="Common Community", types={"Host", "File", "Address"}, min_rating=1) == (
        'ownerName EQ "Common Community" AND typeName IN ("File","Address","Host") '
        "AND rating >= 1 AND indicatorActive EQ true"
    )


def test_optional_clauses() -> None:
    """
    No owner, no minimum rating and inactive allowed leave those clauses out.
    """
    assert build_tql(types=["Host"], active_only=False) == 'typeName IN ("Host")'
    assert build_tql(types=["Host"], min_rating=2.5) == (
        'typeName IN ("Host") AND rating >= 2.5 AND indicatorActive EQ true'
    )


def test_no_types_refused() -> None:
    """
    Asking for no types at all is a programming error, not a query.
    """
    with pytest.raises(ValueError, match="no indicator types"):
        build_tql(owner="x", types=())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ('\\"', '"\\\\\\""'),
        ("O'Brien & Co", '"O\'Brien & Co"'),
        ("", '""'),
    ],
)
def test_string_escaping(value: str, expected: str) -> None:
    """
    Quotes and backslashes in strings are escaped with a backslash (the
    backslash first, so an escaped quote is not escaped again); nothing else
    changes.
    """
    assert tql_string(value) == expected


def test_owner_with_quotes_and_backslashes() -> None:
    """
    An owner name with a quote and a backslash cannot end the string early.
    """
    tql = build_tql(owner='Evil" OR ownerName EQ "x\\', types=["Host"], active_only=False)
    assert tql == 'ownerName EQ "Evil\\" OR ownerName EQ \\"x\\\\" AND typeName IN ("Host")'


@pytest.mark.parametrize(("value", "expected"), [(1, "1"), (1.0, "1"), (2.5, "2.5"), (0, "0")])
def test_numbers(value: float, expected: str) -> None:
    """
    Ratings are written as plain numbers.
    """
    assert tql_number(value) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_bad_numbers(value: float) -> None:
    """
    NaN, infinities and booleans are not ratings.
    """
    with pytest.raises(ValueError):
        tql_number(value)


def test_type_order() -> None:
    """
    File, Address, Host come first in that order, other types after, sorted.
    """
    assert ordered_types(["URL", "Host", "ASN", "File"]) == ("File", "Host", "ASN", "URL")


def test_encode_param() -> None:
    """
    Every reserved character is percent-encoded, so the signed target is
    the wire target.
    """
    assert encode_param('a "b",(c)=&+/\\') == "a%20%22b%22%2C%28c%29%3D%26%2B%2F%5C"


def test_indicators_target() -> None:
    """
    The v3 target carries the encoded TQL, fields=tags, the paging and an
    optional sorting, in that order.
    """
    tql = 'typeName IN ("Host")'
    target = indicators_target(tql, start=20, limit=10, sorting="dateAdded ASC")
    assert target == (
        "/v3/indicators?tql=typeName%20IN%20%28%22Host%22%29&fields=tags"
        "&resultStart=20&resultLimit=10&sorting=dateAdded%20ASC"
    )
    assert unquote(target.split("tql=")[1].split("&")[0]) == tql
    assert indicators_target("", fields=()) == "/v3/indicators?resultStart=0&resultLimit=10000"
    assert owners_target(start=5, limit=7) == "/v3/security/owners?resultStart=5&resultLimit=7"
