# -*- test-case-name: tests.unit.test_tc_pull -*-
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
   dropped (L{SeenKeys} says how that stays small for huge listings).

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

import bisect
from array import array
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from attrs import define, fields, frozen
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

    async def get_json(self, target: str, items: str | None = None) -> Any:
        """
        GET a signed target and return the parsed JSON (C{items}: the key of
        its list of items).
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

    #: indicators handed on
    indicators: int = 0
    #: items that could not be read as indicators
    skipped: int = 0
    #: items ThreatConnect marks inactive (left out)
    inactive: int = 0
    #: indicators sent twice (the overlap of paging excepted)
    duplicates: int = 0
    #: listings read again from the start because they changed too much
    restarts: int = 0
    #: pages read
    pages: int = 0
    #: raw items received, of any kind
    items: int = 0

    def add(self, other: Tally) -> None:
        """
        Count what C{other} counted too (listings read elsewhere).
        """
        for one in fields(Tally):
            setattr(self, one.name, getattr(self, one.name) + getattr(other, one.name))


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
    :ivar key: the key of the answer's item list (for the client's parsing
        in slices).
    """

    label: str
    first: Page
    items_of: Callable[[Page, Any], list[Any]]
    next_of: Callable[[Page, Any, list[Any]], Page | None]
    parse: Callable[[list[Any]], ParsedPage]
    key: str | None = None


class SeenKeys:
    """
    The keys (L{IndicatorBatch.keys}) read in one listing, and the pass (0,
    1, 2: restarts) that read each.

    Within a pass, an indicator can only come again from the page just
    before (the overlap, or a listing shifted by indicators added in front
    while it was read: the overlap check makes sure the shift was less than
    a page): the keys of that page and of the current one are kept in sets.
    The keys of earlier passes are kept too, as arrays of 8 bytes per key,
    and looked at only after a restart, when everything read before must be
    recognised.  A listing of a million indicators thus costs 8 MB here,
    not a set of a million.
    """

    def __init__(self) -> None:
        self._attempt = 0
        self._current: set[int] = set()
        self._previous: set[int] = set()
        self._passes: list[list[array[int]]] = [[]]
        self._earlier: array[int] | None = None
        self._earlier_pass: dict[int, int] = {}

    def next_page(self, attempt: int) -> None:
        """
        A new page of pass C{attempt} begins.
        """
        if attempt != self._attempt:
            self._attempt = attempt
            self._current, self._previous = set(), set()
            self._passes.append([])
            self._earlier = None
        else:
            self._current, self._previous = set(), self._current

    def _read_before(self, key: int) -> int | None:
        """
        The last earlier pass that read C{key} (after a restart only).
        """
        if self._attempt == 0:
            return None
        if self._earlier is None:
            merged: list[int] = []
            passes: dict[int, int] = {}
            for number, pages in enumerate(self._passes[:-1]):
                for page in pages:
                    merged.extend(page)
                    passes.update(dict.fromkeys(page, number))
            self._earlier = array("q", sorted(set(merged)))
            self._earlier_pass = passes
        at = bisect.bisect_left(self._earlier, key)
        if at < len(self._earlier) and self._earlier[at] == key:
            return self._earlier_pass[key]
        return None

    def last_read(self, keys: Sequence[int]) -> list[int | None]:
        """
        For each key, the pass that last read it, or C{None}.
        """
        recent = self._current | self._previous
        attempt = self._attempt
        return [attempt if key in recent else self._read_before(key) for key in keys]

    def any_read(self, keys: Sequence[int]) -> bool:
        """
        Whether any of C{keys} was read before, in any pass.
        """
        if not self._current.isdisjoint(keys) or not self._previous.isdisjoint(keys):
            return True
        return self._attempt > 0 and any(self._read_before(key) is not None for key in keys)

    def mark(self, keys: Sequence[int], attempt: int) -> None:
        """
        Record that pass C{attempt} read C{keys}.
        """
        if attempt != self._attempt:
            self.next_page(attempt)
        self._current.update(keys)
        self._passes[-1].append(array("q", keys))


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
        _keep(kept, batch, _first_reads(keys, seen, attempt, tally, count_repeats))
    return kept


def _keep(kept: list[IndicatorBatch], batch: IndicatorBatch, rows: list[int]) -> None:
    """
    Add the C{rows} of C{batch} to C{kept}: the batch itself if they are
    all of it, nothing if none.
    """
    if len(rows) == len(batch):
        kept.append(batch)
    elif rows:
        kept.append(batch.select(rows))


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
    on_inactive: OnPage | None = None
    _ahead: defer.Deferred[Any] | None = None

    def _fetch(self, page: Page, key: str | None) -> None:
        self._cancel()
        self._ahead = defer.ensureDeferred(self.client.get_json(page.target, key))

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
                self._fetch(listings[0].first, listings[0].key)
            for index, listing in enumerate(listings):
                following = listings[index + 1] if index + 1 < len(listings) else None
                await self._read_one(listing, following)
        finally:
            self._cancel()

    async def _read_one(self, listing: Listing, following: Listing | None) -> None:
        """
        Read one listing to its end (its first page already asked for),
        handing each page's new indicators to C{on_page} (once per page,
        possibly empty; once per chunk of a page when a pause is set), and
        ask for C{following} after its last page.

        :raise ResponseError: if the listing changed too much more than
            L{MAX_RESTARTS} times.
        """
        seen = SeenKeys()
        inactive: set[int] = set()
        attempt = 0
        page: Page | None = listing.first
        while page is not None:
            body = await self._take()
            seen.next_page(attempt)
            self.tally.pages += 1
            items = listing.items_of(page, body)
            self.tally.items += len(items)
            back = min(page.back, len(items))
            region = listing.parse(items[:back])
            if page.back and not _overlap_holds(items, region, seen, attempt):
                attempt += 1
                self._restart(listing, page, attempt)
                page = listing.first
                self._fetch(page, listing.key)
                continue
            refused: ThreatConnectError | None = None
            try:
                following_page = listing.next_of(page, body, items)
            except ThreatConnectError as e:
                # Raised once this page is handed on, as if asked for next.
                following_page, refused = None, e
            del body
            if following_page is not None:
                ahead: tuple[Page, str | None] | None = (following_page, listing.key)
            elif following is not None and refused is None:
                ahead = (following.first, following.key)
            else:
                ahead = None
            if ahead is not None:
                self._fetch(*ahead)
                if self.pause is not None:
                    # Let the reactor send the request before the page is
                    # parsed: timers run before I/O, so wait twice.
                    await self.pause()
                    await self.pause()
            await self._hand_on(listing, items, back, region, seen, attempt, inactive)
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
        inactive: set[int],
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
            fresh, repeated = _first_sightings(rest.left_inactive, inactive)
            tally.inactive += rest.inactive - repeated
            if self.on_inactive is not None and fresh:
                self.on_inactive(fresh)
            kept += _new_indicators(rest.batches, seen, attempt, tally, count_repeats=True)
            tally.indicators += sum(map(len, kept))
            self.on_page(kept)
            kept = []
            if self.pause is not None:
                await self.pause()
        if back >= len(items):
            tally.indicators += sum(map(len, kept))
            self.on_page(kept)


def _first_sightings(
    batches: list[IndicatorBatch], keys: set[int]
) -> tuple[list[IndicatorBatch], int]:
    """
    The inactive indicators of C{batches} not seen before in this listing
    (C{keys}, updated; a listing read again after a restart meets them
    again), and how many were.
    """
    fresh: list[IndicatorBatch] = []
    repeated = 0
    for batch in batches:
        found = batch.keys()
        new = [at for at, key in enumerate(found) if key is None or key not in keys]
        keys.update(key for key in found if key is not None)
        repeated += len(found) - len(new)
        _keep(fresh, batch, new)
    return fresh, repeated


async def read_listings(
    client: JSONGetter,
    listings: Sequence[Listing],
    tally: Tally,
    on_page: OnPage,
    pause: Callable[[], Awaitable[None]] | None = None,
    chunk: int = 2000,
    on_inactive: OnPage | None = None,
) -> None:
    """
    Read C{listings} in order, each to its end, handing every page's new
    indicators to C{on_page}; see the module docstring.

    :param pause: if set, each page is parsed and handed on in chunks of
        C{chunk} items with C{await pause()} between them, so a large page
        never holds the reactor for long.
    :param on_inactive: if set, given the indicators of each page that
        ThreatConnect marks inactive (left out of C{on_page}'s).
    """
    await _Reader(client, tally, on_page, pause, chunk, on_inactive).read(listings)


def v2_listing(
    client: JSONGetter,
    label: str,
    make_target: Callable[[int], str],
    items_of: Callable[[Page, Any], list[Any]],
    parse: Callable[[list[Any]], ParsedPage],
    page_size: int,
    overlap: int,
    key: str | None = None,
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

    return Listing(label, Page(make_target(0), 0), items_of, next_of, parse, key)


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

    return Listing(label, Page(first_target, 0), items_of, next_of, parse, "data")
