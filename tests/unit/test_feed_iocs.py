# -*- test-case-name: tests.unit.test_feed_iocs -*-
"""
Tests for L{tcbridge.feed.iocs}: which values become Carbon Black IOCs and in
what form.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcbridge.feed.iocs import (
    classify_ip,
    classify_ips,
    invalid_feed_values,
    normalise_dns,
    normalise_hosts,
    normalise_md5,
    normalise_sha256,
    pack_hashes,
)

MD5 = "9d67e81c0a6f1b5e4e1f2d3c4b5a6978"
SHA256 = "a" * 32 + "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (MD5, MD5),
        (MD5.upper(), MD5),
        (MD5 + "\n", None),
        (" " + MD5, None),
        (MD5[:-1], None),
        (MD5 + "0", None),
        (MD5[:-1] + "g", None),
        ("", None),
        ("\u0660" * 32, None),  # Arabic-Indic digits are not hex
    ],
)
def test_md5(raw: str, expected: str | None) -> None:
    """
    An MD5 is exactly 32 hex digits, lower-cased; a trailing newline, a
    space, a wrong length or a non-hex digit makes it invalid.
    """
    assert normalise_md5(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (SHA256, SHA256),
        (SHA256.upper(), SHA256),
        (SHA256 + "\n", None),
        (SHA256[:-1], None),
        (MD5, None),
        ("z" * 64, None),
    ],
)
def test_sha256(raw: str, expected: str | None) -> None:
    """
    A SHA-256 is exactly 64 hex digits, lower-cased; anything else is
    invalid, including a trailing newline.
    """
    assert normalise_sha256(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1.2.3.4", ("ipv4", "1.2.3.4")),
        ("255.255.255.255", ("ipv4", "255.255.255.255")),
        ("0.0.0.0", ("ipv4", "0.0.0.0")),  # noqa: S104 (a value, not a bind address)
        ("999.1.1.1", None),
        ("256.1.1.1", None),
        ("1.2.3", None),
        ("1.2.3.4.5", None),
        ("01.2.3.4", None),
        ("1.2.3.4:80", None),
        ("1.2.3.4/32", None),
        ("1.2.3.4\n", None),
        ("0x7f.0.0.1", None),
        ("\u0661.\u0662.\u0663.\u0664", None),  # non-ASCII digits
        ("2001:db8::1", ("ipv6", "2001:db8::1")),
        ("2001:DB8:0:0:0:0:0:1", ("ipv6", "2001:db8::1")),
        ("2001:0db8:0000::0001", ("ipv6", "2001:db8::1")),
        ("::1", ("ipv6", "::1")),
        ("::", ("ipv6", "::")),
        ("fe80::1%eth0", None),
        ("[2001:db8::1]", None),
        ("2001:db8::1/64", None),
        ("2001:db8:::1", None),
        ("2001:db8::g", None),
        ("", None),
        ("example.com", None),
    ],
)
def test_classify_ip(raw: str, expected: tuple[str, str] | None) -> None:
    """
    IPv4 must be a strict dotted quad without leading zeros, ports or
    prefixes; IPv6 is anything ipaddress parses (no scope id), written in
    compressed lower-case form.
    """
    assert classify_ip(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("example.com..", None),
        ("a.b", "a.b"),
        ("x-1.example", "x-1.example"),
        ("bad_host.example", None),
        ("-lead.example", None),
        ("trail-.example", None),
        ("localhost", None),
        ("com.", None),
        (".example.com", None),
        ("a..b", None),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
        ("a" * 64 + ".example", None),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("\u2603" * 70 + ".example", None),  # punycode label too long
        ("example.com\n", None),
        ("exa mple.com", None),
        ("", None),
        ("1.2.3.4", "1.2.3.4"),  # all-numeric labels are allowed by Carbon Black
    ],
)
def test_dns(raw: str, expected: str | None) -> None:
    """
    Host names are lower-cased, lose one trailing dot and must follow the
    Carbon Black label rules; internationalised names become punycode.
    """
    assert normalise_dns(raw) == expected


def test_dns_length_limits() -> None:
    """
    A host name may be 253 characters long (254 with a trailing dot) but no
    longer.
    """
    longest = ("a" * 49 + ".") * 5 + "abc"  # 253
    assert len(longest) == 253
    assert normalise_dns(longest) == longest
    assert normalise_dns(longest + ".") == longest
    assert normalise_dns("a" + longest) is None


@pytest.mark.parametrize(
    ("kind", "values", "bad"),
    [
        ("md5", [MD5, MD5.upper()], []),
        ("md5", [MD5, MD5 + "\n"], [MD5 + "\n"]),
        ("md5", [MD5[:31] + "g"], [MD5[:31] + "g"]),
        ("md5", [MD5[:31], MD5 + "0"], [MD5[:31], MD5 + "0"]),  # lengths add up
        ("md5", [MD5, 5], [5]),
        ("sha256", [SHA256, SHA256.upper()], []),
        ("ja3", [MD5], []),
        ("ipv4", ["1.2.3.4", "10.0.0.1"], []),
        ("ipv4", ["1.2.3.4\n10.0.0.1"], ["1.2.3.4\n10.0.0.1"]),
        ("ipv4", ["1.2.3.4", "01.2.3.4"], ["01.2.3.4"]),
        ("ipv4", ["2001:db8::1"], ["2001:db8::1"]),
        ("ipv6", ["2001:db8::1", "2001:DB8:0::1"], []),
        ("ipv6", ["1.2.3.4"], ["1.2.3.4"]),
        ("dns", ["Example.COM", "a.b.", "x-y.z"], []),
        ("dns", ["a.b\nc.d"], ["a.b\nc.d"]),
        ("dns", ["trail-.example", "ok.example"], ["trail-.example"]),
        ("dns", ["-lead.example"], ["-lead.example"]),
        ("dns", ["bücher.example"], ["bücher.example"]),
        ("dns", ["\u212a.example"], ["\u212a.example"]),  # Kelvin sign lower-cases to k
        ("dns", ["localhost"], ["localhost"]),
        ("dns", [" example.com"], [" example.com"]),
    ],
)
def test_invalid_feed_values(kind: str, values: list[object], bad: list[object]) -> None:
    """
    The validator's check of an IOC list names exactly the invalid values,
    whether the fast whole-list check or the per-value check answers.
    """
    assert invalid_feed_values(kind, values) == bad


_MIXED = st.sampled_from(
    [
        "a.b",
        "A.B",
        "x-.y",
        "a..b",
        "ab",
        "a.b.",
        "-a.b",
        "a-b.c-d.e",
        "a.b-",
        "a" * 64 + ".com",
        "1.2.3.4",
        "01.2.3.4",
        "::1",
        "2001:DB8::1",
        "fe80::1%eth0",
        "999.1.1.1",
        "",
        None,
        "\u00e4.example",
        "x" * 250 + ".com",
        "cafebabe" * 4,
        "CAFEBABE" * 4,
        "zzzz" + "a" * 28,
        "a" * 64,
        " a.b",
        "a.b\n",
    ]
)


@settings(max_examples=500)
@given(st.lists(_MIXED, max_size=40))
def test_whole_columns_agree_with_single_values(raw: list[str | None]) -> None:
    """
    Normalising a whole column at once (checked in bulk, bad runs split
    until the bad values are found) gives exactly what normalising each
    value gives, rows and order included.
    """
    hosts: tuple[list[int], list[str], list[int], list[int]] = ([], [], [], [])
    ips: tuple[list[Any], ...] = ([], [], [], [], [], [])
    for row, value in enumerate(raw):
        if not value:
            hosts[3].append(row)
            ips[5].append(row)
            continue
        name = normalise_dns(value)
        if name is None:
            hosts[2].append(row)
        else:
            hosts[0].append(row)
            hosts[1].append(name)
        found = classify_ip(value)
        if found is None:
            ips[4].append(row)
        else:
            at = 0 if found[0] == "ipv4" else 2
            ips[at].append(row)
            ips[at + 1].append(found[1])
    assert normalise_hosts(raw) == hosts
    assert classify_ips(raw) == ips
    for kind, one in (("md5", normalise_md5), ("sha256", normalise_sha256)):
        good, packed, bad = pack_hashes(kind, raw)  # type: ignore[arg-type]
        expected = [(row, one(value)) for row, value in enumerate(raw) if value]
        assert good == [row for row, v in expected if v is not None]
        assert bad == [row for row, v in expected if v is None]
        assert packed.hex() == "".join(v for _, v in expected if v is not None)


@settings(max_examples=1000)
@given(
    st.ip_addresses(v=6),
    st.sampled_from(["compressed", "exploded", "upper", "mapped"]),
)
def test_ipv6_columns_match_ipaddress(address: Any, form: str) -> None:
    """
    The fast IPv6 path of a whole column (the C library) gives the same
    canonical text as C{ipaddress} for every way of writing an address,
    IPv4-mapped ones included.
    """
    if form == "compressed":
        text = str(address)
    elif form == "exploded":
        text = address.exploded
    elif form == "upper":
        text = address.exploded.upper()
    else:
        text = f"::ffff:{address.packed[12]}.{address.packed[13]}.1.2"
    assert classify_ips([text, "1.2.3.4"])[3] == [classify_ip(text)[1]]  # type: ignore[index]


@settings(max_examples=1000)
@given(st.text(alphabet="0123456789abcdefABCDEF:.%x ", max_size=45))
def test_address_like_junk_agrees(text: str) -> None:
    """
    Strings that look a little like addresses are accepted or refused by
    the whole-column path exactly as by L{classify_ip}.
    """
    found = classify_ip(text) if text else None
    _, v4, _, v6, bad, missing = classify_ips([text, "1.2.3.4"])
    if not text:
        assert missing == [0]
    elif found is None:
        assert bad == [0]
    elif found[0] == "ipv4":
        assert v4 == [found[1], "1.2.3.4"]
    else:
        assert v6 == [found[1]]
