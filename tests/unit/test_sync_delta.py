"""
Incremental syncs (L{tcbridge.sync.delta}) against the simulator with data
that changes: the feed a delta publishes is byte-identical to the one a full
sync of the same data publishes (a bridge that always pulls everything runs
beside it on the same simulator), a delta asks only for what changed, a
failed one changes nothing, and full syncs catch what deltas cannot see.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.logger import globalLogPublisher

from tcbridge.feed.collect import Collector
from tcbridge.feed.document import FeedInfo, empty_document
from tcbridge.feed.serialize import dumps
from tcbridge.indicatordb import IndicatorDB
from tcbridge.indicatorrows import SourceState, StoreChanges, batches_of_rows
from tcbridge.model import Source
from tcbridge.seen import (
    CHANGES_NAME,
    SeenWriter,
    changes_file,
    search_key,
    seen_rows,
    trailer,
)
from tcbridge.seen import FILE_NAME as SEEN_FILE
from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore
from tcbridge.storechild import StoreChildError
from tcbridge.sync import rebuild
from tcbridge.sync.base import STATE_FILE, Overlay, base_pages
from tcbridge.sync.cycle import SyncCycle
from tcbridge.sync.delta import FULL_SYNC_FILE, INSTANCE, Incremental, Transaction, rows_of
from tcbridge.sync.errors import FeedHeldBackError
from tcbridge.sync.publish import Publisher
from tcbridge.threatconnect import across
from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.errors import ThreatConnectError
from tcbridge.threatconnect.records import Indicator, IndicatorBatch
from tcbridge.web.health import assess, health_document
from tcbridge.web.index import _incremental_text
from tests.helpers import failure_of, result_of
from tests.unit.test_indicatordb import _indicator
from tests.unit.test_sync import START, Harness

CC = "Common Community"
#: After every generated date (2014-2024), so that what changes now is the newest.
NOW = 1_900_000_000


class Store:
    """
    The indicator store called in line (unit tests run no threads).
    """

    def __init__(self, folder: str) -> None:
        self.db = IndicatorDB.open(folder)

    async def run(self, method: Any, *args: Any) -> Any:
        return method(self.db, *args)


class Pair:
    """
    Two bridges on one simulator: C{delta} with incremental sync, C{full}
    pulling everything every time.
    """

    def __init__(self, folder: Path, count: int = 900, seen: bool = True, **config: Any) -> None:
        self.h = Harness(count=count, **config)
        self.seen = str(folder / "seen") if seen else None
        self.h.clock.advance(NOW - START)
        self.store = Store(str(folder / "delta"))
        self.incremental = Incremental(
            self.store.run, full_every=10**9, overlap=600, marker=str(folder / FULL_SYNC_FILE)
        )
        self.status = SyncStatus(started_at=self.h.clock.seconds())
        self.delta = self._cycle(self.incremental, self.status, self.seen)
        self.full = self._cycle(None, SyncStatus(started_at=self.h.clock.seconds()))

    def _cycle(
        self, incremental: Incremental | None, status: SyncStatus, seen: str | None = None
    ) -> SyncCycle:
        h = self.h
        store = FeedStore(empty_body=dumps(empty_document(FeedInfo())))
        return SyncCycle(
            h.config, h.client, store, status, h.clock, incremental=incremental, seen_folder=seen
        )

    def sync(self) -> tuple[bytes, bytes]:
        """
        Sync both an hour later; their published feeds.
        """
        self.h.clock.advance(3600)
        feeds = []
        for cycle in (self.delta, self.full):
            snapshot = result_of(self.h.settle(defer.ensureDeferred(cycle.run())))
            feeds.append(snapshot.body)
        return feeds[0], feeds[1]

    def targets(self) -> list[str]:
        return [r.target for r in self.h.simulator.requests]


def _change_five(pair: Pair) -> None:
    sim = pair.h.simulator
    sim.change(CC, "Host", 0, rating=5.0)
    sim.change(CC, "Host", 1, rating=0.0)
    sim.change(CC, "File", 2, confidence=3, tag_names=("Moved",))
    sim.change(CC, "Address", 3, active=False)
    sim.change(CC, "Host", 4, deleted=True)


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_delta_publishes_what_a_full_sync_publishes(tmp_path: Path, version: str) -> None:
    """
    After a first (full) sync, changes in ThreatConnect (ratings up and
    down, confidence and tags, a deactivation, a deletion) reach the feed by
    a delta that asks only for what changed: the feed is byte-identical to
    a full sync's, with far fewer indicators transferred.
    """
    pair = Pair(tmp_path, api_version=version)
    first, reference = pair.sync()
    assert first == reference
    assert pair.incremental.last_full is not None and pair.incremental.last_delta is None
    _change_five(pair)
    pair.h.simulator.requests.clear()
    delta, full = pair.sync()
    assert delta == full and delta != first
    assert pair.incremental.last_delta is not None
    asked = [t for t in pair.targets() if "modifiedSince" in t or "lastModified" in t]
    assert asked, "the delta asked for what changed"
    assert any("/deleted" in t for t in pair.targets())
    assert pair.incremental.last_changes["removed"] >= 2
    # What the page, /healthz and /metrics show.
    inc = pair.status.incremental
    assert inc is not None and inc.kind == "delta" and inc.removed >= 2 and inc.added >= 3
    assert inc.last_delta == pair.h.clock.seconds() and inc.last_full is not None
    assert dict(inc.watermarks)["*"] is not None
    now = pair.h.clock.seconds()
    _, body = health_document(assess(pair.status, None, now), pair.status, None, now)
    assert orjson.loads(body)["incremental"]["last_cycle"] == "delta"
    assert "the last cycle (delta)" in _incremental_text(pair.status, now)


def test_quiet_changes_wait_for_a_full_sync(tmp_path: Path) -> None:
    """
    Tag changes that do not move lastModified are invisible to deltas;
    the next full sync (asked for with tcbridge full-sync) brings it.  (An
    Expanded feed shows each indicator's tags.)
    """
    pair = Pair(tmp_path, grouping="Expanded")
    pair.sync()
    for index in range(10):
        pair.h.simulator.change(CC, "Host", index, touch=False, tag_names=("Silent",))
    delta, full = pair.sync()
    assert delta != full
    (tmp_path / FULL_SYNC_FILE).write_text("requested\n")
    delta, full = pair.sync()
    assert delta == full
    assert not (tmp_path / FULL_SYNC_FILE).exists()


def test_a_failed_delta_changes_nothing(tmp_path: Path) -> None:
    """
    A delta that fails half-way publishes nothing and leaves the store and
    its watermark as they were; the next delta brings everything.
    """
    pair = Pair(tmp_path)
    pair.sync()
    db = pair.store.db
    before = (list(db.indicators()), db.state(INSTANCE, "*"))
    _change_five(pair)
    pair.h.simulator.fault_next("500", times=5)  # every try of the first request
    pair.h.clock.advance(3600)
    with pytest.raises(Exception, match="500"):
        result_of(pair.h.settle(defer.ensureDeferred(pair.delta.run())))
    assert (list(db.indicators()), db.state(INSTANCE, "*")) == before
    delta, full = pair.sync()
    assert delta == full


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_a_delta_asks_for_deletions_beside_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    """
    A delta asks for every owner's deleted indicators once it knows the
    owners and has sent its first query of what changed, while it waits
    for that answer (not one request after another), and still publishes
    what a full sync does.
    """
    pair = Pair(tmp_path, api_version=version)
    pair.sync()
    _change_five(pair)
    real = ThreatConnectClient.get_json
    sent: list[str] = []
    answer: defer.Deferred[None] = defer.Deferred()

    async def holding(self: ThreatConnectClient, target: str, items: str | None = None) -> Any:
        sent.append(target)
        if "odified" in target:
            await answer  # ThreatConnect is slow to answer what changed
        return await real(self, target, items)

    monkeypatch.setattr(ThreatConnectClient, "get_json", holding)
    pair.h.clock.advance(3600)
    running = defer.ensureDeferred(pair.delta.run())
    for _ in range(5):
        pair.h.stub.flush()
    assert not running.called
    assert "odified" in sent[1] and sum("/deleted" in t for t in sent) == 3
    answer.callback(None)
    delta = result_of(pair.h.settle(running)).body
    full = result_of(pair.h.settle(defer.ensureDeferred(pair.full.run()))).body
    assert delta == full


@pytest.mark.parametrize(
    "failing", ["/deleted?owner=Example", "late/deleted?owner=Example", "modifiedSince"]
)
def test_a_delta_whose_deleted_listing_or_pull_fails_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """
    A delta whose deleted listing of one owner fails while its query of
    what changed waits for an answer, or whose query of what changed
    fails, publishes nothing and leaves the store as it was; whatever
    still waited is cancelled (nothing is left asking ThreatConnect), and
    the error names the request that failed.
    """
    pair = Pair(tmp_path)
    pair.sync()
    db = pair.store.db
    before = (list(db.indicators()), db.state(INSTANCE, "*"))
    published = pair.delta._store.current
    _change_five(pair)
    real = ThreatConnectClient.get_json
    held: dict[str, list[defer.Deferred[Any]]] = {"odified": [], "/deleted": []}

    async def refusing(self: ThreatConnectClient, target: str, items: str | None = None) -> Any:
        if failing.removeprefix("late") in target:
            if failing.startswith("late"):  # an answer that comes a second later
                await task.deferLater(pair.h.clock, 1, lambda: None)
            raise ThreatConnectError("ThreatConnect refused the request", status=403, target=target)
        for kind, waiting in held.items():
            if kind in target:
                waiting.append(defer.Deferred())
                await waiting[-1]
        return await real(self, target, items)

    monkeypatch.setattr(ThreatConnectClient, "get_json", refusing)
    pair.h.clock.advance(3600)
    started = pair.h.clock.seconds()
    failure = failure_of(pair.h.settle(defer.ensureDeferred(pair.delta.run())))
    assert pair.h.clock.seconds() - started < 60, "failed at once, not at the sync's deadline"
    assert failure.check(ThreatConnectError), failure.getTraceback()
    assert failing.removeprefix("late") in str(failure.value.target)
    if "/deleted" in failing:
        # Refused at once, the owner after it is not asked; refused late,
        # both other owners were asked meanwhile.
        asked = 2 if failing.startswith("late") else 1
        assert len(held["odified"]) == 1 and len(held["/deleted"]) == asked
    assert all(waiting.called for kind in held for waiting in held[kind])  # cancelled
    assert (list(db.indicators()), db.state(INSTANCE, "*")) == before
    assert pair.delta._store.current is published


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["rating", "confidence", "tags", "tags-quiet", "deactivate", "delete"]),
            st.sampled_from(["File", "Address", "Host"]),
            st.sampled_from([CC, "Example Organization"]),
            st.integers(min_value=0, max_value=40),
        ),
        min_size=1,
        max_size=6,
    ),
    churn=st.sampled_from([0.0, 0.02]),
    grouping=st.sampled_from(["Expanded", "Condensed", "MaxCondensed"]),
    seen=st.booleans(),
    version=st.sampled_from(["v2", "v3"]),
)
def test_incremental_feeds_equal_full_feeds(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[Any],
    churn: float,
    grouping: str,
    seen: bool,
    version: str,
) -> None:
    """
    After any sequence of changes between syncs, the feed incremental syncs
    publish is byte-identical to the feed a full sync of the same data
    publishes, as long as no change hid from lastModified.  Once one did,
    the two feeds differ until the next full sync; after it they hold the
    same reports (their timestamps may differ: each bridge's report history
    saw different feeds in between).  Deltas rebuild their feed from the
    previous sync's file (C{seen}) or, without one, from the store.
    """
    pair = Pair(
        tmp_path_factory.mktemp("pair"),
        count=600,
        seen=seen,
        grouping=grouping,
        api_version=version,
    )
    pair.sync()
    stored = _explained_as_stored(pair) if seen else frozenset()
    quiet = False
    sim = pair.h.simulator
    for what, kind, owner, index in steps:
        if churn:
            sim.churn(churn, seed=index)
        state = {
            "rating": {"rating": float(index % 6)},
            "confidence": {"confidence": index},
            "tags": {"tag_names": (f"T{index}",)},
            "tags-quiet": {"tag_names": (f"Q{index}",), "touch": False},
            "deactivate": {"active": False},
            "delete": {"deleted": True},
        }[what]
        sim.change(owner, kind, index, **state)
        quiet = quiet or what == "tags-quiet" or bool(churn)
        delta, full = pair.sync()
        if not quiet:
            assert delta == full
        if seen:
            stored = _explained_as_stored(pair, stored)
    pair.delta.request_full_sync()
    delta, full = pair.sync()
    if quiet:
        assert _untimed(delta) == _untimed(full)
    else:
        assert delta == full


def _explained_as_stored(pair: Pair, before: frozenset[str] = frozenset()) -> frozenset[str]:
    """
    Check that what explanations read of the last sync's file, with the
    changes deltas appended since, agrees with the store for a sample of
    its values and for the values in C{before} no longer stored (no
    active row left); return the values stored now.
    """
    assert pair.seen is not None
    path = os.path.join(pair.seen, SEEN_FILE)
    changes = changes_file(pair.seen, trailer(path))
    last = trailer(changes if changes is not None else path)
    assert last is None or last["rows"] == pair.store.db.count()
    stored: dict[str, set[tuple[Any, ...]]] = {}
    for one in pair.store.db.indicators():
        stored.setdefault(one.value, set()).add(
            (one.owner, one.type, one.id, one.rating, one.confidence)
        )
    sample = sorted(stored)[:: max(1, len(stored) // 25)]
    for value in sample + sorted(before - stored.keys()):
        key = search_key(value)
        assert key is not None
        rows = [
            row
            for row in seen_rows(path, key, 1000)
            if not row[-1] and next(v for v in row[-2].values() if v) == value
        ]
        assert {(r[2], r[0], r[3], r[4], r[5]) for r in rows} == stored.get(value, set()), value
    return frozenset(stored)


def _count_store_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """
    A list that gets an item each time a cycle reads the store's rows.
    """
    read: list[int] = []
    real_page = IndicatorDB.raw_page

    def counted(db: IndicatorDB, *args: Any) -> Any:
        read.append(1)
        return real_page(db, *args)

    monkeypatch.setattr(IndicatorDB, "raw_page", counted)
    return read


def _untimed(feed: bytes) -> list[Any]:
    """
    A feed's reports without their timestamps.
    """
    reports = orjson.loads(feed)["reports"]
    for report in reports:
        report.pop("timestamp")
    return reports


def _count_taken_in(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """
    A list that gets the size of each batch a feed builder takes in.
    """
    taken: list[int] = []
    real_add = Collector.add

    def counted(collector: Collector, batch: IndicatorBatch) -> None:
        taken.append(len(batch))
        real_add(collector, batch)

    monkeypatch.setattr(Collector, "add", counted)
    return taken


def test_deltas_build_from_the_last_sync_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A sync keeps its feed state beside the file of what it saw; the next
    delta builds from it (its builders take in only what changed, old and
    new versions) and publishes what a full sync does.  A state that
    cannot be used (here: other bytes of its size) makes the delta build
    from every indicator, say so, and still publish what a full sync does.
    """
    pair = Pair(tmp_path)
    pair.sync()
    state = tmp_path / "seen" / STATE_FILE
    assert state.stat().st_size > 0
    taken = _count_taken_in(monkeypatch)
    _change_five(pair)
    pair.h.clock.advance(3600)
    delta = result_of(pair.h.settle(defer.ensureDeferred(pair.delta.run()))).body
    assert 0 < sum(taken) < 20
    assert delta == result_of(pair.h.settle(defer.ensureDeferred(pair.full.run()))).body
    state.write_bytes(b"x" * state.stat().st_size)
    taken.clear()
    said: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        said.append(str(event.get("log_format", "")))

    globalLogPublisher.addObserver(observe)
    try:
        pair.h.simulator.change(CC, "Host", 7, rating=5.0)
        delta, full = pair.sync()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert delta == full
    assert sum(taken) > 900
    assert any("feed state could not be used" in line for line in said)


def test_deltas_append_their_changes_to_what_the_last_sync_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A delta building from the feed state leaves the last sync's file as it
    was and appends its changes to the changes file beside it (named after
    that file's trailer, ending with the store's); explanations read both.
    Once the changes reach their share of the file, a delta writes the file
    whole again and the changes file goes; a changes file left from an
    older file is ignored.
    """
    pair = Pair(tmp_path)
    pair.sync()
    seen_file = tmp_path / "seen" / SEEN_FILE
    changes = tmp_path / "seen" / CHANGES_NAME
    written = seen_file.read_bytes()
    stored = _explained_as_stored(pair)
    for first in (True, False):
        if first:
            _change_five(pair)
        else:
            pair.h.simulator.change(CC, "File", 5, rating=1.0)
        delta, full = pair.sync()
        assert delta == full and seen_file.read_bytes() == written
        lines = changes.read_bytes().splitlines()
        assert orjson.loads(lines[0]) == {"changes_of": orjson.loads(written.splitlines()[-1])}
        assert lines[-1].startswith(b'{"committed":')
        stored = _explained_as_stored(pair, stored)
    older = changes.read_bytes()
    monkeypatch.setattr(rebuild, "COMPACT_AT", 10**9)
    pair.h.simulator.change(CC, "Host", 6, rating=5.0)
    delta, full = pair.sync()
    assert delta == full and seen_file.read_bytes() != written and not changes.exists()
    stored = _explained_as_stored(pair, stored)
    changes.write_bytes(older)
    stored = _explained_as_stored(pair, stored)
    monkeypatch.undo()
    pair.h.simulator.change(CC, "Host", 8, rating=5.0)
    delta, full = pair.sync()
    assert delta == full and changes.read_bytes().splitlines()[0] != older.splitlines()[0]
    _explained_as_stored(pair, stored)


class _DyingChild:
    """
    A full sync's store child that runs its calls on the store in line,
    and dies at the commit while C{dies} says so.
    """

    def __init__(self, store: Store, dies: list[bool]) -> None:
        self.store, self.dies, self.gone, self.used = store, dies, False, 0

    async def run(self, method: Any, *args: Any) -> Any:
        if method is IndicatorDB.commit and self.dies.pop(0):
            self.gone = True
            raise StoreChildError("the indicator store's process ended (killed)")
        self.used += 1
        return method(self.store.db, *args)

    async def close(self) -> None:
        pass

    def kill(self) -> None:
        self.store.db.abort()


def test_a_store_child_that_dies_leaves_the_next_full_sync_to_the_service(
    tmp_path: Path,
) -> None:
    """
    A full sync whose store child dies fails, and the store keeps its
    previous state; the next full sync stores its rows in the service, and
    the one after uses a child again.
    """
    pair = Pair(tmp_path)
    dies = [True, False]
    children: list[_DyingChild] = []

    def fill() -> _DyingChild:
        children.append(_DyingChild(pair.store, dies))
        return children[-1]

    pair.incremental.fill = fill
    pair.h.clock.advance(3600)
    failure = failure_of(pair.h.settle(defer.ensureDeferred(pair.delta.run())))
    assert "process ended" in str(failure.value)
    assert pair.store.db.count() == 0 and len(children) == 1
    delta, full = pair.sync()
    assert delta == full and pair.store.db.count() > 0 and len(children) == 1
    pair.delta.request_full_sync()
    delta, full = pair.sync()
    assert delta == full and len(children) == 2 and children[1].used > 0


def test_a_cycle_that_fails_before_its_pull_leaves_the_store_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A delta that fails before its pull (here: no room for its feed state's
    file) ends the store's transaction: the next one syncs.
    """
    pair = Pair(tmp_path)
    pair.sync()
    pair.h.simulator.change(CC, "Host", 3, rating=5.0)
    real = tempfile.mkstemp

    def no_room(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("suffix") == ".state":
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", no_room)
    pair.h.clock.advance(3600)
    failure_of(pair.h.settle(defer.ensureDeferred(pair.delta.run())))
    monkeypatch.undo()
    delta, full = pair.sync()
    assert delta == full


def test_a_deleted_file_is_gone_by_every_hash(tmp_path: Path) -> None:
    """
    Files a delta takes out are no longer explained as active, whichever of
    their hashes is asked for (the store names them by the first).
    """
    pair = Pair(tmp_path)
    pair.sync()
    assert pair.seen is not None
    path = os.path.join(pair.seen, SEEN_FILE)
    hashes: dict[str, list[str]] = {}
    for line in Path(path).read_bytes().splitlines():
        page = orjson.loads(line)
        if page.get("type") == "File":
            for at, ident in enumerate(page["ids"]):
                hashes[ident] = [page["values"][name][at] for name in ("md5", "sha1", "sha256")]
    before = {one.id for one in pair.store.db.indicators() if one.type == "File"}
    for index in range(20):
        pair.h.simulator.change(CC, "File", index, deleted=True)
    delta, full = pair.sync()
    assert delta == full and (tmp_path / "seen" / CHANGES_NAME).exists()
    gone = before - {one.id for one in pair.store.db.indicators() if one.type == "File"}
    assert gone
    for ident in gone:
        for value in filter(None, hashes[ident]):
            key = search_key(value)
            assert key is not None
            assert not [r for r in seen_rows(path, key, 100) if not r[-1] and r[3] == ident]


def test_what_a_delta_saw_that_cannot_be_kept_does_not_fail_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A delta whose changes cannot be written where explanations read them
    (a full disk) still publishes and commits, and says so; explanations
    keep the last sync's, and the next delta, which no longer matches
    them, builds from every indicator and writes them whole.
    """
    pair = Pair(tmp_path)
    pair.sync()
    pair.h.simulator.change(CC, "Host", 4, deleted=True)
    pair.h.simulator.change(CC, "Host", 0, rating=5.0)

    def full_disk(self: SeenWriter, keys: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SeenWriter, "add_gone", full_disk)
    said: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        said.append(str(event.get("log_format")))

    globalLogPublisher.addObserver(observe)
    try:
        delta, full = pair.sync()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert delta == full and any("Could not keep what this sync saw" in x for x in said)
    assert not (tmp_path / "seen" / CHANGES_NAME).exists()
    monkeypatch.undo()
    read = _count_store_reads(monkeypatch)
    pair.h.simulator.change(CC, "Host", 5, rating=5.0)
    delta, full = pair.sync()
    assert delta == full and read
    _explained_as_stored(pair)


def test_a_held_back_delta_keeps_what_the_last_sync_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A delta held back by the shrink guard while it was writing what it saw
    whole again leaves the last sync's file and changes as they were (no
    cut-short copy is put in their place).
    """
    pair = Pair(tmp_path)
    pair.sync()
    pair.h.simulator.change(CC, "Host", 1, rating=5.0)
    pair.sync()
    seen = tmp_path / "seen"
    before = {name: (seen / name).read_bytes() for name in (SEEN_FILE, CHANGES_NAME)}
    monkeypatch.setattr(rebuild, "COMPACT_AT", 10**9)
    real_run, clock = pair.store.run, pair.h.clock

    async def answers_later(method: Any, *args: Any) -> Any:
        if method is rebuild.store_page:  # as the store's thread does
            later: defer.Deferred[None] = defer.Deferred()
            clock.callLater(1, later.callback, None)
            await later
        return await real_run(method, *args)

    monkeypatch.setattr(pair.incremental, "run", answers_later)
    mine = pair.delta._publisher
    real_guard = Publisher._shrink_guard
    monkeypatch.setattr(
        Publisher,
        "_shrink_guard",
        lambda self, iocs: "shrank too much" if self is mine else real_guard(self, iocs),
    )
    pair.h.simulator.change(CC, "Host", 2, rating=5.0)
    clock.advance(3600)
    failure = failure_of(pair.h.settle(defer.ensureDeferred(pair.delta.run())))
    assert failure.check(FeedHeldBackError)
    assert {name: (seen / name).read_bytes() for name in before} == before


def test_deltas_rebuild_from_the_last_sync_file_only_when_it_is_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A delta with no feed state to build from (Expanded feeds keep none)
    rebuilds its feed from the previous sync's file (the store's rows are
    not read); when that file is not what the store holds (here: an older
    one put back), it reads the store instead; both publish what a full
    sync does.
    """
    pair = Pair(tmp_path, grouping="Expanded")
    pair.sync()
    seen_file = tmp_path / "seen" / "last-sync-indicators.jsonl"
    older = seen_file.read_bytes()
    assert older.splitlines()[-1].startswith(b'{"committed":')
    read = _count_store_reads(monkeypatch)
    _change_five(pair)
    delta, full = pair.sync()
    assert delta == full and not read
    pair.h.simulator.change(CC, "Host", 9, rating=5.0)
    seen_file.write_bytes(older)
    delta, full = pair.sync()
    assert delta == full and read
    read.clear()
    pair.h.simulator.change(CC, "Host", 10, rating=5.0)
    delta, full = pair.sync()
    assert delta == full and not read


@pytest.mark.parametrize(("per_query", "queries"), [(50, 1), (2, 2)])
def test_a_v3_delta_asks_for_many_owners_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_query: int, queries: int
) -> None:
    """
    A v3 delta of a * source asks for the changes of many owners in one
    query, deactivations included (one of the five changes), not one per
    owner; the feed is still the full sync's.
    """
    monkeypatch.setattr(across, "OWNERS_PER_QUERY", per_query)
    pair = Pair(tmp_path, api_version="v3")
    pair.sync()
    _change_five(pair)
    pair.h.simulator.requests.clear()
    pair.h.clock.advance(3600)
    delta = result_of(pair.h.settle(defer.ensureDeferred(pair.delta.run()))).body
    asked = [t for t in pair.targets() if "/v3/indicators?" in t]
    full = result_of(pair.h.settle(defer.ensureDeferred(pair.full.run()))).body
    assert delta == full
    assert len(asked) == queries
    assert all("ownerName%20IN%20%28" in t for t in asked)
    assert all("indicatorActive%20EQ%20false" in t for t in asked)


def test_a_v3_delta_of_one_owner_asks_one_query(tmp_path: Path) -> None:
    """
    A v3 delta of a source naming one owner asks for that owner's changes,
    active and inactive, in one query: the deactivated indicator leaves
    and the feed is the full sync's.
    """
    pair = Pair(tmp_path, api_version="v3", sources=(Source(CC, "owner", CC),))
    pair.sync()
    _change_five(pair)
    pair.h.simulator.requests.clear()
    delta, full = pair.sync()
    assert delta == full
    asked = [t for t in pair.targets() if "/v3/indicators?" in t and "lastModified" in t]
    assert len(asked) == 1
    assert "indicatorActive%20EQ%20true%20OR%20indicatorActive%20EQ%20false" in asked[0]


def _rows_in_file_alone(folder: Path) -> int:
    """
    The rows the store's database file holds without its write-ahead log.
    """
    copy = folder / "copy.sqlite3"
    copy.write_bytes((folder / "indicators.sqlite3").read_bytes())
    connection = sqlite3.connect(copy)
    try:
        return int(connection.execute("SELECT count(*) FROM indicators").fetchone()[0])
    finally:
        connection.close()


def test_each_sync_reaches_the_database_file(tmp_path: Path) -> None:
    """
    After each sync (full or delta) the store's database file holds what
    it committed (SQLite's log is checkpointed after the commit, not in
    it): a copy of the file alone has every row.
    """
    pair = Pair(tmp_path)
    pair.sync()
    rows = pair.store.db.count()
    assert rows and _rows_in_file_alone(tmp_path / "delta") == rows
    _change_five(pair)
    pair.sync()
    assert pair.incremental.last_delta is not None
    rows_now = pair.store.db.count()
    assert rows_now < rows and _rows_in_file_alone(tmp_path / "delta") == rows_now


def test_a_delta_reads_what_it_replaces_beside_the_store(tmp_path: Path) -> None:
    """
    A delta reads the committed versions of what it replaces through the
    store's reader (a thread beside the store's in the service), never
    through the store's own queue behind its writes; a full sync reads
    none.
    """
    pair = Pair(tmp_path)
    reads: list[str] = []

    async def read(method: Any, *args: Any) -> Any:
        reads.append(method.__name__)
        return method(pair.store.db, *args)

    pair.incremental.read = read
    pair.sync()
    assert reads == []
    _change_five(pair)
    delta, full = pair.sync()
    assert delta == full
    assert reads and set(reads) == {"committed_rows"}


def test_a_delta_goes_on_while_the_store_writes(tmp_path: Path) -> None:
    """
    A delta's pull does not wait for the store to write its few pages: it
    asks for the deleted indicators while the writes are still queued
    (a full sync's pull waits, to bound the rows held); the delta then
    commits once they are written, and publishes the full sync's feed.
    """
    pair = Pair(tmp_path, count=3000)

    async def no_wait() -> None:
        pass

    h = pair.h
    pair.delta = SyncCycle(
        h.config,
        h.client,
        FeedStore(empty_body=dumps(empty_document(FeedInfo()))),
        pair.status,
        h.clock,
        incremental=pair.incremental,
        seen_folder=pair.seen,
        pause=no_wait,  # pages handed on in chunks, as the service does
    )
    pair.sync()
    sim = pair.h.simulator
    for type in ("Host", "Address", "File"):  # pages of more than one chunk
        for index in range(sim.dataset.count(CC, type)):
            sim.change(CC, type, index, rating=5.0 if index % 2 else 1.0)
    held: list[tuple[Any, tuple[Any, ...], defer.Deferred[Any]]] = []
    db = pair.store.db

    async def holding(method: Any, *args: Any) -> Any:
        if method in (IndicatorDB.add_rows, IndicatorDB.remove):
            done: defer.Deferred[Any] = defer.Deferred()
            held.append((method, args, done))
            return await done
        return method(db, *args)

    pair.incremental.run = holding
    pair.h.simulator.requests.clear()
    pair.h.clock.advance(3600)
    cycle = defer.ensureDeferred(pair.delta.run())
    for _ in range(200):  # no settle: its clock would run past the deadline
        pair.h.stub.flush()
        pair.h.clock.advance(0.01)
    assert not cycle.called and len(held) > 1
    assert any("/indicators/deleted" in t for t in pair.targets())
    while held:
        method, args, done = held.pop(0)
        done.callback(method(db, *args))
    delta = result_of(pair.h.settle(cycle)).body
    full = result_of(pair.h.settle(defer.ensureDeferred(pair.full.run()))).body
    assert delta == full and pair.incremental.last_delta is not None


def test_a_full_sync_asked_for_during_one_still_runs(tmp_path: Path) -> None:
    """
    A full sync asked for (a reload, tcbridge full-sync) while a full sync
    planned earlier is running is not taken as done by it: the next cycle
    is full too.
    """
    pair = Pair(tmp_path)
    inc = pair.incremental
    sources = pair.h.config.sources
    plan = result_of(defer.ensureDeferred(inc.plan(sources, NOW)))
    assert plan.full
    inc.request_full()
    (tmp_path / FULL_SYNC_FILE).write_text("requested\n")
    os.utime(tmp_path / FULL_SYNC_FILE, (NOW + 5, NOW + 5))
    inc.committed(plan, NOW + 10, {})
    assert (tmp_path / FULL_SYNC_FILE).exists()
    again = result_of(defer.ensureDeferred(inc.plan(sources, NOW + 20)))
    assert again.full
    inc.committed(again, NOW + 30, {})
    assert not (tmp_path / FULL_SYNC_FILE).exists()


def test_a_damaged_last_sync_file_makes_the_delta_read_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A last-sync file damaged on disk (a line cut, the trailer intact), or
    one whose trailer counts other rows than the store holds (as when a
    sync saw one indicator twice), is not trusted by a delta that rebuilds
    from it (with no feed state, as in Expanded feeds): the delta reads the
    store and still publishes what a full sync does.
    """
    pair = Pair(tmp_path, grouping="Expanded")
    pair.sync()
    read = _count_store_reads(monkeypatch)
    seen_file = tmp_path / "seen" / "last-sync-indicators.jsonl"
    lines = seen_file.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + b"\n"
    seen_file.write_bytes(b"".join(lines))
    _change_five(pair)
    delta, full = pair.sync()
    assert delta == full and read
    read.clear()
    *pages, last = seen_file.read_bytes().splitlines(keepends=True)
    trailer = orjson.loads(last)
    trailer["rows"] += 1
    seen_file.write_bytes(b"".join([*pages, orjson.dumps(trailer) + b"\n"]))
    pair.h.simulator.change(CC, "Host", 12, rating=5.0)
    delta, full = pair.sync()
    assert delta == full and read


_ROW = st.tuples(
    st.sampled_from(["Owner A", "Owner B"]),
    st.integers(min_value=0, max_value=3),
    st.sampled_from(["1", "2"]),
    st.sampled_from([1.0, 3.0, "4", None]),
)


def _host_batches(rows: list[tuple[str, int, str, Any]]) -> list[Any]:
    return IndicatorBatch.of(
        [
            Indicator(
                source=owner, owner=owner, type="Host", id=ident, host=f"h{v}.example", rating=r
            )
            for owner, v, ident, r in rows
        ]
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    base=st.lists(_ROW, max_size=6, unique_by=lambda row: row[:3]),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("pull"), st.lists(_ROW, min_size=1, max_size=4)),
            st.tuples(
                st.just("remove"),
                st.lists(
                    st.tuples(
                        st.sampled_from(["Owner A", "Owner B"]),
                        st.integers(min_value=0, max_value=3),
                    ),
                    min_size=1,
                    max_size=3,
                ),
            ),
        ),
        max_size=8,
    ),
)
def test_the_overlay_keeps_what_the_store_keeps(
    tmp_path_factory: pytest.TempPathFactory, base: list[Any], ops: list[Any]
) -> None:
    """
    Whatever a delta pulls and takes out, in whatever order (a row pulled
    twice, taken out and pulled again, several ids of one value), the last
    sync's file with the delta laid over it gives exactly the rows the
    store holds after the same changes.
    """
    folder = tmp_path_factory.mktemp("overlay")
    db = IndicatorDB.open(str(folder))
    batches = _host_batches(base)
    db.begin([(INSTANCE, "*")])
    db.add_rows(rows_of(INSTANCE, "*", batches))
    db.commit({(INSTANCE, "*"): SourceState(1, 1.0, None)})
    seen = SeenWriter(str(folder))
    seen.add(batches, origin="*")
    seen.finish([])
    overlay = Overlay()
    db.begin([])
    for what, items in ops:
        if what == "pull":
            pulled = _host_batches(items)
            rows = rows_of(INSTANCE, "*", pulled)
            overlay.pulled("*", rows, pulled)
            db.add_rows(rows)
        else:
            keys = [(INSTANCE, "*", owner, "Host", f"h{v}.example") for owner, v in items]
            overlay.taken_out(keys)
            db.remove(keys)
    laid = [batch for _, _, batch in base_pages(str(folder / SEEN_FILE), overlay)]
    laid += [batch for _, batch in overlay.fresh_batches()]
    got = sorted(rows_of(INSTANCE, "*", laid), key=repr)
    assert got == sorted(db.raw_page(None, 1000), key=repr)
    db.abort()


class _SlowStore:
    """
    A store runner whose calls finish only when the test says so.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...], defer.Deferred[None]]] = []

    def run(self, method: Any, *args: Any) -> defer.Deferred[None]:
        done: defer.Deferred[None] = defer.Deferred()
        self.calls.append((method, args, done))
        return done


def test_a_delta_waits_for_the_store_only_once_it_holds_many_rows() -> None:
    """
    A delta's pull goes on with several calls queued, but waits while the
    queued calls hold more rows and keys than allowed, so that a delta as
    big as a full sync holds no more than a full sync would.
    """
    store = _SlowStore()
    tx = Transaction(store.run, limit=16, block=3, row_limit=4)
    tx.add_rows([("i", "s", "o", "t", v, "1", "x") for v in "abc"])
    assert defer.ensureDeferred(tx.room()).called
    tx.send(IndicatorDB.remove, [("i", "s", "o", "t", "z")], size=1)
    assert defer.ensureDeferred(tx.room()).called  # 4 held: not more than allowed
    tx.send(IndicatorDB.remove, [("i", "s", "o", "t", "y")], size=1)
    waited = defer.ensureDeferred(tx.room())
    assert not waited.called
    store.calls[0][2].callback(None)  # the 3 rows written
    assert waited.called


def test_a_full_sync_waits_for_a_store_that_is_behind() -> None:
    """
    A cycle's pull never runs far ahead of the store: rows go in blocks
    (in key order, the last of equal keys still last), and the pull's
    pause waits while more than the allowed calls are queued.
    """
    store = _SlowStore()
    tx = Transaction(store.run, limit=1, block=3)
    tx.add_rows([("i", "s", "o", "t", "b", "1", "old"), ("i", "s", "o", "t", "a", "1", "x")])
    assert store.calls == []
    tx.add_rows([("i", "s", "o", "t", "b", "1", "new")])
    method, (rows,), first = store.calls[0]
    assert method == IndicatorDB.add_rows
    assert [row[4:] for row in rows] == [("a", "1", "x"), ("b", "1", "old"), ("b", "1", "new")]
    tx.send(IndicatorDB.remove, [("i", "s", "o", "t", "a")])
    waited = defer.ensureDeferred(tx.room())
    assert not waited.called
    first.callback(None)
    assert waited.called
    store.calls[1][2].callback(None)
    tx.add_rows([("i", "s", "o", "t", "c", "1", "y")])
    settled = defer.ensureDeferred(tx.settled())
    assert len(store.calls) == 3 and not settled.called
    store.calls[2][2].callback(None)
    assert settled.called
    # Rows of a cycle being dropped are not sent at all.
    tx.add_rows([("i", "s", "o", "t", "d", "1", "z")])
    tx.drop_rows()
    assert defer.ensureDeferred(tx.settled()).called
    assert len(store.calls) == 3


def test_a_store_page_is_made_ready_whole_in_the_store_thread(tmp_path: Path) -> None:
    """
    A page of the store for a delta that reads it all (to write what it
    saw whole again, or to build from every row) comes ready from the
    store's thread: the rows of the planned sources only, as batches and
    (or) as the very lines the writer of what a sync saw would write, with
    the count of rows the store keeps, page after page until no row is
    left.
    """
    db = IndicatorDB.open(str(tmp_path))
    kept = [_indicator(n) for n in range(5)] + [_indicator(n, source="gone") for n in range(3)]
    db.apply(
        StoreChanges(
            replace=(("tc", "*"), ("tc", "gone")),
            upsert=tuple(kept),
            states={("tc", "*"): SourceState(last_full=1.0), ("tc", "gone"): SourceState()},
        )
    )
    planned = frozenset({("tc", "*")})
    after: tuple[str, ...] | None = None
    lines: list[bytes] = []
    stored, values = 0, []
    for _ in range(10):
        page = rebuild.store_page(db, after, 3, planned, True, True)
        if page.after is None:
            break
        rows = db.raw_page(after, 3)
        assert page.after == rows[-1][:6]
        expected = batches_of_rows([row for row in rows if row[1] == "*"])
        assert [(s, b.values) for s, b in page.batches] == [(s, b.values) for s, b in expected]
        assert page.lines == page_lines_of(expected)
        lines += page.lines[0]
        stored += page.lines[1]
        values += [v for _, b in page.batches for v in b.values["host"]]
        after = page.after
    assert sorted(values) == [f"host{n}.example" for n in range(5)] and stored == 5
    assert [orjson.loads(line)["origin"] for line in lines] == ["*"] * len(lines)
    only_lines = rebuild.store_page(db, None, 100, planned, False, True)
    only_batches = rebuild.store_page(db, None, 100, planned, True, False)
    assert only_lines.batches == [] and only_lines.lines[1] == 5
    assert only_batches.lines == ([], 0) and len(only_batches.batches) == 1


def page_lines_of(batches: list[tuple[str, IndicatorBatch]]) -> tuple[list[bytes], int]:
    """
    What L{SeenWriter.add} writes for C{batches}, and the rows it counts.
    """
    with tempfile.TemporaryDirectory() as folder:
        writer = SeenWriter(folder)
        for source, batch in batches:
            writer.add([batch], origin=source)
        path, _ = writer.written()
        written = Path(path).read_bytes().splitlines(keepends=True)
        rows = writer.stored_rows
        writer.discard()
    return written, rows
