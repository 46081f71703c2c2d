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
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import IO, Any

import orjson

from tcbridge.threatconnect.records import VALUE_COLUMNS, IndicatorBatch

FILE_NAME = "last-sync-indicators.jsonl"
_COLUMNS = ("owners", "ids", "ratings", "confidences", "assess", "links", "modified")
#: Kept for rebuilding a feed, not shown by explanations.
_MORE_COLUMNS = ("tags", "descriptions")
_PREFIX = ".tmp-"


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
        Drop what was written after C{mark}.
        """
        if self._file is not None:
            self._file.seek(mark[0])
            self._file.truncate()
            self.stored_rows = mark[1]

    def add_inactive(self, batches: Iterable[IndicatorBatch]) -> None:
        """
        Append indicators ThreatConnect sent but marks inactive (left out of
        the feed), flagged so.
        """
        self.add(batches, inactive=True)

    def add(
        self, batches: Iterable[IndicatorBatch], inactive: bool = False, origin: str = ""
    ) -> None:
        """
        Append the indicators of one page of the configured source
        C{origin}: one line per batch, its columns dumped as they are (one
        C call; a row per indicator would cost the reactor several times
        more).
        """
        out = self._file
        if out is None:
            return
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
                self.stored_rows += stored_count([values[name] for name in names])
            out.write(orjson.dumps(page, default=str) + b"\n")

    def finish(self, committed: Any = None) -> None:
        """
        Make this sync's file the one explanations read; with C{committed}
        (the store's states after this sync's commit, as JSON), end it with
        the trailer that lets the next delta rebuild from it (with the
        number of stored rows written, which the store must also hold).
        The file reaches the disk before it replaces the previous one.

        :raise OSError: if it cannot be written (the previous file stays).
        """
        if self._file is None:
            return
        if committed is not None:
            trailer = {"committed": committed, "rows": self.stored_rows}
            self._file.write(orjson.dumps(trailer) + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self._path, os.path.join(self.folder, FILE_NAME))

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
