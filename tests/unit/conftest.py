"""
Unit tests: no network, no processes, no waiting.  Every test here runs
with sockets that cannot bind or connect, no C{time.sleep}, and no way to
start a process; a test that needs one of those belongs in
C{tests/integration}.  Time is a L{twisted.internet.task.Clock} and HTTP a
L{treq.testing.StubTreq}.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any, NoReturn

import pytest


def _refuse(what: str) -> Callable[..., NoReturn]:
    def refused(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(f"a unit test {what}: move it to tests/integration")

    return refused


@pytest.fixture(autouse=True)
def _no_sockets_processes_or_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Make opening a network connection, listening, sleeping or starting a
    process fail the test that tries.
    """
    monkeypatch.setattr(socket.socket, "bind", _refuse("bound a socket"))
    monkeypatch.setattr(socket.socket, "connect", _refuse("opened a connection"))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse("opened a connection"))
    monkeypatch.setattr(time, "sleep", _refuse("slept"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("started a process"))
    for name in ("fork", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _refuse("started a process"))
