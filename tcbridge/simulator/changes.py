# -*- test-case-name: tests.unit.test_simulator_changes -*-
"""
Data that changes over time: ratings, confidences and tags changed (with or
without C{lastModified} moving, as in ThreatConnect, where a tag change
does not always move it), indicators deactivated, and indicators deleted.

The generated data set stays as it is; a L{Changes} overlay records, per
owner, type and item index, the item's state after its changes
(L{Changed}).  Listings select and render changed items from that state
(L{effective} for selection, L{patch} for their JSON), deleted items
leave every listing and appear in the deleted listings, and
L{Changes.churn} changes a given fraction of the items at random
(deterministically for a seed), for benchmarks of incremental syncs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from attrs import define, evolve, field, frozen

from tcbridge.simulator.slots import Slot
from tcbridge.simulator.tables import TYPED_TYPES

#: What a change can alter of an item, as named in L{Slot} and L{Changed}.
_STATE: Final = ("rating", "confidence", "tag_names", "active", "modified")

#: The tags churn picks from (besides the generated ones).
CHURN_TAGS: Final = ("Churned", "Reviewed", "Escalated", "Benign")


@frozen
class Changed:
    """
    One item's state after its changes.

    :ivar modified: its C{lastModified} (epoch seconds).
    :ivar deleted_at: when it was deleted, or C{None}.
    """

    rating: float | None
    confidence: int | None
    tag_names: tuple[str, ...]
    active: bool
    modified: int
    deleted_at: int | None = None

    @classmethod
    def of(cls, slot: Slot) -> Changed:
        """
        The unchanged state of an item of C{slot}.
        """
        return cls(slot.rating, slot.confidence, slot.tag_names, slot.active, slot.modified)


def effective(slot: Slot, changed: Changed) -> Slot:
    """
    The slot an item with C{changed} state is selected by.
    """
    return evolve(slot, **{name: getattr(changed, name) for name in _STATE})


def iso(t: int) -> str:
    """
    Epoch seconds as ThreatConnect's ISO form, C{2026-12-02T03:40:00Z}.
    """
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def patch(item: bytes, changed: Changed, form: str, tags: bool, tag_link: str) -> bytes:
    """
    The JSON of one item (C{form}: C{typed} or C{generic} for v2, C{v3})
    with its changed state; its tags if they were asked for (C{tags}), with
    links C{tag_link + name} on v2.
    """
    doc: dict[str, Any] = orjson.loads(item)
    for name, value in (("rating", changed.rating), ("confidence", changed.confidence)):
        if value is None:
            doc.pop(name, None)
        else:
            doc[name] = value
    doc["lastModified"] = iso(changed.modified)
    if form == "v3":
        doc["active"] = changed.active
        if tags:
            if changed.tag_names:
                doc["tags"] = {"data": [{"name": name} for name in changed.tag_names]}
            else:
                doc.pop("tags", None)
    else:
        if changed.active:
            doc.pop("active", None)
        else:
            doc["active"] = False
    if form == "typed" and tags:
        if changed.tag_names:
            doc["tag"] = [{"name": n, "webLink": f"{tag_link}{n}"} for n in changed.tag_names]
        else:
            doc.pop("tag", None)
    return orjson.dumps(doc)


@define
class Changes:
    """
    The changes made to a data set, by C{(owner, type)} and item index.

    :ivar version: counts every change, so cached pages can tell.
    """

    by_listing: dict[tuple[str, str], dict[int, Changed]] = field(factory=dict)
    version: int = 0

    def of(self, owner: str, type: str) -> dict[int, Changed]:
        """
        The changed items of one owner and type (empty if none).
        """
        return self.by_listing.get((owner, type), {})

    def record(self, owner: str, type: str, index: int, changed: Changed) -> None:
        """
        Record the new state of an item.
        """
        self.by_listing.setdefault((owner, type), {})[index] = changed
        self.version += 1

    def deleted(self, owner: str, type: str | None = None) -> Iterator[tuple[str, int, Changed]]:
        """
        The deleted items of C{owner} (of C{type}, if given), in type then
        index order, as C{(type, index, state)}.
        """
        for (o, t), items in sorted(self.by_listing.items()):
            if o == owner and (type is None or t == type):
                for index in sorted(items):
                    if items[index].deleted_at is not None:
                        yield t, index, items[index]


def churn_plan(
    counts: Sequence[tuple[str, str, int]], fraction: float, seed: int
) -> list[tuple[str, str, int, str]]:
    """
    Which items a churn of C{fraction} changes and how: C{(owner, type,
    index, what)}, C{what} one of C{rating}, C{confidence}, C{tags},
    C{tags-quiet} (without C{lastModified} moving), C{deactivate},
    C{delete}; the same for the same seed.

    :param counts: C{(owner, type, item count)} of the per-type listings.
    """
    rng = random.Random(seed)
    total = sum(n for _, _, n in counts)
    wanted = min(total, round(total * fraction))
    picked: set[tuple[str, str, int]] = set()
    while len(picked) < wanted:
        at = rng.randrange(total)
        for owner, type, n in counts:
            if at < n:
                picked.add((owner, type, at))
                break
            at -= n
    kinds = (
        ("rating",) * 8
        + ("confidence",) * 4
        + ("tags", "tags-quiet") * 2
        + (
            "deactivate",
            "deactivate",
            "delete",
            "delete",
            "delete",
        )
    )
    return [(o, t, i, rng.choice(kinds)) for o, t, i in sorted(picked)]


def apply_change(current: Changed, what: str, now: int, rng: random.Random) -> Changed:
    """
    The state after one change of kind C{what} (see L{churn_plan}) at
    C{now}.
    """
    if what == "rating":
        rating = rng.choice([r / 2 for r in range(11) if r / 2 != current.rating])
        return evolve(current, rating=rating, modified=now)
    if what == "confidence":
        return evolve(current, confidence=rng.randrange(101), modified=now)
    if what in ("tags", "tags-quiet"):
        tags = tuple(sorted({*current.tag_names, rng.choice(CHURN_TAGS)}))
        return evolve(current, tag_names=tags, modified=now if what == "tags" else current.modified)
    if what == "deactivate":
        return evolve(current, active=False, modified=now)
    if what == "delete":
        return evolve(current, deleted_at=now)
    raise ValueError(f"unknown change {what!r}")


__all__ = [
    "CHURN_TAGS",
    "TYPED_TYPES",
    "Changed",
    "Changes",
    "apply_change",
    "churn_plan",
    "effective",
    "iso",
    "patch",
]
