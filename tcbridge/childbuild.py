# -*- test-case-name: tests.unit.test_childbuild -*-
"""
Build the service's feeds in a child process (L{tcbridge.feed.job}).

L{ChildBuild} writes the job beside the cache file (in a thread), drops
the service's copy of the pages, starts C{python -m tcbridge.feed.job} and
waits for it on the reactor, which goes on serving; then it reads the
outcome and leaves the report history in a file that publishing moves
into place.  A cancelled build (the bridge stopping, the sync deadline)
kills the child.  Job, outcome and history files carry the store's
temporary prefix, so a crash leaves nothing the next start does not
remove.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcbridge.childstderr import StderrTail
from tcbridge.feed.builder import FeedBuilder, FeedValidationError
from tcbridge.feed.history import StoredHistory
from tcbridge.feed.job import WAIT, BuildJob, read_outcome, write_job
from tcbridge.feed.patch import PatchError
from tcbridge.feed.state import StateJob
from tcbridge.feedfile import FeedFile
from tcbridge.files import TEMP_PREFIX, unlink_quietly
from tcbridge.logs import bridge_observer

#: Keep at most this much of what the child writes to stderr, for errors.
_STDERR_KEPT = 8192


class ChildBuildError(Exception):
    """
    The build's child process failed without saying why in an outcome.
    """


class _Child(protocol.ProcessProtocol):
    """
    Waits for one child and keeps the end of its stderr.
    """

    def __init__(self) -> None:
        self.ended: defer.Deferred[int] = defer.Deferred(self._cancel)
        self.stderr = StderrTail(_STDERR_KEPT)

    def _cancel(self, _: defer.Deferred[int]) -> None:
        try:
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
        except (error.ProcessExitedAlready, AttributeError):
            pass

    def errReceived(self, data: bytes) -> None:
        self.stderr.add(data)

    def processEnded(self, reason: Failure) -> None:
        if self.ended.called:
            return
        value = reason.value
        if isinstance(value, error.ProcessDone):
            self.ended.callback(0)
        elif isinstance(value, error.ProcessTerminated) and value.exitCode is not None:
            self.ended.callback(value.exitCode)
        else:
            self.ended.errback(
                ChildBuildError(f"the build process was killed ({value}); {self.tail()}")
            )

    def tail(self) -> str:
        text = self.stderr.text(2000)
        return f"it said: {text}" if text else "it said nothing"


def _scratch(directory: str, suffix: str) -> str:
    fd, path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=directory)
    os.close(fd)
    return path


@define
class ChildBuild:
    """
    Runs feed builds in a child process.

    :param reactor: starts and watches the child.
    :param run_heavy: runs blocking file work off the reactor (a thread).
    :param argv: the child's command, before the job and outcome paths.
    """

    log = Logger(observer=bridge_observer)

    _reactor: IReactorProcess
    _run_heavy: Callable[..., defer.Deferred[Any]]
    _argv: tuple[str, ...] = field(default=(sys.executable, "-m", "tcbridge.feed.job"))
    #: the child started ahead of the next build (L{warm}), if any
    _warm: _Child | None = field(default=None, init=False)

    async def __call__(
        self,
        builder: FeedBuilder,
        directory: str,
        *,
        gzip: bool,
        pretty: bool,
        state: StateJob | None = None,
    ) -> FeedFile:
        """
        Build C{builder}'s feed into a temporary file in C{directory} (with
        C{state}, see L{tcbridge.feed.state}); on return C{builder.stats}
        are the build's and C{builder.history} is the built feed's, as a
        L{StoredHistory} in C{directory}.

        :raise FeedValidationError: if the feed broke a rule.
        :raise PatchError: if the state asked for could not be used.
        :raise ChildBuildError: if the child failed otherwise.
        """
        job_path = _scratch(directory, ".job")
        outcome_path = _scratch(directory, ".outcome")
        history_path = _scratch(directory, ".history")
        keep_history = False
        try:
            job = BuildJob(builder, directory, gzip, pretty, history_path, state)
            await self._run_heavy(write_job, job_path, job)
            builder.release()
            await self._spawn(job_path, outcome_path)
            outcome = await self._run_heavy(read_outcome, outcome_path)
            for note in outcome.notes:
                self.log.warn("Feed build: {note}", note=note)
            builder.stats = outcome.stats
            if outcome.unpatched is not None:
                raise PatchError(outcome.unpatched)
            if outcome.problems:
                raise FeedValidationError(list(outcome.problems))
            if outcome.error is not None or outcome.feed is None:
                raise ChildBuildError(f"the build failed: {outcome.error}")
            feed = outcome.feed
            feed.history_path = history_path
            builder.history = StoredHistory(history_path)
            keep_history = True
            return feed
        finally:
            unlink_quietly(job_path)
            unlink_quietly(outcome_path)
            if not keep_history:
                unlink_quietly(history_path)

    def warm(self, state: str | None = None) -> Callable[[], None]:
        """
        Start the next build's child now, so that it has loaded what a
        build needs (numpy and the feed modules, a few tenths of a second;
        and the C{state} file the build may start from, indexed) by the
        time the pull ends; it waits for its job on stdin.  Return what
        ends it if no build comes (a child nobody gives a job exits when
        its stdin closes, as when the service dies).
        """
        child = self._take_warm()
        if child is None:
            child = _Child()
            argv = [*self._argv, WAIT, *([state] if state is not None else [])]
            self._reactor.spawnProcess(child, argv[0], argv, env=dict(os.environ))
        self._warm = child
        return self._cool

    def _take_warm(self) -> _Child | None:
        """
        The child started ahead, if it is still waiting (no longer kept).
        """
        child, self._warm = self._warm, None
        if child is not None and child.ended.called:
            child.ended.addErrback(lambda _: None)  # it died waiting: forget it
            return None
        return child

    def _cool(self) -> None:
        """
        End the child started ahead, if no build took it.
        """
        child = self._take_warm()
        if child is not None:
            child.ended.addErrback(lambda _: None)
            child.transport.closeStdin()  # type: ignore[union-attr]

    async def _spawn(self, job_path: str, outcome_path: str) -> None:
        """
        Run the child to its end: the one started ahead (L{warm}) if it is
        still waiting, else a new one.

        :raise ChildBuildError: if it exits with a status other than 0.
        """
        child = self._take_warm()
        if child is not None:
            paths = b"\0".join(map(os.fsencode, (job_path, outcome_path)))
            child.transport.write(paths + b"\0")  # type: ignore[union-attr]
            child.transport.closeStdin()  # type: ignore[union-attr]
        else:
            child = _Child()
            argv = [*self._argv, job_path, outcome_path]
            self._reactor.spawnProcess(child, argv[0], argv, env=dict(os.environ))
        status = await child.ended
        if status != 0:
            raise ChildBuildError(f"the build process exited with status {status}; {child.tail()}")
