# -*- test-case-name: tests.test_feed_filters -*-
"""
Tests for L{tcbridge.feed.filters}: scores and exclusion lists.
"""

from __future__ import annotations

import math

import pytest

from tcbridge.feed.filters import Exclusions, indicator_score

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
    Lines that are not valid values of their list's kind are ignored
    rather than refused.
    """
    exclusions = Exclusions.from_lines(
        hashes=["not-a-hash", "a" * 40], ips=["10.0.0.0/8", "1.2.3"], hosts=["bad_host"]
    )
    assert not exclusions
    assert len(exclusions) == 0


def test_exclusions_default_empty() -> None:
    """
    By default nothing is excluded.
    """
    assert not Exclusions()
    assert not Exclusions().contains("md5", MD5)
