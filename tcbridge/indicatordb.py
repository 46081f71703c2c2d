# -*- test-case-name: tests.unit.test_indicatordb -*-
"""
The indicator store: every indicator the bridge knows, in a SQLite database
in C{cache_folder} (the standard library's C{sqlite3}, WAL journal), kept
across restarts so that a sync can ask ThreatConnect only for what changed.

One row per C{(instance, source, owner, type, value, id)} (an owner may
hold one value under two ids; a deletion, which names no id, removes every
row of its value): the rating,
confidence, ThreatAssess score, dates, tags, active flag, ThreatConnect id,
link, description and the IOC values.  Per C{(instance, source)}: the
watermark (the newest C{lastModified} a sync saw, for the next delta) and
when the last full and the last delta sync ended.

Guarantees:

  - A sync's changes (L{StoreChanges}) are one transaction
    (L{IndicatorDB.apply}): a crash or
    a SIGKILL at any point leaves the state before it.
  - The schema carries a version (SQLite's C{user_version}) and migrates
    forward (L{MIGRATIONS}, one step at a time, each in a transaction).
  - A damaged database, or one made by a newer tcbridge, is set aside as
    C{<name>.damaged-<time>} with a warning and a new one is started
    (L{IndicatorDB.open}); its C{needs_full_sync} says a full sync must fill
    it again.

Every method blocks; L{ThreadedIndicatorDB} runs them in a thread of their
own, off the reactor, and reads of what is committed (on a second
connection) in another: each connection is used by one thread at a time.
A commit leaves its pages in SQLite's log; L{IndicatorDB.checkpoint}, which
the service runs after each cycle, copies them into the database file.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeVar

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from tcbridge.indicatorrows import SourceState, StoreChanges, StoredIndicator
from tcbridge.logs import bridge_observer

T = TypeVar("T")

log = Logger(observer=bridge_observer)

FILE_NAME: Final = "indicators.sqlite3"

#: Schema steps: version N is reached by running MIGRATIONS[N - 1] on a
#: database at version N - 1 (version 0: empty).
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE indicators (
            instance TEXT NOT NULL,
            source TEXT NOT NULL,
            owner TEXT NOT NULL,
            type TEXT NOT NULL,
            value TEXT NOT NULL,
            id TEXT NOT NULL DEFAULT '',
            rating TEXT NOT NULL DEFAULT 'null',
            confidence TEXT NOT NULL DEFAULT 'null',
            assess TEXT NOT NULL DEFAULT 'null',
            added INTEGER,
            modified INTEGER,
            tags TEXT NOT NULL DEFAULT '[]',
            active INTEGER NOT NULL DEFAULT 1,
            link TEXT,
            ioc_values TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (instance, source, owner, type, value, id)
        ) WITHOUT ROWID""",
        """CREATE TABLE sources (
            instance TEXT NOT NULL,
            source TEXT NOT NULL,
            watermark INTEGER,
            last_full REAL,
            PRIMARY KEY (instance, source)
        )""",
    ),
    (
        "ALTER TABLE indicators ADD COLUMN description TEXT NOT NULL DEFAULT 'null'",
        "ALTER TABLE sources ADD COLUMN last_delta REAL",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

_COLUMNS: Final = (
    "instance",
    "source",
    "owner",
    "type",
    "value",
    "id",
    "rating",
    "confidence",
    "assess",
    "added",
    "modified",
    "tags",
    "active",
    "link",
    "ioc_values",
    "label",
    "description",
)

# Made of the fixed column names above, never of input.
_INSERT: Final = (
    f"INSERT OR REPLACE INTO indicators ({', '.join(_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(_COLUMNS))})"
)
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM indicators"  # noqa: S608
_KEY: Final = "instance, source, owner, type, value, id"


#: keys looked up in one statement (6 variables each at most; fewer where
#: SQLite takes fewer variables)
_LOOKUPS: Final = 500


@functools.lru_cache(maxsize=32)
def _lookup(width: int, count: int) -> str:
    """
    A statement giving the rows of C{count} keys, each the first C{width}
    columns of L{_KEY} (a join from their list, so that each is one
    search of the primary key).
    """
    columns = _KEY.split(", ")[:width]
    keys = ", ".join(["(" + ", ".join("?" * width) + ")"] * count)
    match = " AND ".join(f"i.{c} = k.column{n}" for n, c in enumerate(columns, 1))
    chosen = ", ".join(f"i.{c}" for c in _COLUMNS)
    return f"SELECT {chosen} FROM (VALUES {keys}) AS k JOIN indicators AS i ON {match}"  # noqa: S608


class NewerDatabaseError(Exception):
    """
    The database was made by a newer tcbridge (a higher schema version).
    """


class IndicatorDB:
    """
    The store over one SQLite file; use L{open}.

    :ivar path: the database file.
    :ivar needs_full_sync: the store is new (or was set aside), so only a
        full sync can fill it.
    :ivar warning: what happened to a database that was set aside, if any.
    """

    def __init__(self, path: str, connection: sqlite3.Connection, fresh: bool) -> None:
        self.path = path
        self._db = connection
        self._replacing: tuple[tuple[str, str], ...] = ()
        self.needs_full_sync = fresh
        self.warning: str | None = None
        self._read: sqlite3.Connection | None = None

    @classmethod
    def open(
        cls, folder: str, clock: Callable[[], float] = time.time, wait: float = 5.0
    ) -> IndicatorDB:
        """
        Open (or create) the store in C{folder} (made if missing), migrating
        it forward, waiting up to C{wait} seconds for another writer; a
        damaged database, or one a newer tcbridge made, is set aside and a
        new one started.
        """
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, FILE_NAME)
        existed = os.path.exists(path)
        try:
            return cls._open(path, existed, wait)
        except (sqlite3.DatabaseError, NewerDatabaseError) as e:
            if not _damaged(e):
                raise  # locked, read-only, disk full...: not the file's fault
            aside = f"{path}.damaged-{int(clock())}"
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.replace(path + suffix, aside + suffix)
            db = cls._open(path, False, wait)
            db.warning = (
                f"The indicator store {path} could not be used ({e}); it was set aside as "
                f"{aside} and a new one started: the next sync is a full sync."
            )
            log.warn("{warning}", warning=db.warning)
            return db

    @classmethod
    def for_writing(cls, folder: str, wait: float = 30.0) -> IndicatorDB:
        """
        A second connection to the store in C{folder}, which the service
        has opened (checked, migrated, set aside if damaged): for a
        transaction run elsewhere (L{tcbridge.storechild}).
        """
        return cls._open(os.path.join(folder, FILE_NAME), False, wait)

    def filled_elsewhere(self) -> None:
        """
        Note that another connection committed a full sync (see
        L{for_writing}): the store no longer needs one.
        """
        self.needs_full_sync = False

    @classmethod
    def _open(cls, path: str, existed: bool, wait: float) -> IndicatorDB:
        connection = sqlite3.connect(
            path, timeout=wait, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            # A commit does not copy its pages into the database file: the
            # service does, after the cycle (L{checkpoint}), so that a
            # delta does not wait for it.
            connection.execute("PRAGMA wal_autocheckpoint=0")
            if existed:
                ok = connection.execute("PRAGMA quick_check").fetchone()
                if ok is None or ok[0] != "ok":
                    raise DamagedDatabaseError(f"quick_check says {ok}")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise NewerDatabaseError(
                    f"schema version {version}, newer than this tcbridge's {SCHEMA_VERSION}"
                )
            migrate(connection, version)
            empty = connection.execute("SELECT count(*) FROM sources").fetchone()[0] == 0
        except BaseException:
            connection.close()
            raise
        return cls(path, connection, fresh=not existed or empty)

    def close(self) -> None:
        """
        Close the database.
        """
        if self._read is not None:
            self._read.close()
        self._db.close()

    def apply(self, changes: StoreChanges) -> None:
        """
        Apply one sync's changes in one transaction: all of them, or (if
        anything fails, or the process dies) none.
        """
        self.begin(changes.replace)
        try:
            self.add(changes.upsert)
            self.remove(changes.remove)
        except BaseException:
            self.abort()
            raise
        self.commit(changes.states)

    # -- a transaction over several calls (a sync's, page by page) -------

    def begin(self, replace: Iterable[tuple[str, str]] = (), only: bool = False) -> None:
        """
        Start a sync's transaction, the rows of the C{replace} sources gone
        (a full sync of them); with C{only}, the rows and states of every
        other source go too (sources no longer configured).  Until
        L{commit}, only this connection sees the changes; L{abort} (or the
        process dying) drops them.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        self._replacing = tuple(replace)
        try:
            gone = self._replacing
            if only:
                known = db.execute("SELECT instance, source FROM sources").fetchall()
                kept = set(self._replacing)
                gone += tuple(key for key in map(tuple, known) if key not in kept)
                for instance, source in gone[len(self._replacing) :]:
                    db.execute(
                        "DELETE FROM sources WHERE instance = ? AND source = ?", (instance, source)
                    )
            for instance, source in gone:
                db.execute(
                    "DELETE FROM indicators WHERE instance = ? AND source = ?", (instance, source)
                )
        except BaseException:
            self.abort()
            raise

    def _in_transaction(self) -> sqlite3.Connection:
        """
        The connection, if a transaction is open on it.

        :raise NoTransactionError: if none is (it failed to start, or
            SQLite ended it after an error): a change now would be kept at
            once, outside the sync's all-or-nothing transaction.
        """
        if not self._db.in_transaction:
            raise NoTransactionError("no transaction is open on the indicator store")
        return self._db

    def add(self, rows: Iterable[StoredIndicator]) -> None:
        """
        Add or replace rows, in the open transaction.
        """
        self._in_transaction().executemany(_INSERT, (row.row() for row in rows))

    def add_rows(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """
        L{add} for rows already laid out as L{StoredIndicator.row} does.
        """
        self._in_transaction().executemany(_INSERT, rows)

    def remove(self, keys: Iterable[tuple[str, str, str, str, str]]) -> None:
        """
        Take out every row of each C{(instance, source, owner, type, value)},
        in the open transaction.
        """
        self._in_transaction().executemany(
            "DELETE FROM indicators WHERE instance = ? AND source = ? AND owner = ? "
            "AND type = ? AND value = ?",
            keys,
        )

    def commit(self, states: dict[tuple[str, str], SourceState]) -> None:
        """
        Record the sources' new states and end the transaction, keeping all
        its changes.
        """
        db = self._in_transaction()
        try:
            for (instance, source), state in states.items():
                db.execute(
                    "INSERT OR REPLACE INTO sources "
                    "(instance, source, watermark, last_full, last_delta) VALUES (?, ?, ?, ?, ?)",
                    (instance, source, state.watermark, state.last_full, state.last_delta),
                )
            db.execute("COMMIT")
        except BaseException:
            self.abort()
            raise
        if self._replacing:
            self.needs_full_sync = False

    def checkpoint(self) -> tuple[int, int]:
        """
        Copy committed changes from SQLite's write-ahead log into the
        database file (as far as no reader still needs the old pages;
        never waiting for one): what SQLite would otherwise do at the end
        of a commit.  Nothing while a transaction is open on this
        connection.

        :return: the pages in the log and those now in the database file.
        """
        if self._db.in_transaction:
            return (0, 0)
        _, logged, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(logged), int(copied)

    def abort(self) -> None:
        """
        End the open transaction, dropping all its changes.
        """
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def page(self, after: tuple[str, ...] | None, limit: int) -> list[StoredIndicator]:
        """
        Up to C{limit} rows in key order, after the key C{after} (the start
        when C{None}), as this connection sees them (an open transaction's
        changes included).
        """
        return [StoredIndicator.of_row(row) for row in self.raw_page(after, limit)]

    def raw_page(self, after: tuple[str, ...] | None, limit: int) -> list[tuple[Any, ...]]:
        """
        L{page} as the database gives it: tuples in the order of
        L{StoredIndicator.row} (see L{tcbridge.indicatorrows.batches_of_rows}),
        the first six of each its key.
        """
        if after is None:
            cursor = self._db.execute(f"{_SELECT} ORDER BY {_KEY} LIMIT ?", (limit,))
        else:
            cursor = self._db.execute(
                f"{_SELECT} WHERE ({_KEY}) > (?, ?, ?, ?, ?, ?) ORDER BY {_KEY} LIMIT ?",
                (*after, limit),
            )
        return cursor.fetchall()

    def state(self, instance: str, source: str) -> SourceState:
        """
        What the store knows of one source (nothing yet: all C{None}).
        """
        row = self._db.execute(
            "SELECT watermark, last_full, last_delta FROM sources "
            "WHERE instance = ? AND source = ?",
            (instance, source),
        ).fetchone()
        return SourceState(*row) if row else SourceState()

    def indicators(self, instance: str | None = None) -> Iterator[StoredIndicator]:
        """
        Every stored indicator (of C{instance}, if given), in key order.
        """
        query = _SELECT
        params: tuple[str, ...] = ()
        if instance is not None:
            query += " WHERE instance = ?"
            params = (instance,)
        query += " ORDER BY instance, source, owner, type, value"
        for row in self._db.execute(query, params):
            yield StoredIndicator.of_row(row)

    def committed_rows(
        self,
        full_keys: Iterable[tuple[str, str, str, str, str, str]],
        value_keys: Iterable[tuple[str, str, str, str, str]],
        sources: Iterable[tuple[str, str]],
    ) -> list[tuple[Any, ...]]:
        """
        The rows as last committed (not as an open transaction on this
        connection has them), as L{raw_page} gives them: those of each
        full key, every id of each C{(instance, source, owner, type,
        value)} and every row of each C{(instance, source)}.  What a delta
        is about to replace or take out, read before it commits (from a
        second, read-only connection).
        """
        reader = self._reader()
        found: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        lists: tuple[tuple[int, Iterable[tuple[str, ...]]], ...] = (
            (6, full_keys),
            (5, value_keys),
            (2, sources),
        )
        # An older SQLite takes no more than 999 variables in one statement.
        most = reader.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        for width, given in lists:
            keys = list(given)
            step = max(1, min(_LOOKUPS, most // width))
            for at in range(0, len(keys), step):
                part = keys[at : at + step]
                flat = [field for key in part for field in key]
                for row in reader.execute(_lookup(width, len(part)), flat):
                    found[row[:6]] = row
        return list(found.values())

    def _reader(self) -> sqlite3.Connection:
        """
        A second connection to the same database, made on first use and
        only read from: it sees the last committed state whatever this one
        has open.
        """
        if self._read is None:
            self._read = sqlite3.connect(
                self.path, timeout=5.0, isolation_level=None, check_same_thread=False
            )
        return self._read

    def count(self) -> int:
        """
        How many indicators are stored.
        """
        return int(self._db.execute("SELECT count(*) FROM indicators").fetchone()[0])


#: SQLite's result codes for a file that is not a sound database.
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26


class NoTransactionError(sqlite3.OperationalError):
    """
    A change was asked for with no transaction open to hold it.
    """


class DamagedDatabaseError(sqlite3.DatabaseError):
    """
    The database's own check found it damaged.
    """


def _damaged(error: BaseException) -> bool:
    """
    Whether C{error} says the file itself is unusable (damaged, not a
    database, made by a newer tcbridge), rather than that it cannot be used
    right now (locked, read-only, a full disk).
    """
    if isinstance(error, NewerDatabaseError | DamagedDatabaseError):
        return True
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def migrate(connection: sqlite3.Connection, version: int) -> None:
    """
    Bring a database at schema C{version} to L{SCHEMA_VERSION}, one step at
    a time, each step and its new version in one transaction.
    """
    for number in range(version, SCHEMA_VERSION):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number]:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number + 1}")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise


class ThreadedIndicatorDB:
    """
    An L{IndicatorDB} whose every call runs in one thread of its own, off
    the reactor, one call at a time; the store is opened by the first call.
    """

    def __init__(self, reactor: Any, folder: str) -> None:
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="tcbridge-indicatordb")
        self._reads = ThreadPool(minthreads=1, maxthreads=1, name="tcbridge-indicatordb-read")
        self._reactor = reactor
        self._folder = folder
        self._db: IndicatorDB | None = None
        self._pool.start()
        self._reads.start()
        self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self._stop)

    def _stop(self) -> None:
        self._reads.stop()
        self._pool.stop()

    def _in_thread(self, method: Callable[..., T], *args: Any) -> T:
        if self._db is None:
            self._db = IndicatorDB.open(self._folder)
        return method(self._db, *args)

    async def run(self, method: Callable[..., T], *args: Any) -> T:
        """
        Run C{method(db, *args)} in the store's thread.
        """
        result: T = await deferToThreadPool(
            self._reactor, self._pool, self._in_thread, method, *args
        )
        return result

    async def read(self, method: Callable[..., T], *args: Any) -> T:
        """
        Run C{method(db, *args)}, a call that reads only what is committed
        on the store's second connection (L{IndicatorDB.committed_rows}),
        in a thread of its own, beside the calls L{run} runs (in the
        store's thread until the store is open).
        """
        db = self._db
        if db is None:
            return await self.run(method, *args)
        result: T = await deferToThreadPool(self._reactor, self._reads, method, db, *args)
        return result

    async def close(self) -> None:
        """
        Close the database and stop the threads.
        """
        self._reads.stop()
        await self.run(IndicatorDB.close)
        self._reactor.removeSystemEventTrigger(self._trigger)
        self._pool.stop()
