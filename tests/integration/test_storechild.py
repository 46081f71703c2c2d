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
from tests.helpers import real_reactor

ROW = (
    "main",
    "all",
    "Common Community",
    "Host",
    "{}.example",
    "1",
    "4.0",
    "50",
    "null",
    None,
    1700000000,
    "[]",
    1,
    "",
    "{{}}",
    "Common Community",
    "null",
)


def _rows(names: range) -> list[tuple[object, ...]]:
    return [tuple(str(v).format(n) if isinstance(v, str) else v for v in ROW) for n in names]


@pytest_twisted.ensureDeferred
async def test_a_committed_transaction_is_the_store_s(tmp_path: Path) -> None:
    folder = str(tmp_path)
    mine = IndicatorDB.open(folder)
    child = ChildStore(real_reactor(), folder)
    await child.run(IndicatorDB.begin, [("main", "all")], True)
    await child.run(IndicatorDB.add_rows, _rows(range(500)))
    await child.run(IndicatorDB.commit, {("main", "all"): SourceState(watermark=7, last_full=1.0)})
    await child.close()
    assert mine.count() == 500
    assert mine.state("main", "all").watermark == 7


@pytest_twisted.ensureDeferred
async def test_a_child_killed_mid_transaction_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    folder = str(tmp_path)
    mine = IndicatorDB.open(folder)
    first = ChildStore(real_reactor(), folder)
    await first.run(IndicatorDB.begin, [("main", "all")], True)
    await first.run(IndicatorDB.add_rows, _rows(range(10)))
    await first.run(IndicatorDB.commit, {("main", "all"): SourceState(watermark=1)})
    await first.close()

    dying = ChildStore(real_reactor(), folder)
    await dying.run(IndicatorDB.begin, [("main", "all")], True)
    await dying.run(IndicatorDB.add_rows, _rows(range(100, 2000)))
    dying.kill()
    with pytest.raises(StoreChildError, match="indicator store's process ended"):
        await dying.run(IndicatorDB.add_rows, _rows(range(3)))
    await dying.close()
    assert mine.count() == 10
    assert mine.state("main", "all").watermark == 1

    again = ChildStore(real_reactor(), folder)  # the store is not left locked
    await again.run(IndicatorDB.begin, [("main", "all")], True)
    await again.run(IndicatorDB.commit, {("main", "all"): SourceState(watermark=2)})
    await again.close()
    assert mine.count() == 0 and mine.state("main", "all").watermark == 2


@pytest_twisted.ensureDeferred
async def test_only_the_store_s_calls_are_run(tmp_path: Path) -> None:
    child = ChildStore(real_reactor(), str(tmp_path))
    with pytest.raises(StoreChildError, match="not a call"):
        await child.run(IndicatorDB.raw_page, None, 10)
    await child.close()
