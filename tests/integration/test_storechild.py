"""
A full sync's store transaction in a child process
(L{tcbridge.storechild.ChildStore}), with the real reactor: what it
commits is there for the service's own connection; a child that dies
mid-transaction leaves the store as it was and says so; calls it does not
run are refused before anything starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from tcbridge.indicatordb import IndicatorDB
from tcbridge.indicatorrows import SourceState
from tcbridge.storechild import ChildStore, StoreChildError
from tests.helpers import real_reactor, store_row


def _rows(names: range) -> list[tuple[object, ...]]:
    return [store_row(f"{n}.example") for n in names]


async def _committed(folder: str, rows: range, watermark: int) -> None:
    """
    A full sync of C{rows} committed by a store child.
    """
    child = ChildStore(real_reactor(), folder)
    await child.run(IndicatorDB.begin, [("main", "all")], True)
    await child.run(IndicatorDB.add_rows, _rows(rows))
    await child.run(IndicatorDB.commit, {("main", "all"): SourceState(watermark=watermark)})
    await child.close()


@pytest_twisted.ensureDeferred
async def test_a_committed_transaction_is_the_store_s(tmp_path: Path) -> None:
    folder = str(tmp_path)
    mine = IndicatorDB.open(folder)
    await _committed(folder, range(500), 7)
    assert mine.count() == 500
    assert mine.state("main", "all").watermark == 7


@pytest_twisted.ensureDeferred
async def test_a_child_killed_mid_transaction_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    folder = str(tmp_path)
    mine = IndicatorDB.open(folder)
    await _committed(folder, range(10), 1)

    dying = ChildStore(real_reactor(), folder)
    await dying.run(IndicatorDB.begin, [("main", "all")], True)
    await dying.run(IndicatorDB.add_rows, _rows(range(100, 2000)))
    dying.kill()
    with pytest.raises(StoreChildError, match="indicator store's process ended"):
        await dying.run(IndicatorDB.add_rows, _rows(range(3)))
    await dying.close()
    assert mine.count() == 10
    assert mine.state("main", "all").watermark == 1

    await _committed(folder, range(0), 2)  # the store is not left locked
    assert mine.count() == 0 and mine.state("main", "all").watermark == 2


@pytest_twisted.ensureDeferred
async def test_only_the_store_s_calls_are_run(tmp_path: Path) -> None:
    child = ChildStore(real_reactor(), str(tmp_path))
    with pytest.raises(StoreChildError, match="not a call"):
        await child.run(IndicatorDB.raw_page, None, 10)
    await child.close()


@pytest_twisted.ensureDeferred
async def test_a_full_sync_whose_commit_fails_leaves_the_store_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    When the store's child cannot commit a full sync, the sync fails, the
    child and its transaction are gone (nothing holds the store's lock),
    the store keeps what it had, and the next sync stores its rows.
    """
    from tcbridge.config import load_config
    from tcbridge.simulator import start_simulator
    from tcbridge.wiring import build_bridge
    from tests.integration.test_incremental import _config

    reactor = real_reactor()
    server = start_simulator(reactor, count=300)
    bridge = build_bridge(
        load_config(_config(server, tmp_path, True)), reactor, use_cache=True, threads=True
    )
    children: list[ChildStore] = []
    real_run = ChildStore.run

    async def failing_commit(self: ChildStore, method: object, *args: object) -> object:
        if self not in children:
            children.append(self)
        if getattr(method, "__name__", "") == "commit":
            raise StoreChildError("the indicator store failed: disk I/O error")
        return await real_run(self, method, *args)

    try:
        monkeypatch.setattr(ChildStore, "run", failing_commit)
        with pytest.raises(StoreChildError, match="disk I/O error"):
            await bridge.cycle.run()
        assert children and all(child._ended.called for child in children)
        store = IndicatorDB.open(str(tmp_path / "cache"))
        assert store.count() == 0
        monkeypatch.setattr(ChildStore, "run", real_run)
        await bridge.cycle.run()
        assert store.count() > 250
        store.close()
    finally:
        await bridge.pool.closeCachedConnections()
        await server.stop()
