"""
Tests for L{tcbridge.feed.lists}: IOC lists written straight from packed
values are exactly what orjson writes for the same texts.
"""

from __future__ import annotations

import ipaddress

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tcbridge.feed.lists import hex_list, ipv4_list, ipv6_list, names_list


@settings(max_examples=200)
@given(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=50))
def test_hex_list(values: list[bytes]) -> None:
    """
    Packed digests become their lower-case hex texts.
    """
    expected = orjson.dumps([value.hex() for value in values])[1:-1]
    assert hex_list(b"".join(values), 16) == expected


@settings(max_examples=200)
@given(st.lists(st.ip_addresses(v=4), min_size=1, max_size=50))
def test_ipv4_list(values: list[ipaddress.IPv4Address]) -> None:
    """
    Packed IPv4 addresses become dotted quads.
    """
    packed = b"".join(value.packed for value in values)
    assert ipv4_list(packed) == orjson.dumps([str(value) for value in values])[1:-1]


@settings(max_examples=500)
@given(st.lists(st.ip_addresses(v=6), min_size=1, max_size=20))
def test_ipv6_list(values: list[ipaddress.IPv6Address]) -> None:
    """
    Packed IPv6 addresses become the compressed form C{ipaddress} writes,
    IPv4-mapped and compatible ones included.
    """
    values += [ipaddress.IPv6Address("::ffff:1.2.3.4"), ipaddress.IPv6Address("::1.2.3.4")]
    packed = b"".join(value.packed for value in values)
    assert ipv6_list(packed) == orjson.dumps([value.compressed for value in values])[1:-1]


def test_names_list() -> None:
    """
    Host names are written in the order given.
    """
    assert names_list([b"b.example", b"a.example"]) == b'"b.example","a.example"'
