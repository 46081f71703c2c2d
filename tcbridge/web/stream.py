# -*- test-case-name: tests.unit.test_web -*-
"""
Writing a big body to a connection piece by piece, as the client reads it.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

#: Bodies bigger than this are written piece by piece (L{Streamed}).
STREAM_OVER = 1 << 20


@implementer(IPushProducer)
class _Pieces:
    """
    Writes a body to a request 64 KiB at a time while the connection takes
    it (Twisted pauses and resumes this producer as its send buffer fills
    and drains), then finishes the request.
    """

    SIZE = 1 << 16

    def __init__(self, request: Request, body: bytes) -> None:
        self._request = request
        self._view = memoryview(body)
        self._sent = 0
        self._paused = False
        self._stopped = False

    def start(self) -> None:
        self._request.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        while not (self._paused or self._stopped) and self._sent < len(self._view):
            piece = self._view[self._sent : self._sent + self.SIZE]
            self._sent += len(piece)
            self._request.write(piece.tobytes())
        if not self._stopped and self._sent >= len(self._view):
            self._stopped = True
            self._request.unregisterProducer()
            self._request.finish()

    def pauseProducing(self) -> None:
        self._paused = True

    def stopProducing(self) -> None:
        self._stopped = True


class Streamed(Resource):
    """
    A big body written to the connection in pieces as the client reads
    them (L{_Pieces}), instead of in one call: Twisted would join the
    status line and headers with the whole body into a new buffer, a
    second copy of the feed (hundreds of megabytes for a big Expanded
    feed) made on the reactor before the first byte leaves.
    """

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self._body = body

    def render(self, request: Request) -> int:
        _Pieces(request, self._body).start()
        return NOT_DONE_YET
