"""
Tests for L{tcbridge.store}: atomic writes and the feed served after a
restart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from tcbridge.feed.builder import FeedBuilder
from tcbridge.feed.history import ReportHistory, StoredHistory
from tcbridge.feed.job import build_feed_file
from tcbridge.files import write_atomic
from tcbridge.status import SyncStatus
from tcbridge.store import (
    CACHE_FILE_NAME,
    HISTORY_FILE_NAME,
    META_FILE_NAME,
    FeedStore,
    Snapshot,
    count_iocs,
)
from tcbridge.sync.work import run_inline
from tcbridge.wiring import check_cached_feed
from tests.helpers import result_of
from tests.unit.test_feed_builder import file

EMPTY = b'{"feedinfo":{},"reports":[]}'


def _report(rid: str, md5s: list[str]) -> dict[str, Any]:
    return {"id": rid, "link": "", "title": "", "timestamp": 1, "score": 50, "iocs": {"md5": md5s}}


def _read(body: bytes) -> list[dict[str, Any]]:
    doc = orjson.loads(body)
    if "reports" not in doc:
        raise ValueError("no reports")
    reports: list[dict[str, Any]] = doc["reports"]
    return reports


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    """
    The file holds exactly the new bytes and no temporary file is left over.
    """
    path = tmp_path / "feed.json"
    path.write_bytes(b"old")
    write_atomic(str(path), b"new content")
    assert path.read_bytes() == b"new content"
    assert os.listdir(tmp_path) == ["feed.json"]


def test_write_atomic_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    If the new content cannot be written (here: the disk fails at fsync),
    the old file is untouched, no temporary file is left, and the error is
    raised; a missing folder is an error too.
    """
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "no-such-dir" / "feed.json"), b"x")
    path = tmp_path / "feed.json"
    path.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(str(path), b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["feed.json"]


def test_empty_body_before_publish() -> None:
    """
    Before anything is published the store serves the empty document.
    """
    store = FeedStore(empty_body=EMPTY)
    assert store.body() == EMPTY
    assert store.current is None


def test_snapshot_counts_and_etag() -> None:
    """
    IOCs are counted over every report, and a snapshot's ETag depends on
    its bytes only.
    """
    reports = [_report("a", ["0" * 32, "1" * 32]), _report("b", ["2" * 32])]
    assert count_iocs(reports) == 3
    one = Snapshot.of(b"body", 2, 3, 10.0)
    two = Snapshot.of(b"body", 2, 3, 20.0)
    assert one.etag == two.etag
    assert one.etag != Snapshot.of(b"other", 2, 3, 10.0).etag


def test_cache_round_trip(tmp_path: Path) -> None:
    """
    A feed written to the cache folder is served by a new store at start,
    marked as loaded from the cache.
    """
    body = orjson.dumps({"feedinfo": {}, "reports": [_report("a", ["0" * 32])]})
    first = FeedStore(empty_body=EMPTY, cache_dir=str(tmp_path / "cache"))
    first.write_cache(body)
    assert (tmp_path / "cache" / CACHE_FILE_NAME).read_bytes() == body
    second = FeedStore(empty_body=EMPTY, cache_dir=str(tmp_path / "cache"))
    snapshot = second.load_cache(_read)
    assert snapshot is not None and snapshot.from_cache
    assert second.body() == body
    assert snapshot.iocs == 1


def test_damaged_cache_not_served(tmp_path: Path) -> None:
    """
    A cache file that does not read as a feed is not served: the store keeps
    serving the empty document, and the file is set aside with a warning.
    """
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / CACHE_FILE_NAME).write_bytes(b'{"feedinfo": {}, "repo')
    store = FeedStore(empty_body=EMPTY, cache_dir=str(cache))

    def read(body: bytes) -> list[dict[str, Any]]:
        try:
            return _read(body)
        except orjson.JSONDecodeError as e:
            raise ValueError(str(e)) from None

    assert store.load_cache(read) is None
    assert store.body() == EMPTY
    assert not (cache / CACHE_FILE_NAME).exists()
    aside = [p.name for p in cache.iterdir()]
    assert len(aside) == 1 and aside[0].startswith(CACHE_FILE_NAME + ".damaged-")
    assert store.cache_warning is not None and "set aside" in store.cache_warning


def test_no_cache_folder(tmp_path: Path) -> None:
    """
    Without a cache folder nothing is written or read.
    """
    store = FeedStore(empty_body=EMPTY)
    store.write_cache(b"x")
    assert store.load_cache(_read) is None
    assert store.cache_path is None


def test_leftover_temporary_files_are_removed_at_start(tmp_path: Path) -> None:
    """
    Temporary files left by a write that was killed half-way are deleted at
    start, so repeated crashes do not fill the disk; the cache is served.
    """
    cache = tmp_path / "cache"
    cache.mkdir()
    body = orjson.dumps({"feedinfo": {}, "reports": [_report("a", ["0" * 32])]})
    (cache / CACHE_FILE_NAME).write_bytes(body)
    (cache / ".tmp-abc123.json").write_bytes(body[:10])
    for suffix in (".history", ".job", ".outcome", ".state"):
        (cache / f".tmp-abc123{suffix}").write_bytes(b"left by a killed build")
    (cache / "accept-shrink").write_text("")
    store = FeedStore(empty_body=EMPTY, cache_dir=str(cache))
    assert store.load_cache(_read) is not None
    assert sorted(p.name for p in cache.iterdir()) == ["accept-shrink", CACHE_FILE_NAME]


def _published(cache: Path) -> tuple[bytes, ReportHistory]:
    """
    Publish a small built feed into C{cache}; its bytes and history.
    """
    store = FeedStore(empty_body=EMPTY, cache_dir=str(cache))
    builder = FeedBuilder()
    builder.add([file("a" * 32, id="1", last_modified=10)])
    feed = build_feed_file(builder, store.build_directory(), gzip=False, pretty=False)
    history = builder.history
    assert isinstance(history, ReportHistory)
    snapshot = store.publish(feed, history, 5.0)
    assert snapshot.history is history
    return snapshot.body, history


def test_restart_leaves_the_history_in_its_file(tmp_path: Path) -> None:
    """
    A restarted store serves the cached feed without reading it again, and
    leaves its history in its file (checked against the meta file) until a
    build needs it.
    """
    body, history = _published(tmp_path / "cache")
    store = FeedStore(empty_body=EMPTY, cache_dir=str(tmp_path / "cache"))

    def read(body: bytes) -> list[dict[str, Any]]:
        raise AssertionError("the feed was read again")

    snapshot = store.load_cache(read)
    assert snapshot is not None and snapshot.body == body
    assert isinstance(snapshot.history, StoredHistory)
    assert snapshot.history.load() == history


@pytest.mark.parametrize("change", ["damaged", "older meta", "missing"])
def test_restart_with_an_unusable_history(tmp_path: Path, change: str) -> None:
    """
    A history file that does not match the meta file, or cannot be read
    (an older meta file without its figures), makes the store read the feed
    again, so that the history is rebuilt from it; a history that reads
    fine beside an older meta file is read at once.
    """
    cache = tmp_path / "cache"
    body, history = _published(cache)
    meta = orjson.loads((cache / META_FILE_NAME).read_bytes())
    if change == "damaged":
        (cache / HISTORY_FILE_NAME).write_bytes(b"damaged")
    elif change == "older meta":
        del meta["history_size"], meta["history_crc32"]
        (cache / META_FILE_NAME).write_bytes(orjson.dumps(meta))
    else:
        (cache / HISTORY_FILE_NAME).unlink()
    store = FeedStore(empty_body=EMPTY, cache_dir=str(cache))
    reads: list[bytes] = []

    def read(body: bytes) -> list[dict[str, Any]]:
        reads.append(body)
        return _read(body)

    snapshot = store.load_cache(read)
    assert snapshot is not None and snapshot.body == body
    if change == "older meta":
        assert reads == [] and snapshot.history == history
    else:
        assert reads == [body] and snapshot.history is None


def _flip_last_digit(body: bytes) -> bytes:
    """
    The same bytes with one digit changed: same size, different checksum.
    """
    at = max(body.rfind(d) for d in b"0123456789")
    return body[:at] + (b"1" if body[at : at + 1] != b"1" else b"2") + body[at + 1 :]


def test_checked_later_sound_cache_stays(tmp_path: Path) -> None:
    """
    The service serves a cached feed whose size matches its meta file at
    once and checks its checksum afterwards: a sound one stays published.
    """
    cache = tmp_path / "cache"
    body, _ = _published(cache)
    store = FeedStore(empty_body=EMPTY, cache_dir=str(cache))
    snapshot = store.load_cache(_read, check_later=True)
    assert snapshot is not None and store.current is snapshot
    assert store.check_loaded() is None
    assert store.current is snapshot and store.body() == body
    assert (cache / CACHE_FILE_NAME).read_bytes() == body


def _served_damaged(cache: Path) -> tuple[FeedStore, bytes]:
    """
    A store started on a published cache whose feed was then damaged
    without changing its size (L{_flip_last_digit}): served for now, its
    check still to come; and the feed as it was published.
    """
    body, _ = _published(cache)
    (cache / CACHE_FILE_NAME).write_bytes(_flip_last_digit(body))
    store = FeedStore(empty_body=EMPTY, cache_dir=str(cache))
    assert store.load_cache(_read, check_later=True) is not None
    return store, body


def test_checked_later_damage_withdraws_the_cached_feed(tmp_path: Path) -> None:
    """
    A cached feed damaged without changing its size (served for the moment
    the check takes) is withdrawn once the check finds it: the empty feed is
    served, the file is set aside, and the warning names it.
    """
    cache = tmp_path / "cache"
    store, body = _served_damaged(cache)
    damaged = _flip_last_digit(body)
    problem = store.check_loaded()
    assert problem == "its checksum does not match the meta file"
    warning = store.drop_loaded(problem)
    assert store.current is None and store.body() == EMPTY
    assert warning is not None and "was damaged (its checksum" in warning
    assert not (cache / CACHE_FILE_NAME).exists()
    [aside] = [p for p in cache.iterdir() if ".damaged-" in p.name]
    assert aside.read_bytes() == damaged


def test_checked_later_damage_after_a_newer_publish_changes_nothing(tmp_path: Path) -> None:
    """
    If a sync has published a newer feed before the check of the cached one
    ends, the check's verdict no longer matters: the newer feed and its
    file stay.
    """
    cache = tmp_path / "cache"
    store, body = _served_damaged(cache)
    problem = store.check_loaded()
    assert problem is not None
    newer = Snapshot.of(body, 1, 1, 6.0)
    store.swap(newer)
    assert store.drop_loaded(problem) is None
    assert store.current is newer and store.cache_warning is None
    assert (cache / CACHE_FILE_NAME).exists()


def test_checked_now_damage_is_never_served(tmp_path: Path) -> None:
    """
    Checked at once (write mode, tests), the same damage is found before
    anything is served: the file is read as a feed instead, and set aside
    when that fails too.
    """
    cache = tmp_path / "cache"
    body, _ = _published(cache)
    (cache / CACHE_FILE_NAME).write_bytes(_flip_last_digit(body)[:-1] + b"x")
    store = FeedStore(empty_body=EMPTY, cache_dir=str(cache))
    assert store.load_cache(_read) is None
    assert store.cache_warning is not None and "was damaged" in store.cache_warning


def test_service_check_puts_the_warning_on_the_page(tmp_path: Path) -> None:
    """
    The service's check after start (L{check_cached_feed}) withdraws a
    damaged cached feed and adds the warning to the notices the page and
    /healthz show.
    """
    store, _ = _served_damaged(tmp_path / "cache")
    status = SyncStatus(started_at=0.0, notices=("configured notice",))
    result_of(check_cached_feed(store, status, run_inline))
    assert store.current is None
    assert status.notices[0] == "configured notice"
    assert status.notices[1] == store.cache_warning


def test_checked_later_damage_found_during_a_publish_keeps_the_new_file(
    tmp_path: Path,
) -> None:
    """
    If the check of the cached feed ends while a sync is publishing (the new
    file renamed over the cache file, the snapshot not swapped yet), the
    verdict on the old file must not set the new one aside.
    """
    cache = tmp_path / "cache"
    store, _ = _served_damaged(cache)
    problem = store.check_loaded()
    assert problem is not None
    builder = FeedBuilder()
    builder.add([file("b" * 32, id="2", last_modified=20)])
    feed = build_feed_file(builder, store.build_directory(), gzip=False, pretty=False)
    newer = store.publish(feed, builder.history, 7.0)
    assert store.drop_loaded(problem) is None
    store.swap(newer)
    assert (cache / CACHE_FILE_NAME).read_bytes() == newer.body
    assert [p for p in cache.iterdir() if ".damaged-" in p.name] == []
