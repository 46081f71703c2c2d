# -*- test-case-name: tests.test_tc_parse -*-
"""
Plain records that leave the ThreatConnect side: one L{Indicator} per
ThreatConnect indicator, and L{SourcePull} figures for one pulled source.
"""

from __future__ import annotations

from attrs import field, frozen


@frozen(slots=True)
class Indicator:
    """
    One ThreatConnect indicator, reduced to what a feed needs.

    Values are as ThreatConnect sent them (stripped of surrounding white space,
    otherwise untouched): validation and normalisation belong to the feed side.

    :ivar source: the label of the configured source this came from: the owner
        name for owner sources (and for each owner of a C{*} source), the
        [sources] tag for a legacy API path.
    :ivar owner: ThreatConnect owner name (C{ownerName}), or C{""} if absent.
    :ivar type: ThreatConnect type name: C{"File"}, C{"Address"}, C{"Host"},
        or another type name for indicators the feed side will skip.
    :ivar id: ThreatConnect indicator id as a string (C{""} if absent).
    :ivar md5: raw hash value of a File (likewise C{sha1}, C{sha256}); C{None} if absent.
    :ivar ip: the address of an Address indicator (IPv4 or IPv6 text).
    :ivar host: the host name of a Host indicator.
    :ivar rating: ThreatConnect threat rating, 0-5, or C{None} when unset.
    :ivar confidence: ThreatConnect confidence, 0-100, or C{None} when unset.
    :ivar last_modified: seconds since the epoch (UTC) or C{None}.
    :ivar web_link: ThreatConnect's C{webLink} for the indicator, or C{""}.
    :ivar description: free text, untrusted, or C{None}.
    :ivar tags: tag names, in ThreatConnect's order.
    :ivar threat_assess_score: ThreatConnect's ThreatAssess score, 0-1000, or
        C{None} when not sent (v3 sends it with C{fields=threatAssess}).
    """

    source: str
    owner: str
    type: str
    id: str = ""
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    ip: str | None = None
    host: str | None = None
    rating: float | None = None
    confidence: int | None = None
    last_modified: int | None = None
    web_link: str = ""
    description: str | None = None
    tags: tuple[str, ...] = field(default=())
    threat_assess_score: int | None = None


@frozen
class SourcePull:
    """
    What pulling one configured source produced.

    :ivar source: the configured source's name (its tag, or the owner name).
    :ivar owners: the owner names actually pulled (several for C{*}).
    :ivar indicators: indicator records handed on to the feed side.
    :ivar skipped: records that could not be read as indicators (no value,
        unknown shape); they never reach the feed.
    :ivar pages: pages fetched.
    :ivar inactive: items left out because ThreatConnect marks them inactive.
    :ivar duplicates: indicators ThreatConnect sent twice within one listing
        beyond the deliberate page overlap (the listing changed while it was
        read); dropped, they reach the feed once.
    :ivar restarts: listings read again from the start because more
        indicators vanished between two pages than the overlap covers.
    """

    source: str
    owners: tuple[str, ...]
    indicators: int
    skipped: int
    pages: int
    inactive: int = 0
    duplicates: int = 0
    restarts: int = 0
