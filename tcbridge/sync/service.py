# -*- test-case-name: tests.unit.test_sync -*-
"""
Running cycles: the sync timer of the service, and write mode under twistd
(L{WriteOnceService}, L{write_feed}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcbridge.feedfile import FeedFile
from tcbridge.logs import bridge_observer
from tcbridge.sync.cycle import SyncCycle
from tcbridge.sync.errors import describe_failure


def sync_timer(cycle: SyncCycle, minutes: float, clock: IReactorTime) -> SyncService:
    """
    A service that runs C{cycle} at start and then every C{minutes}; a
    cycle still running delays the next one rather than overlapping it.
    """
    return SyncService(cycle, minutes, clock)


class SyncService(Service):
    """
    The sync timer: runs the cycle at start and then every C{interval}
    seconds (L{set_interval} changes it from the next wait on); stopping it
    also stops a cycle in progress, so a shutdown never waits for
    ThreatConnect.

    :ivar interval: seconds between the starts of two cycles.
    """

    log = Logger(observer=bridge_observer)

    def __init__(self, cycle: SyncCycle, minutes: float, clock: IReactorTime) -> None:
        self._cycle = cycle
        self._clock = clock
        self.interval = minutes * 60.0
        self._loop: LoopingCall | None = None
        self._finished: defer.Deferred[None] | None = None

    def set_interval(self, minutes: float) -> None:
        """
        Wait C{minutes} between cycles from the next wait on.
        """
        self.interval = minutes * 60.0
        if self._loop is not None:
            self._loop.interval = self.interval

    def startService(self) -> None:
        super().startService()
        loop = LoopingCall(self._cycle.run_logged)
        loop.clock = self._clock
        self._loop = loop
        finished = loop.start(self.interval, now=True)
        self._finished = finished.addCallbacks(lambda _: None, self._stopped_by_error)

    def _stopped_by_error(self, failure: Failure) -> None:
        self.log.failure("The sync timer stopped", failure)

    def stopService(self) -> defer.Deferred[None]:
        self._cycle.cancel()
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        finished, self._finished = self._finished, None
        return finished if finished is not None else defer.succeed(None)


class WriteOnceService(MultiService):
    """
    Write mode under twistd: sync once, write the feed to a file, stop the
    reactor.  twistd cannot exit non-zero, so a failure is logged as critical
    (the C{tcbridge write} console command gives an honest exit status).
    """

    log = Logger(observer=bridge_observer)

    def __init__(self, cycle: SyncCycle, path: str, stop: Callable[[], None]) -> None:
        super().__init__()
        self._cycle = cycle
        self._path = path
        self._stop = stop
        self.done: defer.Deferred[bool] | None = None

    def startService(self) -> None:
        super().startService()
        self.done = defer.ensureDeferred(self._write())

    def stopService(self) -> defer.Deferred[None]:
        """
        Stopped (SIGTERM) before the feed is written: stop the sync, which
        then says so, and let the reactor stop once it has.
        """
        super().stopService()
        return cancel_and_wait(self.done) or defer.succeed(None)

    async def _write(self) -> bool:
        try:
            await write_feed(self._cycle, self._path)
            return True
        except Exception as e:
            message = why_not_written(e, "twistd")
            self.log.critical(
                "Write mode failed, {path} was not written: {error}",
                path=self._path,
                error=message,
            )
            return False
        finally:
            if self.running:
                self._stop()


def why_not_written(error: Exception, program: str) -> str:
    """
    Why a write failed, in a line (called where C{error} was caught): the
    program (C{program}) stopped, a file error, or the sync's failure.
    """
    if isinstance(error, defer.CancelledError):
        return f"{program} was stopped before it finished"
    if isinstance(error, OSError):
        return str(error)
    return describe_failure(Failure())


def cancel_and_wait(work: defer.Deferred[Any] | None) -> defer.Deferred[None] | None:
    """
    Stop C{work} if it has not finished (a write stopped with the process:
    it then says so and fails); a Deferred that fires once it has, for the
    reactor's shutdown to wait on (C{None} if there is nothing to stop).
    """
    if work is None or work.called:
        return None
    stopped: defer.Deferred[None] = defer.Deferred()

    def finished(result: object) -> object:
        stopped.callback(None)
        return result

    work.addBoth(finished)
    work.cancel()
    return stopped


async def write_feed(cycle: SyncCycle, path: str) -> FeedFile:
    """
    Sync once and write the feed to C{path} atomically.

    :raises Exception: if the sync fails or the file cannot be written
        (C{path} is then untouched).
    """
    feed = await cycle.write(path)
    cycle.log.info(
        "Wrote {reports} reports with {iocs} IOCs to {path}",
        reports=feed.reports,
        iocs=feed.iocs,
        path=path,
    )
    return feed
