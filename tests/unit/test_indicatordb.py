"""
The indicator store (L{tcbridge.indicatordb}): rows and source states kept
across reopening, a sync's changes all or nothing, forward migration of the
schema, and a damaged or newer database set aside for a fresh one.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tcbridge.feed.builder import FeedBuilder, FeedSettings
from tcbridge.feed.job import build_feed_file
from tcbridge.indicatordb import (
    FILE_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    IndicatorDB,
    migrate,
)
from tcbridge.indicatorrows import (
    SourceState,
    StoreChanges,
    StoredIndicator,
    batches_of_rows,
    indicator_of,
    rows_of_batch,
    stored,
)
from tcbridge.threatconnect.records import COLUMNS, Indicator, IndicatorBatch
from tests.unit.test_feed_builder import _pulled_records


def _indicator(n: int, source: str = "*", **extra: object) -> StoredIndicator:
    fields: dict[str, object] = {
        "id": str(1000 + n),
        "rating": 3.0,
        "confidence": 50 + n,
        "modified": 1_700_000_000 + n,
        "tags": ("APT", f"t{n}"),
        "values": {"host": f"host{n}.example"},
        "link": f"https://tc.example/host{n}",
    }
    fields.update(extra)
    return StoredIndicator("tc", source, "Common Community", "Host", f"host{n}.example", **fields)


def _full(db: IndicatorDB, indicators: list[StoredIndicator], at: float) -> None:
    db.apply(
        StoreChanges(
            replace=(("tc", "*"),),
            upsert=tuple(indicators),
            states={("tc", "*"): SourceState(watermark=1_700_000_100, last_full=at)},
        )
    )


def test_kept_across_reopening(tmp_path: Path) -> None:
    """
    What a full sync stores is there, unchanged and in key order, after the
    store is opened again; a new store says it needs a full sync, a filled
    one does not.
    """
    db = IndicatorDB.open(str(tmp_path))
    assert db.needs_full_sync
    stored = [_indicator(n) for n in (3, 1, 2)]
    _full(db, stored, 5.0)
    db.close()
    again = IndicatorDB.open(str(tmp_path))
    assert not again.needs_full_sync
    assert list(again.indicators()) == sorted(stored, key=lambda i: i.value)
    assert again.state("tc", "*") == SourceState(1_700_000_100, 5.0, None)
    assert again.state("tc", "other") == SourceState()
    assert again.warning is None


def test_a_delta_updates_and_removes(tmp_path: Path) -> None:
    """
    A delta's upserts replace rows by key and its removals take them out;
    a full sync's replace drops what the source no longer has.
    """
    db = IndicatorDB.open(str(tmp_path))
    _full(db, [_indicator(n) for n in range(5)], 1.0)
    db.apply(
        StoreChanges(
            upsert=(_indicator(1, rating=5.0), _indicator(9)),
            remove=(("tc", "*", "Common Community", "Host", "host2.example"),),
            states={("tc", "*"): SourceState(1_700_000_200, 1.0, 2.0)},
        )
    )
    got = {i.value: i for i in db.indicators()}
    assert sorted(got) == [f"host{n}.example" for n in (0, 1, 3, 4, 9)]
    assert got["host1.example"].rating == 5.0
    assert db.state("tc", "*").last_delta == 2.0
    _full(db, [_indicator(7)], 3.0)
    assert [i.value for i in db.indicators()] == ["host7.example"]


def test_a_failed_change_leaves_the_previous_state(tmp_path: Path) -> None:
    """
    If applying a sync's changes fails part way, none of them is kept.
    """
    db = IndicatorDB.open(str(tmp_path))
    _full(db, [_indicator(n) for n in range(3)], 1.0)
    before = list(db.indicators())
    broken = _indicator(99, values={"host": object()})  # not serialisable: fails mid-way
    with pytest.raises(TypeError):
        db.apply(
            StoreChanges(
                replace=(("tc", "*"),),
                upsert=(_indicator(50), broken),
                states={("tc", "*"): SourceState(1, 9.0)},
            )
        )
    assert list(db.indicators()) == before
    assert db.state("tc", "*").last_full == 1.0


def test_schema_migrates_forward(tmp_path: Path) -> None:
    """
    A store made at schema version 1 is brought to the current version when
    opened, its rows kept (the new column empty).
    """
    path = tmp_path / FILE_NAME
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN")
    for statement in MIGRATIONS[0]:
        connection.execute(statement)
    connection.execute("PRAGMA user_version = 1")
    connection.execute("COMMIT")
    connection.execute(
        "INSERT INTO indicators (instance, source, owner, type, value, ioc_values) "
        "VALUES ('tc', '*', 'O', 'Host', 'a.example', '{\"host\":\"a.example\"}')"
    )
    connection.execute("INSERT INTO sources (instance, source, watermark) VALUES ('tc', '*', 7)")
    connection.close()
    db = IndicatorDB.open(str(tmp_path))
    assert db._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    [kept] = db.indicators()
    assert (kept.value, kept.description, kept.values) == ("a.example", None, {"host": "a.example"})
    assert db.state("tc", "*") == SourceState(7, None, None)


@pytest.mark.parametrize("damage", ["garbage", "newer"])
def test_unusable_store_is_set_aside(tmp_path: Path, damage: str) -> None:
    """
    A file that is not a SQLite database, or a store from a newer tcbridge,
    is set aside with a warning; a new, empty store needs a full sync.
    """
    path = tmp_path / FILE_NAME
    if damage == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    else:
        connection = sqlite3.connect(path)
        migrate(connection, 0)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        connection.close()
    db = IndicatorDB.open(str(tmp_path), clock=lambda: 1234.0)
    assert db.needs_full_sync and db.count() == 0
    assert db.warning is not None and "set aside as" in db.warning
    assert (tmp_path / f"{FILE_NAME}.damaged-1234").exists()


def _odd_records() -> list[Indicator]:
    """
    Indicators with what ThreatConnect sometimes sends: a rating as text or
    a boolean, no confidence, a description that is not text, one value
    under two ids, tags with commas and accents, a File with only a SHA-1.
    """
    return [
        Indicator("A", "Org", "Host", "1", host="odd.example", rating="4", confidence=None),
        Indicator("A", "Org", "Host", "2", host="odd.example", rating=True, description=42),
        Indicator(
            "A", "Org", "Host", "007", host="tags.example", tags=("a,b", "Déjà vu"), rating=5.0
        ),
        Indicator("A", "Org", "File", "9", sha1="a" * 40, rating=3.0),
        Indicator("A", "Org", "Address", "10", ip="2001:db8::1", rating=2.5, last_modified=1),
    ]


@pytest.mark.parametrize("grouping", ["Expanded", "Condensed", "MaxCondensed"])
def test_a_feed_built_from_the_store_is_the_feed_the_pull_gives(
    tmp_path: Path, grouping: str
) -> None:
    """
    Indicators kept in the store and read back (in the store's order) build
    the byte-identical feed that the pulled indicators build: every field
    the feed uses survives the round trip, odd ones included.
    """
    pulled = _pulled_records(1500) + _odd_records()
    db = IndicatorDB.open(str(tmp_path))
    rows = [row for row in (stored(i, "tc") for i in pulled) if row is not None]
    db.apply(StoreChanges(replace=(("tc", "A"),), upsert=tuple(rows)))
    back = [indicator_of(row) for row in db.indicators()]
    assert len(back) == len(rows)
    feeds = []
    for records in (pulled, back):
        builder = FeedBuilder(FeedSettings(grouping=grouping))
        builder.add(records)
        built = build_feed_file(builder, str(tmp_path), gzip=False, pretty=False)
        with open(built.path, "rb") as f:
            feeds.append(f.read())
    assert feeds[0] == feeds[1]


def test_a_busy_store_is_not_taken_for_a_damaged_one(tmp_path: Path) -> None:
    """
    A store that must migrate while another connection is writing to it
    cannot be opened for now: that is an error to retry, and the store is
    left where it is.
    """
    path = tmp_path / FILE_NAME
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    migrate_to_1 = MIGRATIONS[0]
    old.execute("BEGIN")
    for statement in migrate_to_1:
        old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    old.execute("COMMIT")
    old.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            IndicatorDB.open(str(tmp_path), wait=0.05)
    finally:
        old.execute("ROLLBACK")
        old.close()
    assert [p.name for p in tmp_path.iterdir() if "damaged" in p.name] == []
    assert IndicatorDB.open(str(tmp_path)).warning is None


def test_rows_become_the_batches_a_pull_hands_on(tmp_path: Path) -> None:
    """
    The store's rows, read as tuples and turned into batches column by
    column, are the batches of the indicators each row describes: same
    labels, types, values and columns (ratings sent as text stay text,
    missing ones stay missing).
    """
    kept = [
        _indicator(1),
        _indicator(2, rating="4", description="Said twice", tags=()),
        _indicator(3, rating=None, confidence=None, link=None, label="Other Label"),
        StoredIndicator(
            "tc",
            "*",
            "Common Community",
            "File",
            "a" * 32,
            id="77",
            rating=5.0,
            values={"md5": "a" * 32, "sha256": "b" * 64},
            modified=1_700_000_500,
        ),
        StoredIndicator(
            "tc", "*", "Common Community", "File", "c" * 64, values={"sha256": "c" * 64}
        ),
    ]
    db = IndicatorDB.open(str(tmp_path))
    _full(db, kept, at=1.0)
    rows = db.raw_page(None, 100)
    assert [StoredIndicator.of_row(row) for row in rows] == db.page(None, 100)
    expected = IndicatorBatch.of([indicator_of(row) for row in db.page(None, 100)])
    got = [batch for _, batch in batches_of_rows(rows)]
    assert [(b.source, b.type, b.values) for b in got] == [
        (b.source, b.type, b.values) for b in expected
    ]
    for mine, theirs in zip(got, expected, strict=True):
        for name in COLUMNS:
            assert mine.column(name) == theirs.column(name), name
    assert {b.source for b in got} == {"*", "Other Label"}
    assert {source for source, _ in batches_of_rows(rows)} == {"*"}


def test_batches_become_the_rows_their_records_would(tmp_path: Path) -> None:
    """
    A pulled batch's store rows, made column by column, are exactly the
    rows of its records one by one: odd ratings (text, a flag, minus zero,
    missing), tags, descriptions, several hashes, an indicator without a
    value (left out) and a simulator pull's real pages.
    """
    odd = [
        Indicator(source="Lab", owner="Lab", type="Host", id="1", host="a.example", rating="4"),
        Indicator(source="Lab", owner="Lab", type="Host", id="2", host="b.example", rating=True),
        Indicator(source="Lab", owner="Lab", type="Host", id="3", host="c.example", rating=-0.0),
        Indicator(source="Lab", owner="Lab", type="Host", id="4", host="d.example", rating=0.0),
        Indicator(source="Lab", owner="Lab", type="Host", id="5", host=None, rating=1.0),
        Indicator(
            source="Lab",
            owner="Lab",
            type="File",
            id="6",
            md5="a" * 32,
            sha256="b" * 64,
            tags=("Ünïcode", "APT"),
            description="said <twice>",
            confidence=90,
            threat_assess_score=700,
            last_modified=1_700_000_000,
            web_link="https://tc.example/6",
        ),
        Indicator(source="Lab", owner="Lab", type="URL", id="7"),
    ]
    batches = IndicatorBatch.of(odd) + [
        batch for batch in IndicatorBatch.of(_pulled_records(300)) if len(batch)
    ]
    for source in ("", "configured"):
        for batch in batches:
            expected = [
                row.row() for row in (stored(r, "tc", source) for r in batch.records()) if row
            ]
            assert rows_of_batch("tc", source, batch) == expected


def test_changes_outside_a_transaction_are_refused(tmp_path: Path) -> None:
    """
    A change asked for when no transaction is open (it failed to start, or
    SQLite ended it) is refused, not kept at once outside the sync's
    all-or-nothing transaction.
    """
    from tcbridge.indicatordb import NoTransactionError

    db = IndicatorDB.open(str(tmp_path))
    with pytest.raises(NoTransactionError):
        db.add_rows([("main", "all", "o", "Host", "a.example")])
    with pytest.raises(NoTransactionError):
        db.remove([("main", "all", "o", "Host", "a.example")])
    with pytest.raises(NoTransactionError):
        db.commit({})
    assert db.count() == 0


def test_committed_rows_are_read_as_last_committed(tmp_path: Path) -> None:
    """
    While a delta's transaction is open, the rows it is about to replace
    or take out read as last committed (by full key, by value with every
    id, by source), not as the transaction has them; other rows are not
    read.
    """
    db = IndicatorDB.open(str(tmp_path))
    _full(db, [_indicator(n) for n in range(5)], 1.0)
    db.begin()
    db.add([_indicator(1, rating=5.0), _indicator(2, id="2002")])
    db.remove([("tc", "*", "Common Community", "Host", "host3.example")])
    key = ("tc", "*", "Common Community", "Host")
    rows = db.committed_rows(
        [(*key, "host1.example", "1001"), (*key, "host2.example", "2002")],
        [(*key, "host3.example")],
        [],
    )
    found = sorted((StoredIndicator.of_row(row) for row in rows), key=lambda i: i.value)
    assert [(i.value, i.rating) for i in found] == [("host1.example", 3.0), ("host3.example", 3.0)]
    every = db.committed_rows([], [], [("tc", "*")])
    assert len(every) == 5
    assert db.committed_rows([], [], [("tc", "elsewhere")]) == []
    db.abort()
    db.close()


def test_many_committed_rows_are_read_in_one_go(tmp_path: Path) -> None:
    """
    Thousands of keys (more than one statement takes), some repeated and
    some unknown, read every matching row once.
    """
    db = IndicatorDB.open(str(tmp_path))
    _full(db, [_indicator(n) for n in range(1500)], 1.0)
    key = ("tc", "*", "Common Community", "Host")
    full_keys = [(*key, f"host{n}.example", str(1000 + n)) for n in range(0, 3000, 2)]
    value_keys = [(*key, f"host{n}.example") for n in range(1, 1500, 2)] * 2
    rows = db.committed_rows(full_keys, value_keys, [])
    assert sorted(StoredIndicator.of_row(row).value for row in rows) == sorted(
        f"host{n}.example" for n in range(1500)
    )
    db.close()
    # An SQLite that takes at most 999 variables (before 3.32) reads them too.
    older = IndicatorDB.open(str(tmp_path))
    older._reader().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    again = older.committed_rows(full_keys, value_keys, [])
    assert sorted(map(tuple, again)) == sorted(map(tuple, rows))
    older.close()


def _file_alone(tmp_path: Path) -> list[str]:
    """
    The values the database file holds without its write-ahead log (a
    copy, opened on its own; none while even the schema is in the log).
    """
    alone = tmp_path / "alone"
    alone.mkdir(exist_ok=True)
    (alone / FILE_NAME).write_bytes((tmp_path / FILE_NAME).read_bytes())
    connection = sqlite3.connect(alone / FILE_NAME)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if "indicators" not in tables:
            return []
        return [row[0] for row in connection.execute("SELECT value FROM indicators ORDER BY value")]
    finally:
        connection.close()


def test_a_commit_reaches_the_database_file_at_the_checkpoint(tmp_path: Path) -> None:
    """
    A commit leaves its pages in SQLite's log (durable there, and read by
    every connection) and the database file gains them at L{checkpoint},
    which the service runs after the cycle; a checkpoint asked for while
    a transaction is open does nothing.
    """
    db = IndicatorDB.open(str(tmp_path))
    _full(db, [_indicator(n) for n in range(3)], 1.0)
    assert _file_alone(tmp_path) == []
    other = IndicatorDB.open(str(tmp_path / "."))
    assert len(list(other.indicators())) == 3
    other.close()
    db.begin()
    assert db.checkpoint() == (0, 0)
    db.abort()
    logged, copied = db.checkpoint()
    assert logged > 0 and copied == logged
    assert _file_alone(tmp_path) == [f"host{n}.example" for n in range(3)]
