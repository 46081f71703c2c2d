# -*- test-case-name: tests.unit.test_explain -*-
"""
Why is this IOC (not) in my feed?

L{explain} answers for one value (a hash, an address or a host name) from
what the last sync saw (L{tcbridge.seen}) and the published feed, without
asking ThreatConnect: whether the value is in the feed, in which report
and at what score, which owners reported it (their ThreatConnect ids,
ratings and links); or exactly why not.  The indicators that hold the
value are put through the feed's own rules (the real
L{tcbridge.feed.collect.Collector} with the configured settings), so the
reasons are the ones the sync applied: below the minimum rating or score
(with the numbers), left out by an exclusion rule (file:line), invalid for
Carbon Black, reserved, type disabled; then cut by C{max_reports}, or in a
result the shrink guard held back.  Both files are searched as bytes (a
memory map): well under a second at a million indicators.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from attrs import frozen

from tcbridge.config import ExclusionFile
from tcbridge.feed.collect import AGED_OUT, Collector
from tcbridge.feed.filters import Exclusions, indicator_score, parse_exclusion_file
from tcbridge.feed.iocs import normalise_dns
from tcbridge.feed.settings import BuildStats, FeedSettings
from tcbridge.seen import search_key
from tcbridge.seen import seen_rows as rows_seen
from tcbridge.threatconnect.records import Indicator, IndicatorBatch

_HEX = re.compile(r"[0-9a-fA-F]+").fullmatch
#: At most this many reporting indicators are listed.
MAX_ROWS = 50
#: Why an indicator ThreatConnect marks inactive is not in the feed.
INACTIVE = "marked inactive in ThreatConnect, so left out"


@frozen
class Reporter:
    """
    One indicator that holds the value, and what the feed's rules made of
    it (C{None}: accepted).
    """

    owner: str
    type: str
    id: str
    rating: float | None
    confidence: int | None
    score: int
    link: str
    left_out: str | None


@frozen
class Explanation:
    """
    The answer for one value.

    :ivar value: the value as Carbon Black would have it.
    :ivar kind: its Carbon Black type (C{md5}...), or what it is not.
    :ivar in_feed: the report (id, score, title) holding it, if any.
    :ivar verdict: one sentence.
    :ivar reporters: the indicators of the last sync that hold it.
    """

    value: str
    kind: str
    in_feed: tuple[str, int, str] | None
    verdict: str
    reporters: tuple[Reporter, ...] = ()

    def lines(self) -> list[str]:
        """
        The answer as lines of text (the console command prints them).
        """
        out = [f"{self.value} ({self.kind}): {self.verdict}"]
        for r in self.reporters:
            rating = "unrated" if r.rating is None else f"rating {r.rating:g}"
            confidence = "" if r.confidence is None else f", confidence {r.confidence}"
            why = "" if r.left_out is None else f": {r.left_out}"
            out.append(
                f"  {r.owner}: {r.type} {r.id or '(no id)'}, {rating}{confidence}, "
                f"score {r.score}{why}" + (f" <{r.link}>" if r.link else "")
            )
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "kind": self.kind,
            "in_feed": None
            if self.in_feed is None
            else dict(zip(("report", "score", "title"), self.in_feed, strict=True)),
            "verdict": self.verdict,
            "reporters": [
                {
                    "owner": r.owner,
                    "type": r.type,
                    "id": r.id,
                    "rating": r.rating,
                    "confidence": r.confidence,
                    "score": r.score,
                    "link": r.link,
                    "left_out": r.left_out,
                }
                for r in self.reporters
            ],
        }


def canonical(value: str) -> tuple[str, str]:
    """
    The value as the feed would hold it, and its Carbon Black type (or
    C{"sha1"}, or C{"invalid"} with the value as given).
    """
    text = value.strip()
    if _HEX(text) and len(text) in (32, 40, 64):
        return text.lower(), {32: "md5", 40: "sha1", 64: "sha256"}[len(text)]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return address.compressed, "ipv4" if address.version == 4 else "ipv6"
    name = normalise_dns(text)
    return (name, "dns") if name is not None else (text, "invalid")


def _report_at(body: bytes, at: int) -> tuple[str, int, str] | None:
    """
    The (id, score, title) of the report whose text holds position C{at}.
    """
    start = body.rfind(b'"id"', 0, at)
    brace = body.rfind(b"{", 0, start)
    if start < 0 or brace < 0:
        return None
    following = body.find(b'"id"', at)
    end = body.rfind(b"{", at, following) if following >= 0 else len(body)
    text = body[brace:end].decode("utf-8", "replace")
    try:
        report, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    if not isinstance(report, dict) or "id" not in report:
        return None
    return str(report["id"]), int(report.get("score", 0)), str(report.get("title", ""))


def find_in_feed(body: bytes, value: str, kind: str) -> tuple[str, int, str] | None:
    """
    The report of the feed C{body} that lists C{value} under C{kind}.
    """
    needle = orjson.dumps(value)
    at = body.find(needle)
    while at >= 0:
        report = _report_at(body, at)
        if report is not None:
            return report
        at = body.find(needle, at + 1)
    return None


def seen_rows(path: str, value: str) -> Iterator[list[Any]]:
    """
    The indicators of the last sync's file (L{tcbridge.seen}), as the
    deltas since changed it, that hold C{value}.
    """
    key = search_key(value)
    if key is None:
        return
    yield from rows_seen(path, key, MAX_ROWS)


#: The Indicator fields of a seen row's first columns, in order (see
#: L{tcbridge.seen.rows_with}).
_ROW_FIELDS = (
    "type",
    "source",
    "owner",
    "id",
    "rating",
    "confidence",
    "threat_assess_score",
    "web_link",
    "last_modified",
)
_VALUE_FIELDS = ("md5", "sha1", "sha256", "ip", "host")


def _indicator(row: list[Any]) -> Indicator:
    """
    The indicator a row of what the last sync saw describes.
    """
    values = {name: v for name, v in row[len(_ROW_FIELDS)].items() if name in _VALUE_FIELDS}
    return Indicator(**dict(zip(_ROW_FIELDS, row, strict=False)), **values)


def _day(seconds: float | None) -> str:
    """
    A date, as C{2026-12-02} (UTC).
    """
    if seconds is None:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def _rule(exclusions: Sequence[ExclusionFile], name: str, kind: str, value: str) -> str:
    """
    The exclusion rule, as C{file:line: rule}, of list C{name} that
    matches C{value}.
    """
    for excluded in exclusions:
        if excluded.option != name:
            continue
        for number, line in enumerate(excluded.lines, 1):
            parsed, _ = parse_exclusion_file(excluded.kind, name, excluded.path, (line,))
            if Exclusions.of([parsed]).match(kind, value) is not None:
                return f"{excluded.path}:{number}: {line.strip()}"
        return f"{name} ({excluded.path})"
    return name


def _judge(
    indicator: Indicator,
    settings: FeedSettings,
    exclusions: Sequence[ExclusionFile],
    value: str,
    kind: str,
) -> tuple[int, str | None]:
    """
    The indicator's score, and why the feed's rules leave C{value} out
    (C{None}: they keep it).
    """
    score = indicator_score(
        indicator.rating,
        indicator.confidence,
        settings.score_source,
        indicator.threat_assess_score,
    )
    stats = BuildStats()
    collector = Collector(settings, stats)
    for batch in IndicatorBatch.of([indicator]):
        collector.add(batch)
    if not stats.skipped:
        return score, None
    reason = next(iter(stats.skipped))
    if reason == "below minimum rating":
        minimum = settings.min_rating
        rated = "unrated" if indicator.rating is None else f"rated {indicator.rating:g}"
        return score, f"below the minimum rating ({rated}; ioc_min_rating is {minimum:g})"
    if reason == "below minimum score":
        return score, (
            f"below the minimum score (score {score} from {settings.score_source}; "
            f"ioc_min_score is {settings.min_score})"
        )
    if reason == "excluded":
        name = next(iter(stats.excluded_by), "an exclusion list")
        return score, f"left out by the exclusion rule {_rule(exclusions, name, kind, value)}"
    if reason.startswith("invalid") or reason in ("missing value",):
        return score, f"not a valid Carbon Black value ({reason})"
    if reason == "sha1 only (no Carbon Black type)":
        return score, "only a SHA-1, which Carbon Black feeds cannot hold"
    if reason == AGED_OUT:
        return score, (
            f"aged out: last modified {_day(indicator.last_modified)}, before "
            f"{_day(settings.modified_after)} (max_age_days before the last sync)"
        )
    if reason == "type disabled":
        return score, f"{indicator.type} indicators are turned off (ioc_types)"
    if reason in ("reserved address", "reserved name"):
        return score, f"a {reason}, never a meaningful IOC (exclude_reserved)"
    if reason == "private or documentation address":
        return score, f"a {reason} (exclude_private)"
    return score, reason


def explain(
    value: str,
    *,
    feed: bytes,
    seen_path: str | None,
    settings: FeedSettings,
    exclusions: Sequence[ExclusionFile] = (),
    held_back: str | None = None,
) -> Explanation:
    """
    Explain one value (see the module docstring).

    :param feed: the published feed's bytes.
    :param seen_path: the last sync's file (L{tcbridge.seen}), if any.
    :param held_back: why the last sync's result was held back, if it was.
    """
    text, kind = canonical(value)
    report = find_in_feed(feed, text, kind) if kind not in ("invalid", "sha1") else None
    reporters = []
    for row in seen_rows(seen_path, text) if seen_path else ():
        indicator = _indicator(row)
        score, why = _judge(indicator, settings, exclusions, text, kind)
        if row[-1]:
            why = INACTIVE
        reporters.append(
            Reporter(
                indicator.owner or indicator.source,
                indicator.type,
                indicator.id,
                indicator.rating,
                indicator.confidence,
                score,
                indicator.web_link,
                why,
            )
        )
    if report is not None:
        verdict = f"in the published feed, in report {report[0]} at score {report[1]}"
    elif kind == "invalid":
        verdict = "not a hash, an address or a host name Carbon Black accepts"
    elif kind == "sha1":
        verdict = "a SHA-1, which Carbon Black feeds cannot hold (only md5 and sha256)"
    elif not reporters:
        verdict = (
            "not in the published feed: ThreatConnect did not send it at the last sync "
            "(no configured owner has it, or it is inactive there)"
        )
    elif any(r.left_out is None for r in reporters):
        if held_back:
            verdict = (
                "not in the published feed: the last sync kept it, but its result was "
                f"held back by the shrink guard ({held_back})"
            )
        elif settings.max_reports is not None:
            verdict = (
                f"not in the published feed: its report was cut by max_reports "
                f"({settings.max_reports} reports kept, highest scores first)"
            )
        else:
            verdict = "not in the published feed yet: the last sync kept it"
    else:
        verdict = "not in the published feed: " + "; ".join(
            sorted({r.left_out for r in reporters if r.left_out})
        )
    return Explanation(text, kind, report, verdict, tuple(reporters))
