"""
Tests for C{tcbridge check-config} (L{tcbridge.check}): run in-process on the
real reactor against the ThreatConnect simulator on 127.0.0.1.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest_twisted

from tcbridge.check import clock_line
from tcbridge.check import run_check as check
from tcbridge.config import load_config
from tcbridge.simulator import DemoServer, start_simulator
from tests.helpers import Terminal, free_port, real_reactor

WriteFile = Callable[[str, str], str]


def _config(server: DemoServer, tmp_path: Path, secret: str | None = None, extra: str = "") -> str:
    return (
        "[threatconnect]\n"
        f"url={server.base_url}\napi_key={server.api_key}\n"
        f"secret_key={secret or server.secret_key}\nmax_attempts=1\n" + extra + "[bridge]\n"
        f"cache_folder={tmp_path / 'cache'}\nlistener_port={free_port()}\n"
    )


@pytest_twisted.ensureDeferred
async def test_all_good(write_file: WriteFile, tmp_path: Path) -> None:
    """
    With good credentials, a correct clock and a writable cache folder,
    check-config lists the owners it can see and exits 0.
    """
    server = start_simulator(real_reactor(), count=50)
    try:
        config = load_config(write_file("tc.conf", _config(server, tmp_path, extra="sources=*\n")))
        out, terminal, pipe = io.StringIO(), Terminal(), io.StringIO()
        code = await check(real_reactor(), config, out, terminal)
        assert await check(real_reactor(), config, io.StringIO(), pipe) == 0
    finally:
        await server.stop()
    text = out.getvalue()
    assert code == 0, text
    # On a terminal the step under way is one line, cleared when done; in a
    # pipe nothing.
    assert terminal.getvalue() == (
        f"\r\x1b[Ktcbridge: checking the credentials with ThreatConnect at {server.base_url}..."
        "\r\x1b[K"
    )
    assert pipe.getvalue() == ""
    assert "credentials: OK" in text and "Common Community" in text
    assert "clock: OK" in text
    assert "cache_folder: OK" in text
    assert text.endswith("check-config: no problems\n")
    assert server.secret_key not in text


@pytest_twisted.ensureDeferred
async def test_problems_are_reported(write_file: WriteFile, tmp_path: Path) -> None:
    """
    A wrong secret key is reported with ThreatConnect's message and the exit
    status is 1; an owner the user cannot see is a problem too.
    """
    server = start_simulator(real_reactor(), count=50)
    try:
        bad = load_config(
            write_file("bad.conf", _config(server, tmp_path, "wrong-secret", "sources=*\n"))
        )
        out = io.StringIO()
        code = await check(real_reactor(), bad, out)
        missing = load_config(
            write_file("missing.conf", _config(server, tmp_path, extra="sources=Nobody Corp\n"))
        )
        out2 = io.StringIO()
        code2 = await check(real_reactor(), missing, out2)
    finally:
        await server.stop()
    assert code == 1
    assert "credentials: PROBLEM" in out.getvalue()
    assert "Signature data did not match expected result" in out.getvalue()
    assert "wrong-secret" not in out.getvalue()
    assert code2 == 1
    assert "owner 'Nobody Corp' is not visible" in out2.getvalue()


@pytest_twisted.ensureDeferred
async def test_clock_skew_reported(write_file: WriteFile, tmp_path: Path) -> None:
    """
    A host clock off by more than 5 minutes is a problem named with its size
    and direction.
    """
    server = start_simulator(real_reactor(), count=50)
    server.simulator.clock_skew = -1200
    try:
        config = load_config(write_file("tc.conf", _config(server, tmp_path, extra="sources=*\n")))
        out = io.StringIO()
        code = await check(real_reactor(), config, out)
    finally:
        await server.stop()
    assert code == 1
    assert "1200 s ahead of ThreatConnect" in out.getvalue()


def test_clock_line() -> None:
    """
    Small differences are fine, large ones are problems, a missing Date is a
    note.
    """
    date = "Sat, 28 Nov 2026 06:00:00 GMT"
    base = 1795845600
    assert clock_line(base, date) == (
        "clock: OK, this host agrees with ThreatConnect to the second",
        False,
    )
    assert clock_line(base - 30, date)[1] is False
    line, bad = clock_line(base + 400, date)
    assert bad and "400 s ahead of" in line
    assert clock_line(None, None)[1] is False
