# -*- test-case-name: tests.unit.test_feed_history -*-
"""
Report timestamps from the history (see L{tcbridge.feed.history}): a
report keeps its recorded timestamp while its content digest is unchanged;
a new or changed one takes the newest C{lastModified} of its IOCs, or the
recorded timestamp + 1 if that is not later.
"""

from __future__ import annotations

from .history import HistoryRecorder, ReportHistory
from .render import Body, report_digest


def next_timestamp(newest: int, previous: tuple[int, bytes] | None, digest: bytes) -> int:
    """
    The timestamp of a report whose IOCs were last modified at C{newest},
    given what the history recorded for its id.
    """
    if previous is None:
        return newest
    if previous[1] == digest:
        return previous[0]
    return newest if newest > previous[0] else previous[0] + 1


class Stamper:
    """
    Stamps reports one by one and, if asked, records the new history.

    :ivar recorder: the history of the feed being built, or C{None} when
        nobody will read it (write mode).
    """

    def __init__(self, history: ReportHistory, record: bool) -> None:
        self.history = history
        self.recorder = HistoryRecorder() if record else None

    @property
    def needs_digests(self) -> bool:
        """
        Whether digests matter at all: a history to compare with or one to
        record.
        """
        return self.recorder is not None or len(self.history) > 0

    def stamp(self, report_id: str, id_json: bytes, body: Body, newest: int) -> int:
        """
        The timestamp of one report.
        """
        if not self.needs_digests:
            return newest
        digest = report_digest(id_json, body)
        timestamp = next_timestamp(newest, self.history.get(report_id), digest)
        if self.recorder is not None:
            self.recorder.set(report_id, timestamp, digest)
        return timestamp
