# -*- test-case-name: tests.unit.test_feed_filters -*-
"""
Filters applied while building a feed: which ThreatConnect types are
supported, how an indicator's score is computed, and the user's exclusion
lists (values that must never reach Carbon Black, such as the hash of a
company-wide tool or the company's own addresses).

Exclusion files hold one entry per line; blank lines and everything from a
C{#} to the end of the line are ignored.  An entry is:

 - in a I{hashes} file: an MD5 (32 hex digits) or SHA-256 (64 hex digits),
   matched exactly, in any case;
 - in an I{ips} file: an IPv4 or IPv6 address (matched in any notation) or
   a CIDR range such as C{10.0.0.0/8} or C{2001:db8::/32} (no host bits may
   be set: C{10.0.0.1/8} is refused as a likely typo);
 - in a I{hosts} file: a host name such as C{example.com}, matched exactly
   (so it does B{not} exclude C{www.example.com}), or a suffix rule such as
   C{*.example.com}, which excludes C{sub.example.com} and anything deeper
   but B{not} C{example.com} itself (list both lines to exclude both).

L{parse_exclusion_file} turns the lines of one file into an
L{ExclusionList} plus one problem line per bad entry;
L{Exclusions.of} combines lists, and L{Exclusions.match} says which list (by
its option name) removes a value: exact entries first, then ranges and
suffixes; among equals, the first list in the order given.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from attrs import field, frozen

from tcbridge.feed.iocs import classify_ip, normalise_dns, normalise_md5, normalise_sha256
from tcbridge.model import ScoreSource

ExclusionKind = Literal["hashes", "ips", "hosts"]
_Buckets = tuple[tuple[int, dict[int, str]], ...]

_PREFIX_DIGITS: Final = re.compile(r"[0-9]{1,3}").fullmatch
_EXPECTED: Final[dict[str, tuple[str, str]]] = {
    "hashes": ("hash", "an MD5 (32 hex digits) or a SHA-256 (64 hex digits)"),
    "ips": (
        "IP address or range",
        "an IPv4 or IPv6 address, or a CIDR range with no host bits set "
        "such as 10.0.0.0/8 or 2001:db8::/32",
    ),
    "hosts": (
        "host name",
        "a host name such as example.com, or *.example.com for every name under it",
    ),
}


def _clamp_score(raw: object, scale: float) -> int | None:
    """
    C{raw * scale} rounded half up and clamped to 0..100, or C{None} when
    C{raw} is missing or not a number.
    """
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    if isinstance(raw, float) and math.isnan(raw):
        return None
    if isinstance(raw, int) and scale == 1:
        return min(100, max(0, raw))
    value = raw * scale
    if value >= 100:
        return 100
    if value <= 0:
        return 0
    return min(100, math.floor(value + 0.5))


def indicator_score(
    rating: float | None,
    confidence: int | None,
    source: ScoreSource = "rating",
    threat_assess_score: int | None = None,
) -> int:
    """
    Compute the Carbon Black score (an int in 0..100) of an indicator.

     - C{rating}: the ThreatConnect threat rating (0-5) times 20, rounded half
       up (a rating of 2.5 scores 50, 3.33 scores 67);
     - C{confidence}: the confidence (0-100) as it is;
     - C{threatAssessScore}: ThreatConnect's threat assessment score
       (0-1000) divided by 10, rounded half up;
     - C{max}: the highest of those three that the indicator has.

    A missing or non-numeric value scores 0; results are clamped to 0..100.
    """
    if source == "rating":
        return _clamp_score(rating, 20) or 0
    if source == "confidence":
        return _clamp_score(confidence, 1) or 0
    if source == "threatAssessScore":
        return _clamp_score(threat_assess_score, 0.1) or 0
    scores = (
        _clamp_score(rating, 20),
        _clamp_score(confidence, 1),
        _clamp_score(threat_assess_score, 0.1),
    )
    return max((score for score in scores if score is not None), default=0)


def _frozen_set(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def _networks(
    value: dict[int, frozenset[int]] | None = None,
) -> dict[int, frozenset[int]]:
    return dict(value or {})


@frozen
class ExclusionList:
    """
    The entries of one exclusion file, normalised.

    :ivar name: the option the file was configured with (for example
        C{filtered_hosts}); counts and pages name the list by it.
    :ivar md5: excluded MD5 digests (lower case); likewise C{sha256}.
    :ivar ipv4: excluded single addresses (canonical text); likewise C{ipv6}.
    :ivar ipv4_networks: excluded ranges: prefix length -> network
        addresses as ints; likewise C{ipv6_networks}.
    :ivar dns: host names excluded exactly.
    :ivar dns_suffixes: C{example.com} for a C{*.example.com} rule.
    """

    name: str
    md5: frozenset[str] = field(default=frozenset(), converter=_frozen_set)
    sha256: frozenset[str] = field(default=frozenset(), converter=_frozen_set)
    ipv4: frozenset[str] = field(default=frozenset(), converter=_frozen_set)
    ipv6: frozenset[str] = field(default=frozenset(), converter=_frozen_set)
    ipv4_networks: dict[int, frozenset[int]] = field(factory=dict, converter=_networks)
    ipv6_networks: dict[int, frozenset[int]] = field(factory=dict, converter=_networks)
    dns: frozenset[str] = field(default=frozenset(), converter=_frozen_set)
    dns_suffixes: frozenset[str] = field(default=frozenset(), converter=_frozen_set)

    def __len__(self) -> int:
        """
        How many entries the list holds (an address range counts once).
        """
        return (
            len(self.md5)
            + len(self.sha256)
            + len(self.ipv4)
            + len(self.ipv6)
            + sum(map(len, self.ipv4_networks.values()))
            + sum(map(len, self.ipv6_networks.values()))
            + len(self.dns)
            + len(self.dns_suffixes)
        )


def _parse_ip_entry(
    text: str,
    ipv4: set[str],
    ipv6: set[str],
    v4nets: dict[int, set[int]],
    v6nets: dict[int, set[int]],
) -> bool:
    address, slash, prefix = text.partition("/")
    classified = classify_ip(address)
    if classified is None:
        return False
    family, canonical = classified
    if not slash:
        (ipv4 if family == "ipv4" else ipv6).add(canonical)
        return True
    width = 32 if family == "ipv4" else 128
    if _PREFIX_DIGITS(prefix) is None or int(prefix) > width:
        return False
    length = int(prefix)
    number = int(ipaddress.ip_address(canonical))
    if number & ((1 << (width - length)) - 1):
        return False  # host bits set
    if length == width:
        (ipv4 if family == "ipv4" else ipv6).add(canonical)
    else:
        (v4nets if family == "ipv4" else v6nets).setdefault(length, set()).add(number)
    return True


def parse_exclusion_file(
    kind: ExclusionKind, name: str, path: str, lines: Sequence[str]
) -> tuple[ExclusionList, list[str]]:
    """
    Read the raw lines of one exclusion file (see the module docstring for
    what each kind of file may hold).

    :param kind: C{"hashes"}, C{"ips"} or C{"hosts"}.
    :param name: the option name shown to the user, e.g. C{filtered_hosts}.
    :param path: the file's path, for problem lines only (nothing is read).
    :param lines: the file's lines as written.
    :return: the list of every valid entry, and one problem line per
        invalid entry: C{"<path>:<line>: '<entry>' is not a valid <what>;
        expected <what is>"}, lines numbered from 1.
    """
    md5: set[str] = set()
    sha256: set[str] = set()
    ipv4: set[str] = set()
    ipv6: set[str] = set()
    v4nets: dict[int, set[int]] = {}
    v6nets: dict[int, set[int]] = {}
    dns: set[str] = set()
    suffixes: set[str] = set()
    problems: list[str] = []
    what, expected = _EXPECTED[kind]
    for lineno, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        ok = False
        if kind == "hashes":
            if (digest := normalise_md5(text)) is not None:
                md5.add(digest)
                ok = True
            elif (digest := normalise_sha256(text)) is not None:
                sha256.add(digest)
                ok = True
        elif kind == "ips":
            ok = _parse_ip_entry(text, ipv4, ipv6, v4nets, v6nets)
        elif text.startswith("*."):
            # "x." makes a one-label suffix such as *.internal a valid name.
            suffix = normalise_dns("x." + text[2:])
            if suffix is not None and not text.endswith(".."):
                suffixes.add(suffix[2:])
                ok = True
        elif (host := normalise_dns(text)) is not None:
            dns.add(host)
            ok = True
        if not ok:
            problems.append(f"{path}:{lineno}: {text!r} is not a valid {what}; expected {expected}")
    result = ExclusionList(
        name=name,
        md5=md5,
        sha256=sha256,
        ipv4=ipv4,
        ipv6=ipv6,
        ipv4_networks={length: frozenset(nets) for length, nets in v4nets.items()},
        ipv6_networks={length: frozenset(nets) for length, nets in v6nets.items()},
        dns=dns,
        dns_suffixes=suffixes,
    )
    return result, problems


def _lists(value: Iterable[ExclusionList]) -> tuple[ExclusionList, ...]:
    return tuple(value)


@frozen
class Exclusions:
    """
    Every configured exclusion list, combined for fast matching: exact
    values by dict lookup, address ranges by one lookup per distinct prefix
    length, suffix rules by walking the labels of a host name.
    """

    lists: tuple[ExclusionList, ...] = field(default=(), converter=_lists)
    _exact: dict[str, dict[str, str]] = field(init=False, repr=False, eq=False)
    _v4nets: _Buckets = field(init=False, repr=False, eq=False)
    _v6nets: _Buckets = field(init=False, repr=False, eq=False)
    _suffixes: dict[str, str] = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        exact: dict[str, dict[str, str]] = {k: {} for k in ("md5", "sha256", "ipv4", "ipv6", "dns")}
        v4: dict[int, dict[int, str]] = {}
        v6: dict[int, dict[int, str]] = {}
        suffixes: dict[str, str] = {}
        for one in self.lists:
            for kind in exact:
                for value in getattr(one, kind):
                    exact[kind].setdefault(value, one.name)
            for nets, into in ((one.ipv4_networks, v4), (one.ipv6_networks, v6)):
                for length, numbers in nets.items():
                    bucket = into.setdefault(length, {})
                    for number in numbers:
                        bucket.setdefault(number, one.name)
            for suffix in one.dns_suffixes:
                suffixes.setdefault(suffix, one.name)

        def shifted(nets: dict[int, dict[int, str]], width: int) -> _Buckets:
            return tuple(
                (width - length, {n >> (width - length): name for n, name in bucket.items()})
                for length, bucket in sorted(nets.items())
            )

        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_v4nets", shifted(v4, 32))
        object.__setattr__(self, "_v6nets", shifted(v6, 128))
        object.__setattr__(self, "_suffixes", suffixes)

    @classmethod
    def of(cls, lists: Sequence[ExclusionList]) -> Exclusions:
        """
        Combine exclusion lists.  Exact entries are looked at before ranges
        and suffix rules; a value matched by several entries of the same sort
        is credited to the first list in C{lists} that has one.
        """
        return cls(lists)

    @classmethod
    def from_lines(
        cls,
        hashes: Iterable[str] = (),
        ips: Iterable[str] = (),
        hosts: Iterable[str] = (),
    ) -> Exclusions:
        """
        Build exclusions from the lines of the user's exclusion files, as
        L{parse_exclusion_file} reads them (lists named C{hashes}, C{ips}
        and C{hosts}), ignoring invalid lines instead of reporting them.
        """
        files: tuple[tuple[ExclusionKind, Iterable[str]], ...] = (
            ("hashes", hashes),
            ("ips", ips),
            ("hosts", hosts),
        )
        parsed = [parse_exclusion_file(kind, kind, kind, list(lines))[0] for kind, lines in files]
        return cls([one for one in parsed if len(one)])

    def __bool__(self) -> bool:
        """
        Whether anything at all is excluded.
        """
        return any(len(one) for one in self.lists)

    def __len__(self) -> int:
        """
        How many entries there are, over all lists (a range counts once).
        """
        return sum(len(one) for one in self.lists)

    def set_for(self, kind: str) -> frozenset[str]:
        """
        The normalised values of one IOC kind (C{md5}, C{sha256}, C{ipv4},
        C{ipv6}, C{dns}) excluded exactly, not by range or suffix; empty for
        any other kind.
        """
        return frozenset(self._exact.get(kind, ()))

    def match(self, kind: str, value: str) -> str | None:
        """
        The name of the list that excludes C{value}, an already normalised
        IOC value of C{kind}, or C{None} if no list does.
        """
        exact = self._exact.get(kind)
        if exact is None:
            return None
        name = exact.get(value)
        if name is not None:
            return name
        if kind == "ipv4" and self._v4nets:
            return _match_network(int(ipaddress.IPv4Address(value)), self._v4nets)
        if kind == "ipv6" and self._v6nets:
            return _match_network(int(ipaddress.IPv6Address(value)), self._v6nets)
        if kind == "dns" and self._suffixes:
            suffixes = self._suffixes
            dot = value.find(".")
            while dot >= 0:
                name = suffixes.get(value[dot + 1 :])
                if name is not None:
                    return name
                dot = value.find(".", dot + 1)
        return None

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
        return normalised is not None and self.match(kind, normalised) is not None


def _match_network(number: int, buckets: _Buckets) -> str | None:
    for shift, bucket in buckets:
        name = bucket.get(number >> shift)
        if name is not None:
            return name
    return None
