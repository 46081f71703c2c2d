# -*- test-case-name: tests.test_tc_pull -*-
"""
Reading listings: paged queries over indicators, read page after page with
the next request already on its way while a page is parsed and handed on.

A I{listing} is one paged query: one owner and type on v2
(C{/v2/indicators/files?owner=...}), one owner on v3 (a TQL query over all
wanted types), one legacy path, or one TQL source.  Offset paging over data
that changes while it is read must neither lose nor repeat an indicator:

 - B{overlap}: after a full page at C{resultStart=S} of C{L} items, the next
   page is asked for at C{S + L - overlap} (v2: built here; v3: the server's
   C{next} link with only its C{resultStart} moved back), so up to
   C{overlap} indicators may vanish in front between two pages without any
   being skipped;
 - B{check}: the first C{overlap} items of that page must include one
   already read in this pass; if none is (more vanished than the overlap
   covers), a warning is logged and the listing is read again from 0, at
   most L{MAX_RESTARTS} times, after which the pull fails;
 - B{de-duplication}: an indicator already handed on in this listing
   (same owner, type and value; a File's value is its tuple of hashes) is
   dropped; only 8 bytes per indicator of the current listing are kept
   (L{SeenKeys}), and dropped when the listing ends.

B{Prefetch.}  As soon as a page has arrived and the next page to ask for is
known (the next offset, the C{next} link, or the first page of the next
listing), that request is sent; the page in hand is parsed and handed on
while ThreatConnect prepares the next one.  At most one request is ahead;
it is cancelled if the listing has to be read again or the pull stops.

Paging stops on v2 at a page shorter than C{resultLimit} (C{resultCount} is
only sent on the first page, so it is never relied on), and on v3 when an
answer has no C{next} link.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from attrs import define, frozen
from twisted.internet import defer
from twisted.logger import Logger

from tcbridge.logs import bridge_observer

from .errors import ResponseError, ThreatConnectError
from .parse import ParsedPage
from .records import IndicatorBatch
from .v3 import next_link, page_data, relative_target, result_start_of, with_result_start

log = Logger(observer=bridge_observer)

#: how many times one listing may be read again from the start
MAX_RESTARTS = 2

OnPage = Callable[[list[IndicatorBatch]], None]


class JSONGetter(Protocol):
    """
    What paging needs from L{tcbridge.threatconnect.client.ThreatConnectClient}.
    """

    @property
    def base_url(self) -> str:
        """
        The API base URL (scheme, host, port and path prefix), no trailing
        C{/}: C{next} links must point under it.
        """

    async def get_json(self, target: str) -> Any:
        """
        GET a signed target and return the parsed JSON.
        """

    def request_target(self, target: str) -> str:
        """
        The target as sent on the wire (for error messages).
        """


@define
class Tally:
    """
    Running counts for one source.
    """

    indicators: int = 0
    skipped: int = 0
    inactive: int = 0
    duplicates: int = 0
    restarts: int = 0
    pages: int = 0
    #: raw items received, of any kind
    items: int = 0


@frozen
class Page:
    """
    A page to ask for.

    :ivar target: the request target, relative to the base URL.
    :ivar start: its C{resultStart}, or C{None} if unknown.
    :ivar back: how many of its first items the previous page already held
        (the overlap); 0 for the first page.
    """

    target: str
    start: int | None
    back: int = 0


@define
class Listing:
    """
    How to read one listing; see the module docstring.

    :ivar label: names the listing in messages (C{"Common Community File"}).
    :ivar first: the first page; restarts begin here again.
    :ivar items_of: the raw items of an answer (raises on a bad envelope).
    :ivar next_of: the next page to ask for after an answer, or C{None}.
    :ivar parse: raw items to indicators.
    """

    label: str
    first: Page
    items_of: Callable[[Page, Any], list[Any]]
    next_of: Callable[[Page, Any, list[Any]], Page | None]
    parse: Callable[[list[Any]], ParsedPage]


class SeenKeys:
    """
    The keys (L{IndicatorBatch.keys}) read so far in one listing, with the
    pass (0, 1, 2: restarts) that last read each.  Kept in a dict; past
    L{_SPILL_AT} keys (a very large listing), the older ones move into a
    sorted numpy array of 8-byte keys and one byte per key.
    """

    _SPILL_AT = 1 << 18

    def __init__(self) -> None:
        self._recent: dict[int, int] = {}
        self._keys: Any = None
        self._passes: Any = None

    def last_read(self, keys: Sequence[int]) -> list[int | None]:
        """
        For each key, the pass that last read it, or C{None}.
        """
        found: list[int | None] = [self._recent.get(key) for key in keys]
        if self._keys is not None and keys:
            hits, passes = self._spilled(keys)
            for i in hits:
                if found[i] is None:
                    found[i] = passes[i]
        return found

    def any_read(self, keys: Sequence[int]) -> bool:
        """
        Whether any of C{keys} was read before, in any pass.
        """
        if not self._recent.keys().isdisjoint(keys):
            return True
        return self._keys is not None and bool(keys) and bool(self._spilled(keys)[0])

    def mark(self, keys: Iterable[int], attempt: int) -> None:
        """
        Record that pass C{attempt} read C{keys}.
        """
        self._recent.update(dict.fromkeys(keys, attempt))
        if len(self._recent) >= self._SPILL_AT:
            self._spill()

    def _spilled(self, keys: Sequence[int]) -> tuple[list[int], list[int]]:
        import numpy as np

        wanted = np.fromiter(keys, dtype=np.int64, count=len(keys))
        at = np.minimum(np.searchsorted(self._keys, wanted), len(self._keys) - 1)
        hits = np.flatnonzero(self._keys[at] == wanted).tolist()
        return hits, self._passes[at].tolist()

    def _spill(self) -> None:
        import numpy as np

        recent = self._recent
        keys = np.fromiter(recent.keys(), dtype=np.int64, count=len(recent))
        passes = np.fromiter(recent.values(), dtype=np.int8, count=len(recent))
        self._recent = {}
        if self._keys is not None:
            at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            old = self._keys[at] == keys
            self._passes[at[old]] = passes[old]
            keys, passes = keys[~old], passes[~old]
            keys = np.concatenate((self._keys, keys))
            passes = np.concatenate((self._passes, passes))
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._passes = passes[order]


def _new_indicators(
    batches: list[IndicatorBatch],
    seen: SeenKeys,
    attempt: int,
    tally: Tally,
    *,
    count_repeats: bool,
) -> list[IndicatorBatch]:
    """
    The indicators not yet read in this listing, remembering them; repeats
    within the same pass outside the overlap are counted as duplicates.
    """
    kept: list[IndicatorBatch] = []
    for batch in batches:
        keys = batch.keys()
        if None not in keys and len(set(keys)) == len(keys) and not seen.any_read(keys):  # type: ignore[arg-type]
            seen.mark(keys, attempt)  # type: ignore[arg-type]
            kept.append(batch)
            continue
        kept_rows = _first_reads(keys, seen, attempt, tally, count_repeats)
        if len(kept_rows) == len(batch):
            kept.append(batch)
        elif kept_rows:
            kept.append(batch.select(kept_rows))
    return kept


def _first_reads(
    keys: list[int | None], seen: SeenKeys, attempt: int, tally: Tally, count_repeats: bool
) -> list[int]:
    """
    The rows of a batch read for the first time in this listing (one by
    one: some key is missing, repeated or known).
    """
    identified = [key for key in keys if key is not None]
    before = dict(zip(identified, seen.last_read(identified), strict=True))
    rows: list[int] = []
    for row, key in enumerate(keys):
        if key is None:
            rows.append(row)
            continue
        last_read = before[key]
        before[key] = attempt
        if last_read is not None:
            # Expected: the overlap, and pages read again after a restart.
            # Anything else is a repeat ThreatConnect sent.
            if count_repeats and last_read == attempt:
                tally.duplicates += 1
            continue
        rows.append(row)
    seen.mark(identified, attempt)
    return rows


def _overlap_holds(items: list[Any], region: ParsedPage, seen: SeenKeys, attempt: int) -> bool:
    """
    Whether a page asked for with an overlap still starts with something
    this pass has read: an empty page means at least the overlap vanished; a
    region with no identifiable indicator (all junk) cannot tell, so holds.
    """
    if not items:
        return False
    keys = [key for batch in region.batches for key in batch.keys() if key is not None]
    return not keys or attempt in seen.last_read(keys)


@define
class _Reader:
    """
    Reads listings one after another; see the module docstring.
    """

    client: JSONGetter
    tally: Tally
    on_page: OnPage
    pause: Callable[[], Awaitable[None]] | None
    chunk: int
    _ahead: defer.Deferred[Any] | None = None

    def _fetch(self, page: Page) -> None:
        self._cancel()
        self._ahead = defer.ensureDeferred(self.client.get_json(page.target))

    def _cancel(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.addErrback(lambda _: None)
            ahead.cancel()

    async def _take(self) -> Any:
        ahead, self._ahead = self._ahead, None
        assert ahead is not None
        return await ahead

    async def read(self, listings: Sequence[Listing]) -> None:
        try:
            if listings:
                self._fetch(listings[0].first)
            for index, listing in enumerate(listings):
                following = listings[index + 1].first if index + 1 < len(listings) else None
                await self._read_one(listing, following)
        finally:
            self._cancel()

    async def _read_one(self, listing: Listing, following: Page | None) -> None:
        """
        Read one listing to its end (its first page already asked for),
        handing each page's new indicators to C{on_page} (once per page,
        possibly empty; once per chunk of a page when a pause is set), and
        ask for C{following} after its last page.

        :raise ResponseError: if the listing changed too much more than
            L{MAX_RESTARTS} times.
        """
        seen = SeenKeys()
        attempt = 0
        page: Page | None = listing.first
        while page is not None:
            body = await self._take()
            self.tally.pages += 1
            items = listing.items_of(page, body)
            self.tally.items += len(items)
            back = min(page.back, len(items))
            region = listing.parse(items[:back])
            if page.back and not _overlap_holds(items, region, seen, attempt):
                attempt += 1
                self._restart(listing, page, attempt)
                page = listing.first
                self._fetch(page)
                continue
            refused: ThreatConnectError | None = None
            try:
                following_page = listing.next_of(page, body, items)
            except ThreatConnectError as e:
                # Raised once this page is handed on, as if asked for next.
                following_page, refused = None, e
            del body
            ahead = following_page or (following if refused is None else None)
            if ahead is not None:
                self._fetch(ahead)
                if self.pause is not None:
                    # Let the reactor send the request before the page is
                    # parsed: timers run before I/O, so wait twice.
                    await self.pause()
                    await self.pause()
            await self._hand_on(listing, items, back, region, seen, attempt)
            # Drop this page before the next one is parsed.
            del items, region
            if refused is not None:
                raise refused
            page = following_page

    def _restart(self, listing: Listing, page: Page, attempt: int) -> None:
        wire = self.client.request_target(page.target)
        if attempt > MAX_RESTARTS:
            raise ResponseError(
                f"the indicators of {listing.label} changed too much while being read; try again",
                target=wire,
            )
        self.tally.restarts += 1
        log.warn(
            "The indicators of {listing} changed while being read: more than "
            "{overlap} vanished before {target}; reading them again from the "
            "start (restart {restart} of {most})",
            listing=listing.label,
            overlap=page.back,
            target=wire,
            restart=attempt,
            most=MAX_RESTARTS,
        )

    async def _hand_on(
        self,
        listing: Listing,
        items: list[Any],
        back: int,
        region: ParsedPage,
        seen: SeenKeys,
        attempt: int,
    ) -> None:
        """
        Parse a page past its overlap region and hand on what is new, in
        chunks with a pause between them when a pause is set.
        """
        tally = self.tally
        # The overlap region's junk and inactive items were counted with the
        # page before; its repeats are expected, not counted.
        kept = _new_indicators(region.batches, seen, attempt, tally, count_repeats=False)
        step = max(1, len(items) if self.pause is None else self.chunk)
        for start in range(back, len(items), step):
            rest = listing.parse(items[start : start + step])
            tally.skipped += rest.skipped
            tally.inactive += rest.inactive
            kept += _new_indicators(rest.batches, seen, attempt, tally, count_repeats=True)
            tally.indicators += sum(map(len, kept))
            self.on_page(kept)
            kept = []
            if self.pause is not None:
                await self.pause()
        if back >= len(items):
            tally.indicators += sum(map(len, kept))
            self.on_page(kept)


async def read_listings(
    client: JSONGetter,
    listings: Sequence[Listing],
    tally: Tally,
    on_page: OnPage,
    pause: Callable[[], Awaitable[None]] | None = None,
    chunk: int = 2000,
) -> None:
    """
    Read C{listings} in order, each to its end, handing every page's new
    indicators to C{on_page}; see the module docstring.

    :param pause: if set, each page is parsed and handed on in chunks of
        C{chunk} items with C{await pause()} between them, so a large page
        never holds the reactor for long.
    """
    await _Reader(client, tally, on_page, pause, chunk).read(listings)


def v2_listing(
    client: JSONGetter,
    label: str,
    make_target: Callable[[int], str],
    items_of: Callable[[Page, Any], list[Any]],
    parse: Callable[[list[Any]], ParsedPage],
    page_size: int,
    overlap: int,
) -> Listing:
    """
    A v2 listing paged by C{resultStart}: the next page starts C{overlap}
    before the end of a full page; a short page is the last.
    """

    def next_of(page: Page, body: Any, items: list[Any]) -> Page | None:
        if len(items) < page_size or page.start is None:
            return None
        back = min(overlap, len(items) - 1)
        start = page.start + len(items) - back
        return Page(make_target(start), start, back)

    return Listing(label, Page(make_target(0), 0), items_of, next_of, parse)


def v3_listing(
    client: JSONGetter,
    label: str,
    first_target: str,
    parse: Callable[[list[Any]], ParsedPage],
    overlap: int,
) -> Listing:
    """
    A v3 listing: the server's C{next} links are followed (after checking
    they point back at the base URL) with their C{resultStart} moved back by
    the overlap; no C{next} ends it.
    """

    def items_of(page: Page, body: Any) -> list[Any]:
        return page_data(body, client.request_target(page.target))

    def next_of(page: Page, body: Any, items: list[Any]) -> Page | None:
        wire = client.request_target(page.target)
        link = next_link(body, wire)
        if link is None:
            return None
        target = relative_target(client.base_url, link)
        link_start = result_start_of(target)
        if link_start is None or page.start is None:
            return Page(target, link_start)
        if link_start <= page.start:
            raise ResponseError(
                f"the 'next' link does not move past resultStart={page.start}: {link}",
                target=wire,
            )
        back = max(0, min(overlap, len(items) - 1, link_start - page.start - 1))
        start = link_start - back
        return Page(with_result_start(target, start), start, back)

    return Listing(label, Page(first_target, 0), items_of, next_of, parse)
