# -*- test-case-name: tests.unit.test_sync_delta -*-
"""
Where a delta's feed comes from once its changes are in the store: the
last sync's file of what it saw with the delta laid over it
(L{tcbridge.sync.base}), when that file is the store's content, else
every row of the store.  Either way the builder and the new file of what
this sync saw get every indicator, a page at a time, with a pause on the
reactor between pages.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from twisted.logger import Logger

from tcbridge.feed.builder import FeedBuilder
from tcbridge.indicatorrows import batches_of_rows
from tcbridge.logs import bridge_observer
from tcbridge.seen import FILE_NAME as SEEN_FILE
from tcbridge.seen import SeenWriter
from tcbridge.sync.base import DamagedFileError, base_pages, trailer
from tcbridge.sync.delta import CycleBook

Pause = Callable[[], Awaitable[None]] | None

log = Logger(observer=bridge_observer)


async def from_last_sync(
    folder: str | None,
    book: CycleBook,
    builder: FeedBuilder,
    seen: SeenWriter | None,
    pause: Pause,
) -> bool:
    """
    Feed C{builder} (and C{seen}) the last sync's file in C{folder} with
    this delta laid over it, if that file is the store's content (its
    trailer holds the store's states and row count as the delta found
    them); C{False} (nothing done) if it is not.

    :raise DamagedFileError: if the file cannot be read back; C{builder}
        and C{seen} then hold part of it.
    """
    if folder is None:
        return False
    path = os.path.join(folder, SEEN_FILE)
    found = trailer(path)
    if found is None or found.get("committed") != book.planned_from():
        return False
    if found.get("rows") != book.plan.rows:
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


async def from_store(
    book: CycleBook, builder: FeedBuilder, seen: SeenWriter | None, pause: Pause
) -> None:
    """
    Feed C{builder} (and C{seen}) the store's rows of the planned
    sources, as the cycle leaves them, a page at a time.
    """
    after: tuple[str, ...] | None = None
    while True:
        rows = await book.rows(after, 10000)
        if not rows:
            return
        after = rows[-1][:6]
        for source, batch in batches_of_rows(book.planned(rows)):
            if seen is not None:
                seen.add([batch], origin=source)
            builder.add(batch)
        after = rows[-1][:6]
        if pause is not None:
            await pause()


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
