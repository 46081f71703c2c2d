# -*- test-case-name: tests.test_feed_filters -*-
"""
Filters applied while building a feed: which ThreatConnect types are
supported, how an indicator's score is computed, and the user's exclusion
lists (values that must never reach Carbon Black, such as the hash of a
company-wide tool or the company's own addresses).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final, Literal

from attrs import field, frozen

from tcbridge.feed.iocs import classify_ip, normalise_dns, normalise_md5, normalise_sha256

#: ThreatConnect indicator types that map onto Carbon Black IOC kinds.
SUPPORTED_TYPES: Final[frozenset[str]] = frozenset({"File", "Address", "Host"})

ScoreSource = Literal["rating", "confidence"]


def indicator_score(
    rating: float | None, confidence: int | None, source: ScoreSource = "rating"
) -> int:
    """
    Compute the Carbon Black score (an int in 0..100) of an indicator.

    With C{source="rating"} the ThreatConnect threat rating (0-5) is
    multiplied by 20 and rounded half up (a rating of 2.5 scores 50, 3.33
    scores 67); with C{source="confidence"} the confidence (0-100) is used.
    A missing or non-numeric value scores 0; results are clamped to 0..100.
    """
    raw: object = confidence if source == "confidence" else rating
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return 0
    if source == "rating":
        raw = raw * 20
    if isinstance(raw, float):
        if math.isnan(raw):
            return 0
        if raw >= 100:
            return 100
        if raw <= 0:
            return 0
        return min(100, math.floor(raw + 0.5))
    return min(100, max(0, raw))


def _frozen_set(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


@frozen
class Exclusions:
    """
    Normalised IOC values, per Carbon Black IOC kind, that are left out of
    the feed whatever ThreatConnect says about them.
    """

    md5: frozenset[str] = field(default=frozenset(), converter=_frozen_set)
    sha256: frozenset[str] = field(default=frozenset(), converter=_frozen_set)
    ipv4: frozenset[str] = field(default=frozenset(), converter=_frozen_set)
    ipv6: frozenset[str] = field(default=frozenset(), converter=_frozen_set)
    dns: frozenset[str] = field(default=frozenset(), converter=_frozen_set)

    @classmethod
    def from_lines(
        cls,
        hashes: Iterable[str] = (),
        ips: Iterable[str] = (),
        hosts: Iterable[str] = (),
    ) -> Exclusions:
        """
        Build exclusions from the lines of the user's exclusion files.

        Each value is normalised exactly as an IOC would be, so an upper-case
        hash excludes its lower-case twin and C{2001:DB8:0::1} excludes
        C{2001:db8::1}.  A hash may be an MD5 or a SHA-256.  Values that are
        not valid IOCs of their list's kind are ignored (the caller has
        already removed comments and blank lines).
        """
        md5: set[str] = set()
        sha256: set[str] = set()
        ipv4: set[str] = set()
        ipv6: set[str] = set()
        dns: set[str] = set()
        for line in hashes:
            value = line.strip()
            if (digest := normalise_md5(value)) is not None:
                md5.add(digest)
            elif (digest := normalise_sha256(value)) is not None:
                sha256.add(digest)
        for line in ips:
            classified = classify_ip(line.strip())
            if classified is not None:
                (ipv4 if classified[0] == "ipv4" else ipv6).add(classified[1])
        for line in hosts:
            name = normalise_dns(line.strip())
            if name is not None:
                dns.add(name)
        return cls(md5=md5, sha256=sha256, ipv4=ipv4, ipv6=ipv6, dns=dns)

    def __bool__(self) -> bool:
        """
        Whether anything at all is excluded.
        """
        return bool(self.md5 or self.sha256 or self.ipv4 or self.ipv6 or self.dns)

    def __len__(self) -> int:
        """
        How many values are excluded, over all kinds.
        """
        return len(self.md5) + len(self.sha256) + len(self.ipv4) + len(self.ipv6) + len(self.dns)

    def set_for(self, kind: str) -> frozenset[str]:
        """
        The normalised excluded values of one IOC kind (C{md5}, C{sha256},
        C{ipv4}, C{ipv6}, C{dns}); empty for any other kind.
        """
        if kind in ("md5", "sha256", "ipv4", "ipv6", "dns"):
            values: frozenset[str] = getattr(self, kind)
            return values
        return frozenset()

    def contains(self, kind: str, value: str) -> bool:
        """
        Whether C{value}, once normalised as an IOC of C{kind}, is excluded.
        """
        normalised: str | None
        if kind == "md5":
            normalised = normalise_md5(value)
        elif kind == "sha256":
            normalised = normalise_sha256(value)
        elif kind in ("ipv4", "ipv6"):
            classified = classify_ip(value)
            if classified is None or classified[0] != kind:
                return False
            normalised = classified[1]
        elif kind == "dns":
            normalised = normalise_dns(value)
        else:
            return False
        return normalised is not None and normalised in self.set_for(kind)
