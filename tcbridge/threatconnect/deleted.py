# -*- test-case-name: tests.unit.test_tc_deleted -*-
"""
Indicators deleted in ThreatConnect, for a delta sync to take out of the
store: C{GET /v2/indicators/deleted?owner=} (ThreatConnect 5.4 and later;
everything still within the retention) or C{GET /v3/indicators/deleted?
owner=&deletedSince=}.  Deleted indicators carry no id: they are known by
owner, type and summary.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from attrs import frozen

from tcbridge.model import ApiVersion

from .listing import JSONGetter
from .v2 import v2_pages
from .v3 import page_data


@frozen
class Deleted:
    """
    One deleted indicator.

    :ivar summary: its value (a File's hashes as C{"md5 : sha1 : sha256"}).
    """

    owner: str
    type: str
    summary: str


def _deleted(item: Any, owner: str) -> Deleted | None:
    """
    The record of one item of a deleted listing, or C{None} for one that
    is unreadable.
    """
    if not isinstance(item, dict):
        return None
    summary, type_name = item.get("summary"), item.get("type")
    if not isinstance(summary, str) or not summary.strip() or not isinstance(type_name, str):
        return None
    found_owner = item.get("ownerName")
    return Deleted(found_owner if isinstance(found_owner, str) else owner, type_name, summary)


async def list_deleted(
    client: JSONGetter,
    owner: str,
    *,
    since: str | None = None,
    api_version: ApiVersion = "v2",
    page_size: int = 10000,
) -> list[Deleted]:
    """
    The indicators of C{owner} deleted in ThreatConnect (on v3, since the
    ISO 8601 time C{since}, if given; v2 lists all it still keeps).
    Unreadable items are skipped.

    :raise ThreatConnectError: as for any request.
    """
    quoted = quote(owner, safe="")
    found: list[Deleted] = []
    if api_version == "v2":
        async for items in v2_pages(
            client,
            lambda start: (
                f"/v2/indicators/deleted?owner={quoted}&resultStart={start}&resultLimit={page_size}"
            ),
            "indicator",
            page_size,
        ):
            found += [d for d in (_deleted(item, owner) for item in items) if d is not None]
        return found
    after = f"&deletedSince={quote(since, safe='')}" if since else ""
    start = 0
    while True:
        target = (
            f"/v3/indicators/deleted?owner={quoted}{after}"
            f"&resultStart={start}&resultLimit={page_size}"
        )
        body = await client.get_json(target)
        items = page_data(body, client.request_target(target))
        found += [d for d in (_deleted(item, owner) for item in items) if d is not None]
        if len(items) < page_size:
            return found
        start += len(items)
