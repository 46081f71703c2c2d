"""
Tests for L{tcbridge.sync.shared}: a C{*} source pulled by this process
and a forked copy of it (over real HTTP, against the simulator on
127.0.0.1) fills the builder, the tally and the request counts exactly as
one process does; a copy that fails costs nothing but time; ThreatConnect
refusing is reported as it is without the copy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool

from tcbridge.config import load_config
from tcbridge.feed.builder import FeedBuilder, FeedSettings
from tcbridge.feed.forked import can_fork
from tcbridge.model import Source
from tcbridge.simulator import DemoServer, start_simulator
from tcbridge.sync.shared import CopyResult, SharedPull
from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.errors import ThreatConnectError
from tcbridge.threatconnect.pull import PullOptions, pull_source
from tcbridge.threatconnect.retry import RetryPolicy
from tcbridge.wiring import build_bridge, shares_pull
from tests.helpers import free_port, real_reactor

pytestmark = pytest.mark.skipif(not can_fork(), reason="no fork or one core here")

WriteFile = Callable[[str, str], str]
EVERY = Source("*", "all", "*")


class _Counted(SharedPull):
    """
    A shared pull that remembers what the copy sent, and what it was told
    to count as progress.
    """

    got: list[CopyResult] = []
    progress: list[tuple[int, int]] = []

    def __init__(self, builder: FeedBuilder, client: Any, client_on: Any, reactor: Any) -> None:
        def count(pages: int, indicators: int) -> None:
            type(self).progress.append((pages, indicators))

        super().__init__(builder, client, client_on, reactor, on_counts=count)

    def _take_in(self, got: CopyResult, builder: FeedBuilder, tally: Any) -> None:
        type(self).got.append(got)
        super()._take_in(got, builder, tally)


def _client(server: DemoServer, reactor: Any) -> ThreatConnectClient:
    """
    The bridge's client for the simulator, one try per request.
    """
    return ThreatConnectClient(
        HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True))),
        reactor,
        server.base_url,
        server.api_key,
        server.secret_key,
        timeout=30,
        retry=RetryPolicy(attempts=1),
    )


async def _pull(
    server: DemoServer, share: type[SharedPull] | None, source: Source = EVERY
) -> tuple[bytes, Any, ThreatConnectClient]:
    reactor = real_reactor()
    client = _client(server, reactor)
    builder = FeedBuilder(FeedSettings(grouping="Expanded"), record_history=False)
    options = PullOptions(page_size=150)
    if share is not None:

        def client_on(other: Any) -> ThreatConnectClient:
            return _client(server, other)

        options = PullOptions(page_size=150, share=share(builder, client, client_on, reactor))
    pull = await pull_source(client, source, options, builder.add)
    return builder.build_bytes(), pull, client


async def _both(
    server: DemoServer, share: type[SharedPull]
) -> tuple[tuple[bytes, Any, Any], tuple[bytes, Any, Any], list[dict[str, Any]]]:
    """
    The feed, pull and client of one process, then of a shared pull, and
    the log events of both.
    """
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        alone, alone_pull, alone_client = await _pull(server, None)
        shared, shared_pull, shared_client = await _pull(server, share)
    finally:
        globalLogPublisher.removeObserver(events.append)
    return (alone, alone_pull, alone_client), (shared, shared_pull, shared_client), events


@pytest_twisted.ensureDeferred
async def test_two_processes_pull_what_one_pulls() -> None:
    """
    The feed, the pull's counts and the requests made are those of one
    process reading every listing, and the copy read some of them.
    """
    server = start_simulator(real_reactor(), count=3000)
    _Counted.got, _Counted.progress = [], []
    try:
        alone, alone_pull, alone_client = await _pull(server, None)
        shared, shared_pull, shared_client = await _pull(server, _Counted)
    finally:
        await server.stop()
    assert shared == alone
    assert shared_pull == alone_pull and alone_pull.indicators > 2500
    assert shared_client.requests == alone_client.requests
    assert shared_client.status_counts == alone_client.status_counts
    assert len(_Counted.got) == 1 and _Counted.got[0].requests > 0
    sent = _Counted.got[0].tally
    assert _Counted.progress == [(sent.pages, sent.indicators)] and sent.pages > 0


class _Broken(SharedPull):
    """
    A shared pull whose copy fails on the first listing it takes (its
    client asks a port nothing listens on), and which remembers how many
    listings this process read.
    """

    read: list[int] = []

    def __init__(self, builder: FeedBuilder, client: Any, client_on: Any, reactor: Any) -> None:
        nowhere = f"http://127.0.0.1:{free_port()}/api"

        def elsewhere(other: Any) -> ThreatConnectClient:
            return ThreatConnectClient(
                HTTPClient(Agent(other)), other, nowhere, "k", "s", retry=RetryPolicy(attempts=1)
            )

        super().__init__(builder, client, elsewhere, reactor)

    async def __call__(self, listings: Any, make: Any, read_here: Any, tally: Any) -> None:
        async def counted(chosen: Any) -> None:
            type(self).read.append(len(chosen))
            await read_here(chosen)

        await super().__call__(listings, make, counted, tally)


@pytest_twisted.ensureDeferred
async def test_a_failing_copy_costs_nothing_but_time() -> None:
    """
    When the copy fails, this process reads the listings it did not read:
    the same feed and counts.
    """
    server = start_simulator(real_reactor(), count=3000)
    try:
        alone_run, shared_run, events = await _both(server, _Broken)
    finally:
        await server.stop()
    assert any("second process" in e.get("log_format", "") for e in events)
    assert any("Connection was refused" in str(e.get("why", "")) for e in events)
    (alone, alone_pull, alone_client), (shared, shared_pull, shared_client) = alone_run, shared_run
    assert shared == alone
    assert shared_pull.indicators == alone_pull.indicators
    # The requests the copy made before it failed are counted too.
    assert shared_client.requests > alone_client.requests
    # This process read every listing, those the copy had taken included.
    assert sum(_Broken.read) == 9


class _Hung(SharedPull):
    """
    A shared pull whose copy waits forever on its first listing (its
    client asks a server that never answers), given up on after a short
    grace.
    """

    silent_port = 0

    def __init__(self, builder: FeedBuilder, client: Any, client_on: Any, reactor: Any) -> None:
        silent = f"http://127.0.0.1:{type(self).silent_port}/api"

        def hangs(other: Any) -> ThreatConnectClient:
            return ThreatConnectClient(
                HTTPClient(Agent(other)), other, silent, "k", "s", timeout=3600
            )

        super().__init__(builder, client, hangs, reactor, grace=0.2)


@pytest_twisted.ensureDeferred
async def test_a_copy_that_hangs_is_given_up_on() -> None:
    """
    A copy that sends nothing for longer than this process's own part took
    (and the grace) is stopped, and this process reads its part: the same
    feed, and a warning that says why.
    """
    server = start_simulator(real_reactor(), count=3000)
    silent = real_reactor().listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    _Hung.silent_port = silent.getHost().port
    try:
        (alone, _, _), (shared, _, _), events = await _both(server, _Hung)
    finally:
        await silent.stopListening()
        await server.stop()
    assert shared == alone
    assert any("no answer within" in str(e.get("why", "")) for e in events)


@pytest_twisted.ensureDeferred
async def test_a_failure_reads_as_without_the_copy() -> None:
    """
    ThreatConnect failing on one owner's listings stops the shared pull
    with the message one process gives, for that owner's listing that
    either process met first.
    """
    server = start_simulator(real_reactor(), count=300)
    messages = []
    try:
        for share in (None, SharedPull):
            server.simulator.fault_next("503", times=100, match="Subscriber%20Community")
            with pytest.raises(ThreatConnectError) as caught:
                await _pull(server, share)
            messages.append(str(caught.value))
    finally:
        await server.stop()
    for message in messages:
        assert "owner=Subscriber%20Community" in message
        assert message.endswith(
            "HTTP 503 Service Unavailable: 503 Service Temporarily "
            "Unavailable. ThreatConnect or a proxy in between is failing."
        )


@pytest_twisted.ensureDeferred
async def test_an_owner_source_is_shared_too() -> None:
    """
    A named owner's listings (its files, addresses and hosts) are shared
    the same way; an owner the API user cannot see is still reported as
    such.
    """
    server = start_simulator(real_reactor(), count=3000)
    owner = Source("Example Organization", "owner", "Example Organization")
    nobody = Source("Nobody Corp", "owner", "Nobody Corp")
    _Counted.got, _Counted.progress = [], []
    try:
        alone, alone_pull, _ = await _pull(server, None, owner)
        shared, shared_pull, _ = await _pull(server, _Counted, owner)
        with pytest.raises(ThreatConnectError) as caught:
            await _pull(server, SharedPull, nobody)
    finally:
        await server.stop()
    assert shared == alone and shared_pull == alone_pull and alone_pull.indicators > 500
    assert len(_Counted.got) == 1
    assert "owner 'Nobody Corp' is not visible" in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_write_mode_shares_its_pull(tmp_path: Path, write_file: WriteFile) -> None:
    """
    C{tcbridge write}'s wiring pulls a C{*} source on two cores and writes
    the feed a pull in one process gives.
    """
    server = start_simulator(real_reactor(), count=3000)
    try:
        text = (
            "[threatconnect]\n"
            f"url={server.base_url}\napi_key={server.api_key}\n"
            f"secret_key={server.secret_key}\nsources=*\nioc_grouping=Expanded\n"
            "[bridge]\ncache_folder=\n"
        )
        config = load_config(write_file("tc.conf", text))
        shared = build_bridge(config, real_reactor(), use_cache=False, threads=False)
        assert shared.cycle._share is not None
        await shared.cycle.write(str(tmp_path / "shared.json"))
        plain = build_bridge(config, real_reactor(), use_cache=False, threads=False)
        alone = attrs.evolve(plain.cycle, share=None)
        await alone.write(str(tmp_path / "alone.json"))
    finally:
        await server.stop()
    written = (tmp_path / "shared.json").read_bytes()
    assert written == (tmp_path / "alone.json").read_bytes()
    assert shared.cycle.requests == alone.requests > 9


def test_only_an_expanded_write_shares_its_pull(write_file: WriteFile) -> None:
    """
    Write mode shares the pull of an Expanded feed only (a grouped feed's
    pull is already near the wire); the service never does.
    """
    for grouping, threads, shared in (
        ("Expanded", False, True),
        ("Condensed", False, False),
        ("MaxCondensed", False, False),
        ("Expanded", True, False),
    ):
        text = (
            "[threatconnect]\nurl=https://tc.example/api\napi_key=1\nsecret_key=s\n"
            f"sources=*\nioc_grouping={grouping}\n[bridge]\ncache_folder=\n"
        )
        config = load_config(write_file("tc.conf", text))
        assert shares_pull(config, threads) is shared
