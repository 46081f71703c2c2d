# -*- test-case-name: tests.unit.test_tc_pull -*-
"""
The v2 side of paging: targets with C{resultStart}/C{resultLimit} set on a
path as written, the item list of a v2 answer (C{data.<key>}), and paging
through a list that ends with a short page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from twisted.logger import Logger

from tcbridge.logs import bridge_observer

from .errors import ResponseError
from .listing import JSONGetter

log = Logger(observer=bridge_observer)

_PAGING_KEYS = frozenset({"resultstart", "resultlimit"})


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


def page_items(client: JSONGetter, target: str, body: Any, key: str) -> list[Any]:
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


def warn_short_first_page(target: str, body: Any, items: list[Any], page_size: int) -> None:
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


async def v2_pages(
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
        items = page_items(client, target, body, key)
        if start == 0:
            warn_short_first_page(target, body, items, page_size)
        yield items
        if len(items) < page_size:
            return
        start += len(items)
