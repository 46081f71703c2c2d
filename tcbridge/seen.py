# -*- test-case-name: tests.test_explain -*-
"""
What the last sync saw: every indicator ThreatConnect sent, as it came,
one line of JSON each, in C{cache_folder/last-sync-indicators.jsonl}.
L{tcbridge.explain} reads it to say why a value is, or is not, in the
feed, without asking ThreatConnect again.

A line: C{[keys, type, source, owner, id, rating, confidence,
threatAssess, link, modified, values]} where C{keys} are the values in
lower case (host names without a trailing dot) between which a search
finds the line, and C{values} maps each value column (C{md5}, C{sha1},
C{sha256}, C{ip}, C{host}) to the value as sent.  A sync writes a new
file beside the old one and renames it over it when the sync ends with a
feed (published or held back by the shrink guard); a failed sync leaves
the previous one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import IO, Any

import orjson

from tcbridge.threatconnect.records import VALUE_COLUMNS, IndicatorBatch

FILE_NAME = "last-sync-indicators.jsonl"
_PREFIX = ".tmp-"


def search_key(raw: object) -> str | None:
    """
    The key a raw value is found by: lower case, no surrounding white
    space, no trailing dot (C{None} for no value).
    """
    if not isinstance(raw, str) or not raw.strip():
        return None
    return raw.strip().lower().rstrip(".")


class SeenWriter:
    """
    Writes one sync's indicators into a new file in C{folder}.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        fd, self._path = tempfile.mkstemp(prefix=_PREFIX, suffix=".json", dir=folder)
        self._file: IO[bytes] | None = os.fdopen(fd, "wb")

    def add(self, batches: Iterable[IndicatorBatch]) -> None:
        """
        Append the indicators of one page.
        """
        out = self._file
        if out is None:
            return
        for batch in batches:
            names = VALUE_COLUMNS.get(batch.type, ())
            values = [batch.values[name] for name in names]
            keys = (
                [k for k in map(search_key, row) if k is not None]
                for row in zip(*values, strict=True)
            )
            raw = (
                {name: v for name, v in zip(names, row, strict=True) if v}
                for row in zip(*values, strict=True)
            )
            count = len(batch)
            rows = zip(
                keys,
                [batch.type] * count,
                [batch.source] * count,
                batch.column("owners"),
                batch.column("ids"),
                batch.column("ratings"),
                batch.column("confidences"),
                batch.column("assess"),
                batch.column("links"),
                batch.column("modified"),
                raw,
                strict=True,
            )
            out.write(b"\n".join(map(_line, rows)) + b"\n" if count else b"")

    def finish(self) -> None:
        """
        Make this sync's file the one explanations read.
        """
        if self._file is None:
            return
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


def _line(row: tuple[Any, ...]) -> bytes:
    return orjson.dumps(row, default=str)
