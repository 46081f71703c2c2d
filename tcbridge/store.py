# -*- test-case-name: tests.test_store -*-
"""
The feed store: the one published feed snapshot that every reader sees, and
its copy on disk that lets a restarted bridge serve the last good feed at once.

Publishing is a swap of one immutable L{Snapshot}: a reader gets the old feed
or the new one, never a mix.  Disk writes go to a temporary file that is
fsynced and renamed over the cache file, so a crash leaves either the old file
or the new one.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from email.utils import formatdate
from typing import Any

from attrs import define, field, frozen
from twisted.logger import Logger

from tcbridge.logs import bridge_observer

CACHE_FILE_NAME = "threatconnect-feed.json"
#: Temporary files of L{write_atomic} start with this.
TEMP_PREFIX = ".tmp-"


@frozen
class Snapshot:
    """
    One published feed.

    Only the bytes are kept (the reports as Python objects would take several
    times their size); the HTML view parses them when someone asks.

    :ivar body: the feed document, serialised once, served as is.
    :ivar etag: a strong validator derived from the bytes.
    :ivar published_at: seconds since the epoch when it was published (or,
        for a feed loaded from the cache, when the cache file was written).
    :ivar reports: the number of reports in the feed.
    :ivar iocs: the number of IOC values in the feed.
    :ivar from_cache: C{True} if this feed was loaded from disk at start.
    :ivar gzip_body: C{body} gzip-compressed, once per publish, for clients
        that accept it.
    :ivar gzip_etag: the ETag of the compressed representation.
    :ivar last_modified: C{published_at} as an HTTP date.
    """

    body: bytes = field(repr=False)
    etag: str
    published_at: float
    reports: int
    iocs: int
    from_cache: bool = False
    gzip_body: bytes = field(default=b"", repr=False)
    gzip_etag: str = ""
    last_modified: str = ""

    @classmethod
    def of(
        cls,
        body: bytes,
        reports: int,
        iocs: int,
        published_at: float,
        from_cache: bool = False,
    ) -> Snapshot:
        """
        Make a snapshot of serialised feed bytes, compressing them once.
        Blocking (hashing and gzip of a large feed): call it in a thread.
        """
        digest = hashlib.sha256(body).hexdigest()[:32]
        return cls(
            body=body,
            etag=f'"{digest}"',
            published_at=published_at,
            reports=reports,
            iocs=iocs,
            from_cache=from_cache,
            # mtime=0: equal feeds compress to equal bytes on every instance.
            gzip_body=gzip.compress(body, compresslevel=6, mtime=0),
            gzip_etag=f'"{digest}-gzip"',
            last_modified=formatdate(published_at, usegmt=True),
        )


def count_iocs(reports: Sequence[dict[str, Any]]) -> int:
    """
    The number of IOC values in C{reports}.
    """
    return sum(
        len(values)
        for report in reports
        for key, values in report["iocs"].items()
        if key != "query"
    )


def write_atomic(path: str, data: bytes) -> None:
    """
    Replace the file at C{path} with C{data} so that a reader or a crash sees
    the old content or the new, never part of it: temporary file in the same
    directory, fsync, rename, fsync of the directory.

    This blocks; call it from a thread for large data.

    :raises OSError: if the directory is missing or not writable; the old
        file is then untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@define
class FeedStore:
    """
    Holds the published snapshot and, if a cache folder is configured, keeps
    a copy of it on disk.

    :ivar empty_body: the document served before any feed is published: valid
        feedinfo and no reports.
    :ivar cache_dir: folder for the cache file, or C{None} for memory only.
    :ivar cache_warning: set when a damaged cache file was found at start.
    """

    log = Logger(observer=bridge_observer)

    empty_body: bytes = field(repr=False)
    cache_dir: str | None = None
    current: Snapshot | None = None
    cache_warning: str | None = None

    @property
    def cache_path(self) -> str | None:
        """
        The cache file, or C{None} without a cache folder.
        """
        if self.cache_dir is None:
            return None
        return os.path.join(self.cache_dir, CACHE_FILE_NAME)

    def body(self) -> bytes:
        """
        The bytes to serve now.
        """
        return self.current.body if self.current is not None else self.empty_body

    def write_cache(self, body: bytes) -> None:
        """
        Write C{body} to the cache file atomically, creating the folder if
        needed.  Blocking: the sync cycle calls it in a thread.
        """
        path = self.cache_path
        if path is None:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, body)

    def swap(self, snapshot: Snapshot) -> None:
        """
        Make C{snapshot} the published feed.
        """
        self.current = snapshot

    def _remove_leftovers(self) -> None:
        """
        Delete temporary files that a write killed half-way left behind (each
        can be as big as a feed); the cache file itself is never one of them.
        """
        assert self.cache_dir is not None
        try:
            names = os.listdir(self.cache_dir)
        except OSError:
            return
        for name in names:
            if name.startswith(TEMP_PREFIX) and name.endswith(".json"):
                try:
                    os.unlink(os.path.join(self.cache_dir, name))
                except OSError as e:
                    self.log.warn("Cannot remove {name}: {error}", name=name, error=str(e))
                else:
                    self.log.info("Removed {name}, left by an interrupted write", name=name)

    def load_cache(self, read: Callable[[bytes], Sequence[dict[str, Any]]]) -> Snapshot | None:
        """
        Publish the cached feed from disk, if there is a usable one.

        :param read: parses and checks the bytes, returning the reports;
            raises C{ValueError} with a reason if the file is not a valid
            feed.  A file that fails is never served: it is set aside as
            C{<name>.damaged-<time>} (kept for inspection, out of the way of
            the next write) and C{cache_warning} says so.
        """
        path = self.cache_path
        if path is None:
            return None
        self._remove_leftovers()
        try:
            with open(path, "rb") as f:
                body = f.read()
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            return None
        except OSError as e:
            self.log.warn("Cannot read the cached feed {path}: {error}", path=path, error=str(e))
            return None
        try:
            reports = read(body)
        except ValueError as e:
            aside = f"{path}.damaged-{int(mtime)}"
            try:
                os.replace(path, aside)
            except OSError as move:
                aside = f"(could not be moved: {move.strerror})"
            self.cache_warning = (
                f"The cached feed {path} was damaged ({e}) and was not served; it was set "
                f"aside as {aside}. The feed is empty until the first sync succeeds."
            )
            self.log.warn("{warning}", warning=self.cache_warning)
            return None
        snapshot = Snapshot.of(body, len(reports), count_iocs(reports), mtime, from_cache=True)
        self.swap(snapshot)
        self.log.info(
            "Serving the cached feed from {path}: {reports} reports, {iocs} IOCs",
            path=path,
            reports=len(reports),
            iocs=snapshot.iocs,
        )
        return snapshot
