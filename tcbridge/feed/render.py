# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
Serialisation: reports to bytes, and the feed document streamed to a file.

Reports are rendered straight to bytes, byte-identical to what
C{orjson.dumps} gives for the report as a dict with its keys in the
documented order (C{id}, C{timestamp}, C{link}, C{title}, C{score},
C{iocs}, C{description}, C{tags}): small parts go through orjson, IOC lists
(hex digests, addresses, host names: never anything JSON must escape) are
written directly.

A report is handed to L{FeedWriter} as its id (as JSON), its timestamp and
its I{body}: everything after the timestamp, starting with a comma, as a
list of pieces (a large IOC list is never copied into one string with the
rest; L{tcbridge.feed.lists} makes those).  L{report_digest} reads the same
pieces.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import zlib
from typing import IO, Any, Final

import orjson

from .deflate import Deflater, gzip_member

_FLUSH_AT: Final = 1 << 20
#: blocks a background writer may hold before the renderer waits for it
_BLOCKS_AHEAD: Final = 2
#: threads that compress the gzip form beside a background writer
_GZIP_THREADS: Final = 2

Body = list[bytes]


class Chunk:
    """
    Reports rendered together: their JSON separated by commas, how many
    there are, and the first and last report ids (for the order check).
    """

    __slots__ = ("count", "data", "first", "last")

    def __init__(self, data: bytes, count: int, first: str, last: str) -> None:
        self.data = data
        self.count = count
        self.first = first
        self.last = last


def report_digest(id_json: bytes, body: Body) -> bytes:
    """
    The 8-byte content digest of a report: BLAKE2b over the report as
    serialised, without its C{timestamp} (so equal content gives an equal
    digest whatever the timestamp).
    """
    digest = hashlib.blake2b(b'{"id":' + id_json + b"," + body[0][1:], digest_size=8)
    for piece in body[1:]:
        digest.update(piece)
    return digest.digest()


def digest_of(report: dict[str, Any]) -> bytes:
    """
    L{report_digest} of a report given as a dict (for example one read back
    from a feed file), its keys in the order they were written.
    """
    content = {key: value for key, value in report.items() if key != "timestamp"}
    return hashlib.blake2b(orjson.dumps(content), digest_size=8).digest()


def _indent(data: bytes, spaces: int) -> bytes:
    return data.replace(b"\n", b"\n" + b" " * spaces)


class FeedWriter:
    """
    Streams a feed document (C{{"feedinfo": ..., "reports": [...]}}) to a
    binary file, computing its SHA-256 and CRC-32 (unless C{checksums} is
    false: write mode, which keeps no meta file, skips them) and, if asked,
    its gzip form on the way.  Reports must come in id order; the output is byte-identical to
    C{orjson.dumps} of the whole document (or, with C{pretty}, to
    C{orjson.dumps(doc, option=OPT_INDENT_2 | OPT_APPEND_NEWLINE)}).

    With C{background}, the file writes and checksums run in a thread of
    their own, and the compression in two others (they let go of the
    interpreter lock; see L{tcbridge.feed.deflate}), beside the rendering:
    for a process that will not fork while it writes.

    :ivar size: bytes written so far.
    :ivar reports: reports written so far.
    :ivar crc32: the CRC-32 of what was written (after L{end}).
    """

    def __init__(
        self,
        out: IO[bytes],
        *,
        gzip: bool = False,
        pretty: bool = False,
        checksums: bool = True,
        background: bool = False,
    ) -> None:
        self._out = out
        self._sha = hashlib.sha256() if checksums else None
        self._crc = checksums or gzip
        self._deflater = Deflater(threads=_GZIP_THREADS if background else 0) if gzip else None
        self.crc32 = 0
        self._gzipped = b""
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._pretty = pretty
        self.size = 0
        self.reports = 0
        self._blocks: queue.Queue[bytes | None] | None = None
        self._worker: threading.Thread | None = None
        self._failed: BaseException | None = None
        if background:
            self._blocks = queue.Queue(maxsize=_BLOCKS_AHEAD)
            self._worker = threading.Thread(target=self._take, name="tcbridge-feedwriter")
            self._worker.start()

    def _write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending = []
        self._pending_size = 0
        self.size += len(data)
        if self._deflater is not None:
            self._deflater.feed(data)
        if self._blocks is None:
            self._put(data)
            return
        if self._failed is not None:
            raise self._failed
        self._blocks.put(data)

    def _take(self) -> None:
        """
        The thread of a background writer: put out each block until told
        to stop (a failure is kept for L{end} to raise).
        """
        assert self._blocks is not None
        while (data := self._blocks.get()) is not None:
            if self._failed is None:
                try:
                    self._put(data)
                except BaseException as e:
                    self._failed = e

    def _put(self, data: bytes) -> None:
        """
        Write a block, and take it into the checksums.
        """
        self._out.write(data)
        if self._sha is not None:
            self._sha.update(data)
        if self._crc:
            self.crc32 = zlib.crc32(data, self.crc32)

    def begin(self, feedinfo: dict[str, Any]) -> None:
        """
        Write everything before the first report.
        """
        if self._pretty:
            info = _indent(orjson.dumps(feedinfo, option=orjson.OPT_INDENT_2), 2)
            self._write(b'{\n  "feedinfo": ' + info + b',\n  "reports": [')
        else:
            self._write(b'{"feedinfo":' + orjson.dumps(feedinfo) + b',"reports":[')

    def report(self, id_json: bytes, timestamp: int, body: Body) -> None:
        """
        Write one report: C{{"id":<id_json>,"timestamp":<timestamp>} then
        the body.
        """
        head = b'{"id":' + id_json + b',"timestamp":' + str(timestamp).encode()
        if self._pretty:
            report = orjson.loads(b"".join([head, *body]))
            text = _indent(orjson.dumps(report, option=orjson.OPT_INDENT_2), 4)
            self._write((b"\n    " if not self.reports else b",\n    ") + text)
        else:
            self._write(head if not self.reports else b"," + head)
            for piece in body:
                self._write(piece)
        self.reports += 1

    def chunk(self, chunk: Chunk) -> None:
        """
        Write reports rendered together (see L{Chunk}).
        """
        if self._pretty:
            for report in orjson.loads(b"[" + chunk.data + b"]"):
                text = _indent(orjson.dumps(report, option=orjson.OPT_INDENT_2), 4)
                self._write((b"\n    " if not self.reports else b",\n    ") + text)
                self.reports += 1
            return
        self._write(chunk.data if not self.reports else b"," + chunk.data)
        self.reports += chunk.count

    def end(self) -> None:
        """
        Write the end of the document and flush everything.
        """
        if self._pretty:
            self._write((b"\n  ]" if self.reports else b"]") + b"\n}\n")
        else:
            self._write(b"]}")
        self._flush()
        try:
            if self._deflater is not None:
                self._gzipped = self._deflater.finish()
        finally:
            self.close()
        if self._failed is not None:
            raise self._failed
        self._out.flush()

    def close(self) -> None:
        """
        Stop the background threads, if any, once they have put out what
        they were given (L{end} does; call it when a build fails half-way).
        """
        if self._worker is not None and self._blocks is not None:
            self._blocks.put(None)
            self._worker.join()
            self._worker = None
        if self._deflater is not None:
            self._deflater.close()

    @property
    def sha256(self) -> str:
        """
        The hex SHA-256 of what was written (after L{end}; C{""} without
        checksums).
        """
        return self._sha.hexdigest() if self._sha is not None else ""

    def gzip_bytes(self) -> bytes:
        """
        The document gzip-compressed, as L{tcbridge.feed.deflate.gzip_feed}
        gives it; only when made with C{gzip=True}, after L{end}.
        """
        assert self._deflater is not None
        return gzip_member(self._gzipped, self.crc32, self.size)
