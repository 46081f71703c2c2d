# -*- test-case-name: tests.unit.test_childbuild -*-
"""
Tests for L{tcbridge.childbuild}: the service's side of a build in a child
process.  The child is played by a fake process reactor that runs the
job's C{main} in-process (the real child runs in the integration tests).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.python.failure import Failure

from tcbridge.childbuild import ChildBuild, ChildBuildError
from tcbridge.feed.builder import FeedBuilder, FeedValidationError
from tcbridge.feed.history import ReportHistory, StoredHistory
from tcbridge.feed.job import WAIT, BuildOutcome, build_feed_file
from tcbridge.feed.job import main as child_main
from tcbridge.feed.settings import BuildStats
from tcbridge.store import FeedStore
from tcbridge.sync.work import run_inline
from tests.helpers import failure_of, result_of
from tests.unit.test_feed_job import _builder


class _Transport:
    def __init__(self) -> None:
        self.signals: list[str] = []
        self.stdin = b""
        self.closed: Any = None

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def write(self, data: bytes) -> None:
        self.stdin += data

    def closeStdin(self) -> None:
        if self.closed is not None:
            self.closed(self.stdin)


class _Reactor:
    """
    Starts no process: records the call, then plays the child as told.
    """

    def __init__(self, play: str = "run", stderr: bytes = b"") -> None:
        self.play = play
        self.stderr = stderr
        self.argv: list[str] = []
        self.env: dict[str, str] = {}
        self.transport = _Transport()
        self.protocol: Any = None
        self.spawned: list[list[str]] = []

    def spawnProcess(self, protocol: Any, executable: str, argv: list[str], env: Any) -> None:
        self.spawned.append(argv)
        self.argv, self.env, self.protocol = argv, env, protocol
        self.transport = _Transport()
        protocol.makeConnection(self.transport)
        if self.stderr:
            protocol.errReceived(self.stderr)
        if WAIT in argv:
            self.transport.closed = self._given
            return
        self._play(*argv[-2:])

    def _given(self, stdin: bytes) -> None:
        """
        A child started ahead, its stdin closed: it builds what it was
        given, or ends.
        """
        parts = stdin.split(b"\0")
        if len(parts) > 2:
            self._play(parts[0].decode(), parts[1].decode())
        else:
            self.end(0)

    def _play(self, job: str, outcome: str) -> None:
        if self.play == "run":
            self.end(child_main([job, outcome]))
        elif self.play == "refuse":
            refused = BuildOutcome(None, BuildStats(indicators=3), problems=("bad id",))
            Path(outcome).write_bytes(pickle.dumps(refused))
            self.end(0)
        elif self.play != "hang":
            self.end(int(self.play))

    def end(self, status: int) -> None:
        reason = error.ProcessDone(0) if status == 0 else error.ProcessTerminated(exitCode=status)
        self.protocol.processEnded(Failure(reason))


def _build(reactor: _Reactor, builder: FeedBuilder, folder: Path) -> Deferred[Any]:
    child = ChildBuild(reactor, run_inline)  # type: ignore[arg-type]
    return ensureDeferred(child(builder, str(folder), gzip=True, pretty=False))


def test_build_in_a_child(tmp_path: Path) -> None:
    """
    The child gets the job and outcome files and the service's environment;
    the feed comes back with the build's figures, the service's copy of the
    pages is dropped, and the built history waits in a file beside the
    feed, which publishing moves into place.  Nothing else is left.
    """
    store = FeedStore(empty_body=b"{}", cache_dir=str(tmp_path / "cache"))
    folder = Path(store.build_directory())
    reactor = _Reactor()
    builder = _builder()
    feed = result_of(_build(reactor, builder, folder))
    assert reactor.argv[1:3] == ["-m", "tcbridge.feed.job"]
    assert "PATH" in reactor.env
    here = _builder()
    expected = build_feed_file(here, str(tmp_path), gzip=False, pretty=False)
    assert Path(feed.path).read_bytes() == Path(expected.path).read_bytes()
    assert builder.stats == here.stats and feed.gzip_body
    with pytest.raises(RuntimeError):
        builder.add([])
    assert isinstance(builder.history, StoredHistory)
    assert feed.history_path == builder.history.path
    assert builder.history.load() == here.history
    assert sorted(folder.iterdir()) == sorted([Path(feed.path), Path(feed.history_path)])
    snapshot = store.publish(feed, builder.history, 0.0)
    assert isinstance(snapshot.history, StoredHistory)
    assert snapshot.history.load() == here.history
    assert sorted(p.name for p in folder.iterdir()) == [
        "threatconnect-feed.history",
        "threatconnect-feed.json",
        "threatconnect-feed.json.gz",
        "threatconnect-feed.meta.json",
    ]


@pytest.mark.parametrize(
    ("play", "stderr", "expected"),
    [
        ("1", b"Traceback ...\nMemoryError\n", "exited with status 1; it said: Traceback"),
        ("2", b"", "exited with status 2; it said nothing"),
    ],
)
def test_failed_child(tmp_path: Path, play: str, stderr: bytes, expected: str) -> None:
    """
    A child that exits with an error is reported with its status and the
    end of what it wrote to stderr, and leaves no file behind.
    """
    failure = failure_of(_build(_Reactor(play, stderr), _builder(), tmp_path))
    assert failure.check(ChildBuildError)
    assert expected in str(failure.value)
    assert list(tmp_path.iterdir()) == []


def test_killed_child(tmp_path: Path) -> None:
    """
    A child killed by a signal (e.g. by the kernel, out of memory) is
    reported as killed.
    """
    reactor = _Reactor("hang", b"")
    running = _build(reactor, _builder(), tmp_path)
    reactor.protocol.processEnded(Failure(error.ProcessTerminated(signal=9)))
    failure = failure_of(running)
    assert failure.check(ChildBuildError)
    assert "killed" in str(failure.value)
    assert list(tmp_path.iterdir()) == []


def test_refused_feed(tmp_path: Path) -> None:
    """
    A feed that failed validation in the child raises L{FeedValidationError}
    with the child's problems, and the build's figures are kept.
    """
    builder = _builder()
    failure = failure_of(_build(_Reactor("refuse"), builder, tmp_path))
    assert failure.check(FeedValidationError)
    assert failure.value.problems == ["bad id"]
    assert builder.stats.indicators == 3
    assert list(tmp_path.iterdir()) == []


def test_cancel_kills_the_child(tmp_path: Path) -> None:
    """
    Cancelling the build (the bridge stopping, the sync deadline) kills the
    child and removes the job's files.
    """
    reactor = _Reactor("hang")
    running = _build(reactor, _builder(history=ReportHistory()), tmp_path)
    running.cancel()
    assert reactor.transport.signals == ["KILL"]
    reactor.protocol.processEnded(Failure(error.ProcessTerminated(signal=9)))
    assert failure_of(running).check(CancelledError)
    assert list(tmp_path.iterdir()) == []


def test_a_child_started_ahead_builds_the_next_feed(tmp_path: Path) -> None:
    """
    A child started ahead of the build (while the pull runs) is given the
    job on stdin and builds the feed a child started for it would; one
    that no build takes is told to end, and one that died while waiting is
    replaced by a new child.
    """
    reactor = _Reactor()
    child = ChildBuild(reactor, run_inline)  # type: ignore[arg-type]
    cool = child.warm()
    assert reactor.spawned == [[*reactor.argv[:3], WAIT]]
    feed = result_of(ensureDeferred(child(_builder(), str(tmp_path), gzip=True, pretty=False)))
    assert len(reactor.spawned) == 1 and reactor.transport.stdin.count(b"\0") == 2
    expected = build_feed_file(_builder(), str(tmp_path), gzip=False, pretty=False)
    assert Path(feed.path).read_bytes() == Path(expected.path).read_bytes()
    cool()
    cool = child.warm()
    assert len(reactor.spawned) == 2
    ended: list[int] = []
    reactor.protocol.ended.addCallback(ended.append)
    cool()
    assert ended == [0] and reactor.transport.stdin == b""
    child.warm()
    reactor.end(1)
    result_of(ensureDeferred(child(_builder(), str(tmp_path), gzip=True, pretty=False)))
    assert len(reactor.spawned) == 4 and WAIT not in reactor.spawned[-1]
    # Told the state file its build may start from, it is given it to read ahead.
    child.warm("/cache/seen/last-sync-state.pickle")()
    assert reactor.spawned[-1][-2:] == [WAIT, "/cache/seen/last-sync-state.pickle"]
