# -*- test-case-name: tests.unit.test_tc_pull -*-
"""
A v3 delta of many owners at once: rather than a query per owner, one TQL
query asks for what changed in up to L{OWNERS_PER_QUERY} owners
(C{ownerName IN (...)}), and a second one for what was deactivated; each
page's items are split by their C{ownerName} and labelled as the owner's
own listing would label them.  A delta of a C{*} source then costs a few
requests however many owners the API user sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from .listing import JSONGetter, Listing, v3_listing
from .parse import ParsedPage, parse_generic_page
from .tql import build_tql, indicators_target, ordered_types, with_since

if TYPE_CHECKING:
    from .pull import PullOptions

#: Owners named in one query (keeps its URL well below common limits).
OWNERS_PER_QUERY: Final = 50


def across_owners(client: JSONGetter, owners: Sequence[str], options: PullOptions) -> list[Listing]:
    """
    The listings of a v3 delta of C{owners}: per group of owners, the
    indicators modified since C{options.modified_since} and those
    deactivated since.
    """
    types = ordered_types(options.types)
    if not types or not owners:
        return []
    since = options.modified_since
    listings = []
    for at in range(0, len(owners), OWNERS_PER_QUERY):
        group = list(owners[at : at + OWNERS_PER_QUERY])
        changed = with_since(build_tql(owners=group, types=types), since)
        deactivated = with_since(
            build_tql(owners=group, types=types, active_only=False)
            + " AND indicatorActive EQ false",
            since,
        )
        for tql in (changed, deactivated):
            target = indicators_target(
                tql,
                start=0,
                limit=options.page_size,
                fields=options.fields,
                sorting=options.sorting,
            )
            label = f"{len(group)} owners {'/'.join(types)}"
            listings.append(
                v3_listing(client, label, target, _by_owner(options), options.effective_overlap)
            )
    return listings


def _by_owner(options: PullOptions) -> Any:
    """
    How a page of several owners is read: its items split by C{ownerName},
    each owner's parsed as that owner's own listing would be.  Items
    without an owner name cannot be labelled and are counted as skipped.
    """

    def parse(items: list[Any]) -> ParsedPage:
        groups: dict[str, list[Any]] = {}
        unnamed = 0
        for item in items:
            owner = item.get("ownerName") if isinstance(item, dict) else None
            if not isinstance(owner, str) or not owner.strip():
                unnamed += 1
                continue
            groups.setdefault(owner.strip(), []).append(item)
        pages = [
            parse_generic_page(
                group, options.label_prefix + owner, owner, active_only=options.active_only
            )
            for owner, group in groups.items()
        ]
        return ParsedPage(
            [batch for page in pages for batch in page.batches],
            unnamed + sum(page.skipped for page in pages),
            sum(page.inactive for page in pages),
            [batch for page in pages for batch in page.left_inactive],
        )

    return parse
