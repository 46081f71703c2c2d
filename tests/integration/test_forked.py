"""
Tests for L{tcbridge.feed.forked}: an Expanded feed rendered on two cores
(a forked copy of the process renders the windows it is free for first) is
the feed one process renders, byte for byte and history for history, the
work goes to whichever process is free, and a copy that fails costs
nothing but time.
"""

from __future__ import annotations

import io
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import Logger, globalLogPublisher, textFileLogObserver

from tcbridge.feed import expanded_reports
from tcbridge.feed.builder import FeedBuilder, FeedSettings
from tcbridge.feed.forked import can_fork, ordered_map
from tcbridge.feed.history import ReportHistory
from tcbridge.feed.render import FeedWriter
from tests.unit.test_feed_builder import file, host

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")


def _tagged(item: int) -> tuple[int, int]:
    return item * item, os.getpid()


def _busy(item: int) -> tuple[int, int]:
    deadline = time.process_time() + 0.002
    while time.process_time() < deadline:
        pass
    return _tagged(item)


def test_results_come_in_order_some_from_the_copy() -> None:
    """
    Every result comes back in order; the copy computed some of them.
    """
    got = list(ordered_map(_busy, list(range(40)), fork=True))
    assert [square for square, _ in got] == [n * n for n in range(40)]
    assert {pid for _, pid in got} - {os.getpid()}


def test_a_slow_copy_leaves_the_work_to_this_process() -> None:
    """
    Work is shared as it goes: when the copy is slow, this process takes
    the items the copy is not free for, up to the few it may hold ahead,
    rather than leaving every other one to the copy (15 of 30).
    """
    parent = os.getpid()

    def slow_there(item: int) -> tuple[int, int]:
        if os.getpid() != parent:
            time.sleep(0.2)
        return _busy(item)

    got = list(ordered_map(slow_there, list(range(30)), fork=True))
    assert [square for square, _ in got] == [n * n for n in range(30)]
    here = sum(1 for _, pid in got if pid == parent)
    assert here >= 20


def test_a_failing_copy_costs_nothing_but_time() -> None:
    """
    When the copy fails (here: it raises on every item), this process
    computes the missing results itself.
    """
    parent = os.getpid()

    def only_here(item: int) -> int:
        if os.getpid() != parent:
            raise RuntimeError("the copy breaks")
        return item + 1

    assert list(ordered_map(only_here, list(range(7)), fork=True)) == list(range(1, 8))


def test_stopping_early_leaves_no_process_behind() -> None:
    """
    A reader that stops after the first result leaves no copy running:
    it is killed and reaped.
    """
    results = ordered_map(_tagged, list(range(50)), fork=True)
    assert next(results)[0] == 0
    results.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def _indicators(count: int) -> list[Any]:
    made = [
        file(f"{n:032x}", id=str(n + 1), rating=float(1 + n % 5), last_modified=1000 + n)
        for n in range(count)
    ]
    made += [
        host(f"h{n}.example.com", id=str(n + 1001), last_modified=2000 + n) for n in range(count)
    ]
    # A shared value and an id used twice: reports rendered one by one
    # between the windows.
    made.append(file(f"{3:032x}", id="99999", source="Other"))
    made.append(host("h7.example.org", id="5"))
    return made


def _built(
    history: ReportHistory | None, fork: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[bytes, FeedBuilder]:
    monkeypatch.setattr(expanded_reports, "CHUNK", 7)
    builder = FeedBuilder(FeedSettings(grouping="Expanded"), history=history)
    builder.add(_indicators(60))
    out = io.BytesIO()
    builder.build_to(FeedWriter(out), fork=fork)
    return out.getvalue(), builder


@pytest.mark.skipif(not can_fork(), reason="one core: no fork")
def test_a_feed_rendered_on_two_cores_is_the_same_feed(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    With and without a history, an Expanded feed rendered in two
    processes is byte-identical to one rendered in one, and so is the
    history it records.
    """
    serial, one = _built(None, False, monkeypatch)
    forked, two = _built(None, True, monkeypatch)
    assert forked == serial
    assert two.history == one.history
    assert two.stats.reports == one.stats.reports > 100
    previous = one.history
    assert isinstance(previous, ReportHistory)
    serial, one = _built(previous, False, monkeypatch)
    forked, two = _built(previous, True, monkeypatch)
    assert forked == serial
    assert two.history == one.history


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="no /proc here")
def test_a_fork_that_cannot_be_made_costs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    When the system refuses to fork (no memory, too many processes), every
    result is computed here and no descriptor is left open.
    """

    def refused() -> int:
        raise OSError(12, "Cannot allocate memory")

    before = _open_fds()
    monkeypatch.setattr(os, "fork", refused)
    assert list(ordered_map(_tagged, list(range(5)), fork=True)) == [
        (n * n, os.getpid()) for n in range(5)
    ]
    assert _open_fds() == before


def test_a_copy_that_hangs_is_given_up_on() -> None:
    """
    A copy that sends nothing within the timeout is killed; this process
    computes the rest.
    """
    parent = os.getpid()

    def hangs_there(item: int) -> int:
        if os.getpid() != parent:
            signal.pause()
        return item * 2

    got = list(ordered_map(hangs_there, list(range(6)), fork=True, timeout=0.3))
    assert got == [n * 2 for n in range(6)]
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


_log = Logger(namespace="tests.forked")


def _logs(item: int) -> int:
    _log.info("item {item} in {pid}", item=item, pid=os.getpid())
    return _busy(item)[0]


def test_the_copy_writes_nothing_to_the_log(tmp_path: Path) -> None:
    """
    The copy drops the log observers it inherits: the parent's log file
    gets only the parent's lines, though the copy computed some items.
    """
    path = tmp_path / "log"
    with path.open("a") as out:
        observer = textFileLogObserver(out)
        globalLogPublisher.addObserver(observer)
        try:
            got = list(ordered_map(_logs, list(range(40)), fork=True))
        finally:
            globalLogPublisher.removeObserver(observer)
    assert got == [n * n for n in range(40)]
    lines = re.findall(r"item (\d+) in (\d+)", path.read_text())
    assert {pid for _, pid in lines} == {str(os.getpid())}
    assert len(lines) < 40


@pytest.mark.parametrize("grouping", ["Condensed", "MaxCondensed"])
def test_a_grouped_feed_planned_on_two_cores_is_the_same_feed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grouping: str
) -> None:
    """
    A grouped feed whose kinds a forked copy condenses in part (as the
    service's build child does) is the feed one process builds, bytes and
    figures; a copy was made.
    """
    from tcbridge.feed import grouped
    from tcbridge.feed.job import build_feed_file
    from tests.unit.test_feed_merge import _made

    def builder() -> FeedBuilder:
        made = FeedBuilder(FeedSettings(grouping=grouping))  # type: ignore[arg-type]
        made.add(_made(17, 3000))
        return made

    forks: list[int] = []
    real_fork = os.fork

    def counted() -> int:
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(grouped, "FORK_AT", 0)
    monkeypatch.setattr(os, "fork", counted)
    alone, shared = builder(), builder()
    one = build_feed_file(alone, str(tmp_path), gzip=False, pretty=False)
    two = build_feed_file(
        shared, str(tmp_path), gzip=False, pretty=False, fork=True, fork_plan=True
    )
    assert forks == [1] if can_fork() else forks == []
    assert Path(two.path).read_bytes() == Path(one.path).read_bytes()
    assert shared.stats == alone.stats
