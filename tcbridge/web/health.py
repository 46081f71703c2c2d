# -*- test-case-name: tests.unit.test_web_health -*-
"""
How healthy the bridge is, in one word and a few reasons, for C{/healthz},
the diagnostics page and the metrics.

It only reads the sync status and the published snapshot's metadata (never
the feed's bytes), so it answers at once even during a huge sync.

The rules, checked in this order, where C{interval} is the sync interval,
C{stale_after} is C{stale_after_intervals} x C{interval} (3 x 3600 s by
default), the feed's age is now minus its C{published_at}, and "the last
attempt failed" means the most recent finished sync did not publish::

    state     HTTP  when
    failing   503   no feed is published and either the first sync finished
                    (it failed) or the bridge started more than one interval
                    ago;
    failing   503   a feed is published but it is older than stale_after
                    (whatever the reason: failures, a feed held back by the
                    shrink guard, a timer that stopped);
    degraded  200   no feed is published yet, within the first interval
                    after start (the first sync is still running);
    degraded  200   a feed is published (possibly loaded from the cache) and
                    any of: the last attempt failed; a sync has been running
                    for more than one interval; no sync is running and the
                    feed is older than one interval (a scheduled sync did not
                    publish); the shrink guard held a new feed back
                    (C{held_back}); no sync has finished since start (serving
                    the cached feed unconfirmed);
    ok        200   a feed is published, younger than stale_after, the last
                    attempt succeeded and none of the above holds.

A sync that is running is not by itself a problem: while it runs, the feed
may pass one interval of age without making the bridge degraded.
"""

from __future__ import annotations

from typing import Any

import orjson
from attrs import frozen

from tcbridge.status import SyncStatus
from tcbridge.store import Snapshot
from tcbridge.web.format import iso_time

OK = "ok"
DEGRADED = "degraded"
FAILING = "failing"
STATES = (OK, DEGRADED, FAILING)

DEFAULT_INTERVAL_SECONDS = 3600.0
DEFAULT_STALE_AFTER_INTERVALS = 3.0


def held_back(status: SyncStatus) -> str | None:
    """
    The shrink guard's message if it is holding a new feed back (it says how
    to accept the feed), else C{None}.
    """
    message = getattr(status, "held_back", None)
    return str(message) if message else None


def last_attempt_failed(status: SyncStatus) -> bool:
    """
    Whether the most recent finished sync failed.
    """
    if status.last_error_at is None:
        return False
    return status.last_success is None or status.last_error_at >= status.last_success


@frozen
class Health:
    """
    The verdict.

    :ivar state: C{"ok"}, C{"degraded"} or C{"failing"}.
    :ivar reasons: why it is not C{ok}, one sentence each; empty when ok.
    :ivar feed_age: seconds since the published feed was published, or
        C{None} with no feed.
    :ivar stale_after: the age past which the feed is stale, in seconds.
    :ivar interval: the sync interval it was judged with, in seconds.
    """

    state: str
    reasons: tuple[str, ...]
    feed_age: float | None
    stale_after: float
    interval: float = DEFAULT_INTERVAL_SECONDS

    @property
    def code(self) -> int:
        """
        The HTTP status for C{/healthz}: 503 when failing, else 200.
        """
        return 503 if self.state == FAILING else 200


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def assess(
    status: SyncStatus,
    snapshot: Snapshot | None,
    now: float,
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    stale_after_intervals: float = DEFAULT_STALE_AFTER_INTERVALS,
) -> Health:
    """
    Apply the rules of this module's docstring.

    :param snapshot: the published feed, or C{None} before the first.
    :param now: seconds since the epoch, from the injected clock.
    """
    interval = interval_seconds
    stale_after = stale_after_intervals * interval
    failing: list[str] = []
    degraded: list[str] = []
    failed = last_attempt_failed(status)
    if failed:
        degraded.append(f"the last sync failed: {status.last_error}")
    running_for = (
        now - status.last_attempt if status.running and status.last_attempt is not None else None
    )
    if running_for is not None and running_for > interval:
        degraded.append(
            f"a sync has been running for {_duration(running_for)}, "
            f"more than one interval ({_duration(interval)})"
        )
    guard = held_back(status)
    if guard is not None:
        degraded.append(guard)

    age: float | None = None
    if snapshot is None:
        if status.last_attempt_finished is not None:
            failing.append("no feed is published: the first sync did not publish one")
        elif now - status.started_at > interval:
            failing.append(f"no feed is published {_duration(now - status.started_at)} after start")
        else:
            degraded.append("no feed is published yet: the first sync has not finished")
    else:
        age = max(0.0, now - snapshot.published_at)
        if age > stale_after:
            failing.append(
                f"the feed is stale: published {_duration(age)} ago, "
                f"more than {_duration(stale_after)}"
            )
        elif age > interval and not status.running:
            degraded.append(
                f"the feed is {_duration(age)} old, older than one interval "
                f"({_duration(interval)}): a scheduled sync did not publish"
            )
        if status.last_attempt_finished is None and not failed:
            degraded.append(
                "serving the feed loaded from the cache; no sync has finished since start"
                if snapshot.from_cache
                else "no sync has finished since start"
            )
    if failing:
        return Health(FAILING, tuple(failing + degraded), age, stale_after, interval_seconds)
    if degraded:
        return Health(DEGRADED, tuple(degraded), age, stale_after, interval_seconds)
    return Health(OK, (), age, stale_after, interval_seconds)


def _progress(status: SyncStatus, now: float) -> dict[str, Any] | None:
    """
    How far the running sync has got, for /healthz (C{None} when none runs).
    """
    progress = status.progress
    if not status.running or progress is None:
        return None
    return {
        "phase": progress.phase,
        "source": progress.source or None,
        "sources_done": progress.done,
        "sources": progress.sources,
        "pages": progress.pages,
        "indicators": progress.indicators,
        "elapsed_seconds": None
        if status.last_attempt is None
        else round(now - status.last_attempt, 3),
    }


def health_document(
    health: Health, status: SyncStatus, snapshot: Snapshot | None, now: float
) -> tuple[int, bytes]:
    """
    The HTTP status and the JSON body of C{/healthz}, for the verdict
    C{health} (see L{assess}) on C{status} and C{snapshot}.
    """
    document: dict[str, Any] = {
        "status": health.state,
        "reasons": list(health.reasons),
        "feed_age_seconds": None if health.feed_age is None else round(health.feed_age, 3),
        "published_at": None if snapshot is None else iso_time(snapshot.published_at),
        "from_cache": False if snapshot is None else snapshot.from_cache,
        "last_attempt": iso_time(status.last_attempt),
        "last_success": iso_time(status.last_success),
        "last_error": status.last_error,
        "last_error_at": iso_time(status.last_error_at),
        "held_back": held_back(status),
        "carbon_black_sync": {
            "last_sync": iso_time(status.cb_last_sync),
            "feed_id": status.cb_feed_id,
            "last_error": status.cb_last_error,
            "last_error_at": iso_time(status.cb_last_error_at),
        },
        "running": status.running,
        "progress": _progress(status, now),
        "reports": 0 if snapshot is None else snapshot.reports,
        "iocs": 0 if snapshot is None else snapshot.iocs,
        "iocs_by_type": dict(sorted(status.iocs_by_kind.items())),
        "interval_seconds": health.interval,
        "stale_after_seconds": health.stale_after,
        "cycles_ok": status.cycles_ok,
        "cycles_failed": status.cycles_failed,
        "incremental": None if status.incremental is None else status.incremental.as_json(),
    }
    return health.code, orjson.dumps(document)
