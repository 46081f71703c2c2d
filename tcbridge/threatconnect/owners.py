# -*- test-case-name: tests.unit.test_tc_pull -*-
"""
The owners an API user can see (C{/v2/owners} or C{/v3/security/owners}),
and the message that names them when a configured owner is not among them.
"""

from __future__ import annotations

from tcbridge.model import ApiVersion

from .listing import JSONGetter
from .parse import parse_owners
from .tql import owners_target
from .v2 import v2_pages
from .v3 import next_link, page_data, relative_target

#: how many visible owners an unknown-owner message names at most
MAX_NAMED_OWNERS = 25


async def _v2_owners(client: JSONGetter, page_size: int) -> tuple[list[str], int]:
    owners: list[str] = []
    seen: set[str] = set()
    pages = 0
    async for items in v2_pages(
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


async def owners_and_pages(
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
    owners, _ = await owners_and_pages(client, page_size, api_version)
    return owners


def not_visible_message(owner: str, visible: list[str]) -> str:
    named = ", ".join(visible[:MAX_NAMED_OWNERS]) or "no owners at all"
    if len(visible) > MAX_NAMED_OWNERS:
        named += f" and {len(visible) - MAX_NAMED_OWNERS} more"
    return f"owner '{owner}' is not visible to this API user; it can see: {named}"
