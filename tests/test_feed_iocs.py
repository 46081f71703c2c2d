# -*- test-case-name: tests.test_feed_iocs -*-
"""
Tests for L{tcbridge.feed.iocs}: which values become Carbon Black IOCs and in
what form.
"""

from __future__ import annotations

import pytest

from tcbridge.feed.iocs import (
    classify_ip,
    invalid_feed_values,
    normalise_dns,
    normalise_md5,
    normalise_sha256,
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
