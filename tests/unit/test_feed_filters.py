# -*- test-case-name: tests.unit.test_feed_filters -*-
"""
Tests for L{tcbridge.feed.filters}: scores and exclusion lists.
"""

from __future__ import annotations

import math

import pytest

from tcbridge.feed.filters import Exclusions, indicator_score, parse_exclusion_file

MD5 = "9d67e81c0a6f1b5e4e1f2d3c4b5a6978"
SHA256 = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("rating", "expected"),
    [
        (None, 0),
        (0.0, 0),
        (1.0, 20),
        (2.5, 50),
        (3.33, 67),
        (0.025, 1),  # 0.5 rounds up
        (5.0, 100),
        (7.0, 100),
        (-1.0, 0),
        (math.nan, 0),
        (math.inf, 100),
        (4, 80),
    ],
)
def test_score_from_rating(rating: float | None, expected: int) -> None:
    """
    With the rating as score source, the score is rating x 20 rounded half
    up, clamped to 0..100; a missing rating scores 0.
    """
    assert indicator_score(rating, 99, "rating") == expected


@pytest.mark.parametrize(
    ("confidence", "expected"), [(None, 0), (0, 0), (55, 55), (100, 100), (250, 100), (-3, 0)]
)
def test_score_from_confidence(confidence: int | None, expected: int) -> None:
    """
    With confidence as score source, the confidence is the score, clamped
    to 0..100, and the rating is ignored.
    """
    assert indicator_score(5.0, confidence, "confidence") == expected


def test_exclusions_normalise() -> None:
    """
    Exclusion lines are normalised like IOCs: hashes match case-insensitively,
    IPv6 addresses match in any notation, host names ignore case and a
    trailing dot.
    """
    exclusions = Exclusions.from_lines(
        hashes=[MD5.upper(), SHA256.upper()],
        ips=["10.0.0.1", "2001:DB8:0:0::1"],
        hosts=["Intranet.Example.COM."],
    )
    assert exclusions.contains("md5", MD5)
    assert exclusions.contains("md5", MD5.upper())
    assert exclusions.contains("sha256", SHA256)
    assert exclusions.contains("ipv4", "10.0.0.1")
    assert exclusions.contains("ipv6", "2001:db8::1")
    assert exclusions.contains("ipv6", "2001:0db8::0:1")
    assert exclusions.contains("dns", "intranet.example.com")
    assert not exclusions.contains("dns", "www.intranet.example.com")
    assert not exclusions.contains("ipv4", "10.0.0.2")
    assert not exclusions.contains("ipv4", "2001:db8::1")
    assert not exclusions.contains("url", "10.0.0.1")
    assert len(exclusions) == 5


def test_exclusions_ignore_invalid_lines() -> None:
    """
    from_lines ignores lines that are not valid entries of their list's
    kind rather than refusing them (parse_exclusion_file reports them).
    """
    exclusions = Exclusions.from_lines(
        hashes=["not-a-hash", "a" * 40], ips=["10.0.0.1/8", "1.2.3"], hosts=["bad_host"]
    )
    assert not exclusions
    assert len(exclusions) == 0


def test_exclusions_default_empty() -> None:
    """
    By default nothing is excluded.
    """
    assert not Exclusions()
    assert not Exclusions().contains("md5", MD5)


@pytest.mark.parametrize(
    ("rating", "confidence", "threat", "source", "expected"),
    [
        (4.0, 30, 655, "threatAssessScore", 66),
        (4.0, 30, None, "threatAssessScore", 0),
        (4.0, 30, 2000, "threatAssessScore", 100),
        (4.0, 30, 655, "max", 80),
        (1.0, 95, 655, "max", 95),
        (None, None, 700, "max", 70),
        (None, None, None, "max", 0),
    ],
)
def test_score_from_threat_assess_and_max(
    rating: float | None, confidence: int | None, threat: int | None, source: str, expected: int
) -> None:
    """
    threatAssessScore (0-1000) scores a tenth of it, rounded; max takes the
    highest of rating x 20, confidence and threatAssessScore / 10 that the
    indicator has; nothing at all scores 0.
    """
    assert indicator_score(rating, confidence, source, threat) == expected  # type: ignore[arg-type]


def test_parse_exclusion_file_entries() -> None:
    """
    Exclusion files take exact values, CIDR ranges and *.suffix rules;
    blank lines and # comments (whole-line or trailing) are ignored.
    """
    hashes, problems = parse_exclusion_file(
        "hashes", "filtered_hashes", "h.txt", ["# tools", "", MD5.upper(), f"{SHA256}  # ok"]
    )
    assert problems == []
    ips, problems = parse_exclusion_file(
        "ips", "filtered_ips", "i.txt", ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "::1/128"]
    )
    assert problems == []
    hosts, problems = parse_exclusion_file(
        "hosts", "filtered_hosts", "n.txt", ["*.Example.COM", "intranet.test", "*.internal"]
    )
    assert problems == []
    exclusions = Exclusions.of([hashes, ips, hosts])
    assert exclusions.match("md5", MD5) == "filtered_hashes"
    assert exclusions.match("sha256", SHA256) == "filtered_hashes"
    assert exclusions.match("ipv4", "10.255.1.2") == "filtered_ips"
    assert exclusions.match("ipv4", "11.0.0.1") is None
    assert exclusions.match("ipv4", "192.0.2.7") == "filtered_ips"
    assert exclusions.match("ipv6", "2001:db8:ffff::1") == "filtered_ips"
    assert exclusions.match("ipv6", "2001:db9::1") is None
    assert exclusions.match("ipv6", "::1") == "filtered_ips"
    assert exclusions.match("dns", "www.example.com") == "filtered_hosts"
    assert exclusions.match("dns", "a.b.example.com") == "filtered_hosts"
    assert exclusions.match("dns", "example.com") is None  # a suffix rule is not the name
    assert exclusions.match("dns", "notexample.com") is None
    assert exclusions.match("dns", "intranet.test") == "filtered_hosts"
    assert exclusions.match("dns", "www.intranet.test") is None  # a plain line is exact
    assert exclusions.match("dns", "db.internal") == "filtered_hosts"
    assert exclusions.contains("ipv4", "10.1.2.3")
    assert len(exclusions) == 9


def test_parse_exclusion_file_problems() -> None:
    """
    Each bad entry gives one line naming the file, the 1-based line number,
    the entry and what was expected; the good entries are still used.
    """
    lines = ["10.0.0.1", "10.0.0.1/8  # host bits", "300.1.1.1", "2001:db8::/129", "x"]
    result, problems = parse_exclusion_file("ips", "filtered_ips", "/etc/ips.txt", lines)
    assert problems == [
        f"/etc/ips.txt:{n}: {text!r} is not a valid IP address or range; expected an IPv4 or "
        "IPv6 address, or a CIDR range with no host bits set such as 10.0.0.0/8 or "
        "2001:db8::/32"
        for n, text in [(2, "10.0.0.1/8"), (3, "300.1.1.1"), (4, "2001:db8::/129"), (5, "x")]
    ]
    assert result.ipv4 == {"10.0.0.1"}
    _, problems = parse_exclusion_file("hashes", "h", "h.txt", ["a" * 40])
    assert problems == [
        f"h.txt:1: {'a' * 40!r} is not a valid hash; expected an MD5 (32 hex digits) or a "
        "SHA-256 (64 hex digits)"
    ]
    _, problems = parse_exclusion_file("hosts", "n", "n.txt", ["ok.example", "*.", "bad_host.x"])
    assert [p.split(":")[1] for p in problems] == ["2", "3"]
    assert all("is not a valid host name; expected" in p for p in problems)


def test_first_list_wins() -> None:
    """
    A value in several lists is credited to the first list given.
    """
    one, _ = parse_exclusion_file("ips", "first", "a", ["10.0.0.0/8"])
    two, _ = parse_exclusion_file("ips", "second", "b", ["10.1.2.3"])
    assert Exclusions.of([one, two]).match("ipv4", "10.1.2.3") == "second"  # exact beats range
    assert Exclusions.of([two, one]).match("ipv4", "10.1.2.3") == "second"
    three, _ = parse_exclusion_file("ips", "third", "c", ["10.1.2.3"])
    assert Exclusions.of([three, two]).match("ipv4", "10.1.2.3") == "third"
