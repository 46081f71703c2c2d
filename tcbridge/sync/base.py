# -*- test-case-name: tests.unit.test_sync_delta -*-
"""
A delta's feed, rebuilt from the previous sync's file of what it saw
(L{tcbridge.seen}) with the delta's changes laid over it, instead of from
every row of the indicator store.

The file holds every indicator of the last sync as column pages, so
reading it back costs one JSON decoding per page rather than work per
indicator.  It is used only when its trailer says it is exactly the
store's content: the trailer records the store's source states after the
commit of the sync that wrote it, and the next delta compares them with
the states it planned from.  A sync whose commit did not happen (it
failed, was held back, or the process died in between) leaves no
matching trailer, and the delta reads the store instead.

The file has a companion: the feed state the same sync collected
(L{tcbridge.feed.state}), kept as L{STATE_FILE} with the same trailer
in L{STATE_RECORD}.  A delta whose planned states match it builds from
that state less the old versions of the rows it changed, plus the new
ones, instead of taking in every indicator of the file again.

Laying the delta over a page: a row pulled again (same configured source,
owner, type, value and id) is replaced by its new form; a row whose value
was deactivated or deleted goes (every id of it, as the store does); the
pages of sources pulled whole this cycle go.  What the delta pulled is
added after the pages.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from attrs import define, field

from tcbridge.files import write_atomic
from tcbridge.indicatorrows import SourceState
from tcbridge.threatconnect.records import COLUMNS, VALUE_COLUMNS, IndicatorBatch

#: The last sync's feed state, in the folder of the file of what it saw.
STATE_FILE = "last-sync-state.pickle"
#: What the state file is (C{committed}, C{rows} as in a trailer; C{size}).
STATE_RECORD = "last-sync-state.json"


Key = tuple[str, str, str, str]
FullKey = tuple[str, str, str, str, str]


def committed_token(states: Mapping[tuple[str, str], SourceState]) -> list[list[Any]]:
    """
    The store's source states as a trailer records them (sorted, as JSON
    gives them back).
    """
    rows = sorted(
        [instance, source, state.watermark, state.last_full, state.last_delta]
        for (instance, source), state in states.items()
    )
    token: list[list[Any]] = orjson.loads(orjson.dumps(rows))
    return token


class DamagedFileError(Exception):
    """
    The last sync's file cannot be read back (cut or damaged on disk).
    """


def state_file(folder: str) -> str:
    """
    Where the last sync's feed state is kept in C{folder}.
    """
    return os.path.join(folder, STATE_FILE)


def keep_state(folder: str, pending: str, found: dict[str, Any]) -> None:
    """
    Make the state file C{pending} (in C{folder}) the last sync's, with
    C{found} (C{committed} and C{rows}, as the file of what the sync saw
    ends) as what it is (blocking).

    :raise OSError: if it cannot be kept (no state is then kept).
    """
    token = os.path.join(folder, STATE_RECORD)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(token)
    path = state_file(folder)
    os.replace(pending, path)
    write_atomic(token, orjson.dumps({**found, "size": os.stat(path).st_size}))


def kept_state(folder: str, committed: list[list[Any]], rows: int | None) -> str | None:
    """
    The last sync's state file in C{folder} if it is the store's content
    with the states C{committed} and C{rows} rows (what a delta planned
    from), else C{None}.
    """
    path = state_file(folder)
    try:
        with open(os.path.join(folder, STATE_RECORD), "rb") as f:
            token = orjson.loads(f.read())
        size = os.stat(path).st_size
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(token, dict) or token.get("size") != size:
        return None
    if token.get("committed") != committed or token.get("rows") != rows:
        return None
    return path


@define
class Overlay:
    """
    What a delta changed, by configured source name, in the order the store
    was told (each change numbered): the rows pulled (L{FullKey}: source,
    owner, type, value, id; their pages in C{fresh}), the values taken out
    (L{Key}: source, owner, type, value; C{cleared} holds every one, with
    the number of its last removal) and the sources pulled whole
    (C{replaced}).  The store keeps, of the rows pulled, the last of each
    full key, unless its value was taken out after it.
    """

    replaced: frozenset[str] = frozenset()
    upserted: set[FullKey] = field(factory=set)
    cleared: dict[Key, int] = field(factory=dict)
    fresh: list[tuple[int, str, list[IndicatorBatch]]] = field(factory=list)
    _changes: int = 0

    def pulled(
        self, source: str, rows: list[tuple[Any, ...]], batches: list[IndicatorBatch]
    ) -> None:
        """
        Note store rows (see L{tcbridge.indicatorrows.rows_of_batch})
        pulled for C{source}, from C{batches}.
        """
        self._changes += 1
        self.upserted.update(row[1:6] for row in rows)
        self.fresh.append((self._changes, source, batches))

    def taken_out(self, keys: list[tuple[str, str, str, str, str]]) -> None:
        """
        Note store keys (instance, source, owner, type, value) taken out.
        """
        self._changes += 1
        for _, source, owner, kind, value in keys:
            self.cleared[(source, owner, kind, value)] = self._changes

    def fresh_batches(self) -> Iterator[tuple[str, IndicatorBatch]]:
        """
        What the delta pulled, as the store keeps it: the last row of each
        full key, unless its value was taken out afterwards.
        """
        pages = []
        last: dict[FullKey, tuple[int, int]] = {}
        every = [
            (change, source, batch)
            for change, source, batches in self.fresh
            for batch in batches
            if batch.type in VALUE_COLUMNS and len(batch)
        ]
        for number, (change, source, batch) in enumerate(every):
            firsts = _firsts([batch.values[name] for name in VALUE_COLUMNS[batch.type]])
            keys = [
                (source, owner, batch.type, first, ident) if first else None
                for owner, first, ident in zip(
                    batch.column("owners"), firsts, batch.column("ids"), strict=True
                )
            ]
            for at, key in enumerate(keys):
                if key is not None:
                    last[key] = (number, at)
            pages.append((change, source, batch, keys))
        cleared = self.cleared
        for number, (change, source, batch, keys) in enumerate(pages):
            keep = [
                at
                for at, key in enumerate(keys)
                if key is not None
                and last[key] == (number, at)
                and cleared.get(key[:4], 0) < change
            ]
            yield source, _subset(batch, keep)


def base_pages(path: str, overlay: Overlay) -> Iterator[tuple[str, bytes | None, IndicatorBatch]]:
    """
    The pages of the file at C{path} the feed is rebuilt from, with the
    overlay applied: each as its configured source, its line as it was
    when the overlay left the page whole (to copy into the new file; else
    C{None}) and the batch to build from.
    Inactive pages, pages of types the store does not keep, the trailer and
    pages of sources pulled whole are left out.

    :raise DamagedFileError: if a line cannot be read back.
    """
    with open(path, "rb") as f:
        for line in f:
            try:
                page = orjson.loads(line)
                if "committed" in page or page.get("inactive"):
                    continue
                origin = page.get("origin")
                if not origin or origin in overlay.replaced or page["type"] not in VALUE_COLUMNS:
                    continue
                keep = _kept(page, origin, overlay)
                batch = _batch(page, keep)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise DamagedFileError(f"{path}: {e}") from None
            yield origin, (line if keep is None else None), batch


def _kept(page: dict[str, Any], origin: str, overlay: Overlay) -> list[int] | None:
    """
    The rows of a page the overlay keeps, or C{None} for all of them.
    Rows without a value (never stored) are left out.
    """
    firsts = _firsts([page["values"][name] for name in VALUE_COLUMNS[page["type"]]])
    kind = page["type"]
    upserted, cleared = overlay.upserted, overlay.cleared
    keep = [
        at
        for at, (owner, first, ident) in enumerate(
            zip(page["owners"], firsts, page["ids"], strict=True)
        )
        if first
        and (origin, owner, kind, first) not in cleared
        and (origin, owner, kind, first, ident) not in upserted
    ]
    return None if len(keep) == len(firsts) else keep


def _firsts(columns: list[list[Any]]) -> list[Any]:
    """
    Each row's first value (what the store keys it by): the first of its
    value columns that is not empty.
    """
    if len(columns) == 1:
        return columns[0]
    return [next((v for v in row if v), None) for row in zip(*columns, strict=True)]


def _subset(batch: IndicatorBatch, keep: list[int]) -> IndicatorBatch:
    """
    The rows C{keep} of a pulled batch, as the store would give them back.
    """
    page: dict[str, Any] = {name: batch.column(name) for name in COLUMNS}
    page["values"] = batch.values
    return _batch({"source": batch.source, "type": batch.type, **page}, keep)


def page_batch(page: dict[str, Any]) -> IndicatorBatch:
    """
    A page of the file of what a sync saw, whole, as a batch (as the store
    would give its rows back).
    """
    return _batch(page, None)


def _batch(page: dict[str, Any], keep: list[int] | None) -> IndicatorBatch:
    """
    A page's rows (those of C{keep}; all with C{None}) as a batch.
    """

    def rows(column: list[Any]) -> list[Any]:
        return column if keep is None else [column[at] for at in keep]

    columns = {name: rows(page[name]) for name in COLUMNS}
    # As the store gives them back: tags as tuples, no link as "", no
    # value as None.
    columns["tags"] = [tuple(tags or ()) for tags in columns["tags"]]
    columns["links"] = [link or "" for link in columns["links"]]
    values = {name: [v or None for v in rows(column)] for name, column in page["values"].items()}
    return IndicatorBatch(page["source"], page["type"], values, columns)
