# -*- test-case-name: tests.test_feed_builder -*-
"""
Group ThreatConnect indicators into Carbon Black reports.

L{FeedBuilder} is fed pages of L{Indicator} records with L{FeedBuilder.add}
and keeps only compact per-group data, never the records themselves:

 - Condensed and MaxCondensed keep, per (source, IOC kind, score), the
   values packed into one C{bytearray} (16 bytes per MD5, 32 per SHA-256,
   4 per IPv4, 16 per IPv6, the name and a newline per host name) plus the
   newest C{lastModified}.  Duplicates are removed when the feed is built.
 - Expanded keeps one small tuple per ThreatConnect indicator.

L{FeedBuilder.build} then returns the whole document, and
L{FeedBuilder.build_bytes} its serialised form (byte-identical to
C{dumps(build())}) while holding only one report's strings at a time.  Both
give the same output for the same indicators whatever the page order:
reports are sorted by id, IOC values are sorted (hashes and host names as
text, addresses numerically), keys come in a fixed order, and a report's
timestamp is the newest C{lastModified} of its IOCs, never the build time.

Report ids are stable across runs: C{<slug>-<8 hex of sha1(source)>-...},
for example C{common_community-1a2b3c4d-md5-80} (Condensed),
C{common_community-1a2b3c4d-all-80} (MaxCondensed) and
C{common_community-1a2b3c4d-12345} (Expanded, from the ThreatConnect
indicator id; C{h} and 16 hex digits of a value hash when the id is missing).
If two sources ever share a slug and 8 hex digits, both use all 40.

C{BuildStats.skipped} counts indicators for indicator-level reasons
(C{unsupported type <T>}, C{type disabled}, C{below minimum score},
C{sha1 only (no Carbon Black type)}, C{missing value}, and C{duplicate} in
Expanded mode) and IOC values for value-level reasons (C{invalid md5},
C{invalid sha256}, C{invalid ipv4/ipv6}, C{invalid dns}, C{excluded}, and
C{duplicate} in Condensed modes).
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import re
import socket
from collections.abc import Iterable, Iterator
from typing import Any, Final, Literal

import orjson
from attrs import Factory, define, field, frozen

from tcbridge.feed.document import FeedInfo, feedinfo_dict
from tcbridge.feed.filters import SUPPORTED_TYPES, Exclusions, indicator_score
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
_SLUG_JUNK: Final = re.compile(r"[^a-z0-9]+")
_MAX_SLUG: Final = 32
_MAX_TYPE_NAME: Final = 40
_FIXED_WIDTH: Final[dict[str, int]] = {"md5": 16, "sha256": 32, "ipv4": 4, "ipv6": 16}


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
    :ivar score_source: C{rating} (rating x 20) or C{confidence}.
    :ivar min_score: indicators scoring below this are left out.
    :ivar exclusions: values never put in the feed.
    :ivar max_reports: keep only the first N reports (in id order).
    :ivar web_url: base of the ThreatConnect web UI for group report links.
    :ivar feedinfo: what Carbon Black shows about the feed.
    """

    grouping: Grouping = "Condensed"
    types: frozenset[str] = field(default=Factory(_all_types), converter=_type_set)
    score_source: Literal["rating", "confidence"] = "rating"
    min_score: int = 20
    exclusions: Exclusions = Factory(Exclusions)
    max_reports: int | None = None
    web_url: str = ""
    feedinfo: FeedInfo = Factory(FeedInfo)


@define
class SourceCounts:
    """
    Figures for one source: indicators received and IOCs in the feed.
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
    """

    indicators: int = 0
    iocs_by_kind: dict[str, int] = Factory(lambda: dict.fromkeys(IOC_KINDS, 0))
    per_source: dict[str, SourceCounts] = Factory(dict)
    skipped: dict[str, int] = Factory(dict)
    reports: int = 0
    truncated_reports: int = 0


class FeedValidationError(Exception):
    """
    The built feed broke a Carbon Black rule; C{problems} lists each one.
    This means a bug in tcbridge: the builder only emits values it has
    validated.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(problems[:5]))
        self.problems = problems


class _Group:
    """
    The packed values of one (source, kind, score) group.
    """

    __slots__ = ("count", "data", "timestamp")

    def __init__(self) -> None:
        self.data = bytearray()
        self.count = 0
        self.timestamp = 0


class _Source:
    """
    Everything kept about one source label.
    """

    __slots__ = ("counts", "groups", "label", "origins", "title_name")

    def __init__(self, label: str, counts: SourceCounts) -> None:
        self.label = label
        self.title_name = _one_line(label) or "(unnamed source)"
        self.counts = counts
        self.groups: dict[tuple[str, int], _Group] = {}
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


def _source_prefixes(labels: Iterable[str]) -> dict[str, str]:
    """
    Map each source label to its report id prefix, lengthening the hash
    part for labels whose short prefixes would collide.
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
    The sorted, de-duplicated values of one group.
    """
    raw = bytes(data)
    if kind == "dns":
        names = set(raw.split(b"\n"))
        names.discard(b"")
        return [name.decode("ascii") for name in sorted(names)]
    width = _FIXED_WIDTH[kind]
    unique = sorted({raw[i : i + width] for i in range(0, len(raw), width)})
    if kind == "ipv4":
        ntoa = socket.inet_ntoa
        return [ntoa(packed) for packed in unique]
    if kind == "ipv6":
        return [ipaddress.IPv6Address(packed).compressed for packed in unique]
    return [packed.hex() for packed in unique]


def _origin(web_link: str) -> str | None:
    """
    C{https://host} from a ThreatConnect web link, or C{None}.
    """
    if not web_link.startswith(("https://", "http://")):
        return None
    end = web_link.find("/", 8)
    origin = web_link if end < 0 else web_link[:end]
    if "?" in origin or "#" in origin or _CONTROL.search(origin):
        return None
    return _valid_text(origin)


_ExpandedEntry = tuple[int, int, str, str, str, tuple[tuple[str, str], ...]]
# (score, timestamp, type, link, description, ((kind, value), ...))


class FeedBuilder:
    """
    Collects pages of indicators and builds one feed document.

    Call L{add} once per page, then L{build} or L{build_bytes} once.
    L{stats} describes the result.
    """

    def __init__(self, settings: FeedSettings | None = None) -> None:
        self.settings = settings if settings is not None else FeedSettings()
        self.stats = BuildStats()
        self._sources: dict[str, _Source] = {}
        self._expanded: dict[tuple[str, str], _ExpandedEntry] = {}
        self._built = False
        self._score_memo: dict[object, int] = {}
        exclusions = self.settings.exclusions
        self._excluded: dict[str, frozenset[str]] | None = (
            {kind: exclusions.set_for(kind) for kind in IOC_KINDS} if exclusions else None
        )

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

    def add(self, indicators: Iterable[Indicator]) -> None:
        """
        Take in one page of indicators.  Nothing refers to the records
        afterwards, so the page can be dropped at once.
        """
        if self._built:
            raise RuntimeError("FeedBuilder.add called after build")
        settings = self.settings
        enabled = settings.types & SUPPORTED_TYPES
        use_confidence = settings.score_source == "confidence"
        min_score = settings.min_score
        expanded = settings.grouping == "Expanded"
        want_origin = not expanded and not settings.web_url
        excluded = self._excluded
        sources = self._sources
        memo = self._score_memo
        skipped = self.stats.skipped
        entries = self._expanded
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
                raw = indicator.confidence if use_confidence else indicator.rating
                score = memo.get(raw) if raw.__class__ is not bool else 0
                if score is None:
                    score = indicator_score(
                        indicator.rating, indicator.confidence, settings.score_source
                    )
                    if len(memo) < 4096:
                        memo[raw] = score
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
                if excluded is not None and values:
                    kept = [pair for pair in values if pair[1] not in excluded[pair[0]]]
                    if len(kept) != len(values):
                        dropped = len(values) - len(kept)
                        skipped["excluded"] = skipped.get("excluded", 0) + dropped
                    values = kept
                if not values:
                    continue

                stamp = indicator.last_modified
                timestamp = 0
                if stamp.__class__ is int and stamp > 0:
                    timestamp = stamp if stamp < _MAX_TIMESTAMP else _MAX_TIMESTAMP
                if expanded:
                    self._add_expanded(entries, source, indicator, kind, score, timestamp, values)
                    continue
                if want_origin:
                    link = indicator.web_link
                    if link:
                        end = link.find("/", 8)
                        source.origins.add(link if end < 0 else link[:end])
                groups = source.groups
                for ioc_kind, value in values:
                    group = groups.get((ioc_kind, score))
                    if group is None:
                        group = groups[(ioc_kind, score)] = _Group()
                    if ioc_kind == "md5" or ioc_kind == "sha256":
                        group.data += fromhex(value)
                    elif ioc_kind == "ipv4":
                        group.data += aton(value)
                    elif ioc_kind == "ipv6":
                        group.data += pton(inet6, value)
                    else:
                        group.data += value.encode("ascii")
                        group.data += b"\n"
                    group.count += 1
                    if timestamp > group.timestamp:
                        group.timestamp = timestamp
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
    ) -> None:
        ident = indicator.id
        if not (ident.isascii() and ident.isdigit() and len(ident) <= 20):
            first = values[0]
            digest = hashlib.sha1(f"{kind}\0{first[0]}\0{first[1]}".encode("ascii"))  # noqa: S324
            ident = "h" + digest.hexdigest()[:16]
        link = indicator.web_link
        link = _valid_text(link) if isinstance(link, str) and link else ""
        description = indicator.description
        description = _valid_text(description) if isinstance(description, str) else ""
        entry: _ExpandedEntry = (score, timestamp, kind, link, description, tuple(values))
        key = (source.label, ident)
        previous = entries.get(key)
        if previous is not None:
            self._skip("duplicate")
            if previous >= entry:
                return
        entries[key] = entry

    # -- building ---------------------------------------------------------

    def _group_link(self, source: _Source) -> str:
        if self.settings.web_url:
            return self.settings.web_url
        origins = [origin for raw in source.origins if (origin := _origin(raw)) is not None]
        if origins:
            return min(origins) + "/"
        return DEFAULT_WEB_URL

    def _count(self, source: _Source, iocs: dict[str, list[str]]) -> None:
        by_kind = self.stats.iocs_by_kind
        for kind, values in iocs.items():
            by_kind[kind] = by_kind.get(kind, 0) + len(values)
            source.counts.iocs += len(values)

    def _plan(self) -> list[tuple[str, Any]]:
        """
        Every report as (id, what it is made from), sorted by id: the
        Expanded entry key, or (source, score, IOC kinds) for group reports.
        """
        prefixes = _source_prefixes(self._sources)
        plan: list[tuple[str, Any]] = []
        grouping = self.settings.grouping
        if grouping == "Expanded":
            plan = [(f"{prefixes[key[0]]}-{key[1]}", key) for key in self._expanded]
        elif grouping == "Condensed":
            for source in self._sources.values():
                prefix = prefixes[source.label]
                for kind, score in source.groups:
                    plan.append((f"{prefix}-{kind}-{score}", (source, score, (kind,))))
        else:
            for source in self._sources.values():
                prefix = prefixes[source.label]
                for score in {score for _, score in source.groups}:
                    plan.append((f"{prefix}-all-{score}", (source, score, IOC_KINDS)))
        plan.sort(key=lambda item: item[0])
        return plan

    def _make_expanded(self, report_id: str, key: tuple[str, str]) -> dict[str, Any]:
        """
        The report of one ThreatConnect indicator.
        """
        score, timestamp, kind, link, description, values = self._expanded.pop(key)
        source = self._sources[key[0]]
        iocs: dict[str, list[str]] = {}
        for ioc_kind, value in values:
            iocs.setdefault(ioc_kind, []).append(value)
        first = values[0][1]
        shown = first[:8] + "..." if kind == "File" else first
        report: dict[str, Any] = {
            "id": report_id,
            "timestamp": timestamp,
            "link": link or self.settings.web_url or DEFAULT_WEB_URL,
            "title": f"ThreatConnect {source.title_name}: {kind} {shown} (score {score})",
            "score": score,
            "iocs": iocs,
        }
        if description:
            report["description"] = description
        self._count(source, iocs)
        return report

    def _make_group(
        self, report_id: str, source: _Source, score: int, kinds: tuple[str, ...]
    ) -> dict[str, Any] | None:
        """
        The report of one Condensed or MaxCondensed group, releasing its
        packed data.
        """
        iocs: dict[str, list[str]] = {}
        timestamp = 0
        for kind in kinds:
            group = source.groups.pop((kind, score), None)
            if group is None:
                continue
            values = _unpack(kind, group.data)
            if group.count > len(values):
                self._skip("duplicate", group.count - len(values))
            iocs[kind] = values
            timestamp = max(timestamp, group.timestamp)
        if not iocs:
            return None
        what = kinds[0] if len(kinds) == 1 else "all"
        self._count(source, iocs)
        return {
            "id": report_id,
            "timestamp": timestamp,
            "link": self._group_link(source),
            "title": f"ThreatConnect {source.title_name}: {what} IOCs, score {score}",
            "score": score,
            "iocs": iocs,
        }

    def _reports(self) -> Iterator[dict[str, Any]]:
        """
        Make the reports one at a time, in id order, releasing the stored
        data of each as it goes.
        """
        if self._built:
            raise RuntimeError("FeedBuilder can build only once")
        self._built = True
        plan = self._plan()
        limit = self.settings.max_reports
        if limit is not None and len(plan) > limit:
            self.stats.truncated_reports = len(plan) - max(limit, 0)
            del plan[max(limit, 0) :]
        expanded = self.settings.grouping == "Expanded"
        plan.reverse()  # pop from the end, so the plan shrinks as reports are made
        while plan:
            report_id, what = plan.pop()
            if expanded:
                report: dict[str, Any] | None = self._make_expanded(report_id, what)
            else:
                report = self._make_group(report_id, *what)
            if report is None:
                continue
            self.stats.reports += 1
            yield report
        self._sources_release()

    def _sources_release(self) -> None:
        self._expanded.clear()
        for source in self._sources.values():
            source.groups.clear()

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
