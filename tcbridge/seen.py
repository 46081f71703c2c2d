# -*- test-case-name: tests.unit.test_explain -*-
"""
What the last sync saw: every indicator ThreatConnect sent, as it came,
one line of JSON each, in C{cache_folder/last-sync-indicators.jsonl}.
L{tcbridge.explain} reads it to say why a value is, or is not, in the
feed, without asking ThreatConnect again.

A line per page (per batch): its type and source label, its columns as
ThreatConnect sent them (C{owners}, C{ids}, C{ratings}, C{confidences},
C{assess}, C{links}, C{modified}), its value columns (C{values}: C{md5},
C{sha1}, C{sha256}, C{ip} or C{host}) and the same values as search keys
(C{keys}: lower case, no surrounding space, no trailing dot), by which a
search finds the line.  Each line also names the configured source it
was pulled for (C{origin}) and keeps the C{tags} and C{descriptions}
columns, so that a delta sync can rebuild its feed from the previous
sync's file (L{tcbridge.sync.base}).  A sync writes a new file beside the
old one and renames it over it when the sync ends with a feed (published
or held back by the shrink guard); a failed sync leaves the previous one.
A sync whose changes the indicator store committed ends the file with a
trailer line (C{{"committed": ...}}: the store's source states after that
commit), by which the next delta knows the file is the store's content.

A delta that builds from the last sync's feed state does not write the
whole file again: it appends what it changed to C{last-sync-changes.jsonl}
beside it (L{SeenWriter.journal}), whose first line names the trailer of
the file it changes (C{{"changes_of": ...}}) and whose last trailer is
then the store's states.  Its lines, in order: the delta's inactive pages,
C{{"replaced": [source, ...]}} (sources pulled whole: their earlier rows
go), C{{"gone": [[source, owner, type, value], ...], "keys": [...]}}
(values taken out: every id of each) and the pages of rows pulled.  A
later line overrides an earlier one of the same indicator.  A changes file
whose first line does not name the file's trailer belongs to an older file
and is ignored; a full rewrite of the file removes it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

import orjson

from tcbridge.threatconnect.records import VALUE_COLUMNS, IndicatorBatch

FILE_NAME = "last-sync-indicators.jsonl"
#: What deltas changed since the file was written (see the module docstring).
CHANGES_NAME = "last-sync-changes.jsonl"
_COLUMNS = ("owners", "ids", "ratings", "confidences", "assess", "links", "modified")
#: Kept for rebuilding a feed, not shown by explanations.
_MORE_COLUMNS = ("tags", "descriptions")
_PREFIX = ".tmp-"
#: The longest trailer, or first line of a changes file, read (a few dozen
#: bytes per configured source).
_HEADER_LIMIT = 1 << 20


def search_key(raw: object) -> str | None:
    """
    The key a raw value is found by: lower case, no surrounding white
    space, no trailing dot (C{None} for no value).
    """
    if not isinstance(raw, str) or not raw.strip():
        return None
    return raw.strip().lower().rstrip(".")


def stored_count(columns: list[list[Any]]) -> int:
    """
    How many rows of a batch's value columns have a value (those the
    indicator store keeps, keyed by the first).
    """
    if len(columns) == 1:
        return sum(1 for value in columns[0] if value)
    return sum(1 for row in zip(*columns, strict=True) if any(row))


def _search_keys(column: list[Any]) -> list[str | None]:
    """
    L{search_key} of every value of a column (in one comprehension: a
    delta writes a million of them).
    """
    return [
        (text.lower().rstrip(".") if (text := raw.strip()) else None)
        if raw.__class__ is str
        else None
        for raw in column
    ]


def page_lines(
    batches: Iterable[IndicatorBatch], inactive: bool = False, origin: str = ""
) -> tuple[list[bytes], int]:
    """
    The lines of this file's form for the indicators of one page of the
    configured source C{origin}, and how many rows of them the indicator
    store keeps: one line per batch, its columns dumped as they are (one
    C call; a row per indicator would cost several times more).  Touches
    nothing but its arguments, so that any thread may make them.
    """
    lines: list[bytes] = []
    stored = 0
    for batch in batches:
        if not len(batch):
            continue
        names = VALUE_COLUMNS.get(batch.type, ())
        values = {name: batch.values[name] for name in names}
        page: dict[str, Any] = {
            "type": batch.type,
            "source": batch.source,
            "keys": {name: _search_keys(column) for name, column in values.items()},
            "values": values,
            "origin": origin,
            **{name: batch.column(name) for name in (*_COLUMNS, *_MORE_COLUMNS)},
        }
        if inactive:
            page["inactive"] = True
        elif names:
            stored += stored_count([values[name] for name in names])
        lines.append(orjson.dumps(page, default=str) + b"\n")
    return lines, stored


class SeenWriter:
    """
    Writes one sync's indicators into a new file in C{folder}.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        fd, self._path = tempfile.mkstemp(prefix=_PREFIX, suffix=".json", dir=folder)
        self._file: IO[bytes] | None = os.fdopen(fd, "wb")
        #: rows written that the indicator store keeps (active, with a value)
        self.stored_rows = 0
        #: in journal mode, the trailer of the file this sync's lines change
        self._changes_of: dict[str, Any] | None = None

    def add_lines(self, lines: Iterable[bytes], stored_rows: int) -> None:
        """
        Append lines already in this file's form (a rebuilt feed's pages,
        see L{tcbridge.sync.base}) holding C{stored_rows} rows the store
        keeps.
        """
        if self._file is not None:
            self._file.writelines(lines)
            self.stored_rows += stored_rows

    def written(self) -> tuple[str, int]:
        """
        The file being written, and how far it is written out (flushed to
        the system, so that another process can read that far).
        """
        if self._file is None:
            return self._path, 0
        self._file.flush()
        return self._path, self._file.tell()

    def mark(self) -> tuple[int, int]:
        """
        Where the file stands now, to go back to with L{rewind}.
        """
        return (self._file.tell() if self._file is not None else 0), self.stored_rows

    def rewind(self, mark: tuple[int, int]) -> None:
        """
        Drop what was written after C{mark} (and forget L{journal}: a
        rewound sync writes its file whole).
        """
        self._changes_of = None
        if self._file is not None:
            self._file.seek(mark[0])
            self._file.truncate()
            self.stored_rows = mark[1]

    def add_inactive(self, batches: Iterable[IndicatorBatch], origin: str = "") -> None:
        """
        Append indicators ThreatConnect sent but marks inactive (left out of
        the feed), flagged so.
        """
        self.add(batches, inactive=True, origin=origin)

    def journal(self, changes_of: dict[str, Any], rows: int) -> None:
        """
        Make this a delta's changes to the last sync's file, whose trailer
        is C{changes_of}, instead of a whole new file: L{finish} appends
        what was written to the changes file; C{rows} is the number of rows
        the store holds after this sync.
        """
        self._changes_of = changes_of
        self.stored_rows = rows

    def add_replaced(self, sources: Iterable[str]) -> None:
        """
        Note configured sources pulled whole: their earlier rows go.
        """
        if self._file is not None:
            self._file.write(orjson.dumps({"replaced": sorted(sources)}) + b"\n")

    def add_gone(self, keys: Iterable[tuple[str, str, str, str]]) -> None:
        """
        Note values taken out (source, owner, type, value): every id of
        each goes.
        """
        gone = sorted(keys)
        if self._file is not None and gone:
            line = {"gone": gone, "keys": [search_key(key[3]) for key in gone]}
            self._file.write(orjson.dumps(line) + b"\n")

    def add(
        self, batches: Iterable[IndicatorBatch], inactive: bool = False, origin: str = ""
    ) -> None:
        """
        Append the indicators of one page of the configured source
        C{origin} (see L{page_lines}).
        """
        if self._file is not None:
            self.add_lines(*page_lines(batches, inactive=inactive, origin=origin))

    def finish(self, committed: Any = None) -> None:
        """
        Make this sync's file the one explanations read; with C{committed}
        (the store's states after this sync's commit, as JSON), end it with
        the trailer that lets the next delta rebuild from it (with the
        number of stored rows written, which the store must also hold).
        The file reaches the disk before it replaces the previous one.  A
        delta's changes (see L{journal}) are appended to the changes file
        only with C{committed}: changes the store did not keep are dropped.

        :raise OSError: if it cannot be written (the previous file stays).
        """
        if self._file is None:
            return
        if self._changes_of is not None and committed is None:
            self.discard()
            return
        if committed is not None:
            trailer = {"committed": committed, "rows": self.stored_rows}
            self._file.write(orjson.dumps(trailer) + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        if self._changes_of is not None:
            self._append_changes(self._changes_of)
            return
        os.replace(self._path, os.path.join(self.folder, FILE_NAME))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.folder, CHANGES_NAME))

    def _append_changes(self, changes_of: dict[str, Any]) -> None:
        """
        Append what this sync wrote to the changes file, or start a new
        one if the changes file there changes another file; then drop this
        sync's own file.  An append that fails removes the changes file
        (the last sync's file alone then matches no store: the next delta
        reads the store).
        """
        path = os.path.join(self.folder, CHANGES_NAME)
        header = orjson.dumps({"changes_of": changes_of}) + b"\n"
        try:
            if _first_line(path) == header:
                with open(path, "ab") as out, open(self._path, "rb") as mine:
                    shutil.copyfileobj(mine, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.unlink(self._path)
                return
            with open(self._path, "rb") as mine:
                body = mine.read()
            with open(self._path, "wb") as mine:
                mine.write(header + body)
                mine.flush()
                os.fsync(mine.fileno())
            os.replace(self._path, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            raise

    def discard(self) -> None:
        """
        Drop this sync's file (the previous one stays).
        """
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            os.unlink(self._path)
        except OSError:
            pass


def trailer(path: str) -> dict[str, Any] | None:
    """
    The trailer of the file at C{path} (C{committed}: the store's states,
    C{rows}: the stored rows written), or C{None} (no file, no trailer).
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - _HEADER_LIMIT)
            f.seek(start)
            tail = f.read()
    except OSError:
        return None
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if not last.startswith(b'{"committed":'):
        return None
    try:
        found = orjson.loads(last)
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def _first_line(path: str) -> bytes | None:
    """
    The first line of the file at C{path} (C{None}: no such file).
    """
    try:
        with open(path, "rb") as f:
            return f.readline(_HEADER_LIMIT)
    except FileNotFoundError:
        return None


def changes_file(folder: str, base_trailer: dict[str, Any] | None) -> str | None:
    """
    The changes file in C{folder}, if there is one and it changes the
    last sync's file whose trailer is C{base_trailer}.
    """
    if base_trailer is None:
        return None
    path = os.path.join(folder, CHANGES_NAME)
    header = orjson.dumps({"changes_of": base_trailer}) + b"\n"
    return path if _first_line(path) == header else None


def rows_with(page: dict[str, Any], key: str) -> list[list[Any]]:
    """
    The indicators of one line (a page) that hold C{key}, each as C{[type,
    source, owner, id, rating, confidence, threatAssess, link, modified,
    values, inactive]}.
    """
    keys: dict[str, list[str | None]] | None = page.get("keys")
    if keys is None:  # the trailer
        return []
    found = sorted({i for column in keys.values() for i, k in enumerate(column) if k == key})
    values: dict[str, list[Any]] = page["values"]
    return [
        [
            page["type"],
            page["source"],
            *(page[name][i] for name in _COLUMNS),
            {name: column[i] for name, column in values.items() if column[i]},
            bool(page.get("inactive")),
        ]
        for i in found
    ]


def last_written(path: str) -> float:
    """
    When the last sync's file at C{path}, or the changes of a delta since,
    were last written (seconds since the epoch).

    :raise OSError: if there is no such file.
    """
    written = os.path.getmtime(path)
    changes = changes_file(os.path.dirname(path), trailer(path))
    if changes is not None:
        with contextlib.suppress(OSError):
            written = max(written, os.path.getmtime(changes))
    return written


def seen_rows(path: str, key: str, limit: int) -> list[list[Any]]:
    """
    The indicators holding the search key C{key} (see L{search_key}) that
    the last sync's file at C{path} holds, with the changes of the deltas
    since laid over it: each as L{rows_with} gives it, at most C{limit}.
    A later row of the same indicator (configured source, owner, type,
    value, id) replaces an earlier one; a source pulled whole drops the
    rows of earlier syncs (not the inactive ones its own delta reported);
    a value taken out drops its earlier active rows (an inactive row
    stays, to say why the value is not in the feed).
    """
    needle = orjson.dumps(key)
    files: list[tuple[str, tuple[bytes, ...]]] = [(path, ())]
    changes = changes_file(os.path.dirname(path), trailer(path))
    if changes is not None:
        # A File taken out is named by its first hash only: every line that
        # takes values out is read.  Trailers end each delta's lines.
        files.append((changes, (b'{"replaced":', b'{"gone":', b'{"committed":')))
    found: dict[tuple[Any, ...], tuple[bool, list[Any]]] = {}
    #: each row's delta (its number of trailers before it; the file's: -1)
    delta: dict[tuple[Any, ...], int] = {}
    now = -1
    for name, more in files:
        for page in _pages_with(name, (needle, *more)):
            if "committed" in page:
                now += 1
            elif "replaced" in page:
                # A source pulled whole loses the rows of earlier syncs (not
                # the inactive ones this delta saw before this line).
                replaced = set(page["replaced"])
                found = {
                    ident: row
                    for ident, row in found.items()
                    if ident[0] not in replaced or delta[ident] == now
                }
            elif "gone" in page:
                gone = {tuple(each) for each in page["gone"]}
                found = {
                    ident: (inactive, row)
                    for ident, (inactive, row) in found.items()
                    if inactive or ident[:4] not in gone
                }
            else:
                origin = page.get("origin", "")
                for row in rows_with(page, key):
                    first = next((v for v in row[-2].values() if v), None)
                    ident = (origin, row[2], row[0], first, row[3])
                    found[ident], delta[ident] = (row[-1], row), now
        now = max(now, 0)
    return [row for _, row in found.values()][:limit]


def _pages_with(path: str, needles: tuple[bytes, ...]) -> Iterator[dict[str, Any]]:
    """
    In file order, the pages (parsed lines) of the file at C{path} that
    hold one of C{needles}, up to its last trailer line (what was appended
    after it is not committed yet); none if there is no such file.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            end = data.rfind(b'\n{"committed":') + 1
            end = len(data) if end <= 0 else end
            starts: set[int] = set()
            for needle in needles:
                at = data.find(needle, 0, end)
                while at >= 0:
                    begin = data.rfind(b"\n", 0, at) + 1
                    starts.add(begin)
                    stop = data.find(b"\n", at)
                    at = data.find(needle, len(data) if stop < 0 else stop, end)
            for begin in sorted(starts):
                stop = data.find(b"\n", begin)
                line = data[begin : len(data) if stop < 0 else stop]
                try:
                    page = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(page, dict):
                    yield page
