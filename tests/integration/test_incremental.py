"""
Incremental sync in the service as it runs: the real reactor, the simulator
over HTTP on 127.0.0.1, the indicator store in its own thread (a full
sync's transaction in a child process), the build in a child process.
After a first (full) sync and changes in ThreatConnect, a delta publishes
the feed a full sync of the same data publishes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted

from tcbridge.config import load_config
from tcbridge.indicatordb import IndicatorDB
from tcbridge.simulator import DemoServer, start_simulator
from tcbridge.wiring import build_bridge
from tests.helpers import real_reactor

CC = "Common Community"


def _config(server: DemoServer, folder: Path, incremental: bool) -> str:
    path = folder / "tc.conf"
    path.write_text(
        "[threatconnect]\n"
        f"url={server.base_url}\napi_key={server.api_key}\nsecret_key={server.secret_key}\n"
        "sources=*\nioc_grouping=Expanded\n"
        f"[bridge]\ncache_folder={folder / 'cache'}\nlog_level=WARNING\n"
        f"incremental_sync={'true' if incremental else 'false'}\n"
    )
    return str(path)


async def _sync(bridge: Any) -> bytes:
    snapshot = await bridge.cycle.run()
    body: bytes = snapshot.body
    return body


@pytest_twisted.ensureDeferred
async def test_delta_in_the_service(tmp_path: Path) -> None:
    """
    The service's second sync is a delta (it asks for what changed) and
    publishes the bytes a full-sync bridge publishes from the same data.
    """
    reactor = real_reactor()
    server = start_simulator(reactor, count=600)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    delta = build_bridge(
        load_config(_config(server, tmp_path / "a", True)), reactor, use_cache=True, threads=True
    )
    full = build_bridge(
        load_config(_config(server, tmp_path / "b", False)), reactor, use_cache=True, threads=True
    )
    try:
        assert await _sync(delta) == await _sync(full)
        # The full sync's rows went to the store by its child process.
        stored = IndicatorDB.open(str(tmp_path / "a" / "cache"))
        assert stored.count() > 500
        stored.close()
        server.simulator.change(CC, "Host", 0, rating=5.0, tag_names=("Changed",))
        server.simulator.change(CC, "File", 1, deleted=True)
        server.simulator.requests.clear()
        first = await _sync(delta)
        assert first == await _sync(full)
        asked = [r.target for r in server.simulator.requests]
        assert any("modifiedSince=" in t for t in asked) and any("/deleted" in t for t in asked)
        inc = delta.status.incremental
        assert inc is not None and inc.kind == "delta"
        assert (tmp_path / "a" / "cache" / "indicators.sqlite3").exists()
    finally:
        for bridge in (delta, full):
            await bridge.pool.closeCachedConnections()
        await server.stop()
