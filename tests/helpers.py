"""
Small helpers shared by the tests: read the outcome of a Deferred that has
already fired (pytest's stand-in for trial's C{successResultOf} and
C{failureResultOf}).
"""

from __future__ import annotations

import io
import socket
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from tcbridge.threatconnect.records import Indicator, IndicatorBatch

T = TypeVar("T")


class Terminal(io.StringIO):
    """
    Text output that says it is a terminal.
    """

    def isatty(self) -> bool:
        return True


def real_reactor() -> Any:
    """
    The global reactor pytest-twisted runs: for integration tests only
    (unit tests use L{twisted.internet.task.Clock} and
    L{treq.testing.StubTreq}).
    """
    from twisted.internet import reactor

    return reactor


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def result_of(d: Deferred[T]) -> T:
    """
    The result of a Deferred that has already fired; fails the test if it
    has not fired, and re-raises if it failed.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


def failure_of(d: Deferred[Any]) -> Failure:
    """
    The Failure of a Deferred that has already failed.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired"
    assert isinstance(results[0], Failure), f"{d!r} succeeded with {results[0]!r}"
    return results[0]


class Pages(list[list[Indicator]]):
    """
    An C{on_page} callback for pulls that keeps what each call handed on,
    as records: one list per page (or page chunk).
    """

    def __call__(self, batches: list[IndicatorBatch]) -> None:
        self.append([record for batch in batches for record in batch.records()])


def store_row(value: str, instance: str = "main", source: str = "all") -> tuple[Any, ...]:
    """
    A row of the indicator store (as L{tcbridge.indicatorrows} lays them
    out): a Host of Common Community, rated 4, with no tags or link.
    """
    values = '{"host":"' + value + '"}'
    return (
        instance,
        source,
        "Common Community",
        "Host",
        value,
        "1",
        "4.0",
        "50",
        "null",
        None,
        1700000000,
        "[]",
        1,
        "",
        values,
        "Common Community",
        "null",
    )
