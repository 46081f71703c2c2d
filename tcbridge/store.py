# -*- test-case-name: tests.unit.test_store -*-
"""
The feed store: the one published feed snapshot that every reader sees, and
its copy on disk that lets a restarted bridge serve the last good feed at once.

A build streams the feed into a temporary file
(L{tcbridge.feedfile.write_feed_file}), never
holding the document in memory.  Publishing (L{FeedStore.publish}) renames
that file over the cache file and swaps the in-memory L{Snapshot}: a reader
gets the old feed or the new one, never a mix, and a crash leaves either
the old file or the new one.

Beside the cache file, each publish leaves (written before the feed is
renamed, each atomically):

 - C{threatconnect-feed.json.gz}: the feed gzip-compressed, as served;
 - C{threatconnect-feed.history}: the report history
   (L{tcbridge.feed.history});
 - C{threatconnect-feed.meta.json}: the feed's size, CRC-32 and SHA-256,
   its report and IOC counts, and size and CRC-32 of the gzip and history
   files.

At start, a cache file that matches its meta file is served at once, without
parsing it again (it was validated when it was built), and its history is
left in its file until a build needs it (L{StoredHistory}); a cache file
that does not match (an older version, a crash between two renames) is
parsed and validated as before.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from collections.abc import Callable, Sequence
from email.utils import formatdate
from typing import Any

import orjson
from attrs import define, field, frozen
from twisted.logger import Logger

from tcbridge.feed.deflate import gzip_feed
from tcbridge.feed.history import AnyHistory, ReportHistory, StoredHistory, resolve
from tcbridge.feedfile import META_VERSION, FeedFile
from tcbridge.files import (
    TEMP_PREFIX,
    file_check,
    read_file,
    unlink_quietly,
    write_atomic,
)
from tcbridge.logs import bridge_observer

CACHE_FILE_NAME = "threatconnect-feed.json"
GZIP_FILE_NAME = CACHE_FILE_NAME + ".gz"
HISTORY_FILE_NAME = "threatconnect-feed.history"
META_FILE_NAME = "threatconnect-feed.meta.json"
#: Temporary files: feeds and histories being written, build jobs and
#: their outcomes (L{tcbridge.childbuild}).
_TEMP_SUFFIXES = (".json", ".history", ".job", ".outcome", ".state")


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
    :ivar history: the feed's report history (itself or its file), if known:
        the next build's timestamps come from it.
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
    history: AnyHistory | None = field(default=None, repr=False, eq=False)

    @classmethod
    def made(
        cls,
        body: bytes,
        sha256: str,
        gzip_body: bytes,
        reports: int,
        iocs: int,
        published_at: float,
        from_cache: bool = False,
        history: AnyHistory | None = None,
    ) -> Snapshot:
        """
        A snapshot of feed bytes whose digest and gzip form are known.
        """
        digest = sha256[:32]
        return cls(
            body=body,
            etag=f'"{digest}"',
            published_at=published_at,
            reports=reports,
            iocs=iocs,
            from_cache=from_cache,
            gzip_body=gzip_body,
            gzip_etag=f'"{digest}-gzip"',
            last_modified=formatdate(published_at, usegmt=True),
            history=history,
        )

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
        return cls.made(
            body,
            hashlib.sha256(body).hexdigest(),
            gzip_feed(body),
            reports,
            iocs,
            published_at,
            from_cache,
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
    _unchecked: tuple[Snapshot, int, str] | None = field(default=None, init=False, repr=False)

    @property
    def cache_path(self) -> str | None:
        """
        The cache file, or C{None} without a cache folder.
        """
        if self.cache_dir is None:
            return None
        return os.path.join(self.cache_dir, CACHE_FILE_NAME)

    def _beside(self, name: str) -> str:
        assert self.cache_dir is not None
        return os.path.join(self.cache_dir, name)

    def body(self) -> bytes:
        """
        The bytes to serve now.
        """
        return self.current.body if self.current is not None else self.empty_body

    def build_directory(self) -> str:
        """
        Where a build writes its temporary file: the cache folder (created
        if needed), so that publishing is a rename; else the system's
        temporary folder.
        """
        if self.cache_dir is None:
            return tempfile.gettempdir()
        os.makedirs(self.cache_dir, exist_ok=True)
        return self.cache_dir

    def write_cache(self, body: bytes) -> None:
        """
        Write C{body} to the cache file atomically, creating the folder if
        needed (its meta file is removed, so the next start checks it).
        Blocking.
        """
        path = self.cache_path
        if path is None:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        unlink_quietly(self._beside(META_FILE_NAME))
        write_atomic(path, body)

    def publish(self, feed: FeedFile, history: AnyHistory | None, now: float) -> Snapshot:
        """
        Make a built feed the published one: on disk (with its gzip form,
        history and meta file) when there is a cache folder, then in memory.
        The history is C{feed.history_path} if the build saved one there,
        else C{history}.  Blocking: call it in a thread, then L{swap} on the
        reactor.
        """
        # A newer feed replaces the cached one: whatever its check finds, that
        # file is no longer the one to set aside.
        self._unchecked = None
        gz = feed.gzip_body
        if gz is None:
            gz = gzip_feed(read_file(feed.path))
            feed.gzip_body = gz
        path = self.cache_path
        if path is None:
            if feed.history_path is not None:
                history = StoredHistory(feed.history_path).load()
            body = read_file(feed.path)
            feed.discard()
            return Snapshot.made(
                body, feed.sha256, gz, feed.reports, feed.iocs, now, history=history
            )
        unlink_quietly(self._beside(META_FILE_NAME))
        write_atomic(self._beside(GZIP_FILE_NAME), gz)
        meta = feed.meta()
        if feed.history_path is not None:
            os.replace(feed.history_path, self._beside(HISTORY_FILE_NAME))
            feed.history_path = None
            history = StoredHistory(self._beside(HISTORY_FILE_NAME))
        elif history is not None:
            self._write_history(resolve(history))
        if history is not None:
            meta.update(file_check(self._beside(HISTORY_FILE_NAME), "history"))
        feed.install(path)
        write_atomic(self._beside(META_FILE_NAME), orjson.dumps(meta))
        body = read_file(path)
        return Snapshot.made(body, feed.sha256, gz, feed.reports, feed.iocs, now, history=history)

    def _write_history(self, history: ReportHistory) -> None:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".json", dir=self.cache_dir)
        os.close(fd)
        try:
            history.save(tmp)
            os.replace(tmp, self._beside(HISTORY_FILE_NAME))
        except BaseException:
            unlink_quietly(tmp)
            raise

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
            if name.startswith(TEMP_PREFIX) and name.endswith(_TEMP_SUFFIXES):
                try:
                    os.unlink(os.path.join(self.cache_dir, name))
                except OSError as e:
                    self.log.warn("Cannot remove {name}: {error}", name=name, error=str(e))
                else:
                    self.log.info("Removed {name}, left by an interrupted write", name=name)

    def _matching(self, body: bytes, mtime: float, check_later: bool) -> Snapshot | None:
        """
        The snapshot of a cache file that matches its meta file and has its
        gzip and history files, or C{None}.  With C{check_later}, only the
        size is compared now and the CRC is left to L{check_loaded}.
        """
        try:
            meta = orjson.loads(read_file(self._beside(META_FILE_NAME)))
            if (
                not isinstance(meta, dict)
                or meta.get("version") != META_VERSION
                or meta.get("size") != len(body)
                or not isinstance(meta.get("crc32"), int)
                or (not check_later and meta["crc32"] != zlib.crc32(body))
            ):
                return None
            gz = read_file(self._beside(GZIP_FILE_NAME))
            if meta.get("gzip_size") != len(gz) or meta.get("gzip_crc32") != zlib.crc32(gz):
                return None
            history = self._history(meta)
            if history is None:
                return None
            snapshot = Snapshot.made(
                body,
                str(meta["sha256"]),
                gz,
                int(meta["reports"]),
                int(meta["iocs"]),
                mtime,
                from_cache=True,
                history=history,
            )
            if check_later:
                self._unchecked = (snapshot, meta["crc32"], self._beside(CACHE_FILE_NAME))
            return snapshot
        except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None

    def check_loaded(self) -> str | None:
        """
        Finish checking the cached feed that L{load_cache} published with
        C{check_later}: compare its CRC-32 with the meta file's.  Blocking
        (a third of a second for a 250 MB feed, without the GIL): call it in
        a thread, then L{drop_loaded} on the reactor with the answer.

        :return: what is wrong with it, or C{None} if it is sound (or there
            is nothing left to check).
        """
        unchecked = self._unchecked
        if unchecked is None:
            return None
        snapshot, crc32, _ = unchecked
        if zlib.crc32(snapshot.body) == crc32:
            self._unchecked = None
            return None
        return "its checksum does not match the meta file"

    def drop_loaded(self, problem: str) -> str | None:
        """
        Withdraw the cached feed found damaged by L{check_loaded}, set its
        file aside, and say so in C{cache_warning}; unless a sync has
        published a newer feed meanwhile (then only the check is dropped).

        :return: the warning, if the cached feed was withdrawn.
        """
        unchecked, self._unchecked = self._unchecked, None
        if unchecked is None or self.current is not unchecked[0]:
            return None
        snapshot, _, path = unchecked
        self.current = None
        self._set_aside(path, problem, int(snapshot.published_at))
        return self.cache_warning

    def _history(self, meta: dict[str, Any]) -> AnyHistory | None:
        """
        The history beside the cache file: left in its file if the meta file
        vouches for it, else read now; C{None} if it is unusable (the feed is
        then read again, to rebuild it).
        """
        path = self._beside(HISTORY_FILE_NAME)
        try:
            if "history_size" in meta:
                if file_check(path, "history") != {
                    "history_size": meta["history_size"],
                    "history_crc32": meta.get("history_crc32"),
                }:
                    raise ValueError("it does not match the meta file")
                return StoredHistory(path)
            return ReportHistory.load(path)
        except (OSError, ValueError) as e:
            self.log.warn(
                "The report history beside the cached feed cannot be read ({error}); "
                "it is rebuilt from the feed",
                error=str(e),
            )
            return None

    def load_cache(
        self,
        read: Callable[[bytes], Sequence[dict[str, Any]]],
        check_later: bool = False,
    ) -> Snapshot | None:
        """
        Publish the cached feed from disk, if there is a usable one.

        :param read: parses and checks the bytes, returning the reports;
            raises C{ValueError} with a reason if the file is not a valid
            feed.  It is called only when the cache file does not match its
            meta file.  A file that fails is never served: it is set aside
            as C{<name>.damaged-<time>} (kept for inspection, out of the way
            of the next write) and C{cache_warning} says so.
        :param check_later: serve a cache file whose size matches its meta
            file at once and leave its checksum to L{check_loaded} (the
            service, so that a big cached feed is served within a second of
            start); otherwise it is checked now.
        """
        path = self.cache_path
        if path is None:
            return None
        self._remove_leftovers()
        try:
            body = read_file(path)
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            return None
        except OSError as e:
            self.log.warn("Cannot read the cached feed {path}: {error}", path=path, error=str(e))
            return None
        snapshot = self._matching(body, mtime, check_later)
        if snapshot is None:
            snapshot = self._checked(path, body, mtime, read)
            if snapshot is None:
                return None
        self.swap(snapshot)
        self.log.info(
            "Serving the cached feed from {path}: {reports} reports, {iocs} IOCs",
            path=path,
            reports=snapshot.reports,
            iocs=snapshot.iocs,
        )
        return snapshot

    def _checked(
        self,
        path: str,
        body: bytes,
        mtime: float,
        read: Callable[[bytes], Sequence[dict[str, Any]]],
    ) -> Snapshot | None:
        """
        The snapshot of a cache file with no matching meta file, parsed and
        checked; C{None} (the file set aside) if it is not a valid feed.
        """
        try:
            reports = read(body)
        except ValueError as e:
            self._set_aside(path, str(e), int(mtime))
            return None
        return Snapshot.of(body, len(reports), count_iocs(reports), mtime, from_cache=True)

    def _set_aside(self, path: str, problem: str, stamp: int) -> None:
        """
        Move a damaged cache file out of the way, as C{<name>.damaged-<time>}
        (kept for inspection), and say so in C{cache_warning} and the log.
        """
        aside = f"{path}.damaged-{stamp}"
        try:
            os.replace(path, aside)
        except OSError as move:
            aside = f"(could not be moved: {move.strerror})"
        self.cache_warning = (
            f"The cached feed {path} was damaged ({problem}) and was not served; it was set "
            f"aside as {aside}. The feed is empty until the first sync succeeds."
        )
        self.log.warn("{warning}", warning=self.cache_warning)
