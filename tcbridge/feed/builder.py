# -*- test-case-name: tests.test_feed_builder -*-
"""
Group ThreatConnect indicators into Carbon Black reports.

L{FeedBuilder} is fed pages of L{Indicator} records with L{FeedBuilder.add}
and keeps only compact data, never the records themselves:

 - Condensed and MaxCondensed keep, per (source, IOC kind), the values
   packed into one C{bytearray} (16 bytes per MD5, 32 per SHA-256, 4 per
   IPv4, 16 per IPv6, the name and a newline per host name) plus, per
   value, 8 bytes of score and C{lastModified} and (only once a source has
   tagged indicators) 4 bytes naming its set of tags.
 - Expanded keeps one small tuple per ThreatConnect indicator.

L{FeedBuilder.build} returns the whole document, and L{FeedBuilder.build_bytes}
its serialised form (byte-identical to C{dumps(build())}) while holding only
one report's strings at a time.  Both give the same output for the same
indicators and the same L{ReportHistory} whatever the page order: reports are
sorted by id, IOC values are sorted (hashes and host names as text, addresses
numerically), keys come in a fixed order, and timestamps come from the data
and the history, never from the clock.

B{One value, one report.}  An IOC value appears at most once in the feed:

 - Condensed/MaxCondensed: at build time, per IOC kind, the packed values of
   every source are sorted together (one transient list per kind) and walked
   once.  A value found under several source labels goes into a group whose
   label is the sorted labels joined with C{" + "} (e.g.
   C{"Common Community + Example Organization"}), at the highest score any of
   them gave and the newest C{lastModified}.  A value one source gave two
   scores takes the higher.
 - Expanded: indicators with identical IOC sets (from any labels) become one
   report: its id, link and description are those of the first (label, id)
   in sorted order, its title names every label, its score is the highest and
   its tags the union.  A value shared by reports with different IOC sets
   stays only in the one with the highest score, then newest timestamp, then
   smallest id; a report left with no IOC is dropped (counted as
   C{duplicate}).

B{Counts.}  C{SourceCounts.iocs} counts the IOCs each label contributed to the
published feed, so a value shared by two labels counts once for each (the
sum over sources can exceed the feed's IOCs); C{BuildStats.shared_iocs}
counts the feed's values that more than one label reported.

B{Report ids} are stable across runs: C{<slug>-<8 hex of sha1(label)>-...},
for example C{common_community-1a2b3c4d-md5-80} (Condensed),
C{common_community-1a2b3c4d-all-80} (MaxCondensed) and
C{common_community-1a2b3c4d-12345} (Expanded, from the ThreatConnect
indicator id; C{h} and 16 hex digits of a value hash when the id is
missing).  Shared groups use their joined label the same way.  If two labels
ever share a slug and 8 hex digits, both use all 40.

B{Titles, links and tags.}
 - Titles: C{"ThreatConnect Common Community: File md5 IOCs, score 80"},
   C{"ThreatConnect Common Community: all IOCs, score 80"} (MaxCondensed),
   C{"ThreatConnect Common Community: Host evil.example (score 80)"}
   (Expanded).
 - Links: Expanded reports link to the indicator's C{webLink} when it is an
   http(s) URL, else to C{web_url}.  Group reports link, as a best effort,
   to a ThreatConnect browse page filtered on the (first) owner and the
   type: C{<web_url>/browse/index.xhtml#/?owner=<owner>&type=<File|Address|
   Host>} (no C{type} for MaxCondensed).  Without C{web_url}, the site the
   indicators' own links point at is used, else C{app.threatconnect.com}.
 - Tags: ThreatConnect tag names with everything but ASCII letters and
   digits removed, cut to 32 characters, empty ones skipped, de-duplicated.
   Expanded: the indicator's tags in ThreatConnect's order (at most 20).
   Groups: the tags of the indicators behind the report's IOCs, most
   frequent first, then alphabetically, at most 20.  No C{tags} key when
   there are none.

B{Timestamps} (see L{tcbridge.feed.history}): a report whose content digest
equals the one in the history given to the builder keeps the recorded
timestamp; a new or changed report takes the newest C{lastModified} of its
IOCs, or the recorded timestamp + 1 if that is not later.
C{FeedBuilder.history} is the history of the feed just built.

B{Limits.}  C{max_reports} keeps the reports with the highest score, then the
newest timestamp, then the smallest id; they are still published in id
order, and C{truncated_reports} counts the others.  Above
C{report_warning_threshold} reports, C{BuildStats.warnings} says so.

C{BuildStats.skipped} counts indicators for indicator-level reasons
(C{unsupported type <T>}, C{type disabled}, C{below minimum rating},
C{below minimum score}, C{sha1 only (no Carbon Black type)}, C{missing
value}, and C{duplicate} in Expanded mode) and IOC values for value-level
reasons (C{invalid md5}, C{invalid sha256}, C{invalid ipv4/ipv6}, C{invalid
dns}, C{excluded} (also counted per list in C{excluded_by}), and
C{duplicate} in Condensed modes: the same value from the same label again).
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import math
import re
import socket
import sys
from array import array
from collections.abc import Iterable, Iterator
from typing import Any, Final, Literal, cast
from urllib.parse import quote

import orjson
from attrs import Factory, define, field, frozen

from tcbridge.feed.document import FeedInfo, feedinfo_dict
from tcbridge.feed.filters import SUPPORTED_TYPES, Exclusions, ScoreSource, indicator_score
from tcbridge.feed.history import ReportHistory, report_digest
from tcbridge.feed.iocs import (
    IOC_KINDS,
    classify_ip,
    normalise_dns,
    normalise_md5,
    normalise_sha256,
)
from tcbridge.feed.validator import validate_feedinfo, validate_report
from tcbridge.threatconnect.records import Indicator

Grouping = Literal["Expanded", "Condensed", "MaxCondensed"]

DEFAULT_WEB_URL: Final = "https://app.threatconnect.com/"
_MAX_TIMESTAMP: Final = 2**53  # far in the future, and exact in every JSON reader
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_URL_JUNK: Final = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")
_SLUG_JUNK: Final = re.compile(r"[^a-z0-9]+")
_TAG_JUNK: Final = re.compile(r"[^A-Za-z0-9]+")
_MAX_SLUG: Final = 32
_MAX_TYPE_NAME: Final = 40
_MAX_TAGS: Final = 20
_MAX_TAG: Final = 32
_FIXED_WIDTH: Final[dict[str, int]] = {"md5": 16, "sha256": 32, "ipv4": 4, "ipv6": 16}
_TC_TYPE: Final[dict[str, str]] = {
    "md5": "File",
    "sha256": "File",
    "ipv4": "Address",
    "ipv6": "Address",
    "dns": "Host",
}
_LITTLE: Final = sys.byteorder == "little"
_KIND_ORDER: Final[dict[str, int]] = {kind: n for n, kind in enumerate(IOC_KINDS)}
# A packed record at build time: value ("\n" after a host name), label index
# (2 bytes), score and timestamp (8), tag set (4).
_TAIL: Final = 14


def _all_types() -> frozenset[str]:
    return SUPPORTED_TYPES


def _type_set(types: Iterable[str]) -> frozenset[str]:
    return frozenset(types)


@frozen
class FeedSettings:
    """
    How indicators become a feed.

    :ivar grouping: C{Expanded} (one report per indicator), C{Condensed} (one
        per source, IOC kind and score) or C{MaxCondensed} (one per source
        and score).
    :ivar types: ThreatConnect type names to include (C{File}, C{Address},
        C{Host}).
    :ivar score_source: C{rating} (rating x 20), C{confidence},
        C{threatAssessScore} (0-1000, divided by 10) or C{max} (the highest
        of those the indicator has); missing values score 0.
    :ivar min_rating: indicators rated below this (0-5, the raw rating) are
        left out; with a minimum above 0, so are unrated ones.
    :ivar min_score: indicators scoring below this (0-100) are left out.
    :ivar exclusions: values never put in the feed.
    :ivar max_reports: keep only this many reports (highest score, then
        newest, then smallest id).
    :ivar report_warning_threshold: warn above this many reports.
    :ivar web_url: base of the ThreatConnect web UI for report links.
    :ivar feedinfo: what Carbon Black shows about the feed.
    """

    grouping: Grouping = "Condensed"
    types: frozenset[str] = field(default=Factory(_all_types), converter=_type_set)
    score_source: ScoreSource = "rating"
    min_score: int = 20
    exclusions: Exclusions = Factory(Exclusions)
    max_reports: int | None = None
    web_url: str = ""
    feedinfo: FeedInfo = Factory(FeedInfo)
    min_rating: float | None = None
    report_warning_threshold: int = 10_000


@define
class SourceCounts:
    """
    Figures for one source label: indicators received, and IOCs it
    contributed to the published feed (a value shared with other labels
    counts for each of them).
    """

    indicators: int = 0
    iocs: int = 0


@define
class BuildStats:
    """
    What a build did, for logs, metrics and the diagnostics page.

    :ivar indicators: indicator records received.
    :ivar iocs_by_kind: IOC values in the feed, per Carbon Black kind.
    :ivar per_source: figures per source label.
    :ivar skipped: what was left out, by reason (see the module docstring).
    :ivar reports: reports in the feed.
    :ivar truncated_reports: reports dropped by C{max_reports}.
    :ivar shared_iocs: values in the feed that more than one label reported.
    :ivar excluded_by: IOC values removed, per exclusion list name.
    :ivar warnings: advice for the user, one line each.
    """

    indicators: int = 0
    iocs_by_kind: dict[str, int] = Factory(lambda: dict.fromkeys(IOC_KINDS, 0))
    per_source: dict[str, SourceCounts] = Factory(dict)
    skipped: dict[str, int] = Factory(dict)
    reports: int = 0
    truncated_reports: int = 0
    shared_iocs: int = 0
    excluded_by: dict[str, int] = Factory(dict)
    warnings: list[str] = Factory(list)


class FeedValidationError(Exception):
    """
    The built feed broke a Carbon Black rule; C{problems} lists each one.
    This means a bug in tcbridge: the builder only emits values it has
    validated.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(problems[:5]))
        self.problems = problems


class _Column:
    """
    The packed values of one (source, IOC kind), with per value C{timestamp
    << 7 | score} in C{meta} and the tag set id in C{tags} (C{None} while
    every tag set id is 0).
    """

    __slots__ = ("data", "meta", "tags")

    def __init__(self) -> None:
        self.data = bytearray()
        self.meta = array("Q")
        self.tags: array[int] | None = None


class _Group:
    """
    The values of one report-to-be of a grouped feed, sorted and unique.
    """

    __slots__ = ("count", "data", "labels", "tags", "timestamp")

    def __init__(self, labels: tuple[int, ...]) -> None:
        self.labels = labels
        self.data = bytearray()
        self.count = 0
        self.timestamp = 0
        self.tags: dict[int, int] = {}


class _Source:
    """
    Everything kept about one source label.
    """

    __slots__ = ("columns", "counts", "label", "origins", "title_name")

    def __init__(self, label: str, counts: SourceCounts) -> None:
        self.label = label
        self.title_name = _one_line(label) or "(unnamed source)"
        self.counts = counts
        self.columns: dict[str, _Column] = {}
        self.origins: set[str] = set()


def _valid_text(text: str) -> str:
    """
    C{text} with lone surrogates replaced, so that it is valid UTF-8.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _one_line(text: str) -> str:
    return _CONTROL.sub(" ", _valid_text(text)).strip()


def _slug(label: str) -> str:
    return _SLUG_JUNK.sub("_", label.lower()).strip("_")[:_MAX_SLUG].strip("_") or "source"


def _http_link(link: object) -> str:
    """
    C{link} if it is a plausible http(s) URL (no spaces or control
    characters), else C{""}.
    """
    if not isinstance(link, str) or not link.startswith(("https://", "http://")):
        return ""
    if len(link) <= 8 or _URL_JUNK.search(link):
        return ""
    return _valid_text(link)


def cb_tags(names: Iterable[object]) -> tuple[str, ...]:
    """
    Carbon Black tags from ThreatConnect tag names: only ASCII letters and
    digits kept, at most 32 characters, empty ones skipped, duplicates
    dropped (first occurrence kept).
    """
    seen: dict[str, None] = {}
    for name in names:
        if isinstance(name, str):
            tag = _TAG_JUNK.sub("", name)[:_MAX_TAG]
            if tag:
                seen.setdefault(tag, None)
    return tuple(seen)


def _source_prefixes(labels: Iterable[str]) -> dict[str, str]:
    """
    Map each label to its report id prefix, lengthening the hash part for
    labels whose short prefixes would collide.
    """
    full = {
        # sha1 names the source; nothing secret depends on it.
        label: (_slug(label), hashlib.sha1(label.encode("utf-8", "surrogatepass")).hexdigest())  # noqa: S324
        for label in labels
    }
    short: dict[str, list[str]] = {}
    for label, (slug, digest) in full.items():
        short.setdefault(f"{slug}-{digest[:8]}", []).append(label)
    prefixes: dict[str, str] = {}
    for prefix, members in short.items():
        for label in members:
            slug, digest = full[label]
            prefixes[label] = prefix if len(members) == 1 else f"{slug}-{digest}"
    return prefixes


def _unpack(kind: str, data: bytearray) -> list[str]:
    """
    The values of one group, packed sorted and unique.
    """
    raw = bytes(data)
    if kind == "dns":
        names = raw.split(b"\n")
        names.pop()
        return [name.decode("ascii") for name in names]
    width = _FIXED_WIDTH[kind]
    chunks = [raw[i : i + width] for i in range(0, len(raw), width)]
    if kind == "ipv4":
        return list(map(socket.inet_ntoa, chunks))
    if kind == "ipv6":
        return [ipaddress.IPv6Address(packed).compressed for packed in chunks]
    return [packed.hex() for packed in chunks]


def _origin(web_link: str) -> str | None:
    """
    C{https://host} from a ThreatConnect web link, or C{None}.
    """
    if not web_link.startswith(("https://", "http://")):
        return None
    end = web_link.find("/", 8)
    origin = web_link if end < 0 else web_link[:end]
    if "?" in origin or "#" in origin or _URL_JUNK.search(origin):
        return None
    return _valid_text(origin)


def _records(kind: str, column: _Column, index: int) -> list[bytes]:
    """
    One sortable record per value of a column (see C{_TAIL}).
    """
    count = len(column.meta)
    meta = column.meta
    if _LITTLE:
        meta.byteswap()
    meta_bytes = meta.tobytes()
    tags = column.tags
    if tags is not None:
        if _LITTLE:
            tags.byteswap()
        tag_bytes = tags.tobytes()
    else:
        tag_bytes = bytes(4 * count)
    dns = kind == "dns"
    value_width = 1 if dns else _FIXED_WIDTH[kind]  # 1: the newline after a name
    width = value_width + _TAIL
    packed = bytearray(width * count)
    if dns:
        packed[0::width] = b"\n" * count
    else:
        for k in range(value_width):
            packed[k::width] = column.data[k::value_width]
    packed[value_width::width] = bytes([index >> 8]) * count
    packed[value_width + 1 :: width] = bytes([index & 255]) * count
    for k in range(8):
        packed[value_width + 2 + k :: width] = meta_bytes[k::8]
    for k in range(4):
        packed[value_width + 10 + k :: width] = tag_bytes[k::4]
    raw = bytes(packed)
    del packed
    if not dns:
        return [raw[i : i + width] for i in range(0, len(raw), width)]
    names = bytes(column.data).split(b"\n")
    return [
        name + raw[i : i + width] for name, i in zip(names, range(0, len(raw), width), strict=False)
    ]


_ExpandedEntry = tuple[int, int, str, str, str, tuple[tuple[str, str], ...], tuple[str, ...]]
# (score, timestamp, type, link, description, ((kind, value), ...), tags)


class FeedBuilder:
    """
    Collects pages of indicators and builds one feed document.

    Call L{add} once per page, then L{build} or L{build_bytes} once.
    L{stats} describes the result and L{history} (given, then replaced by
    the built feed's) drives report timestamps.
    """

    def __init__(
        self, settings: FeedSettings | None = None, *, history: ReportHistory | None = None
    ) -> None:
        self.settings = settings if settings is not None else FeedSettings()
        self.stats = BuildStats()
        self.history = history if history is not None else ReportHistory()
        self._sources: dict[str, _Source] = {}
        self._expanded: dict[tuple[str, str], _ExpandedEntry] = {}
        self._built = False
        self._score_memo: dict[object, int] = {}
        self._tag_memo: dict[tuple[str, ...], int] = {}
        self._tag_ids: dict[tuple[str, ...], int] = {(): 0}
        self._tag_sets: list[tuple[str, ...]] = [()]
        exclusions = self.settings.exclusions
        self._exclusions: Exclusions | None = exclusions if exclusions else None

    # -- collecting -------------------------------------------------------

    def _source(self, label: str) -> _Source:
        source = self._sources.get(label)
        if source is None:
            counts = self.stats.per_source.get(label)
            if counts is None:
                counts = self.stats.per_source[label] = SourceCounts()
            source = self._sources[label] = _Source(label, counts)
        return source

    def _skip(self, reason: str, count: int = 1) -> None:
        skipped = self.stats.skipped
        skipped[reason] = skipped.get(reason, 0) + count

    def _tag_set(self, raw: tuple[str, ...]) -> int:
        """
        The id of the cleaned tag set of an indicator's raw tags (0: none).
        """
        tag_id = self._tag_memo.get(raw)
        if tag_id is None:
            cleaned = cb_tags(raw)[:_MAX_TAGS]
            tag_id = self._tag_ids.get(cleaned)
            if tag_id is None:
                tag_id = self._tag_ids[cleaned] = len(self._tag_sets)
                self._tag_sets.append(cleaned)
            if len(self._tag_memo) < 65536:
                self._tag_memo[raw] = tag_id
        return tag_id

    def _score(self, indicator: Indicator) -> int:
        """
        The indicator's score, memoised on the raw values it comes from.
        """
        source = self.settings.score_source
        threat: object = getattr(indicator, "threat_assess_score", None)
        key: object
        if source == "rating":
            key = indicator.rating
        elif source == "confidence":
            key = indicator.confidence
        elif source == "threatAssessScore":
            key = threat
        else:
            key = (indicator.rating, indicator.confidence, threat)
        memo = self._score_memo
        if key.__class__ is tuple:
            usable = bool not in map(type, key)
        else:
            usable = key.__class__ is not bool
        if usable:
            score = memo.get(key)
            if score is not None:
                return score
        score = indicator_score(
            indicator.rating, indicator.confidence, source, cast("int | None", threat)
        )
        if usable and len(memo) < 4096:
            memo[key] = score
        return score

    def add(self, indicators: Iterable[Indicator]) -> None:
        """
        Take in one page of indicators.  Nothing refers to the records
        afterwards, so the page can be dropped at once.
        """
        if self._built:
            raise RuntimeError("FeedBuilder.add called after build")
        settings = self.settings
        enabled = settings.types & SUPPORTED_TYPES
        min_score = settings.min_score
        min_rating = settings.min_rating if settings.min_rating else None
        expanded = settings.grouping == "Expanded"
        want_origin = not settings.web_url
        exclusions = self._exclusions
        excluded_by = self.stats.excluded_by
        sources = self._sources
        skipped = self.stats.skipped
        entries = self._expanded
        score_of = self._score
        tag_set = self._tag_set
        fromhex = bytes.fromhex
        aton = socket.inet_aton
        pton = socket.inet_pton
        inet6 = socket.AF_INET6
        count = 0
        try:
            for indicator in indicators:
                count += 1
                label = indicator.source
                source = sources.get(label)
                if source is None:
                    source = self._source(label)
                source.counts.indicators += 1
                kind = indicator.type
                if kind not in enabled:
                    if kind in SUPPORTED_TYPES:
                        reason = "type disabled"
                    else:
                        reason = f"unsupported type {_one_line(str(kind))[:_MAX_TYPE_NAME]}"
                    skipped[reason] = skipped.get(reason, 0) + 1
                    continue
                if min_rating is not None:
                    rating = indicator.rating
                    if (
                        rating.__class__ is bool
                        or not isinstance(rating, (int, float))
                        or math.isnan(rating)
                        or rating < min_rating
                    ):
                        skipped["below minimum rating"] = skipped.get("below minimum rating", 0) + 1
                        continue
                score = score_of(indicator)
                if score < min_score:
                    skipped["below minimum score"] = skipped.get("below minimum score", 0) + 1
                    continue

                values: list[tuple[str, str]] = []
                reason = ""
                if kind == "File":
                    md5 = indicator.md5
                    sha256 = indicator.sha256
                    if md5:
                        value = normalise_md5(md5)
                        if value is None:
                            skipped["invalid md5"] = skipped.get("invalid md5", 0) + 1
                        else:
                            values.append(("md5", value))
                    if sha256:
                        value = normalise_sha256(sha256)
                        if value is None:
                            skipped["invalid sha256"] = skipped.get("invalid sha256", 0) + 1
                        else:
                            values.append(("sha256", value))
                    if not md5 and not sha256:
                        sha1 = indicator.sha1
                        reason = "sha1 only (no Carbon Black type)" if sha1 else "missing value"
                elif kind == "Address":
                    ip = indicator.ip
                    if not ip:
                        reason = "missing value"
                    else:
                        classified = classify_ip(ip)
                        if classified is None:
                            reason = "invalid ipv4/ipv6"
                        else:
                            values.append(classified)
                else:
                    host = indicator.host
                    if not host:
                        reason = "missing value"
                    else:
                        value = normalise_dns(host)
                        if value is None:
                            reason = "invalid dns"
                        else:
                            values.append(("dns", value))
                if reason:
                    skipped[reason] = skipped.get(reason, 0) + 1
                if exclusions is not None and values:
                    kept = []
                    for pair in values:
                        name = exclusions.match(pair[0], pair[1])
                        if name is None:
                            kept.append(pair)
                        else:
                            skipped["excluded"] = skipped.get("excluded", 0) + 1
                            excluded_by[name] = excluded_by.get(name, 0) + 1
                    values = kept
                if not values:
                    continue

                stamp = indicator.last_modified
                timestamp = 0
                if stamp.__class__ is int and stamp > 0:
                    timestamp = stamp if stamp < _MAX_TIMESTAMP else _MAX_TIMESTAMP
                raw_tags = indicator.tags
                tags = tag_set(raw_tags) if raw_tags else 0
                if expanded:
                    self._add_expanded(
                        entries, source, indicator, kind, score, timestamp, values, tags
                    )
                    continue
                if want_origin:
                    link = indicator.web_link
                    if link:
                        end = link.find("/", 8)
                        source.origins.add(link if end < 0 else link[:end])
                columns = source.columns
                meta = timestamp << 7 | score
                for ioc_kind, value in values:
                    column = columns.get(ioc_kind)
                    if column is None:
                        column = columns[ioc_kind] = _Column()
                    if ioc_kind == "md5" or ioc_kind == "sha256":
                        column.data += fromhex(value)
                    elif ioc_kind == "ipv4":
                        column.data += aton(value)
                    elif ioc_kind == "ipv6":
                        column.data += pton(inet6, value)
                    else:
                        column.data += value.encode("ascii")
                        column.data += b"\n"
                    if tags and column.tags is None:
                        column.tags = array("I", bytes(4 * len(column.meta)))
                    column.meta.append(meta)
                    if column.tags is not None:
                        column.tags.append(tags)
        finally:
            self.stats.indicators += count

    def _add_expanded(
        self,
        entries: dict[tuple[str, str], _ExpandedEntry],
        source: _Source,
        indicator: Indicator,
        kind: str,
        score: int,
        timestamp: int,
        values: list[tuple[str, str]],
        tags: int,
    ) -> None:
        ident = indicator.id
        if not (ident.isascii() and ident.isdigit() and len(ident) <= 20):
            first = values[0]
            digest = hashlib.sha1(f"{kind}\0{first[0]}\0{first[1]}".encode("ascii"))  # noqa: S324
            ident = "h" + digest.hexdigest()[:16]
        link = _http_link(indicator.web_link)
        description = indicator.description
        description = _valid_text(description) if isinstance(description, str) else ""
        entry: _ExpandedEntry = (
            score,
            timestamp,
            kind,
            link,
            description,
            tuple(values),
            self._tag_sets[tags],
        )
        key = (source.label, ident)
        previous = entries.get(key)
        if previous is not None:
            self._skip("duplicate")
            if previous >= entry:
                return
        entries[key] = entry

    # -- building ---------------------------------------------------------

    def _base_url(self, label: str) -> str:
        """
        The ThreatConnect web UI base for a source's links, without a
        trailing slash.
        """
        if self.settings.web_url:
            return _valid_text(self.settings.web_url).rstrip("/")
        source = self._sources.get(label)
        origins = [] if source is None else [o for raw in source.origins if (o := _origin(raw))]
        return min(origins) if origins else DEFAULT_WEB_URL.rstrip("/")

    def _group_link(self, labels: tuple[str, ...], kind: str | None) -> str:
        """
        A best-effort ThreatConnect browse link for a group report: the
        first owner, and the type unless the report mixes types.
        """
        owner = labels[0]
        owner_text = quote(_valid_text(owner), safe="")
        link = f"{self._base_url(owner)}/browse/index.xhtml#/?owner={owner_text}"
        if kind is not None:
            link += f"&type={_TC_TYPE[kind]}"
        return link

    def _condense(self) -> tuple[list[str], dict[tuple[str, str, int], _Group]]:
        """
        Turn every source's columns into groups keyed by (group label, IOC
        kind, score), each value in exactly one group.
        """
        labels = sorted(self._sources)
        joined: dict[tuple[int, ...], str] = {}
        groups: dict[tuple[str, str, int], _Group] = {}
        duplicates = 0
        for kind in IOC_KINDS:
            records: list[bytes] = []
            for index, label in enumerate(labels):
                column = self._sources[label].columns.pop(kind, None)
                if column is not None:
                    records += _records(kind, column, index)
                    del column
            if not records:
                continue
            records.sort()
            current = b""
            owners: list[int] = []
            best = 0
            newest = 0
            tag_ids: list[int] = []
            from_bytes = int.from_bytes
            for record in records:
                value = record[:-_TAIL]
                owner = record[-14] << 8 | record[-13]
                meta = from_bytes(record[-12:-4], "big")
                tag_id = from_bytes(record[-4:], "big")
                if value == current:
                    if owner == owners[-1]:
                        duplicates += 1
                    else:
                        owners.append(owner)
                    score = meta & 127
                    if score > best:
                        best = score
                    if meta >> 7 > newest:
                        newest = meta >> 7
                    if tag_id and tag_id not in tag_ids:
                        tag_ids.append(tag_id)
                    continue
                if current:
                    self._place(
                        groups, labels, joined, kind, current, owners, best, newest, tag_ids
                    )
                current = value
                owners = [owner]
                best = meta & 127
                newest = meta >> 7
                tag_ids = [tag_id] if tag_id else []
            if current:
                self._place(groups, labels, joined, kind, current, owners, best, newest, tag_ids)
            del records
        if duplicates:
            self._skip("duplicate", duplicates)
        return labels, groups

    @staticmethod
    def _place(
        groups: dict[tuple[str, str, int], _Group],
        labels: list[str],
        joined: dict[tuple[int, ...], str],
        kind: str,
        value: bytes,
        owners: list[int],
        score: int,
        timestamp: int,
        tag_ids: list[int],
    ) -> None:
        if len(owners) == 1:
            label = labels[owners[0]]
            key_owners: tuple[int, ...] = (owners[0],)
        else:
            key_owners = tuple(owners)
            label = joined.get(key_owners) or joined.setdefault(
                key_owners, " + ".join(labels[i] for i in key_owners)
            )
        key = (label, kind, score)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(key_owners)
        group.data += value
        group.count += 1
        if timestamp > group.timestamp:
            group.timestamp = timestamp
        if tag_ids:
            tags = group.tags
            for tag_id in tag_ids:
                tags[tag_id] = tags.get(tag_id, 0) + 1

    def _plan(self) -> list[tuple[str, int, int, Any]]:
        """
        Every report as (id, score, timestamp, what it is made from), sorted
        by id, after C{max_reports}.
        """
        plan: list[tuple[str, int, int, Any]] = []
        grouping = self.settings.grouping
        if grouping == "Expanded":
            plan = self._plan_expanded()
        else:
            labels, groups = self._condense()
            prefixes = _source_prefixes({key[0] for key in groups})
            if grouping == "Condensed":
                for key, group in groups.items():
                    label, kind, score = key
                    rid = f"{prefixes[label]}-{kind}-{score}"
                    names = tuple(labels[i] for i in group.labels)
                    plan.append((rid, score, group.timestamp, (names, score, [(kind, group)])))
            else:
                merged: dict[tuple[str, int], list[tuple[str, _Group]]] = {}
                for (label, kind, score), group in groups.items():
                    merged.setdefault((label, score), []).append((kind, group))
                for (label, score), members in merged.items():
                    members.sort(key=lambda item: _KIND_ORDER[item[0]])
                    rid = f"{prefixes[label]}-all-{score}"
                    names = tuple(labels[i] for i in members[0][1].labels)
                    newest = max(group.timestamp for _, group in members)
                    plan.append((rid, score, newest, (names, score, members)))
        limit = self.settings.max_reports
        if limit is not None and len(plan) > max(limit, 0):
            plan.sort(key=lambda item: (-item[1], -item[2], item[0]))
            self.stats.truncated_reports = len(plan) - max(limit, 0)
            del plan[max(limit, 0) :]
        plan.sort(key=lambda item: item[0])
        self._warn(len(plan))
        return plan

    def _warn(self, reports: int) -> None:
        threshold = self.settings.report_warning_threshold
        if reports <= threshold:
            return
        if self.settings.grouping == "Expanded":
            advice = "set ioc_grouping = Condensed"
        elif self.settings.grouping == "Condensed":
            advice = "set max_reports, or ioc_grouping = MaxCondensed"
        else:
            advice = "set max_reports"
        self.stats.warnings.append(
            f"{reports} reports: Carbon Black advises fewer than {threshold:,} per feed; {advice}"
        )

    def _plan_expanded(self) -> list[tuple[str, int, int, Any]]:
        """
        Merge Expanded entries with identical IOC sets, then give each value
        shared by different sets to one report only.
        """
        entries = self._expanded
        prefixes = _source_prefixes({key[0] for key in entries})
        by_set: dict[tuple[tuple[str, str], ...], Any] = {}
        for key, entry in entries.items():
            values = entry[5]
            found = by_set.get(values)
            if found is None:
                by_set[values] = key
            elif isinstance(found, list):
                found.append(key)
            else:
                by_set[values] = [found, key]
        candidates: list[tuple[int, int, str, Any, tuple[tuple[str, str], ...]]] = []
        duplicates = 0
        for values, found in by_set.items():
            members = sorted(found) if isinstance(found, list) else [found]
            if len(members) > 1:
                seen_labels = {label for label, _ in members}
                duplicates += len(members) - len(seen_labels)
            score = max(entries[m][0] for m in members)
            newest = max(entries[m][1] for m in members)
            first = members[0]
            rid = f"{prefixes[first[0]]}-{first[1]}"
            candidates.append((-score, -newest, rid, members, values))
        by_set.clear()
        candidates.sort(key=lambda item: (item[0], item[1], item[2]))
        claimed: set[tuple[str, str]] = set()
        plan: list[tuple[str, int, int, Any]] = []
        for neg_score, neg_newest, rid, members, values in candidates:
            if any(pair in claimed for pair in values):
                values = tuple(pair for pair in values if pair not in claimed)
                if not values:
                    duplicates += len(members)
                    continue
            claimed.update(values)
            plan.append((rid, -neg_score, -neg_newest, (members, values)))
        if duplicates:
            self._skip("duplicate", duplicates)
        return plan

    def _count(self, labels: Iterable[str], iocs: dict[str, list[str]]) -> None:
        by_kind = self.stats.iocs_by_kind
        total = 0
        for kind, values in iocs.items():
            by_kind[kind] = by_kind.get(kind, 0) + len(values)
            total += len(values)
        names = list(labels)
        for label in names:
            self._source(label).counts.iocs += total
        if len(names) > 1:
            self.stats.shared_iocs += total

    def _title_name(self, labels: Iterable[str]) -> str:
        return " + ".join(self._sources[label].title_name for label in labels)

    def _make_expanded(
        self, report_id: str, timestamp: int, made_of: tuple[list[tuple[str, str]], Any]
    ) -> dict[str, Any]:
        """
        The report of one ThreatConnect indicator (or of several with the
        same IOCs).
        """
        members, values = made_of
        first = self._expanded[members[0]]
        score = max(self._expanded[m][0] for m in members)
        labels = sorted({label for label, _ in members})
        tags: dict[str, None] = {}
        for member in members:
            for tag in self._expanded[member][6]:
                tags.setdefault(tag, None)
        kind, link, description = first[2], first[3], first[4]
        iocs: dict[str, list[str]] = {}
        for ioc_kind, value in values:
            iocs.setdefault(ioc_kind, []).append(value)
        shown = values[0][1]
        if kind == "File":
            shown = shown[:8] + "..."
        report: dict[str, Any] = {
            "id": report_id,
            "timestamp": timestamp,
            "link": link or _http_link(self.settings.web_url) or DEFAULT_WEB_URL,
            "title": f"ThreatConnect {self._title_name(labels)}: {kind} {shown} (score {score})",
            "score": score,
            "iocs": iocs,
        }
        if description:
            report["description"] = description
        if tags:
            report["tags"] = list(tags)[:_MAX_TAGS]
        self._count(labels, iocs)
        return report

    def _make_group(
        self,
        report_id: str,
        timestamp: int,
        made_of: tuple[tuple[str, ...], int, list[tuple[str, _Group]]],
    ) -> dict[str, Any]:
        """
        The report of one Condensed or MaxCondensed group, releasing its
        packed data.
        """
        labels, score, members = made_of
        iocs: dict[str, list[str]] = {}
        tag_counts: dict[str, int] = {}
        tag_sets = self._tag_sets
        for kind, group in members:
            iocs[kind] = _unpack(kind, group.data)
            group.data = bytearray()
            for tag_id, count in group.tags.items():
                for tag in tag_sets[tag_id]:
                    tag_counts[tag] = tag_counts.get(tag, 0) + count
        condensed = self.settings.grouping == "Condensed"
        single: str | None = members[0][0] if condensed else None
        what = "all" if single is None else f"{_TC_TYPE[single]} {single}"
        self._count(labels, iocs)
        report: dict[str, Any] = {
            "id": report_id,
            "timestamp": timestamp,
            "link": self._group_link(labels, single),
            "title": f"ThreatConnect {self._title_name(labels)}: {what} IOCs, score {score}",
            "score": score,
            "iocs": iocs,
        }
        if tag_counts:
            ranked = sorted(tag_counts.items(), key=lambda item: (-item[1], item[0]))
            report["tags"] = [tag for tag, _ in ranked[:_MAX_TAGS]]
        return report

    def _stamp(self, report: dict[str, Any], new_history: ReportHistory) -> None:
        """
        Give a report its timestamp from the history (see the module
        docstring) and record it in the new history.
        """
        digest = report_digest(report)
        previous = self.history.get(report["id"])
        timestamp: int = report["timestamp"]
        if previous is not None:
            if previous[1] == digest:
                timestamp = previous[0]
            elif timestamp <= previous[0]:
                timestamp = previous[0] + 1
        report["timestamp"] = timestamp
        new_history.set(report["id"], timestamp, digest)

    def _reports(self) -> Iterator[dict[str, Any]]:
        """
        Make the reports one at a time, in id order, releasing the stored
        data of each as it goes.
        """
        if self._built:
            raise RuntimeError("FeedBuilder can build only once")
        self._built = True
        plan = self._plan()
        expanded = self.settings.grouping == "Expanded"
        new_history = ReportHistory()
        plan.reverse()  # pop from the end, so the plan shrinks as reports are made
        while plan:
            report_id, _, timestamp, what = plan.pop()
            if expanded:
                report = self._make_expanded(report_id, timestamp, what)
            else:
                report = self._make_group(report_id, timestamp, what)
            self._stamp(report, new_history)
            self.stats.reports += 1
            yield report
        self.history = new_history
        self._release()

    def _release(self) -> None:
        self._expanded.clear()
        for source in self._sources.values():
            source.columns.clear()

    def build(self) -> dict[str, Any]:
        """
        Return the complete feed document: C{{"feedinfo": ..., "reports":
        [...]}}.  Can be called once; it releases the collected data.
        """
        reports = list(self._reports())
        return {"feedinfo": feedinfo_dict(self.settings.feedinfo), "reports": reports}

    def build_bytes(self, validate: bool = True) -> bytes:
        """
        Return C{serialize.dumps(self.build())} without ever holding every
        report in memory: each report is made, checked (with C{validate})
        and serialised in turn.  Can be called once instead of L{build}.

        @raise FeedValidationError: if C{validate} and a report or the
            feedinfo breaks a Carbon Black rule.
        """
        feedinfo = feedinfo_dict(self.settings.feedinfo)
        problems = validate_feedinfo(feedinfo) if validate else []
        out = io.BytesIO()
        out.write(b'{"feedinfo":')
        out.write(orjson.dumps(feedinfo))
        out.write(b',"reports":[')
        first = True
        for index, report in enumerate(self._reports()):
            if validate:
                problems.extend(validate_report(report, index))
            if not first:
                out.write(b",")
            first = False
            out.write(orjson.dumps(report))
            del report
        out.write(b"]}")
        if problems:
            raise FeedValidationError(problems)
        return out.getvalue()
