"""
Reading a response body: into one buffer made at the announced length,
cancellable (a stalled body does not hold a connection forever), and telling
a body cut short by a closed connection from a complete one.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

#: a body announced as longer than this is not made room for in advance
_MAX_PREALLOCATE = 256 * 1024 * 1024


class BodyReader(Protocol):
    """
    Collect a response body into a L{Deferred}; cancelling the Deferred stops
    the transport, so a stalled body does not keep a connection forever.

    :ivar received: bytes read so far.
    :ivar close_delimited: the body ended when the connection closed and had
        no length to check it against (Twisted's C{PotentialDataLoss}), so
        it may be incomplete.
    """

    def __init__(self, length: int | None = None) -> None:
        # One buffer, made at the announced length when there is one: a
        # page of 10,000 indicators is never held twice.
        self._buffer = bytearray(length if length is not None and length < _MAX_PREALLOCATE else 0)
        self.received = 0
        self.close_delimited = False
        self.finished: Deferred[bytearray] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[bytes]) -> None:
        transport = self.transport
        if transport is not None:
            transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        end = self.received + len(data)
        if end <= len(self._buffer):
            self._buffer[self.received : end] = data
        else:
            del self._buffer[self.received :]
            self._buffer += data
        self.received = end

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.close_delimited = reason.check(PotentialDataLoss) is not None
            del self._buffer[self.received :]
            self.finished.callback(self._buffer)
        else:
            self.finished.errback(reason)
