# -*- test-case-name: tests.unit.test_feed_job -*-
"""
Tests for L{tcbridge.feed.job}: a build written to a file, run by a child
(here called in-process), gives the same feed as a build in the service.
"""

from __future__ import annotations

import gzip as gz
import hashlib
import io
import pickle
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from tcbridge.feed.builder import FeedBuilder, FeedSettings, FeedValidationError
from tcbridge.feed.history import ReportHistory, StoredHistory
from tcbridge.feed.job import (
    BAD_JOB,
    WAIT,
    BuildJob,
    build_feed_file,
    main,
    read_outcome,
    run_job,
    write_job,
)
from tests.unit.test_feed_builder import MD5, address, file, host

GROUPINGS = ("Condensed", "MaxCondensed", "Expanded")


def _builder(history: Any = None, grouping: str = "Condensed") -> FeedBuilder:
    builder = FeedBuilder(FeedSettings(grouping=grouping), history=history)  # type: ignore[arg-type]
    builder.add(
        [
            file(MD5, id="1", last_modified=100, tags=("APT 28",)),
            address("10.0.0.1", id="2", last_modified=200),
            host("evil.example.com", id="3", last_modified=300, source="Other"),
        ]
    )
    return builder


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_child_gives_the_same_feed(tmp_path: Path, grouping: str) -> None:
    """
    A job run through files (written, read by C{main}, outcome read back)
    gives the bytes, figures and history of a build in the same process,
    and its feed can be built again from the stored history alone.
    """
    here = _builder(grouping=grouping)
    expected = Path(build_feed_file(here, str(tmp_path), gzip=False, pretty=False).path)
    saved = tmp_path / "history"
    job = BuildJob(_builder(grouping=grouping), str(tmp_path), True, False, str(saved))
    write_job(str(tmp_path / "job"), job)
    assert main([str(tmp_path / "job"), str(tmp_path / "outcome")]) == 0
    outcome = read_outcome(str(tmp_path / "outcome"))
    assert outcome.feed is not None and outcome.problems == () and outcome.error is None
    assert Path(outcome.feed.path).read_bytes() == expected.read_bytes()
    assert outcome.feed.gzip_body is not None
    assert (outcome.feed.reports, outcome.feed.iocs) == (here.stats.reports, here.stats.iocs)
    assert outcome.stats == here.stats
    assert ReportHistory.load(str(saved)) == here.history
    again = run_job(
        BuildJob(_builder(StoredHistory(str(saved)), grouping), str(tmp_path), False, False, None)
    )
    assert again.feed is not None
    assert Path(again.feed.path).read_bytes() == expected.read_bytes()


def test_damaged_history_starts_afresh(tmp_path: Path) -> None:
    """
    A history file that cannot be read does not stop the build: the feed
    is built as with no history, and a note says why.
    """
    damaged = tmp_path / "history"
    damaged.write_bytes(b"not a history")
    outcome = run_job(
        BuildJob(_builder(StoredHistory(str(damaged))), str(tmp_path), False, False, None)
    )
    assert outcome.feed is not None
    assert len(outcome.notes) == 1 and "cannot be read" in outcome.notes[0]
    fresh = build_feed_file(_builder(), str(tmp_path), gzip=False, pretty=False)
    assert Path(outcome.feed.path).read_bytes() == Path(fresh.path).read_bytes()
    missing = run_job(
        BuildJob(_builder(StoredHistory(str(tmp_path / "gone"))), str(tmp_path), False, False, None)
    )
    assert missing.feed is not None and missing.notes == ()


class _Refusing(FeedBuilder):
    def build_to(self, writer: Any, *, fork: bool = False) -> None:
        raise FeedValidationError(["report 'x': bad id"])


class _Broken(FeedBuilder):
    def build_to(self, writer: Any, *, fork: bool = False) -> None:
        raise OSError(28, "No space left on device")


def test_failures_become_the_outcome(tmp_path: Path) -> None:
    """
    A feed that fails validation, or any other failure, is reported in the
    outcome (problems, or the error with its traceback) and leaves no file.
    """
    refused = run_job(BuildJob(_Refusing(), str(tmp_path), False, False, None))
    assert refused.feed is None and refused.problems == ("report 'x': bad id",)
    broken = run_job(BuildJob(_Broken(), str(tmp_path), False, False, None))
    assert broken.feed is None and broken.error is not None
    assert "No space left on device" in broken.error
    assert list(tmp_path.iterdir()) == []


def test_bad_job_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    A missing, damaged or foreign job file makes the child exit with
    C{BAD_JOB} and say which file; an outcome file must hold an outcome.
    """
    assert main([]) == BAD_JOB
    assert "usage" in capsys.readouterr().err
    assert main([str(tmp_path / "none"), str(tmp_path / "out")]) == BAD_JOB
    assert "cannot read the build job" in capsys.readouterr().err
    (tmp_path / "junk").write_bytes(b"\x80\x05junk")
    assert main([str(tmp_path / "junk"), str(tmp_path / "out")]) == BAD_JOB
    (tmp_path / "other").write_bytes(pickle.dumps({"a": 1}))
    assert main([str(tmp_path / "other"), str(tmp_path / "out")]) == BAD_JOB
    assert "holds no build job" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="holds no build outcome"):
        read_outcome(str(tmp_path / "other"))


@pytest.mark.parametrize("gzip", [False, True])
def test_a_build_without_checksums_writes_the_same_feed(tmp_path: Path, gzip: bool) -> None:
    """
    Write mode skips the checksums a meta file needs: the file is the same,
    its SHA-256 is left empty, and a gzip form (which needs the CRC-32)
    is still right.
    """
    checked = build_feed_file(_builder(), str(tmp_path), gzip=gzip, pretty=False)
    quick = build_feed_file(_builder(), str(tmp_path), gzip=gzip, pretty=False, checksums=False)
    body = Path(checked.path).read_bytes()
    assert Path(quick.path).read_bytes() == body
    assert checked.sha256 == hashlib.sha256(body).hexdigest()
    assert checked.crc32 == zlib.crc32(body)
    assert quick.sha256 == ""
    if gzip:
        assert quick.gzip_body is not None and gz.decompress(quick.gzip_body) == body
    else:
        assert quick.crc32 == 0


def _many(grouping: str = "Condensed") -> FeedBuilder:
    """
    A builder whose feed is several of a writer's blocks long.
    """
    builder = FeedBuilder(FeedSettings(grouping=grouping))  # type: ignore[arg-type]
    builder.add([file(f"{n:032x}", id=str(n), last_modified=n) for n in range(1, 30_000)])
    return builder


def test_a_background_writer_writes_the_same_file_and_forms() -> None:
    """
    Writing, checksums and compression in a thread of their own give the
    bytes, SHA-256, CRC-32 and gzip form of doing them in line.
    """
    import io

    from tcbridge.feed.render import FeedWriter

    made = []
    for background in (False, True):
        out = io.BytesIO()
        writer = FeedWriter(out, gzip=True, background=background)
        _many("Expanded").build_to(writer)
        made.append((out.getvalue(), writer.sha256, writer.crc32, writer.gzip_bytes()))
    assert made[0] == made[1]
    body, sha, crc, gzipped = made[1]
    assert len(body) > 2 << 20
    assert hashlib.sha256(body).hexdigest() == sha and zlib.crc32(body) == crc
    assert gz.decompress(gzipped) == body


def test_a_background_writer_that_cannot_write_says_so(tmp_path: Path) -> None:
    """
    A write that fails in the writer's thread fails the build, and the
    threads (the writer's, the compressing ones) end.
    """
    import io
    import threading

    from tcbridge.feed.render import FeedWriter

    class Full(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    writer = FeedWriter(Full(), background=True, gzip=True)
    with pytest.raises(OSError, match="No space left"):
        _many().build_to(writer)
    writer.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("tcbridge-feed")]


def test_a_child_started_ahead_reads_its_job_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Started ahead (C{--wait}), the child takes the job and outcome paths
    from stdin, each ended by a NUL byte, and builds; with nothing on
    stdin it ends at once, writing nothing.
    """
    write_job(str(tmp_path / "job"), BuildJob(_builder(), str(tmp_path), False, False, None))
    given = f"{tmp_path / 'job'}\0{tmp_path / 'outcome'}\0".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(given)))
    assert main([WAIT]) == 0
    assert read_outcome(str(tmp_path / "outcome")).feed is not None
    (tmp_path / "outcome").unlink()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main([WAIT]) == 0
    assert not (tmp_path / "outcome").exists()
