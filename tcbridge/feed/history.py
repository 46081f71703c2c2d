# -*- test-case-name: tests.test_feed_history -*-
"""
Report timestamp history: what each published report's timestamp and
content digest were, so that a report's timestamp moves only when its
content changes.

Carbon Black's incremental sync takes only new reports and reports whose
C{timestamp} changed (reference/cb-feed.md section 2).  The builder
therefore stamps a report:

 - with its previous timestamp if its digest is unchanged;
 - otherwise (new or changed) with the newest C{lastModified} of its IOCs,
   or the previous timestamp + 1 if that is not later.

The digest is 8 bytes of BLAKE2b over the report without its C{timestamp},
serialised by orjson with sorted keys, so a report parsed back from a
cached feed file digests exactly like the freshly built one
(L{history_from_reports}).

Memory: one dict entry per report, keyed by a 64-bit hash of the report id,
holding one int (timestamp and digest packed together): about 120 bytes per
report, which is nothing for Condensed feeds and about 120 MB for a
1,000,000-report Expanded feed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

_MASK64 = (1 << 64) - 1


def _key(report_id: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(report_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big"
    )


def report_digest(report: Mapping[str, Any]) -> bytes:
    """
    The 8-byte content digest of a report: everything but its timestamp.
    """
    content = {key: value for key, value in report.items() if key != "timestamp"}
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=8).digest()


class ReportHistory:
    """
    Report id -> (timestamp, digest) for the reports of one published feed.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[tuple[str, int, bytes]] = ()) -> None:
        """
        :param entries: C{(report id, timestamp, 8-byte digest)} triples.
        """
        self._entries: dict[int, int] = {}
        for report_id, timestamp, digest in entries:
            self.set(report_id, timestamp, digest)

    def set(self, report_id: str, timestamp: int, digest: bytes) -> None:
        """
        Record one report's timestamp (a non-negative int) and digest.
        """
        self._entries[_key(report_id)] = (timestamp << 64) | int.from_bytes(digest[:8], "big")

    def get(self, report_id: str) -> tuple[int, bytes] | None:
        """
        The recorded C{(timestamp, digest)} of a report, or C{None}.
        """
        packed = self._entries.get(_key(report_id))
        if packed is None:
            return None
        return packed >> 64, (packed & _MASK64).to_bytes(8, "big")

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, report_id: object) -> bool:
        return isinstance(report_id, str) and _key(report_id) in self._entries

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReportHistory):
            return NotImplemented
        return self._entries == other._entries

    def __repr__(self) -> str:
        return f"<ReportHistory of {len(self)} reports>"


def history_from_reports(reports: Iterable[Mapping[str, Any]]) -> ReportHistory:
    """
    Rebuild the history of a published feed from its reports (for example
    the C{reports} of the cached feed file read back after a restart).
    Reports without a string id or a numeric, non-negative timestamp are
    skipped.
    """
    history = ReportHistory()
    for report in reports:
        report_id = report.get("id")
        timestamp = report.get("timestamp")
        if not isinstance(report_id, str) or isinstance(timestamp, bool):
            continue
        if not isinstance(timestamp, (int, float)) or not timestamp >= 0:
            continue
        try:
            stamp = int(timestamp)
        except (OverflowError, ValueError):
            continue
        history.set(report_id, stamp, report_digest(report))
    return history
