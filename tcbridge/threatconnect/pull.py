# -*- test-case-name: tests.test_tc_pull -*-
"""
Paging over the v1/v2 and v3 APIs for one configured source.

Pages are fetched one at a time, parsed, handed to C{on_page} and dropped, so
memory does not grow with the number of pages.  Errors propagate: the caller
makes a cycle all-or-nothing.

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
   dropped; only a small digest per indicator of the current listing is
   kept, and dropped when the listing ends.

Paging stops on v2 at a page shorter than C{resultLimit} (C{resultCount} is
only sent on the first page, so it is never relied on), and on v3 when an
answer has no C{next} link.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Set
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, quote

from attrs import define, field, frozen
from attrs.validators import in_
from twisted.logger import Logger

from tcbridge.logs import bridge_observer

from ..config import KNOWN_TYPES, Source
from .errors import ApiError, AuthError, ResponseError, ThreatConnectError
from .parse import (
    ParsedPage,
    indicator_key,
    parse_generic_page,
    parse_owners,
    parse_typed_page,
)
from .records import Indicator, SourcePull
from .tql import build_tql, indicators_target, ordered_types, owners_target
from .v3 import next_link, page_data, relative_target, result_start_of, with_result_start

log = Logger(observer=bridge_observer)

ApiVersion = Literal["v2", "v3"]

#: the per-type v2 endpoints pulled for owner sources, in this fixed order:
#: (type name, branch, list key)
TYPED_BRANCHES: tuple[tuple[str, str, str], ...] = (
    ("File", "files", "file"),
    ("Address", "addresses", "address"),
    ("Host", "hosts", "host"),
)

#: how many times one listing may be read again from the start
MAX_RESTARTS = 2

#: how many visible owners an unknown-owner message names at most
_MAX_NAMED_OWNERS = 25

_PAGING_KEYS = frozenset({"resultstart", "resultlimit"})


def _at_least(minimum: int) -> Callable[[Any, Any, int], None]:
    def check(instance: Any, attribute: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{attribute.name} must be an integer >= {minimum}, got {value!r}")

    return check


def _rating(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ):
        raise ValueError(f"min_rating must be a finite number or None, got {value!r}")


def _frozen_types(types: Iterable[str]) -> frozenset[str]:
    if isinstance(types, str):
        raise TypeError(f"types must be a collection of type names, not the string {types!r}")
    return frozenset(types)


@frozen
class PullOptions:
    """
    How to pull sources.

    :ivar api_version: C{"v2"} (per-type endpoints, C{/v2/owners}) or
        C{"v3"} (C{/v3/indicators} with TQL, C{/v3/security/owners}) for
        C{owner} and C{*} sources.  C{path} sources are always pulled as
        written and C{tql} sources always through v3.
    :ivar page_size: C{resultLimit} of every request (ThreatConnect's
        maximum is 10000).
    :ivar types: the indicator types pulled for C{owner} and C{*} sources.
    :ivar min_rating: v3 only: C{rating >= min_rating} goes into the TQL.
        v2 ignores it (the feed side filters).
    :ivar active_only: leave out indicators marked inactive (v3: also
        C{indicatorActive EQ true} in the TQL).
    :ivar overlap: how many items each page re-reads from the previous one;
        capped at C{page_size // 4} (see L{effective_overlap}).
    :ivar pause: if set, each page is parsed and handed on in chunks of
        C{chunk} items with C{await pause()} between them, so a large page
        never holds the reactor for long (the bridge passes a zero-delay
        wait on the reactor).
    :ivar fields: v3 only: the C{fields=} asked for (C{tags}; add
        C{threatAssess} when scores come from ThreatAssess).
    :ivar sorting: v3 only: a C{sorting=} value such as C{"dateAdded ASC"},
        or C{None} to send none.
    """

    api_version: ApiVersion = field(default="v2", validator=in_(("v2", "v3")))
    page_size: int = field(default=10000, validator=_at_least(1))
    types: frozenset[str] = field(default=frozenset(KNOWN_TYPES), converter=_frozen_types)
    min_rating: float | None = field(default=None, validator=_rating)
    active_only: bool = True
    overlap: int = field(default=100, validator=_at_least(0))
    sorting: str | None = None
    fields: tuple[str, ...] = ("tags",)
    pause: Callable[[], Awaitable[None]] | None = field(default=None, eq=False)
    chunk: int = 500

    @property
    def effective_overlap(self) -> int:
        """
        The overlap actually used: C{overlap}, but at most a quarter of a
        page, so every request moves at least three quarters of a page on.
        """
        return min(self.overlap, self.page_size // 4)


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


def _join(path: str, params: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{params}"


def paged_target(path: str, start: int, limit: int) -> str:
    """
    C{path} exactly as written, with C{resultStart}/C{resultLimit} set:
    appended with C{&} (or C{?} when there is no query), replacing any paging
    parameters already there.  Nothing else is re-encoded.
    """
    base, sep, query = path.partition("?")
    if sep:
        kept = [
            part
            for part in query.split("&")
            if part and part.partition("=")[0].lower() not in _PAGING_KEYS
        ]
        base = f"{base}?{'&'.join(kept)}" if kept else f"{base}?"
    paging = f"resultStart={start}&resultLimit={limit}"
    if base.endswith("?"):
        return base + paging
    return _join(base, paging)


def _page_items(client: JSONGetter, target: str, body: Any, key: str) -> list[Any]:
    """
    The list under C{data.<key>}: a missing key or C{null} is an empty page,
    a missing C{data} object or a non-list is a L{ResponseError}.
    """
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise ResponseError(
            "the response has no 'data' object",
            target=client.request_target(target),
        )
    items = data.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise ResponseError(
            f"'data.{key}' is a {type(items).__name__}, expected a list",
            target=client.request_target(target),
        )
    return items


def _warn_short_first_page(target: str, body: Any, items: list[Any], page_size: int) -> None:
    count = body["data"].get("resultCount")
    if isinstance(count, int) and count > len(items) and len(items) < page_size:
        log.warn(
            "{target} says resultCount={count} but sent {sent} of the "
            "{limit} asked for; the server may cap resultLimit lower",
            target=target,
            count=count,
            sent=len(items),
            limit=page_size,
        )


async def _pages(
    client: JSONGetter, make_target: Callable[[int], str], key: str, page_size: int
) -> AsyncIterator[list[Any]]:
    """
    Yield the raw item list of each v2 page, stopping after a short page
    (no overlap: used for owner lists).
    """
    start = 0
    while True:
        target = make_target(start)
        body = await client.get_json(target)
        items = _page_items(client, target, body, key)
        if start == 0:
            _warn_short_first_page(target, body, items, page_size)
        yield items
        if len(items) < page_size:
            return
        start += len(items)


async def _v2_owners(client: JSONGetter, page_size: int) -> tuple[list[str], int]:
    owners: list[str] = []
    seen: set[str] = set()
    pages = 0
    async for items in _pages(
        client,
        lambda start: f"/v2/owners?resultStart={start}&resultLimit={page_size}",
        "owner",
        page_size,
    ):
        pages += 1
        for name in parse_owners(items):
            if name not in seen:
                seen.add(name)
                owners.append(name)
    return owners, pages


async def _v3_owners(client: JSONGetter, page_size: int) -> tuple[list[str], int]:
    owners: list[str] = []
    seen: set[str] = set()
    pages = 0
    target: str | None = owners_target(start=0, limit=page_size)
    while target is not None:
        body = await client.get_json(target)
        pages += 1
        wire = client.request_target(target)
        new = [name for name in parse_owners(page_data(body, wire)) if name not in seen]
        seen.update(new)
        owners.extend(new)
        link = next_link(body, wire)
        # A page that adds nobody while pointing on is a loop, not a list.
        target = relative_target(client.base_url, link) if link and new else None
    return owners, pages


async def _owners_and_pages(
    client: JSONGetter, page_size: int, api_version: ApiVersion = "v2"
) -> tuple[list[str], int]:
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    if api_version == "v3":
        return await _v3_owners(client, page_size)
    return await _v2_owners(client, page_size)


async def list_owners(
    client: JSONGetter, page_size: int = 10000, *, api_version: ApiVersion = "v2"
) -> list[str]:
    """
    Every owner name the API user can see, in ThreatConnect's order, without
    repeats: C{GET /v2/owners} paged by C{resultStart}, or (v3)
    C{GET /v3/security/owners} following its C{next} links.
    """
    owners, _ = await _owners_and_pages(client, page_size, api_version)
    return owners


@define
class _Tally:
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
class _Page:
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
class _Listing:
    """
    How to read one listing; see the module docstring.

    :ivar label: names the listing in messages (C{"Common Community File"}).
    :ivar first: the first page; restarts begin here again.
    :ivar items_of: the raw items of an answer (raises on a bad envelope).
    :ivar next_of: the next page to ask for after an answer, or C{None}.
    :ivar parse: raw items to indicators.
    """

    label: str
    first: _Page
    items_of: Callable[[_Page, Any], list[Any]]
    next_of: Callable[[_Page, Any, list[Any]], _Page | None]
    parse: Callable[[list[Any]], ParsedPage]


async def _read_listing(
    client: JSONGetter,
    listing: _Listing,
    tally: _Tally,
    on_page: Callable[[list[Indicator]], None],
    options: PullOptions,
) -> None:
    """
    Read one listing to its end, handing each page's new indicators to
    C{on_page} (once per page, possibly empty; once per chunk of a page when
    C{options.pause} is set).

    :raise ResponseError: if the listing changed too much more than
        L{MAX_RESTARTS} times.
    """
    # digest -> the pass (0, 1, 2) that last read it; lives for this listing only
    seen: dict[bytes, int] = {}
    attempt = 0
    page: _Page | None = listing.first
    while page is not None:
        body = await client.get_json(page.target)
        tally.pages += 1
        items = listing.items_of(page, body)
        tally.items += len(items)
        back = min(page.back, len(items))
        region = listing.parse(items[:back])
        if page.back and not _overlap_holds(items, region, seen, attempt):
            attempt += 1
            wire = client.request_target(page.target)
            if attempt > MAX_RESTARTS:
                raise ResponseError(
                    f"the indicators of {listing.label} changed too much while being "
                    "read; try again",
                    target=wire,
                )
            tally.restarts += 1
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
            page = listing.first
            continue
        # The overlap region's junk and inactive items were counted with the
        # page before; its repeats are expected, not counted.
        kept = _new_indicators(region.indicators, seen, attempt, tally, count_repeats=False)
        pause = options.pause
        step = max(1, len(items) if pause is None else options.chunk)
        for start in range(back, len(items), step):
            # With pause set, a page is parsed and handed on in chunks, letting
            # the reactor serve requests between them.
            rest = listing.parse(items[start : start + step])
            tally.skipped += rest.skipped
            tally.inactive += rest.inactive
            kept += _new_indicators(rest.indicators, seen, attempt, tally, count_repeats=True)
            tally.indicators += len(kept)
            on_page(kept)
            kept = []
            if pause is not None:
                await pause()
        if back >= len(items):
            tally.indicators += len(kept)
            on_page(kept)
        page = listing.next_of(page, body, items)


def _new_indicators(
    indicators: list[Indicator],
    seen: dict[bytes, int],
    attempt: int,
    tally: _Tally,
    *,
    count_repeats: bool,
) -> list[Indicator]:
    """
    The indicators not yet read in this listing, remembering them; repeats
    within the same pass outside the overlap are counted as duplicates.
    """
    kept: list[Indicator] = []
    for indicator in indicators:
        key = indicator_key(indicator)
        if key is not None:
            last_read = seen.get(key)
            seen[key] = attempt
            if last_read is not None:
                # Expected: the overlap, and pages read again after a
                # restart.  Anything else is a repeat ThreatConnect sent.
                if count_repeats and last_read == attempt:
                    tally.duplicates += 1
                continue
        kept.append(indicator)
    return kept


def _overlap_holds(
    items: list[Any], region: ParsedPage, seen: dict[bytes, int], attempt: int
) -> bool:
    """
    Whether a page asked for with an overlap still starts with something
    this pass has read: an empty page means at least the overlap vanished; a
    region with no identifiable indicator (all junk) cannot tell, so holds.
    """
    if not items:
        return False
    keys = [k for k in map(indicator_key, region.indicators) if k is not None]
    return not keys or any(seen.get(k) == attempt for k in keys)


def _v2_listing(
    client: JSONGetter,
    label: str,
    make_target: Callable[[int], str],
    key: str,
    parse: Callable[[list[Any]], ParsedPage],
    options: PullOptions,
) -> _Listing:
    """
    A v2 listing paged by C{resultStart}: the next page starts C{overlap}
    before the end of a full page; a short page is the last.
    """
    size = options.page_size
    overlap = options.effective_overlap

    def items_of(page: _Page, body: Any) -> list[Any]:
        items = _page_items(client, page.target, body, key)
        if page.start == 0:
            _warn_short_first_page(page.target, body, items, size)
        return items

    def next_of(page: _Page, body: Any, items: list[Any]) -> _Page | None:
        if len(items) < size or page.start is None:
            return None
        back = min(overlap, len(items) - 1)
        start = page.start + len(items) - back
        return _Page(make_target(start), start, back)

    return _Listing(label, _Page(make_target(0), 0), items_of, next_of, parse)


def _v3_listing(
    client: JSONGetter,
    label: str,
    first_target: str,
    parse: Callable[[list[Any]], ParsedPage],
    options: PullOptions,
) -> _Listing:
    """
    A v3 listing: the server's C{next} links are followed (after checking
    they point back at the base URL) with their C{resultStart} moved back by
    the overlap; no C{next} ends it.
    """
    overlap = options.effective_overlap

    def items_of(page: _Page, body: Any) -> list[Any]:
        return page_data(body, client.request_target(page.target))

    def next_of(page: _Page, body: Any, items: list[Any]) -> _Page | None:
        wire = client.request_target(page.target)
        link = next_link(body, wire)
        if link is None:
            return None
        target = relative_target(client.base_url, link)
        link_start = result_start_of(target)
        if link_start is None or page.start is None:
            return _Page(target, link_start)
        if link_start <= page.start:
            raise ResponseError(
                f"the 'next' link does not move past resultStart={page.start}: {link}",
                target=wire,
            )
        back = max(0, min(overlap, len(items) - 1, link_start - page.start - 1))
        start = link_start - back
        return _Page(with_result_start(target, start), start, back)

    return _Listing(label, _Page(first_target, 0), items_of, next_of, parse)


def _options_from(types_or_options: PullOptions | Set[str], page_size: int | None) -> PullOptions:
    if isinstance(types_or_options, PullOptions):
        if page_size is not None:
            raise TypeError("pass page_size inside PullOptions, not beside it")
        return types_or_options
    return PullOptions(
        types=frozenset(types_or_options),
        page_size=10000 if page_size is None else page_size,
    )


async def pull_source(
    client: JSONGetter,
    source: Source,
    types_or_options: PullOptions | Set[str],
    on_page: Callable[[list[Indicator]], None],
    page_size: int | None = None,
) -> SourcePull:
    """
    Pull every page of one configured source, calling C{on_page} once per
    page with that page's new indicators.

    Called either as C{pull_source(client, source, options, on_page)} with a
    L{PullOptions}, or in the older form
    C{pull_source(client, source, types, on_page, page_size=10000)}, which
    means C{PullOptions(types=types, page_size=page_size)} (v2, overlap
    on).

    - C{kind="owner"}: v2: C{/v2/indicators/{files,addresses,hosts}?owner=...}
      for each wanted type; v3: C{/v3/indicators?tql=ownerName EQ "..." AND
      ...}.  C{Indicator.source} is the owner name.  If ThreatConnect
      answers 403 or 404 (or, on v3, sends nothing at all) and the owner is
      not among the owners the API user can see, the error says so and
      names those it can see.
    - C{kind="all"}: the same for every owner listed by C{/v2/owners} or
      C{/v3/security/owners}; C{Indicator.source} is each owner's name.
    - C{kind="path"}: the 2015-style path as written, paged; items of every
      type are passed on (the feed side filters types); C{Indicator.source}
      is C{source.name}.
    - C{kind="tql"}: C{/v3/indicators?tql=<the query as written>&fields=tags}
      paged; every type passed on; C{Indicator.source} is C{source.name}.

    :param types_or_options: a L{PullOptions}, or (older form) the set of
        types to pull.
    :param page_size: older form only; with L{PullOptions} it is a
        C{TypeError}.
    :return: what was pulled; C{pages} counts every page fetched for the
        source, including owner-list pages and pages read again.
    :raise tcbridge.threatconnect.errors.ThreatConnectError: on any failure.
    """
    options = _options_from(types_or_options, page_size)
    size = options.page_size
    active_only = options.active_only
    tally = _Tally()

    # v2 adds tags (and the ThreatAssess fields) only when asked to.
    v2_includes = "".join(
        f"&includes={name}"
        for name, field_name in (("tags", "tags"), ("additional", "threatAssess"))
        if field_name in options.fields
    )

    async def pull_owner_v2(owner: str) -> None:
        quoted = quote(owner, safe="")
        for type_name, branch, key in TYPED_BRANCHES:
            if type_name not in options.types:
                continue

            def make_target(start: int, branch: str = branch) -> str:
                return (
                    f"/v2/indicators/{branch}?owner={quoted}{v2_includes}"
                    f"&resultStart={start}&resultLimit={size}"
                )

            def parse(items: list[Any], key: str = key) -> ParsedPage:
                return parse_typed_page(key, items, owner, owner, active_only=active_only)

            listing = _v2_listing(client, f"{owner} {type_name}", make_target, key, parse, options)
            await _read_listing(client, listing, tally, on_page, options)

    async def pull_owner_v3(owner: str) -> None:
        types = ordered_types(options.types)
        if not types:
            return
        tql = build_tql(
            owner=owner, types=types, min_rating=options.min_rating, active_only=active_only
        )

        def parse(items: list[Any]) -> ParsedPage:
            return parse_generic_page(items, owner, owner, active_only=active_only)

        first = indicators_target(
            tql, start=0, limit=size, fields=options.fields, sorting=options.sorting
        )
        listing = _v3_listing(client, f"{owner} {'/'.join(types)}", first, parse, options)
        await _read_listing(client, listing, tally, on_page, options)

    async def pull_owner(owner: str) -> None:
        if options.api_version == "v3":
            await pull_owner_v3(owner)
        else:
            await pull_owner_v2(owner)
        log.debug(
            "Pulled owner {owner}: {indicators} indicators so far",
            owner=owner,
            indicators=tally.indicators,
        )

    owners: tuple[str, ...]
    if source.kind == "owner":
        owners = (source.value.strip(),)
        try:
            await pull_owner(owners[0])
        except (AuthError, ApiError) as e:
            better = await _unknown_owner_error(client, owners[0], e, options)
            if better is e:
                raise
            raise better from e
        if options.api_version == "v3" and tally.items == 0 and options.types:
            # v3 answers a TQL naming an owner it cannot see with nothing at
            # all rather than a 403: tell that apart from an empty owner.
            await _check_owner_visible(client, owners[0], options)
    elif source.kind == "all":
        names, owner_pages = await _owners_and_pages(client, size, options.api_version)
        owners = tuple(names)
        tally.pages += owner_pages
        for owner in owners:
            await pull_owner(owner)
    elif source.kind == "path":
        path = source.value.strip()
        if not path.startswith("/"):
            path = "/" + path
        owner = _path_owner(path)
        owners = (owner,) if owner else ()

        def parse_path(items: list[Any]) -> ParsedPage:
            return parse_generic_page(items, source.name, owner, active_only=active_only)

        listing = _v2_listing(
            client,
            source.name,
            lambda start: paged_target(path, start, size),
            "indicator",
            parse_path,
            options,
        )
        await _read_listing(client, listing, tally, on_page, options)
    elif source.kind == "tql":
        owners = ()

        def parse_tql(items: list[Any]) -> ParsedPage:
            return parse_generic_page(items, source.name, "", active_only=active_only)

        first = indicators_target(
            source.value.strip(),
            start=0,
            limit=size,
            fields=options.fields,
            sorting=options.sorting,
        )
        await _read_listing(
            client,
            _v3_listing(client, source.name, first, parse_tql, options),
            tally,
            on_page,
            options,
        )
    else:
        raise ValueError(f"unknown source kind {source.kind!r}")

    result = SourcePull(
        source=source.name,
        owners=owners,
        indicators=tally.indicators,
        skipped=tally.skipped,
        pages=tally.pages,
        inactive=tally.inactive,
        duplicates=tally.duplicates,
        restarts=tally.restarts,
    )
    log.info(
        "Pulled source {source}: {indicators} indicators, {skipped} skipped, "
        "{inactive} inactive, {duplicates} repeated, {restarts} restarts, {pages} pages",
        source=source.name,
        indicators=result.indicators,
        skipped=result.skipped,
        inactive=result.inactive,
        duplicates=result.duplicates,
        restarts=result.restarts,
        pages=result.pages,
    )
    return result


async def _visible_owners(client: JSONGetter, options: PullOptions) -> list[str] | None:
    try:
        return await list_owners(client, options.page_size, api_version=options.api_version)
    except ThreatConnectError as e:
        log.debug("Could not list owners: {why}", why=str(e))
        return None


def _not_visible_message(owner: str, visible: list[str]) -> str:
    named = ", ".join(visible[:_MAX_NAMED_OWNERS]) or "no owners at all"
    if len(visible) > _MAX_NAMED_OWNERS:
        named += f" and {len(visible) - _MAX_NAMED_OWNERS} more"
    return f"owner '{owner}' is not visible to this API user; it can see: {named}"


async def _check_owner_visible(client: JSONGetter, owner: str, options: PullOptions) -> None:
    """
    After a v3 owner listing came back empty: raise L{AuthError} if the
    owner is not among those the API user can see.  Nothing happens if it
    is, or if the owners cannot be listed.
    """
    visible = await _visible_owners(client, options)
    if visible is None or owner in visible:
        return
    tql = build_tql(
        owner=owner,
        types=options.types,
        min_rating=options.min_rating,
        active_only=options.active_only,
    )
    first = indicators_target(
        tql, start=0, limit=options.page_size, fields=options.fields, sorting=options.sorting
    )
    message = _not_visible_message(owner, visible)
    raise AuthError(
        message,
        target=client.request_target(first),
        detail=f"{message} (ThreatConnect sent no indicators for it)",
    )


async def _unknown_owner_error(
    client: JSONGetter, owner: str, error: AuthError | ApiError, options: PullOptions
) -> ThreatConnectError:
    """
    For a 403/404 on an owner's listing: an error of the same kind saying
    the owner is not visible and naming the owners that are, if the owner
    is indeed not among them.  Otherwise (another status, the owner is
    visible, or listing owners fails too) C{error} itself.
    """
    if error.status not in (403, 404):
        return error
    visible = await _visible_owners(client, options)
    if visible is None or owner in visible:
        return error
    message = _not_visible_message(owner, visible)
    kind = AuthError if isinstance(error, AuthError) else ApiError
    return kind(
        message,
        status=error.status,
        target=error.target,
        method=error.method,
        detail=f"HTTP {error.status}: {message} (ThreatConnect said: {error.message})",
    )


def _path_owner(path: str) -> str:
    """
    The decoded C{owner} query parameter of a legacy path (any case of the
    key), or C{""}.
    """
    query = path.partition("?")[2]
    try:
        pairs = parse_qsl(query, keep_blank_values=True)
    except ValueError:
        return ""
    for key, value in pairs:
        if key.lower() == "owner":
            return value.strip()
    return ""
