# -*- test-case-name: tests.unit.test_sync_fill -*-
"""
A full sync's rows for the indicator store, read back from the file of
what the sync saw (L{tcbridge.seen}) by the store's child process
(L{tcbridge.storechild}): the service writes each page to that file
anyway, so the child makes the rows and stores them on the other core,
and the service only says how far the file has been written.
"""

from __future__ import annotations

from typing import Any

import orjson

from tcbridge.indicatordb import IndicatorDB
from tcbridge.indicatorrows import note_newest, rows_of_batch, sort_rows
from tcbridge.threatconnect.records import VALUE_COLUMNS

from .base import page_batch


def fill_from_seen(
    db: IndicatorDB, path: str, start: int, end: int, instances: dict[str, str]
) -> tuple[int, dict[str, int]]:
    """
    Add to the open transaction the indicators of the pages written to the
    file at C{path} between bytes C{start} and C{end}, each page stored as
    the pull of its configured source (C{origin}) would store it; inactive
    pages, and pages of sources not in C{instances} (source name ->
    instance), are left out.  Return how many rows were added and, per
    source, the newest C{lastModified} among them.

    :raise ValueError: if a line cannot be read back.
    """
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    rows: list[tuple[Any, ...]] = []
    newest: dict[str, int] = {}
    for line in data.splitlines():
        page = orjson.loads(line)
        origin = page.get("origin")
        if page.get("inactive") or origin not in instances or page["type"] not in VALUE_COLUMNS:
            continue
        got = rows_of_batch(instances[origin], origin, page_batch(page))
        note_newest(newest, origin, got)
        rows += got
    db.add_rows(sort_rows(rows))
    return len(rows), newest
