"""
Shared fixtures and helpers for the tcbridge tests.

Unit tests use task.Clock and treq.testing.StubTreq and never the global
reactor; the few integration tests use pytest-twisted's real reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")

#: Verbatim copies of the example files users of the 2015 bridge and the v2
#: connector have (shared/reference/configs).
DATA = Path(__file__).resolve().parent / "data"


def result_of(d: Deferred[T]) -> T:
    """
    The result of a Deferred that has already fired; fails the test if it
    has not fired or failed.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def failure_of(d: Deferred[Any]) -> Failure:
    """
    The Failure of a Deferred that has already failed.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    assert isinstance(results[0], Failure), f"expected a failure, got {results[0]!r}"
    return results[0]


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str], str]:
    """
    Write a text file under the test's temporary folder; return its path.
    """

    def write(name: str, text: str) -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write
