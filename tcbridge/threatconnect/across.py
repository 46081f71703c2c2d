# -*- test-case-name: tests.unit.test_tc_pull -*-
"""
A v3 delta of many owners at once: rather than a query per owner, one TQL
query asks for what changed in up to L{OWNERS_PER_QUERY} owners
(C{ownerName IN (...)}), active and inactive alike (so that what was
deactivated leaves); each page's items are split by their C{ownerName}
and labelled as the owner's own listing would label them.  A delta of a C{*} source then costs a few
requests however many owners the API user sees (the deleted listings
are still asked for owner by owner).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from .listing import JSONGetter, Listing, v3_listing
from .parse import ParsedPage, parse_generic_page
from .tql import ANY_ACTIVE, build_tql, indicators_target, ordered_types, with_since

if TYPE_CHECKING:
    from .pull import PullOptions

#: Owners named in one query, and the characters their names may take
#: (keeps its URL well below common limits).
OWNERS_PER_QUERY: Final = 50
NAMES_PER_QUERY: Final = 2000


def across_owners(client: JSONGetter, owners: Sequence[str], options: PullOptions) -> list[Listing]:
    """
    The listings of a v3 delta of C{owners}: per group of owners, one of
    the indicators modified since C{options.modified_since}, active or
    not (the parser tells them apart).
    """
    types = ordered_types(options.types)
    if not types or not owners:
        return []
    since = options.modified_since
    listings = []
    for group in _groups(owners):
        tql = with_since(
            build_tql(owners=group, types=types, active_only=False) + " AND " + ANY_ACTIVE, since
        )
        target = indicators_target(
            tql, start=0, limit=options.page_size, fields=options.fields, sorting=options.sorting
        )
        label = f"{len(group)} owners {'/'.join(types)}"
        listings.append(
            v3_listing(client, label, target, _by_owner(group, options), options.effective_overlap)
        )
    return listings


def _groups(owners: Sequence[str]) -> list[list[str]]:
    """
    The owners in groups of at most L{OWNERS_PER_QUERY}, each group's names
    taking at most L{NAMES_PER_QUERY} characters (so that a query's URL
    stays short whatever the names).
    """
    groups: list[list[str]] = []
    length = 0
    for owner in owners:
        size = len(owner) + 3
        if not groups or len(groups[-1]) >= OWNERS_PER_QUERY or length + size > NAMES_PER_QUERY:
            groups.append([])
            length = 0
        groups[-1].append(owner)
        length += size
    return groups


def _by_owner(group: Sequence[str], options: PullOptions) -> Any:
    """
    How a page of the owners of C{group} is read: its items split by
    C{ownerName}, each owner's parsed as that owner's own listing would be
    (labelled and keyed by the owner's name as the owner list spells it).
    An item without an owner name belongs to the group's only owner, if it
    has one; an item of no owner of the group cannot be labelled and is
    counted as skipped.
    """
    spelled = {owner.strip().casefold(): owner for owner in group}
    only = group[0] if len(group) == 1 else None

    def parse(items: list[Any]) -> ParsedPage:
        groups: dict[str, list[Any]] = {}
        unnamed = 0
        for item in items:
            named = item.get("ownerName") if isinstance(item, dict) else None
            owner = spelled.get(named.strip().casefold()) if isinstance(named, str) else only
            if owner is None or not isinstance(item, dict):
                unnamed += 1
                continue
            groups.setdefault(owner, []).append(item)
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
