# -*- test-case-name: tests.unit.test_sync -*-
"""
Publishing a built feed, as one step: the shrink guard, then the cache
files and the swap of the served snapshot, then (without waiting) the
Carbon Black server's sync.
"""

from __future__ import annotations

import os
from typing import Any

from attrs import define, field
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcbridge.cbserver import CbServerSync, CbSyncError, CbSyncResult
from tcbridge.config import Config
from tcbridge.feed.builder import FeedBuilder
from tcbridge.feed.history import AnyHistory, ReportHistory
from tcbridge.feedfile import FeedFile
from tcbridge.logs import bridge_observer
from tcbridge.secrets import redact
from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore, Snapshot
from tcbridge.sync.errors import FeedHeldBackError, describe_failure
from tcbridge.sync.work import RunHeavy

ACCEPT_SHRINK_FILE = "accept-shrink"


def accept_marker(config: Config) -> str | None:
    """
    The file whose presence accepts the next shrinking feed (written by
    C{tcbridge accept-shrink}); C{None} without a cache folder.
    """
    if config.sync.cache_folder is None:
        return None
    return os.path.join(config.sync.cache_folder, ACCEPT_SHRINK_FILE)


@define
class Publisher:
    """
    Makes built feeds the published one, unless the shrink guard holds them
    back, and keeps the report history the next build continues from.

    :ivar history: the published feed's report history.
    """

    log = Logger(observer=bridge_observer)

    _config: Config
    _store: FeedStore
    _status: SyncStatus
    _clock: IReactorTime
    _run_heavy: RunHeavy
    _cb_sync: CbServerSync | None = None
    history: AnyHistory = field(factory=ReportHistory)
    _cb_running: defer.Deferred[Any] | None = field(init=False, default=None)

    def reconfigure(self, config: Config, cb_sync: CbServerSync | None) -> None:
        """
        Use C{config} (its shrink limit and cache folder) and C{cb_sync}
        from the next publish on.
        """
        self._config, self._cb_sync = config, cb_sync

    async def publish(self, feed: FeedFile, builder: FeedBuilder) -> Snapshot:
        """
        Publish a built feed, unless the shrink guard holds it back.
        """
        held = self._shrink_guard(feed.iocs)
        if held is not None:
            self._status.held_back = held
            raise FeedHeldBackError(held)
        snapshot: Snapshot = await self._run_heavy(
            self._store.publish, feed, builder.history, self._clock.seconds()
        )
        self._store.swap(snapshot)
        self.history = snapshot.history if snapshot.history is not None else builder.history
        self._status.held_back = None
        self._start_cb_sync()
        return snapshot

    def _start_cb_sync(self) -> None:
        """
        Ask the Carbon Black server to synchronize the feed just published,
        without waiting: its outcome goes to the status and the log and never
        affects publishing.  A request still under way is not doubled.
        """
        if self._cb_sync is None or self._cb_running is not None:
            return
        status = self._status
        running = defer.ensureDeferred(self._cb_sync.synchronize())
        self._cb_running = running

        def synced(result: CbSyncResult) -> None:
            status.cb_last_sync = result.at
            status.cb_feed_id = result.feed_id

        def failed(failure: Failure) -> None:
            if not failure.check(CbSyncError):
                self.log.failure("Carbon Black server sync failed", failure)
            status.cb_last_error = redact(describe_failure(failure), self._config.secrets())
            status.cb_last_error_at = self._clock.seconds()

        def done(_: object) -> None:
            self._cb_running = None

        running.addCallbacks(synced, failed).addBoth(done)

    def _shrink_guard(self, new_iocs: int) -> str | None:
        """
        Say why C{new} must not replace the published feed, or C{None} if it
        may: it may not when it has more than C{max_shrink_percent} fewer
        IOCs, or none at all while the published feed has some, unless the
        user accepted the shrink (C{tcbridge accept-shrink}).
        """
        current = self._store.current
        if current is None or current.iocs == 0:
            return None
        limit = self._config.sync.max_shrink_percent
        drop = 100.0 * (current.iocs - new_iocs) / current.iocs
        if new_iocs > 0 and drop <= limit:
            return None
        marker = accept_marker(self._config)
        if marker is not None and os.path.exists(marker):
            os.unlink(marker)
            self.log.warn(
                "Publishing a feed {drop:.0f}% smaller than the last one ({new} IOCs instead "
                "of {old}): the shrink was accepted with tcbridge accept-shrink",
                drop=drop,
                new=new_iocs,
                old=current.iocs,
            )
            return None
        how = (
            f"run 'tcbridge --config {self._config.path} accept-shrink' to publish it at the "
            "next sync"
            if marker is not None
            else "set cache_folder so that 'tcbridge accept-shrink' can accept it"
        )
        if new_iocs == 0:
            why = "it has no IOCs at all"
        else:
            why = f"it is {drop:.0f}% smaller, more than max_shrink_percent = {limit:g}"
        return (
            f"A new feed with {new_iocs} IOCs was held back and the published feed "
            f"({current.iocs} IOCs) kept: {why}. If ThreatConnect really has fewer "
            f"indicators now, {how}, or raise max_shrink_percent."
        )
