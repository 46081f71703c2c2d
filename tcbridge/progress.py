# -*- test-case-name: tests.unit.test_progress -*-
"""
A live progress line on a terminal: what the running sync is doing, one
line rewritten in place a few times a second (C{tcbridge write}).  On
anything that is not a terminal (a pipe, a file, systemd's journal) it
writes nothing, so scripts and logs stay clean.
"""

from __future__ import annotations

from typing import TextIO

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from tcbridge.status import SyncStatus

#: Seconds between two updates of the line.
EVERY = 0.25
_CLEAR = "\r\x1b[K"


class ProgressLine:
    """
    Shows C{status.progress} on C{out} while it runs, if C{out} is a
    terminal.
    """

    def __init__(self, status: SyncStatus, clock: IReactorTime, out: TextIO) -> None:
        self._status = status
        self._clock = clock
        self._out = out
        self._loop: LoopingCall | None = None
        self._shown = False

    def start(self) -> None:
        """
        Start updating the line (nothing happens off a terminal).
        """
        if not self._out.isatty():
            return
        loop = LoopingCall(self._show)
        loop.clock = self._clock
        loop.start(EVERY, now=False)
        self._loop = loop

    def _show(self) -> None:
        progress = self._status.progress
        if progress is None:
            return
        started = self._status.last_attempt
        elapsed = None if started is None else self._clock.seconds() - started
        self._out.write(f"{_CLEAR}tcbridge: {progress.describe(elapsed)}")
        self._out.flush()
        self._shown = True

    def stop(self) -> None:
        """
        Stop, and clear the line so that what is written next starts clean.
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._shown:
            self._out.write(_CLEAR)
            self._out.flush()
            self._shown = False
