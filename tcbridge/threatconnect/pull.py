# -*- test-case-name: tests.test_tc_pull -*-
"""
Paging over the v1/v2 API for one configured source.

Pages are fetched one at a time, parsed, handed to C{on_page} and dropped, so
memory does not grow with the number of pages.  Paging stops on a page shorter
than C{page_size} (C{resultCount} is only sent on the first page, so it is
never relied on).  Errors propagate: the caller makes a cycle all-or-nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote

from twisted.logger import Logger

from tcbridge.logs import bridge_observer

from ..config import Source
from .errors import ResponseError
from .parse import parse_generic, parse_owners, parse_typed
from .records import Indicator, SourcePull

log = Logger(observer=bridge_observer)

#: the per-type v2 endpoints pulled for owner sources, in this fixed order:
#: (type name, branch, list key)
TYPED_BRANCHES: tuple[tuple[str, str, str], ...] = (
    ("File", "files", "file"),
    ("Address", "addresses", "address"),
    ("Host", "hosts", "host"),
)

_PAGING_KEYS = frozenset({"resultstart", "resultlimit"})


class JSONGetter(Protocol):
    """
    What paging needs from L{tcbridge.threatconnect.client.ThreatConnectClient}.
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


async def _pages(
    client: JSONGetter, make_target: Callable[[int], str], key: str, page_size: int
) -> AsyncIterator[list[Any]]:
    """
    Yield the raw item list of each page, stopping after a short page.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    start = 0
    while True:
        target = make_target(start)
        body = await client.get_json(target)
        items = _page_items(client, target, body, key)
        if start == 0:
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
        yield items
        if len(items) < page_size:
            return
        start += len(items)


async def _owners_and_pages(client: JSONGetter, page_size: int) -> tuple[list[str], int]:
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


async def list_owners(client: JSONGetter, page_size: int = 10000) -> list[str]:
    """
    Every owner name the API user can see (C{GET /v2/owners}, paged), in
    ThreatConnect's order, without repeats.
    """
    owners, _ = await _owners_and_pages(client, page_size)
    return owners


async def pull_source(
    client: JSONGetter,
    source: Source,
    types: frozenset[str],
    on_page: Callable[[list[Indicator]], None],
    page_size: int = 10000,
) -> SourcePull:
    """
    Pull every page of one configured source, calling C{on_page} once per
    page with that page's indicators.

    - C{kind="owner"}: C{/v2/indicators/{files,addresses,hosts}?owner=...}
      for each of File, Address, Host in C{types}; C{Indicator.source} is
      the owner name.
    - C{kind="all"}: the same for every owner from L{list_owners};
      C{Indicator.source} is each owner's name.
    - C{kind="path"}: the 2015-style path as written, paged; items of every
      type are passed on (the feed side filters types); C{Indicator.source}
      is C{source.name}.

    :return: what was pulled; C{pages} counts every page fetched for the
        source, including C{/v2/owners} pages.
    :raise tcbridge.threatconnect.errors.ThreatConnectError: on any failure.
    """
    counts = {"indicators": 0, "skipped": 0, "pages": 0}

    def deliver(indicators: list[Indicator], skipped: int) -> None:
        counts["indicators"] += len(indicators)
        counts["skipped"] += skipped
        counts["pages"] += 1
        on_page(indicators)

    async def pull_owner(owner: str) -> None:
        quoted = quote(owner, safe="")
        for type_name, branch, key in TYPED_BRANCHES:
            if type_name not in types:
                continue

            def make_target(start: int, branch: str = branch) -> str:
                return (
                    f"/v2/indicators/{branch}?owner={quoted}"
                    f"&resultStart={start}&resultLimit={page_size}"
                )

            async for items in _pages(client, make_target, key, page_size):
                indicators, skipped = parse_typed(key, items, owner, owner)
                deliver(indicators, skipped)
        log.debug(
            "Pulled owner {owner}: {indicators} indicators so far",
            owner=owner,
            indicators=counts["indicators"],
        )

    owners: tuple[str, ...]
    if source.kind == "owner":
        owners = (source.value.strip(),)
        await pull_owner(owners[0])
    elif source.kind == "all":
        names, owner_pages = await _owners_and_pages(client, page_size)
        owners = tuple(names)
        counts["pages"] += owner_pages
        for owner in owners:
            await pull_owner(owner)
    elif source.kind == "path":
        path = source.value.strip()
        if not path.startswith("/"):
            path = "/" + path
        owner = _path_owner(path)
        owners = (owner,) if owner else ()
        async for items in _pages(
            client, lambda start: paged_target(path, start, page_size), "indicator", page_size
        ):
            indicators, skipped = parse_generic(items, source.name, owner)
            deliver(indicators, skipped)
    else:
        raise ValueError(f"unknown source kind {source.kind!r}")

    result = SourcePull(
        source=source.name,
        owners=owners,
        indicators=counts["indicators"],
        skipped=counts["skipped"],
        pages=counts["pages"],
    )
    log.info(
        "Pulled source {source}: {indicators} indicators, {skipped} skipped, {pages} pages",
        source=source.name,
        indicators=result.indicators,
        skipped=result.skipped,
        pages=result.pages,
    )
    return result


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
