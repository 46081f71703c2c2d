# -*- test-case-name: tests.integration.test_crash -*-
"""
Crash test: the real C{twistd tcbridge} process, killed with SIGKILL at
awkward moments of its sync (while it pulls, while the cache file's
temporary copy is being written, right after the rename, at a random
time), then started again with ThreatConnect reachable or not.

Every time it starts it must serve, at once, a complete feed that passes
the Carbon Black validator and is byte-identical to the cache file and to
one of the feeds published before; no feed it ever serves is partial.

Two simulators with different data sets (seeds) give two different
complete feeds, A and B; each kill interrupts a sync that would replace
one with the other, so a torn write would show as a third document.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest_twisted
import treq
from twisted.internet import defer, protocol, threads
from twisted.internet.task import deferLater

from tcbridge.feed.validator import validate_bytes
from tcbridge.simulator import DemoServer, start_simulator
from tcbridge.store import CACHE_FILE_NAME
from tests.helpers import free_port, real_reactor

BIN = Path(sys.executable).parent
#: Indicators per simulator: enough that writing the cache takes a moment.
COUNT = 60_000
#: Every wait is bounded by this many seconds.
WAIT = 30.0


def _config(url: str, api_key: str, secret_key: str, port: int, cache: Path) -> str:
    return (
        "[threatconnect]\n"
        f"url={url}\n"
        f"api_key={api_key}\n"
        f"secret_key={secret_key}\n"
        "sources=*\n"
        "ioc_grouping=Condensed\n"
        "max_attempts=1\n"
        "[bridge]\n"
        "listener_address=127.0.0.1\n"
        f"listener_port={port}\n"
        f"cache_folder={cache}\n"
        "feed_retrieval_minutes=1\n"
    )


class _Process(protocol.ProcessProtocol):
    """
    One run of C{twistd -n tcbridge}: its output and its end.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.done = False

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.done = True
        self.ended.callback(None)

    @property
    def pid(self) -> int:
        pid: int = self.transport.pid  # type: ignore[union-attr]
        return pid

    async def kill(self) -> None:
        """
        SIGKILL it (if still running) and wait until it is gone.
        """
        if not self.done:
            try:
                self.transport.signalProcess("KILL")  # type: ignore[union-attr]
            except Exception:  # noqa: S110 (it ended meanwhile)
                pass
        await _bounded(self.ended, "the bridge to end after SIGKILL")


async def _bounded(d: defer.Deferred[Any], what: str, seconds: float = WAIT) -> Any:
    """
    Wait for C{d}, at most C{seconds}.
    """
    d.addTimeout(seconds, real_reactor())
    try:
        return await d
    except defer.TimeoutError:
        raise AssertionError(f"waited {seconds} s for {what}") from None


async def _sleep(seconds: float) -> None:
    await deferLater(real_reactor(), seconds, lambda: None)


def _watch(stop: threading.Event, seconds: float, seen: Callable[[], bool], pid: int) -> bool:
    """
    In a thread: poll C{seen()} every half millisecond; SIGKILL C{pid} as
    soon as it is true.  Returns whether it fired before C{stop} or the
    deadline.
    """
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        if seen():
            os.kill(pid, signal.SIGKILL)
            return True
        time.sleep(0.0005)
    return False


def _temporary_files(cache: Path) -> set[str]:
    with os.scandir(cache) as entries:
        return {e.name for e in entries if e.name.startswith(".tmp-") and e.name.endswith(".json")}


def _new_tmp_file(cache: Path) -> Callable[[], bool]:
    """
    True once a temporary cache file appears that was not there before (a
    killed bridge leaves its own behind).
    """
    before = _temporary_files(cache)

    def seen() -> bool:
        return bool(_temporary_files(cache) - before)

    return seen


def _renamed(path: Path) -> Callable[[], bool]:
    before = path.stat().st_ino

    def seen() -> bool:
        try:
            return path.stat().st_ino != before
        except FileNotFoundError:
            return False

    return seen


def _content(body: bytes) -> bytes:
    """
    A feed's content without its report timestamps: those move when a
    report's content changes relative to the last published feed (so A
    published after B carries later timestamps than A published first), but
    the reports, ids and IOCs of a complete feed are always those of A or B.
    """
    doc = orjson.loads(body)
    for report in doc["reports"]:
        report.pop("timestamp")
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


class _Bridges:
    """
    Starts and kills bridges on one port and one cache folder, and checks
    every feed they serve.
    """

    def __init__(self, port: int, cache: Path) -> None:
        self.port = port
        self.cache = cache
        self.url = f"http://127.0.0.1:{port}/threatconnect/json"
        self.processes: list[_Process] = []
        #: Every distinct complete feed published so far.
        self.known: set[bytes] = set()
        self.served = 0

    @property
    def cache_file(self) -> Path:
        return self.cache / CACHE_FILE_NAME

    def start(self, config: str) -> _Process:
        process = _Process()
        argv = [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", "tcbridge"]
        argv += ["--config", config]
        real_reactor().spawnProcess(process, argv[0], argv, env=dict(os.environ))
        self.processes.append(process)
        return process

    async def fetch(self, process: _Process) -> bytes | None:
        """
        The feed the bridge serves now, checked; C{None} if it does not
        answer (yet).
        """
        try:
            response = await treq.get(self.url, reactor=real_reactor(), timeout=10)
            body: bytes = await response.content()
        except Exception:
            return None
        assert response.code == 200, body[:300]
        self.check(body, process)
        return body

    def check(self, body: bytes, process: _Process) -> None:
        """
        C{body} is a complete valid feed; if it has reports, it is one we
        know (the empty feed is served only before any publish).
        """
        self.served += 1
        problems = validate_bytes(body)
        assert problems == [], (problems[:3], process.output[-2000:])
        if self.known:
            assert _content(body) in self.known, process.output[-2000:]

    async def first_feed(self, process: _Process) -> bytes:
        """
        Poll until the bridge answers; return the first feed it served.
        """
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if process.done:
                raise AssertionError(b"the bridge ended:\n" + process.output[-3000:])
            body = await self.fetch(process)
            if body is not None:
                return body
            await _sleep(0.02)
        raise AssertionError(f"no answer at {self.url} after {WAIT} s")

    async def until(self, process: _Process, good: Callable[[bytes], bool], what: str) -> bytes:
        """
        Poll the feed until C{good(body)}.
        """
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            body = await self.fetch(process)
            if body is not None and good(body):
                return body
            await _sleep(0.1)
        raise AssertionError(f"{what}: not seen after {WAIT} s\n" + process.output[-3000:].decode())

    async def kill_when(self, process: _Process, seen: Callable[[], bool], what: str) -> None:
        """
        SIGKILL the bridge the moment C{seen()} is true (a watching thread),
        and wait until it has ended.
        """
        stop = threading.Event()
        watching = threads.deferToThread(_watch, stop, WAIT, seen, process.pid)
        try:
            fired = await _bounded(watching, what, WAIT + 5)
        finally:
            stop.set()
        assert fired, f"{what}: not seen within {WAIT} s\n" + process.output[-3000:].decode()
        await process.kill()

    def check_cache(self) -> bytes:
        """
        After a kill: the cache file is one of the published feeds.
        """
        body = self.cache_file.read_bytes()
        assert validate_bytes(body) == []
        assert _content(body) in self.known
        return body

    async def close(self) -> None:
        for process in self.processes:
            await process.kill()


@pytest_twisted.ensureDeferred
async def test_sigkill_during_sync_never_serves_a_partial_feed(
    write_file: Callable[[str, str], str], tmp_path: Path
) -> None:
    """
    SIGKILLed while it pulls, while it writes the cache (the temporary file
    exists), right after the rename, or at a random moment, the bridge
    restarted (ThreatConnect reachable or not) serves at once a complete,
    valid feed equal to the cache file and to one published before.
    """
    reactor = real_reactor()
    began = time.monotonic()
    rng = random.Random(20240501)
    cache = tmp_path / "cache"
    bridges = _Bridges(free_port(), cache)
    servers: list[DemoServer] = []
    try:
        servers.append(start_simulator(reactor, count=COUNT, seed=1))
        servers.append(start_simulator(reactor, count=COUNT, seed=2))
        configs = {
            name: write_file(
                f"{name}.conf",
                _config(s.base_url, s.api_key, s.secret_key, bridges.port, cache),
            )
            for name, s in zip("AB", servers, strict=True)
        }
        # ThreatConnect unreachable: nothing listens on this port.
        configs["down"] = write_file(
            "down.conf",
            _config(f"http://127.0.0.1:{free_port()}/api", "1", "x", bridges.port, cache),
        )

        # Learn the two complete feeds from clean publishes.
        feeds: dict[str, bytes] = {}
        first = bridges.start(configs["A"])
        feeds["A"] = await bridges.until(first, lambda b: b'"reports":[]' not in b, "feed A")
        assert bridges.cache_file.read_bytes() == feeds["A"]
        await first.kill()
        second = bridges.start(configs["B"])
        assert await bridges.first_feed(second) == feeds["A"]
        feeds["B"] = await bridges.until(second, lambda b: b != feeds["A"], "feed B")
        assert bridges.cache_file.read_bytes() == feeds["B"]
        assert feeds["A"] != feeds["B"]
        await second.kill()
        bridges.known = {_content(feeds["A"]), _content(feeds["B"])}
        published = {_content(body): name for name, body in feeds.items()}

        kills: list[str] = []
        plan = ["tmp", "down", "early", "tmp", "down", "renamed", "random", "tmp", "down"]
        for step in plan:
            cached = bridges.check_cache()
            if step == "down":
                # Unreachable: serves the cache at once, and keeps it.
                process = bridges.start(configs["down"])
                assert await bridges.first_feed(process) == cached
                await _sleep(rng.uniform(0.2, 1.0))
                assert await bridges.fetch(process) == cached
                await process.kill()
                assert bridges.cache_file.read_bytes() == cached
                continue
            # Reachable, with the data set whose feed differs from the cache.
            target = "B" if published[_content(cached)] == "A" else "A"
            new_tmp = _new_tmp_file(cache)
            process = bridges.start(configs[target])
            assert await bridges.first_feed(process) == cached
            if step == "tmp":
                await bridges.kill_when(process, new_tmp, "a new temporary cache file")
            elif step == "renamed":
                await bridges.kill_when(process, _renamed(bridges.cache_file), "the rename")
            elif step == "early":
                await _sleep(rng.uniform(0.05, 0.3))
                await process.kill()
            else:
                await _sleep(rng.uniform(0.0, 2.5))
                await process.kill()
            after = bridges.check_cache()
            kills.append(f"{step}:{published[_content(cached)]}->{published[_content(after)]}")

        # Finally, a clean start and a clean stop.
        last = bridges.start(configs["down"])
        assert await bridges.first_feed(last) == bridges.check_cache()
        last.transport.signalProcess("TERM")  # type: ignore[union-attr]
        await _bounded(last.ended, "the bridge to stop on SIGTERM")
    finally:
        await bridges.close()
        for server in servers:
            await server.stop()
    leftovers = [(cache / name).stat().st_size for name in sorted(_temporary_files(cache))]
    elapsed = time.monotonic() - began
    print(
        f"crash test: {len(kills)} kills {kills}, {bridges.served} feeds served and "
        f"checked, temporary files left behind (bytes, the feed has {len(feeds['A'])}): "
        f"{leftovers}, {elapsed:.1f} s"
    )
    assert elapsed < 90
