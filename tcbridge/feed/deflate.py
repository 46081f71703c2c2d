# -*- test-case-name: tests.unit.test_feed_deflate -*-
"""
A feed's gzip form, compressed in fixed segments that can be compressed at
the same time on several cores, and always give the same bytes.

The document is cut every L{SEGMENT} bytes.  Each segment is compressed by
a compressor of its own, primed with the 32 KiB of the document before it
(so that it loses almost nothing against one long stream), and ends with a
sync flush (the last one: the end of the stream).  The pieces, one after
another, are one valid deflate stream: what C{pigz} does.  Whether the
segments are compressed one after another (L{gzip_feed}) or by threads
beside the writer (L{Deflater} with C{threads}), the bytes are the same.
"""

from __future__ import annotations

import queue
import threading
import zlib
from typing import Final

#: How hard the gzip form of a feed is compressed.  Level 1 takes a quarter
#: of level 6's time (0.2 s against 0.9 s for a million indicators,
#: Condensed) for a form 4% (Condensed) to 20% (Expanded) larger: the gzip
#: form is made at every publish, and was the longest part of a build.
GZIP_LEVEL: Final = 1
#: Bytes of the document compressed by one compressor.
SEGMENT: Final = 1 << 21
#: What deflate can refer back to: the part of the document before a
#: segment that primes its compressor.
_WINDOW: Final = 32768
#: segments a compressing thread may have waiting
_AHEAD: Final = 2
#: A segment to compress: its number, bytes, the document before it, last.
_Work = tuple[int, bytes, bytes, bool]
#: gzip's header (no file name, mtime 0, Unix).
_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"


def _compressed(segment: bytes, before: bytes, last: bool) -> bytes:
    """
    One segment as deflate data that follows the segments before it
    (C{before}: the end of the document before it).
    """
    if before:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=before)
    else:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(segment) + compressor.flush(
        zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
    )


class Deflater:
    """
    Takes a document a block at a time (L{feed}) and gives its deflate
    data at the end (L{finish}); with C{threads}, segments are compressed
    in that many threads of their own (compression lets go of the
    interpreter lock), else as they fill.
    """

    def __init__(self, threads: int = 0) -> None:
        self._pending = bytearray()
        self._before = b""
        self._pieces: list[bytes] = []
        self._failed: BaseException | None = None
        self._workers: list[tuple[queue.Queue[_Work | None], threading.Thread]] = []
        for number in range(threads):
            segments: queue.Queue[_Work | None] = queue.Queue(maxsize=_AHEAD)
            worker = threading.Thread(
                target=self._compress_in_turn, args=(segments,), name=f"tcbridge-feedgzip-{number}"
            )
            worker.start()
            self._workers.append((segments, worker))

    def feed(self, data: bytes) -> None:
        """
        Take the next part of the document.
        """
        rest = memoryview(data)
        if self._pending:
            taken = SEGMENT - len(self._pending)
            self._pending += rest[:taken]
            rest = rest[taken:]
            if len(self._pending) < SEGMENT:
                return
            self._segment(bytes(self._pending), last=False)
            self._pending = bytearray()
        while len(rest) >= SEGMENT:
            self._segment(bytes(rest[:SEGMENT]), last=False)
            rest = rest[SEGMENT:]
        self._pending += rest

    def _segment(self, segment: bytes, last: bool) -> None:
        if self._failed is not None:
            raise self._failed
        index = len(self._pieces)
        self._pieces.append(b"")
        before = self._before
        self._before = (
            segment[-_WINDOW:] if len(segment) >= _WINDOW else (before + segment)[-_WINDOW:]
        )
        if not self._workers:
            self._pieces[index] = _compressed(segment, before, last)
            return
        self._workers[index % len(self._workers)][0].put((index, segment, before, last))

    def _compress_in_turn(self, segments: queue.Queue[_Work | None]) -> None:
        """
        A compressing thread: each segment it is given, until told to stop
        (a failure is kept for L{finish} to raise).
        """
        while (work := segments.get()) is not None:
            if self._failed is None:
                index, segment, before, last = work
                try:
                    self._pieces[index] = _compressed(segment, before, last)
                except BaseException as e:
                    self._failed = e

    def finish(self) -> bytes:
        """
        The deflate data of the whole document (after its last block).
        """
        try:
            self._segment(bytes(self._pending), last=True)
            self._pending = bytearray()
        finally:
            self.close()
        if self._failed is not None:
            raise self._failed
        pieces, self._pieces = self._pieces, []
        return b"".join(pieces)

    def close(self) -> None:
        """
        Stop the threads, once they have compressed what they were given
        (L{finish} does; call it when a build fails half-way).
        """
        workers, self._workers = self._workers, []
        for segments, _ in workers:
            segments.put(None)
        for _, worker in workers:
            worker.join()


def gzip_member(deflated: bytes, crc32: int, size: int) -> bytes:
    """
    A gzip file of one member: the header, the deflate data of a document
    and its CRC-32 and size.
    """
    trailer = crc32.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")
    return b"".join([_HEADER, deflated, trailer])


def gzip_feed(body: bytes) -> bytes:
    """
    A feed's gzip form, as it is served: L{GZIP_LEVEL}, in L{SEGMENT}s, no
    file name and mtime 0 (equal feeds compress to equal bytes on every
    instance, whichever way they were compressed).
    """
    deflater = Deflater()
    deflater.feed(body)
    return gzip_member(deflater.finish(), zlib.crc32(body), len(body))
