# -*- test-case-name: tests.unit.test_sync -*-
"""
What a cycle leaves behind for the operator: the figures of its build in
the status (the page, /healthz, /metrics) and its line in the sync
history.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcbridge.feed.settings import BuildStats
from tcbridge.status import SourceRow, SyncStatus
from tcbridge.sync.errors import FeedHeldBackError, FeedInvalidError, SyncDeadlineError
from tcbridge.synclog import SyncLog, SyncRecord
from tcbridge.threatconnect.errors import ThreatConnectError
from tcbridge.threatconnect.records import SourcePull


def record_build(
    status: SyncStatus, stats: BuildStats, pulls: Sequence[SourcePull], requests: int
) -> list[str]:
    """
    Copy a published build's figures into the status; return the feed's
    warnings, for the log.
    """
    status.sources = tuple(
        SourceRow(name=name, indicators=counts.indicators, iocs=counts.iocs)
        for name, counts in sorted(stats.per_source.items())
    )
    status.pulls = tuple(pulls)
    status.iocs_by_kind = dict(stats.iocs_by_kind)
    status.shared_iocs = stats.shared_iocs
    status.excluded_by = dict(stats.excluded_by)
    status.feed_warnings = tuple(stats.warnings)
    status.skipped = dict(stats.skipped)
    status.reports = stats.reports
    status.truncated_reports = stats.truncated_reports
    status.requests = requests
    return list(stats.warnings)


def log_sync(
    sync_log: SyncLog | None,
    started: float | None,
    now: float,
    result: str,
    requests: int,
    iocs_by_type: dict[str, int] | None = None,
    error: str | None = None,
) -> None:
    """
    Add a cycle that started at C{started} and ended C{now} to the sync
    history, if there is one.
    """
    if sync_log is None or started is None:
        return
    iocs = sum(iocs_by_type.values()) if iocs_by_type else 0
    previous = sync_log.last_published()
    change = iocs - previous.iocs if iocs_by_type and previous is not None else None
    sync_log.add(
        SyncRecord(
            started=started,
            seconds=round(now - started, 3),
            result=result,
            requests=requests,
            iocs=iocs,
            iocs_by_type=iocs_by_type or {},
            change=change,
            error=error,
        )
    )


def log_failure(log: Logger, failure: Failure, message: str) -> None:
    """
    Log a failed cycle: one line for a cycle stopped with the service and
    for the failures a user can act on (ThreatConnect refused, the feed
    did not validate, the deadline passed, the shrink guard held it back),
    the traceback too for anything else (a bug).
    """
    if failure.check(CancelledError):
        log.info("Sync {error}; the previous feed stays published", error=message)
    elif failure.check(ThreatConnectError, FeedInvalidError, SyncDeadlineError, FeedHeldBackError):
        log.error("Sync failed, the previous feed stays published: {error}", error=message)
    else:
        log.failure("Sync failed, the previous feed stays published", failure)
