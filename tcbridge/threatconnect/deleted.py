# -*- test-case-name: tests.unit.test_tc_deleted -*-
"""
Indicators deleted in ThreatConnect, for a delta sync to take out of the
store: C{GET /v2/indicators/deleted?owner=} (ThreatConnect 5.4 and later;
everything still within the retention) or C{GET /v3/indicators/deleted?
owner=&deletedSince=}.  Deleted indicators carry no id: they are known by
owner, type and summary.  A delta asks for several owners' deletions at
once (L{deleted_of_owners}), beside the pull of what changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote

from attrs import frozen
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    FirstError,
    ensureDeferred,
    gatherResults,
)

from tcbridge.model import ApiVersion

from .listing import JSONGetter
from .v2 import v2_pages
from .v3 import page_data

#: Owners whose deleted listings are asked for at the same time.
OWNERS_AT_ONCE: Final = 4


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


def deleted_of_owners(
    client: JSONGetter,
    owners: Sequence[str],
    *,
    since: str | None = None,
    api_version: ApiVersion = "v2",
    at_once: int = OWNERS_AT_ONCE,
) -> Deferred[list[list[Deleted]]]:
    """
    L{list_deleted} of every one of C{owners}, up to C{at_once} of them
    asked for at the same time: fires with their lists, in C{owners}'
    order, whatever order the answers come in.  If one fails, the others
    are cancelled and it fails with that one's error; cancelling it
    cancels them all.

    :raise ThreatConnectError: as for any request.
    """
    semaphore = DeferredSemaphore(at_once)
    #: the first failure; once there is one, listings still waiting for
    #: their turn are not sent
    failed: list[BaseException] = []

    async def one(owner: str) -> list[Deleted]:
        if failed:
            raise CancelledError()
        try:
            return await list_deleted(client, owner, since=since, api_version=api_version)
        except BaseException as e:
            if not failed:
                failed.append(e)
            raise

    calls = [semaphore.run(one, owner) for owner in owners]

    async def gathered() -> list[list[Deleted]]:
        try:
            found: list[list[Deleted]] = await gatherResults(calls, consumeErrors=True)
        except FirstError as e:
            for call in reversed(calls):
                call.cancel()
            if failed:
                raise failed[0] from None
            e.subFailure.raiseException()
        return found

    return ensureDeferred(gathered())
