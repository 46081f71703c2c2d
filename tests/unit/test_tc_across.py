"""
Tests for L{tcbridge.threatconnect.across}: a v3 delta of many owners in
few queries, its items labelled as each owner's own listing would label
them.
"""

from __future__ import annotations

from tcbridge.threatconnect import across
from tcbridge.threatconnect.pull import PullOptions


def _host(owner: object, host: str) -> dict[str, object]:
    item: dict[str, object] = {"type": "Host", "summary": host, "hostName": host, "id": 1}
    if owner is not None:
        item["ownerName"] = owner
    return item


def test_items_are_labelled_with_the_owner_list_spelling() -> None:
    """
    An item's owner is matched to the owner list without regard to case
    or surrounding space, and labelled (with a named instance's prefix) as
    the owner list spells it, as that owner's own listing labels it (the
    owner column keeps what ThreatConnect sent); an item of no listed
    owner is skipped.
    """
    parse = across._by_owner(["Acme Corp", "Other"], PullOptions(label_prefix="partner/"))
    page = parse(
        [_host(" acme corp", "a.example"), _host("Other", "b.example"), _host("X", "c.example")]
    )
    assert {(b.source, tuple(b.column("owners"))) for b in page.batches} == {
        ("partner/Acme Corp", ("acme corp",)),
        ("partner/Other", ("Other",)),
    }
    assert page.skipped == 1


def test_an_item_without_owner_belongs_to_a_lone_owner() -> None:
    """
    Without an owner name, an item belongs to the query's only owner; in
    a query of several owners it cannot be placed and is skipped.
    """
    alone = across._by_owner(["Acme Corp"], PullOptions())([_host(None, "a.example")])
    assert [b.source for b in alone.batches] == ["Acme Corp"]
    several = across._by_owner(["A", "B"], PullOptions())([_host(None, "a.example")])
    assert several.batches == [] and several.skipped == 1


def test_owners_are_grouped_by_count_and_by_length() -> None:
    """
    At most OWNERS_PER_QUERY owners, and at most NAMES_PER_QUERY characters
    of names, go into one query.
    """
    many = [f"Owner {n}" for n in range(120)]
    assert [len(g) for g in across._groups(many)] == [50, 50, 20]
    long = ["x" * 900, "y" * 900, "z" * 900]
    assert [len(g) for g in across._groups(long)] == [2, 1]
