"""
The indicator store under a real crash: a process killed with SIGKILL in
the middle of applying a sync's changes leaves the store as it was before
them; and the threaded store answers from its own thread, off the reactor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest_twisted
from twisted.internet import defer

from tcbridge.indicatordb import IndicatorDB
from tcbridge.indicatorrows import SourceState, StoreChanges, StoredIndicator
from tests.helpers import real_reactor

#: The child: replace the store's content with many rows, announce when it
#: is half-way through the transaction, then wait to be killed.
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tcbridge.indicatordb import IndicatorDB
    from tcbridge.indicatorrows import SourceState, StoreChanges, StoredIndicator

    folder, marker = sys.argv[1], Path(sys.argv[2])
    db = IndicatorDB.open(folder)

    def rows():
        for n in range(100_000):
            if n == 50_000:
                marker.write_text("half-way")
                time.sleep(60)
            yield StoredIndicator("tc", "*", "O", "Host", f"new{n}.example", values={})

    db.apply(StoreChanges(replace=(("tc", "*"),), upsert=rows(),
                          states={("tc", "*"): SourceState(999, 999.0)}))
    """
)


def _filled(folder: Path) -> list[StoredIndicator]:
    db = IndicatorDB.open(str(folder))
    kept = [StoredIndicator("tc", "*", "O", "Host", f"old{n}.example", values={}) for n in range(3)]
    db.apply(
        StoreChanges(
            replace=(("tc", "*"),), upsert=tuple(kept), states={("tc", "*"): SourceState(1, 1.0)}
        )
    )
    db.close()
    return kept


def test_sigkill_mid_transaction_keeps_the_previous_state(tmp_path: Path) -> None:
    """
    SIGKILL while a full sync's changes are half written: the store opens
    fine afterwards with exactly the rows and source state it had before.
    """
    kept = _filled(tmp_path)
    marker = tmp_path / "marker"
    child = subprocess.Popen(  # noqa: S603 (our own script)
        [sys.executable, "-c", CHILD, str(tmp_path), str(marker)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the child died before the crash point"
            assert time.monotonic() < deadline, "the child never got half-way"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    db = IndicatorDB.open(str(tmp_path))
    assert db.warning is None
    assert list(db.indicators()) == kept
    assert db.state("tc", "*") == SourceState(1, 1.0, None)


@pytest_twisted.ensureDeferred
async def test_threaded_store_runs_off_the_reactor(tmp_path: Path) -> None:
    """
    Every call of the threaded store runs in its own thread, not the
    reactor's, and answers through a Deferred.
    """
    import threading

    from tcbridge.indicatordb import ThreadedIndicatorDB

    kept = _filled(tmp_path)
    store = ThreadedIndicatorDB(real_reactor(), str(tmp_path))
    main = threading.get_ident()

    def where(db: IndicatorDB) -> tuple[int, list[StoredIndicator]]:
        return threading.get_ident(), list(db.indicators())

    thread, rows = await store.run(where)
    assert thread != main and rows == kept
    await store.close()


@pytest_twisted.ensureDeferred
async def test_reads_of_what_is_committed_run_beside_the_store_thread(tmp_path: Path) -> None:
    """
    L{ThreadedIndicatorDB.read} answers from a thread of its own while the
    store's thread is busy in an open transaction, with the rows as last
    committed (what a delta reads while its changes are being written).
    """
    import threading

    from tcbridge.indicatordb import ThreadedIndicatorDB

    kept = _filled(tmp_path)
    store = ThreadedIndicatorDB(real_reactor(), str(tmp_path))
    release = threading.Event()

    def busy(db: IndicatorDB) -> int:
        db.begin(replace=(("tc", "*"),))  # every row gone, not committed
        release.wait(10)
        db.abort()
        return threading.get_ident()

    await store.run(IndicatorDB.count)
    blocked = defer.ensureDeferred(store.run(busy))
    key = kept[0]
    rows = await store.read(
        IndicatorDB.committed_rows,
        [],
        [(key.instance, key.source, key.owner, key.type, key.value)],
        [],
    )
    assert not blocked.called  # answered while the store's thread was busy
    release.set()
    store_thread = await blocked
    assert len(rows) == 1 and rows[0][4] == key.value
    assert store_thread != threading.get_ident()
    await store.close()
