"""
Integration tests: the real programs (the C{tcbridge} console command and
C{twistd tcbridge}) as separate processes, against the ThreatConnect
simulator listening on 127.0.0.1, over real sockets.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_twisted
import treq
from twisted.internet import defer, protocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue

from tcbridge.feed.validator import validate_bytes
from tcbridge.simulator import DemoServer, start_simulator
from tests.helpers import free_port, real_reactor

BIN = Path(sys.executable).parent
WriteFile = Callable[[str, str], str]


def _config(server: DemoServer, port: int | None = None, cache: str = "", extra: str = "") -> str:
    port = free_port() if port is None else port
    return (
        "[threatconnect]\n"
        f"url={server.base_url}\n"
        f"api_key={server.api_key}\n"
        f"secret_key={server.secret_key}\n"
        "sources=*\n"
        "ioc_grouping=Condensed\n"
        "[bridge]\n"
        "listener_address=127.0.0.1\n"
        f"listener_port={port}\n"
        f"cache_folder={cache}\n"
        "feed_retrieval_minutes=60\n" + extra
    )


async def _run(*argv: str) -> tuple[bytes, bytes, int]:
    out, err, code = await getProcessOutputAndValue(
        argv[0], argv[1:], env=dict(os.environ), reactor=real_reactor()
    )
    return out, err, code


class _Process(protocol.ProcessProtocol):
    """
    Collects a child's output and tells when it has ended.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


async def _wait_for_feed(url: str, seconds: float = 30.0) -> dict[str, Any]:
    """
    Poll the feed until it has reports (the first sync runs at start).
    """
    reactor = real_reactor()
    for _ in range(int(seconds / 0.1)):
        try:
            response = await treq.get(url, reactor=reactor)
            body = await response.content()
            doc: dict[str, Any] = orjson.loads(body)
            if doc["reports"]:
                return doc
        except Exception:  # noqa: S110 (not listening yet)
            pass
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"no feed with reports at {url} after {seconds} s")


@pytest_twisted.ensureDeferred
async def test_console_write_success(write_file: WriteFile, tmp_path: Path) -> None:
    """
    'tcbridge --config C write FILE' syncs once, writes a valid feed and
    exits 0.
    """
    server = start_simulator(real_reactor(), count=600)
    try:
        config = write_file("tc.conf", _config(server))
        out_file = tmp_path / "feed.json"
        _out, err, code = await _run(
            str(BIN / "tcbridge"), "--config", config, "write", str(out_file)
        )
    finally:
        await server.stop()
    assert code == 0, err
    assert b"wrote" in err
    body = out_file.read_bytes()
    assert validate_bytes(body) == []
    assert orjson.loads(body)["reports"]


@pytest_twisted.ensureDeferred
async def test_console_write_failure_clock_skew(write_file: WriteFile, tmp_path: Path) -> None:
    """
    When ThreatConnect refuses the clock, the console command prints its
    message, exits non-zero and leaves the file untouched.
    """
    server = start_simulator(real_reactor(), count=100)
    server.simulator.clock_skew = 3600
    try:
        config = write_file("tc.conf", _config(server))
        out_file = tmp_path / "feed.json"
        out_file.write_bytes(b"previous feed")
        _out, err, code = await _run(
            str(BIN / "tcbridge"), "--config", config, "write", str(out_file)
        )
    finally:
        await server.stop()
    assert code == 1
    assert b"Timestamp out of acceptable time range" in err
    assert b"clock is 3600 seconds behind ThreatConnect; set the system clock (NTP)" in err
    assert b"Traceback" not in err
    assert server.secret_key.encode() not in err
    assert out_file.read_bytes() == b"previous feed"


@pytest_twisted.ensureDeferred
async def test_console_bad_config(write_file: WriteFile, tmp_path: Path) -> None:
    """
    A bad config is one line on stderr and exit status 2.
    """
    config = write_file(
        "bad.conf",
        "[threatconnect]\napi_key=1\nsecret_key=2\nsources=*\n"
        "[bridge]\nfeed_retrieval_minutes=never\n",
    )
    _out, err, code = await _run(str(BIN / "tcbridge"), "--config", config, "write", "x.json")
    assert code == 2
    assert err.decode() == (
        f"tcbridge: {config}: [bridge] feed_retrieval_minutes: 'never' is not a number\n"
    )


@pytest_twisted.ensureDeferred
async def test_console_write_stopped_says_so(write_file: WriteFile, tmp_path: Path) -> None:
    """
    'tcbridge write' stopped with SIGTERM before the feed is written (here
    ThreatConnect is slow to answer) says so and exits 1, leaving no file
    and no process behind (an Expanded write pulls on two processes).
    """
    reactor = real_reactor()
    server = start_simulator(reactor, count=600)
    server.simulator.fault_next("slow", times=50, delay=60, match="resultStart=0")
    out_file = tmp_path / "feed.json"
    config = write_file("tc.conf", _config(server).replace("Condensed", "Expanded"))
    child = _Process()
    argv = [str(BIN / "tcbridge"), "--config", config, "write", str(out_file)]
    process = reactor.spawnProcess(child, argv[0], argv, env=dict(os.environ))
    try:
        await deferLater(reactor, 3.0, lambda: None)
        descendants = _descendants(process.pid)
        process.signalProcess("TERM")
        code = await child.ended
    finally:
        await server.stop()
    assert code == 1, child.output
    assert child.output.decode().endswith(
        f"tcbridge: sync failed, {out_file} was not written: "
        "tcbridge was stopped before it finished\n"
    )
    assert not out_file.exists()
    await deferLater(reactor, 0.5, lambda: None)
    assert [pid for pid in descendants if os.path.exists(f"/proc/{pid}")] == []


def _descendants(pid: int) -> list[int]:
    """
    The processes below C{pid} now (from /proc; none where there is none).
    """
    found, queue = [], [pid]
    while queue:
        one = queue.pop()
        try:
            for task in os.listdir(f"/proc/{one}/task"):
                with open(f"/proc/{one}/task/{task}/children") as f:
                    children = [int(child) for child in f.read().split()]
        except OSError:
            continue
        found += children
        queue += children
    return found


@pytest_twisted.ensureDeferred
async def test_twistd_write_mode(write_file: WriteFile, tmp_path: Path) -> None:
    """
    'twistd -n tcbridge --config C write FILE' writes a valid feed and stops.
    """
    server = start_simulator(real_reactor(), count=300)
    try:
        config = write_file("tc.conf", _config(server))
        out_file = tmp_path / "feed.json"
        _out, err, code = await _run(
            str(BIN / "twistd"),
            "-n",
            "--pidfile=",
            "--logfile=-",
            "tcbridge",
            "--config",
            config,
            "write",
            str(out_file),
        )
    finally:
        await server.stop()
    assert code == 0, _out + err
    assert validate_bytes(out_file.read_bytes()) == []


@pytest_twisted.ensureDeferred
async def test_twistd_serves_feed_and_cache_survives_restart(
    write_file: WriteFile, tmp_path: Path
) -> None:
    """
    The real service under twistd syncs at start and serves the feed and the
    diagnostics page; after a restart with ThreatConnect unreachable it
    serves the cached feed at once and shows the error.
    """
    reactor = real_reactor()
    server = start_simulator(reactor, count=500)
    port = free_port()
    cache = tmp_path / "cache"
    config = write_file("tc.conf", _config(server, port, str(cache), "max_attempts=1\n"))
    base = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", "tcbridge", "--config", config]
    first = _Process()
    reactor.spawnProcess(first, argv[0], argv, env=dict(os.environ))
    try:
        doc = await _wait_for_feed(base + "/threatconnect/json")
        response = await treq.get(base + "/", reactor=reactor)
        page = (await response.content()).decode()
        html = await (await treq.get(base + "/feed.html", reactor=reactor)).content()
    finally:
        first.transport.signalProcess("TERM")
        await first.ended
        await server.stop()
    assert validate_bytes(orjson.dumps(doc)) == []
    assert "Last successful sync" in page and "Never" not in page.split("Last successful")[1][:80]
    assert server.secret_key not in page
    assert b"Feed Reports" in html
    cached = (cache / "threatconnect-feed.json").read_bytes()
    assert orjson.loads(cached) == doc

    second = _Process()
    reactor.spawnProcess(second, argv[0], argv, env=dict(os.environ))
    try:
        again = await _wait_for_feed(base + "/threatconnect/json")
        for _ in range(100):
            page = (await (await treq.get(base + "/", reactor=reactor)).content()).decode()
            if "Could not reach ThreatConnect" in page:
                break
            await deferLater(reactor, 0.1, lambda: None)
    finally:
        second.transport.signalProcess("TERM")
        code = await second.ended
    assert again == doc
    assert "Could not reach ThreatConnect" in page
    assert "loaded from the cache" in page
    assert code == 0 or code is None or code == -signal.SIGTERM


@pytest.mark.parametrize("unused", [None])
@pytest_twisted.ensureDeferred
async def test_twistd_demo(unused: None) -> None:
    """
    'twistd -n tcbridge --demo' serves a feed from the built-in simulator
    with no configuration at all.
    """
    reactor = real_reactor()
    port = free_port()
    argv = [
        str(BIN / "twistd"),
        "-n",
        "--pidfile=",
        "--logfile=-",
        "tcbridge",
        "--demo",
        "--port",
        str(port),
    ]
    process = _Process()
    reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ))
    try:
        doc = await _wait_for_feed(f"http://127.0.0.1:{port}/threatconnect/json")
    finally:
        process.transport.signalProcess("TERM")
        await process.ended
    assert validate_bytes(orjson.dumps(doc)) == []
    assert b"Serving the Carbon Black feed at" in process.output


@pytest_twisted.ensureDeferred
async def test_twistd_reloads_on_sighup(write_file: WriteFile, tmp_path: Path) -> None:
    """
    SIGHUP makes the running service re-read its config: the page shows the
    new settings while the same feed keeps being served.
    """
    reactor = real_reactor()
    server = start_simulator(reactor, count=300)
    port = free_port()
    config = write_file("tc.conf", _config(server, port))
    base = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", "tcbridge", "--config", config]
    process = _Process()
    reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ))
    try:
        before = await _wait_for_feed(base + "/threatconnect/json")
        write_file("tc.conf", _config(server, port).replace("minutes=60", "minutes=15"))
        process.transport.signalProcess("HUP")
        page = ""
        for _ in range(100):
            page = (await (await treq.get(base + "/", reactor=reactor)).content()).decode()
            if "<td>feed_retrieval_minutes</td><td>15</td>" in page:
                break
            await deferLater(reactor, 0.1, lambda: None)
        after = orjson.loads(
            await (await treq.get(base + "/threatconnect/json", reactor=reactor)).content()
        )
    finally:
        process.transport.signalProcess("TERM")
        await process.ended
        await server.stop()
    assert "<td>feed_retrieval_minutes</td><td>15</td>" in page
    assert after == before
    assert b"Configuration reloaded" in process.output
