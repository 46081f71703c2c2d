# -*- test-case-name: tests.unit.test_store -*-
"""
A feed built into a temporary file (L{write_feed_file}: streamed, never
held whole in memory) and what its meta file records about it, until it is
published (L{FeedFile.install}) or dropped.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Callable
from typing import IO, Any

from attrs import define

from tcbridge.feed.render import FeedWriter
from tcbridge.files import TEMP_PREFIX, fsync_directory, unlink_quietly

#: The meta file's format; another version is not trusted.
META_VERSION = 1


@define
class FeedFile:
    """
    A feed built into a temporary file, not published yet: L{install} it
    where it belongs, or L{discard} it.

    :ivar path: the temporary file.
    :ivar size: its size in bytes.
    :ivar sha256: its SHA-256 (hex).
    :ivar crc32: its CRC-32.
    :ivar gzip_body: the feed gzip-compressed, if that was asked for.
    :ivar reports: reports in the feed.
    :ivar iocs: IOC values in the feed.
    :ivar history_path: the built feed's report history, saved in a
        temporary file beside it by a build in a child process.
    """

    path: str
    size: int
    sha256: str
    crc32: int
    gzip_body: bytes | None
    reports: int = 0
    iocs: int = 0
    history_path: str | None = None

    def install(self, target: str) -> None:
        """
        Rename the file to C{target} (atomically, durably).
        """
        os.chmod(self.path, 0o644)
        os.replace(self.path, target)
        fsync_directory(os.path.dirname(os.path.abspath(target)))

    def discard(self) -> None:
        """
        Delete the temporary file (and history file).
        """
        unlink_quietly(self.path)
        if self.history_path is not None:
            unlink_quietly(self.history_path)

    def meta(self) -> dict[str, Any]:
        """
        What the meta file records about this feed.
        """
        gz = self.gzip_body or b""
        return {
            "version": META_VERSION,
            "size": self.size,
            "crc32": self.crc32,
            "sha256": self.sha256,
            "reports": self.reports,
            "iocs": self.iocs,
            "gzip_size": len(gz),
            "gzip_crc32": zlib.crc32(gz),
        }


def write_feed_file(
    directory: str,
    build: Callable[[FeedWriter], None],
    *,
    gzip: bool = False,
    pretty: bool = False,
    checksums: bool = True,
    background: bool = False,
) -> FeedFile:
    """
    Stream a feed into a new temporary file in C{directory}: C{build} gets
    a L{FeedWriter} on it (without C{checksums}, the file's C{sha256} is
    empty and its C{crc32} 0 unless gzip is asked for; with C{background},
    see L{FeedWriter}).  Blocking: call it in a thread.

    :raise Exception: whatever C{build} raises (the file is then deleted).
    """
    fd, path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            out: IO[bytes] = f
            writer = FeedWriter(
                out, gzip=gzip, pretty=pretty, checksums=checksums, background=background
            )
            try:
                build(writer)
            finally:
                writer.close()
            os.fsync(f.fileno())
    except BaseException:
        unlink_quietly(path)
        raise
    return FeedFile(
        path=path,
        size=writer.size,
        sha256=writer.sha256,
        crc32=writer.crc32,
        gzip_body=writer.gzip_bytes() if gzip else None,
    )
