# -*- test-case-name: tests.unit.test_sync_delta -*-
"""
Where a delta's feed comes from once its changes are in the store, best
first:

  - the last sync's feed state (L{tcbridge.feed.state}) less the old
    versions of the rows the delta replaces or takes out, plus the new
    ones: the builder takes in only the delta, and the build child does
    the rest (L{from_state});
  - the last sync's file of what it saw with the delta laid over it
    (L{tcbridge.sync.base}), when that file is the store's content;
  - every row of the store.

What this sync saw is written as the changes to the last sync's file
(L{tcbridge.seen}) when the feed comes from the state and those changes
are still small (L{journal}); else the new file gets every indicator
(from the last sync's file, or from the store), a page at a time, with a
pause on the reactor between pages; a page of the store is read and
made ready in the store's thread (L{store_page}).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from attrs import evolve, frozen
from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.logger import Logger

from tcbridge.feed.builder import FeedBuilder
from tcbridge.feed.patch import PatchError, settings_patchable
from tcbridge.feed.state import StateJob
from tcbridge.indicatordb import IndicatorDB
from tcbridge.indicatorrows import batches_of_rows
from tcbridge.logs import bridge_observer
from tcbridge.seen import FILE_NAME as SEEN_FILE
from tcbridge.seen import SeenWriter, changes_file, page_lines, trailer
from tcbridge.sync.base import DamagedFileError, base_pages, kept_state
from tcbridge.sync.delta import CycleBook, rows_of_sources
from tcbridge.threatconnect.records import IndicatorBatch

Pause = Callable[[], Awaitable[None]] | None
T = TypeVar("T")

#: Store rows read (and made ready in the store's thread) at a time: a
#: small page holds the interpreter lock only briefly at each step, so
#: that the reactor goes on serving (bench/bench_compaction.py).
STORE_PAGE: Final = 1000
#: A delta writes the last sync's file whole again once the changes
#: appended to it reach this fraction (1/N) of its size.
COMPACT_AT: Final = 4

log = Logger(observer=bridge_observer)


def _matches(found: dict[str, Any] | None, book: CycleBook) -> bool:
    """
    Whether a trailer holds the store's states and row count as the delta
    found them.
    """
    return (
        found is not None
        and found.get("committed") == book.planned_from()
        and found.get("rows") == book.rows_at_start
    )


def _last_sync_file(folder: str | None, book: CycleBook) -> str | None:
    """
    The last sync's file in C{folder}, if it is the store's content by
    itself (no delta since changed it, see L{tcbridge.seen}).
    """
    if folder is None:
        return None
    path = os.path.join(folder, SEEN_FILE)
    found = trailer(path)
    if not _matches(found, book) or changes_file(folder, found) is not None:
        return None
    return path


def _as_changed(folder: str, book: CycleBook) -> tuple[dict[str, Any], str | None] | None:
    """
    If the last sync's file in C{folder}, with the changes file of the
    deltas since (if any), is the store's content: the file's own trailer
    and the changes file.
    """
    found = trailer(os.path.join(folder, SEEN_FILE))
    if found is None:
        return None
    changes = changes_file(folder, found)
    if not _matches(trailer(changes) if changes is not None else found, book):
        return None
    return found, changes


async def from_last_sync(
    folder: str | None,
    book: CycleBook,
    builder: FeedBuilder,
    seen: SeenWriter | None,
    pause: Pause,
) -> bool:
    """
    Feed C{builder} (and C{seen}) the last sync's file in C{folder} with
    this delta laid over it, if that file is the store's content; C{False}
    (nothing done) if it is not.

    :raise DamagedFileError: if the file cannot be read back; C{builder}
        and C{seen} then hold part of it.
    """
    path = _last_sync_file(folder, book)
    if path is None:
        return False
    for origin, line, batch in base_pages(path, book.overlay):
        builder.add(batch)
        if seen is not None and line is not None:
            seen.add_lines([line], len(batch))
        elif seen is not None:
            seen.add([batch], origin=origin)
        if pause is not None:
            await pause()
    for origin, batch in book.overlay.fresh_batches():
        builder.add(batch)
        if seen is not None:
            seen.add([batch], origin=origin)
    return True


@frozen
class StorePage:
    """
    One page of the store's rows of the planned sources, made ready in the
    store's thread (L{store_page}).

    :ivar batches: the rows as batches, with the configured source of each
        (empty unless asked for).
    :ivar lines: the rows as lines of the file of what a sync saw, and how
        many of them the store keeps (empty unless asked for).
    :ivar after: the key of the page's last row, where the next page
        starts; C{None} once no row is left.
    """

    batches: list[tuple[str, IndicatorBatch]]
    lines: tuple[list[bytes], int]
    after: tuple[str, ...] | None


def store_page(
    db: IndicatorDB,
    after: tuple[str, ...] | None,
    limit: int,
    sources: frozenset[tuple[str, str]],
    batches: bool,
    lines: bool,
) -> StorePage:
    """
    Up to C{limit} of C{db}'s rows after the key C{after}, those of
    C{sources} made into batches and (or) lines: the work of a page, done
    in the store's thread so that the reactor only hands them on.
    """
    rows = db.raw_page(after, limit)
    if not rows:
        return StorePage([], ([], 0), None)
    made = batches_of_rows(rows_of_sources(rows, sources))
    written: list[bytes] = []
    kept = 0
    for source, batch in made if lines else ():
        more, stored = page_lines([batch], origin=source)
        written += more
        kept += stored
    return StorePage(made if batches else [], (written, kept), rows[-1][:6])


async def from_store(
    book: CycleBook, builder: FeedBuilder | None, seen: SeenWriter | None, pause: Pause
) -> None:
    """
    Feed C{builder} (if any) and C{seen} the store's rows of the planned
    sources, as the cycle leaves them, a page at a time; each page is read
    and made ready in the store's thread (L{store_page}), which keeps the
    reactor free when a delta writes the file of what it saw whole again
    (a million rows).
    """
    after: tuple[str, ...] | None = None
    sources = book.planned_sources()
    while True:
        page = await book.in_store(
            store_page, after, STORE_PAGE, sources, builder is not None, seen is not None
        )
        if page.after is None:
            return
        after = page.after
        if seen is not None:
            seen.add_lines(*page.lines)
        if builder is not None:
            for _, batch in page.batches:
                builder.add(batch)
        if pause is not None:
            await pause()


async def from_state(
    folder: str, book: CycleBook, builder: FeedBuilder, fresh: list[tuple[str, IndicatorBatch]]
) -> StateJob | None:
    """
    Lay the delta over the last sync's feed state in C{folder}, if that
    state is the store's content: C{builder} gets what the delta pulled
    as the store keeps it (C{fresh}); return the job that has the build
    start from the state less the store's old versions of the rows the
    delta replaces or takes out.  C{None} (nothing done) if the state
    cannot serve.
    """
    if not settings_patchable(builder.settings):
        return None
    base = kept_state(folder, book.planned_from(), book.rows_at_start)
    if base is None:
        return None
    try:
        old = await book.replaced_rows()
    except (sqlite3.Error, OSError) as e:
        log.warn(
            "Could not read what the delta replaces ({error}); building from every indicator",
            error=str(e),
        )
        return None
    minus = FeedBuilder(builder.settings, record_history=False)
    for _, batch in batches_of_rows(book.planned(old)):
        minus.add(batch)
    for _, batch in fresh:
        builder.add(batch)
    return StateJob(base=base, minus=minus)


async def delta_feed(
    folder: str | None,
    book: CycleBook,
    builder: FeedBuilder,
    seen: SeenWriter | None,
    pause: Pause,
) -> FeedBuilder:
    """
    Feed a delta's C{builder} every indicator: from the last sync's file
    in C{folder} with the delta laid over it, or from the store (also when
    that file turns out to be damaged: a fresh builder then starts over);
    return the builder that holds them.
    """
    mark = seen.mark() if seen is not None else None
    try:
        if await from_last_sync(folder, book, builder, seen, pause):
            return builder
    except DamagedFileError as e:
        log.warn("The last sync's file is damaged ({error}); reading the store", error=e)
        builder = FeedBuilder(
            builder.settings, history=builder.history, record_history=builder.records_history
        )
        if seen is not None and mark is not None:
            seen.rewind(mark)
    await from_store(book, builder, seen, pause)
    return builder


async def build_delta(
    folder: str | None,
    book: CycleBook,
    new_builder: Callable[[], FeedBuilder],
    seen: SeenWriter | None,
    pause: Pause,
    build: Callable[[FeedBuilder, StateJob], Awaitable[T]],
    keep: str | None,
) -> tuple[T, FeedBuilder]:
    """
    Build (with C{build}) a delta's feed, keeping its state in C{keep}:
    from the last sync's state when it serves (L{from_state}), the delta's
    changes appended to what the last sync saw (L{journal}); else from
    every indicator (L{delta_feed}), also when the build finds the state
    unusable.  Return what C{build} returned and the builder built.
    """
    await book.counted()
    mark = seen.mark() if seen is not None else None
    builder = new_builder()
    fresh = list(book.overlay.fresh_batches())
    # The state serves only beside what the last sync saw (with the
    # deltas' changes since) as the store holds it.
    changed = _as_changed(folder, book) if folder is not None else None
    patch = None
    if folder is not None and changed is not None:
        patch = await from_state(folder, book, builder, fresh)
    if patch is not None:
        assert folder is not None and changed is not None
        copying = ensureDeferred(journal(folder, book, changed, seen, fresh, pause))
        try:
            result = await build(builder, evolve(patch, save_to=keep))
        except PatchError as e:
            await copying
            log.warn(
                "The last sync's feed state could not be used ({error}); "
                "building from every indicator",
                error=str(e),
            )
            if seen is not None and mark is not None:
                seen.rewind(mark)
        except BaseException:
            if not copying.called and seen is not None:
                # Cut short (a held-back feed keeps what a sync saw): drop it.
                seen.discard()
            copying.cancel()
            copying.addErrback(lambda _: None)  # the cycle's own failure says why
            raise
        else:
            await copying
            return result, builder
    builder = await delta_feed(folder, book, new_builder(), seen, pause)
    return await build(builder, StateJob(save_to=keep)), builder


async def journal(
    folder: str,
    book: CycleBook,
    changed: tuple[dict[str, Any], str | None],
    seen: SeenWriter | None,
    fresh: list[tuple[str, IndicatorBatch]],
    pause: Pause,
) -> None:
    """
    Write what this delta saw (L{tcbridge.seen}): its changes, to be
    appended to the changes file (C{changed}: the last sync's file's
    trailer and its changes file, if any), while that stays under
    1/L{COMPACT_AT} of the last sync's file; else (and then while the
    build runs elsewhere) the whole file again, from the store.  If that
    fails, the sync stands (its feed may be published already): what it
    saw is dropped, explanations keep the last sync's, and the next delta,
    no longer matching them, builds from every indicator.
    """
    if seen is None:
        return
    try:
        await _write_journal(folder, book, changed, seen, fresh, pause)
    except CancelledError:
        raise
    except Exception as e:
        log.warn(
            "Could not keep what this sync saw ({error}); explanations use the last sync's",
            error=str(e),
        )
        seen.discard()


async def _write_journal(
    folder: str,
    book: CycleBook,
    changed: tuple[dict[str, Any], str | None],
    seen: SeenWriter,
    fresh: list[tuple[str, IndicatorBatch]],
    pause: Pause,
) -> None:
    """
    L{journal}'s work.
    """
    base, changes = changed
    if changes is not None and os.path.getsize(changes) * COMPACT_AT >= os.path.getsize(
        os.path.join(folder, SEEN_FILE)
    ):
        await from_store(book, None, seen, pause)
        return
    if book.overlay.replaced:
        seen.add_replaced(book.overlay.replaced)
    seen.add_gone(book.overlay.cleared)
    for origin, batch in fresh:
        seen.add([batch], origin=origin)
    rows = book.rows_at_start or 0
    seen.journal(base, rows - book.replaced + sum(len(batch) for _, batch in fresh))
