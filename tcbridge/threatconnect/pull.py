# -*- test-case-name: tests.unit.test_tc_pull -*-
"""
Pulling one configured source: which listings it is made of (an owner's
types on v2, an owner's TQL query on v3, every visible owner for C{*}, a
legacy API path, a TQL source) and what to say when an owner is not
visible.  Reading the listings themselves (paging, overlap, de-duplication,
prefetch) is L{tcbridge.threatconnect.listing}'s job.

Errors propagate: the caller makes a cycle all-or-nothing.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any
from urllib.parse import parse_qsl, quote

from attrs import field, frozen
from attrs.validators import in_
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from tcbridge.logs import bridge_observer

from ..model import KNOWN_TYPES, ApiVersion, Source
from .across import across_owners
from .errors import ApiError, AuthError, ThreatConnectError
from .listing import (
    JSONGetter,
    Listing,
    OnPage,
    Page,
    Tally,
    read_listings,
    v2_listing,
    v3_listing,
)
from .owners import list_owners, not_visible_message, owners_and_pages
from .parse import ParsedPage, parse_generic_page, parse_typed_page
from .records import SourcePull
from .tql import (
    ANY_ACTIVE,
    build_tql,
    encode_param,
    indicators_target,
    iso_time,
    ordered_types,
    with_since,
)
from .v2 import page_items, paged_target, warn_short_first_page

log = Logger(observer=bridge_observer)

#: the per-type v2 endpoints pulled for owner sources, in this fixed order:
#: (type name, branch, list key)
TYPED_BRANCHES: tuple[tuple[str, str, str], ...] = (
    ("File", "files", "file"),
    ("Address", "addresses", "address"),
    ("Host", "hosts", "host"),
)


#: Reads a source's listings, some of them perhaps in another process
#: (write mode, see L{tcbridge.sync.shared}): given the listings, how to
#: make them again on another client, how to read some of them here, and
#: the source's tally (which must end up counting every listing).
ShareListings = Callable[
    [
        list[Listing],
        Callable[[JSONGetter], list[Listing]],
        Callable[[list[Listing]], Awaitable[None]],
        Tally,
    ],
    Awaitable[None],
]


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
    :ivar on_inactive: if set, given the indicators ThreatConnect sent but
        marks inactive (they never reach the feed), page by page.
    :ivar modified_since: if set (epoch seconds), a delta: owner and C{*}
        sources ask only for indicators modified at or after it (v2
        C{modifiedSince=}, v3 and TQL sources C{lastModified >=} in the
        TQL), inactive ones included (they come to C{on_inactive}) and the
        minimum rating left to the feed side, so that an indicator that was
        deactivated or rated down is seen and can leave.  2015 API paths
        cannot be filtered and are pulled whole.
    :ivar label_prefix: put before owner names in labels (a named
        ThreatConnect instance's C{<name>/}, so its reports name it).
    :ivar share: if set, how a full pull of a C{*} or owner source reads
        its listings (see L{ShareListings}).
    :ivar on_owners: if set, told the owners an owner or C{*} source
        covers as soon as they are known, before its listings are read (a
        delta asks for their deleted indicators meanwhile).
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
    chunk: int = 1000
    on_inactive: OnPage | None = field(default=None, eq=False)
    modified_since: int | None = None
    label_prefix: str = ""
    share: ShareListings | None = field(default=None, eq=False)
    on_owners: Callable[[tuple[str, ...]], None] | None = field(default=None, eq=False)

    @property
    def effective_overlap(self) -> int:
        """
        The overlap actually used: C{overlap}, but at most a quarter of a
        page, so every request moves at least three quarters of a page on.
        """
        return min(self.overlap, self.page_size // 4)


def _v2_includes(options: PullOptions) -> str:
    """
    v2 adds tags (and the ThreatAssess fields) only when asked to.
    """
    return "".join(
        f"&includes={name}"
        for name, field_name in (("tags", "tags"), ("additional", "threatAssess"))
        if field_name in options.fields
    )


def _v2_delta(modified_since: int | None) -> str:
    """
    The v2 parameters of a delta: C{modifiedSince=} (percent-encoded, the
    C{+} of an offset included), and inactive indicators as well as active
    ones.
    """
    if modified_since is None:
        return ""
    since = encode_param(iso_time(modified_since))
    return f"&modifiedSince={since}&filters=active%3Dtrue%2Cactive%3Dfalse&orParams=true"


def _typed_items(client: JSONGetter, key: str, page_size: int) -> Callable[[Page, Any], list[Any]]:
    def items_of(page: Page, body: Any) -> list[Any]:
        items = page_items(client, page.target, body, key)
        if page.start == 0:
            warn_short_first_page(page.target, body, items, page_size)
        return items

    return items_of


def _owner_listings(client: JSONGetter, owner: str, options: PullOptions) -> list[Listing]:
    """
    The listings of one owner: one per wanted type on v2, one TQL query on
    v3.  Indicators are labelled with the owner's name (after the
    instance's C{label_prefix}).
    """
    size = options.page_size
    active_only = options.active_only
    delta = options.modified_since is not None
    labelled = options.label_prefix + owner
    if options.api_version == "v3":
        types = ordered_types(options.types)
        if not types:
            return []

        def parse_v3(items: list[Any]) -> ParsedPage:
            return parse_generic_page(items, labelled, owner, active_only=active_only)

        label = f"{owner} {'/'.join(types)}"
        queries = [
            build_tql(
                owner=owner, types=types, min_rating=options.min_rating, active_only=active_only
            )
        ]
        if delta:
            # ThreatConnect hides inactive indicators unless asked: the query
            # asks for active and inactive ones, so that those deactivated
            # since can leave.
            queries = [
                with_since(
                    build_tql(owner=owner, types=types, active_only=False) + " AND " + ANY_ACTIVE,
                    options.modified_since,
                )
            ]
        return [
            v3_listing(
                client,
                label,
                indicators_target(
                    tql, start=0, limit=size, fields=options.fields, sorting=options.sorting
                ),
                parse_v3,
                options.effective_overlap,
            )
            for tql in queries
        ]
    quoted = quote(owner, safe="")
    includes = _v2_includes(options) + _v2_delta(options.modified_since)
    listings = []
    for type_name, branch, key in TYPED_BRANCHES:
        if type_name not in options.types:
            continue

        def make_target(start: int, branch: str = branch) -> str:
            return (
                f"/v2/indicators/{branch}?owner={quoted}{includes}"
                f"&resultStart={start}&resultLimit={size}"
            )

        def parse(items: list[Any], key: str = key) -> ParsedPage:
            return parse_typed_page(key, items, labelled, owner, active_only=active_only)

        listings.append(
            v2_listing(
                client,
                f"{owner} {type_name}",
                make_target,
                _typed_items(client, key, size),
                parse,
                size,
                options.effective_overlap,
                key,
            )
        )
    return listings


def _legacy_path(source: Source) -> str:
    path = source.value.strip()
    return path if path.startswith("/") else "/" + path


def _path_listing(client: JSONGetter, source: Source, options: PullOptions) -> Listing:
    """
    A 2015-style API path, paged as written; every type is handed on.
    """
    path = _legacy_path(source)
    owner = _path_owner(path)
    size = options.page_size

    def parse_path(items: list[Any]) -> ParsedPage:
        return parse_generic_page(items, source.name, owner, active_only=options.active_only)

    def items_of(page: Page, body: Any) -> list[Any]:
        return page_items(client, page.target, body, "indicator")

    return v2_listing(
        client,
        source.name,
        lambda start: paged_target(path, start, size),
        items_of,
        parse_path,
        size,
        options.effective_overlap,
        "indicator",
    )


def _tql_listing(client: JSONGetter, source: Source, options: PullOptions) -> Listing:
    """
    A TQL source, pulled through v3 as written; every type is handed on.
    """

    def parse_tql(items: list[Any]) -> ParsedPage:
        return parse_generic_page(items, source.name, "", active_only=options.active_only)

    first = indicators_target(
        with_since(source.value.strip(), options.modified_since),
        start=0,
        limit=options.page_size,
        fields=options.fields,
        sorting=options.sorting,
    )
    return v3_listing(client, source.name, first, parse_tql, options.effective_overlap)


async def _read(
    client: JSONGetter,
    listings: list[Listing],
    tally: Tally,
    on_page: OnPage,
    options: PullOptions,
) -> None:
    await read_listings(
        client, listings, tally, on_page, options.pause, options.chunk, options.on_inactive
    )


async def _read_owners(
    client: JSONGetter,
    owners: tuple[str, ...],
    options: PullOptions,
    tally: Tally,
    on_page: OnPage,
) -> None:
    """
    Read every listing of C{owners} (each owner's types on v2, one query
    each on v3): here, or shared as C{options.share} says.
    """

    def make(on: JSONGetter) -> list[Listing]:
        return [one for owner in owners for one in _owner_listings(on, owner, options)]

    listings = make(client)
    if options.share is None or len(listings) < 2:
        await _read(client, listings, tally, on_page, options)
        return

    async def read_here(chosen: list[Listing]) -> None:
        await _read(client, chosen, tally, on_page, options)

    await options.share(listings, make, read_here, tally)


async def _pull_owner(
    client: JSONGetter, owner: str, options: PullOptions, tally: Tally, on_page: OnPage
) -> None:
    """
    Pull one named owner; if ThreatConnect refuses it (403/404, or on v3 an
    empty answer) and the API user cannot see it, say so and name the
    owners it can see.
    """
    try:
        await _read_owners(client, (owner,), options, tally, on_page)
    except (AuthError, ApiError) as e:
        better = await _unknown_owner_error(client, owner, e, options)
        if better is e:
            raise
        raise better from e
    full = options.modified_since is None
    if options.api_version == "v3" and tally.items == 0 and options.types and full:
        # v3 answers a TQL naming an owner it cannot see with nothing at
        # all rather than a 403: tell that apart from an empty owner (a
        # delta with no changes is no sign of either).
        await _check_owner_visible(client, owner, options)


async def pull_source(
    client: JSONGetter, source: Source, options: PullOptions, on_page: OnPage
) -> SourcePull:
    """
    Pull every page of one configured source, calling C{on_page} once per
    page (or page chunk) with that page's new indicators, as batches.

    - C{kind="owner"}: v2: C{/v2/indicators/{files,addresses,hosts}?owner=...}
      for each wanted type; v3: C{/v3/indicators?tql=ownerName EQ "..." AND
      ...}.  Indicators are labelled with the owner name.  If ThreatConnect
      answers 403 or 404 (or, on v3, sends nothing at all) and the owner is
      not among the owners the API user can see, the error says so and
      names those it can see.
    - C{kind="all"}: the same for every owner listed by C{/v2/owners} or
      C{/v3/security/owners}; each owner's indicators are labelled with its
      name.  A v3 delta asks for many owners in one query
      (L{tcbridge.threatconnect.across}).
    - C{kind="path"}: the 2015-style path as written, paged; items of every
      type are passed on (the feed side filters types), labelled with
      C{source.name}.
    - C{kind="tql"}: C{/v3/indicators?tql=<the query as written>&fields=tags}
      paged; every type passed on, labelled with C{source.name}.

    :return: what was pulled; C{pages} counts every page fetched for the
        source, including owner-list pages and pages read again.
    :raise tcbridge.threatconnect.errors.ThreatConnectError: on any failure.
    """
    tally = Tally()
    owners: tuple[str, ...]
    if source.kind == "owner":
        owners = (source.value.strip(),)
        await _told(owners, _pull_owner(client, owners[0], options, tally, on_page), options)
    elif source.kind == "all":
        names, owner_pages = await owners_and_pages(client, options.page_size, options.api_version)
        owners = tuple(names)
        tally.pages += owner_pages
        if options.api_version == "v3" and options.modified_since is not None:
            listings = across_owners(client, owners, options)
            await _told(owners, _read(client, listings, tally, on_page, options), options)
        else:
            await _told(owners, _read_owners(client, owners, options, tally, on_page), options)
    elif source.kind == "path":
        owner = _path_owner(_legacy_path(source))
        owners = (owner,) if owner else ()
        await _read(client, [_path_listing(client, source, options)], tally, on_page, options)
    elif source.kind == "tql":
        owners = ()
        await _read(client, [_tql_listing(client, source, options)], tally, on_page, options)
    else:
        raise ValueError(f"unknown source kind {source.kind!r}")
    return _finish(source, owners, tally)


async def _told(
    owners: tuple[str, ...], reading: Coroutine[Any, Any, None], options: PullOptions
) -> None:
    """
    Run C{reading} (a source's listings) and, once it has sent its first
    request and while it waits for the answer, tell C{options.on_owners}
    the source's C{owners}: what it starts then goes out after that
    request.
    """
    started = ensureDeferred(reading)
    try:
        # Told only while the listings still run (once they have ended,
        # there is nothing left to go beside).
        if options.on_owners is not None and not started.called:
            options.on_owners(owners)
    except BaseException:
        started.cancel()
        started.addErrback(lambda _: None)  # the error raised says why
        raise
    await started


#: The counts a pull reports, as named in L{Tally} and L{SourcePull}.
_COUNTS = ("indicators", "skipped", "inactive", "duplicates", "restarts", "pages")


def _finish(source: Source, owners: tuple[str, ...], tally: Tally) -> SourcePull:
    counts: dict[str, int] = {name: getattr(tally, name) for name in _COUNTS}
    log.info(
        "Pulled source {source}: {indicators} indicators, {skipped} skipped, "
        "{inactive} inactive, {duplicates} repeated, {restarts} restarts, {pages} pages",
        source=source.name,
        **counts,
    )
    return SourcePull(source=source.name, owners=owners, **counts)


async def _visible_owners(client: JSONGetter, options: PullOptions) -> list[str] | None:
    try:
        return await list_owners(client, options.page_size, api_version=options.api_version)
    except ThreatConnectError as e:
        log.debug("Could not list owners: {why}", why=str(e))
        return None


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
    message = not_visible_message(owner, visible)
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
    message = not_visible_message(owner, visible)
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
