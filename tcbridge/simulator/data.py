# -*- test-case-name: tests.unit.test_simulator -*-
"""
The simulator's generated data set.

Nothing is stored per indicator: every item is computed on demand, and
deterministically, from C{(seed, owner, type, index)}, straight to JSON text
(no dicts, no serialiser) when the simulator serves a page.  Incidental
attributes (dates, rating, description...) repeat with a period of L{PERIOD}
items per owner and type and are computed once per period, so a data set of a
million indicators costs a few megabytes at most; ids and values are unique
per index.  The same seed always gives byte-identical pages.

Indicators are numbered per owner and per type.  The per-type listings serve
C{File}, C{Address} and C{Host}; the generic listing of an owner is the
concatenation, in that order, of its C{File}, C{Address}, C{Host}, C{URL} and
C{EmailAddress} indicators.

The data is deliberately untidy, the way ThreatConnect's is: ids that are
sometimes strings, three date forms, missing ratings and confidences, a few
invalid values (C{"zzzz..."} MD5s, C{999.x.y.z} addresses, C{bad_host..!}
host names), upper-case hashes, hostile descriptions, IPv6 addresses, and a
few values shared between owners.

About 2% of the indicators are I{inactive} (C{"active": false}): whether an
item is active depends only on its slot (its index modulo L{PERIOD}), so the
number of active items is exact and cheap to compute (L{Dataset.active_count},
L{Dataset.active_total}); L{Dataset.count} and L{Dataset.total} count every
item, active or not.  ThreatConnect hides inactive indicators by default, and
so does the simulator.

Selections (L{Run}, made by L{Dataset.run}) pick the items of one owner and
type that satisfy per-slot conditions (active, rating, dates, tags...) and an
optional per-item condition (the summary), as a slice of ranks mapped to
indexes arithmetically: no per-item work unless the per-item condition is
used.  A L{Front} describes items inserted at, or deleted from, the front of
a listing (the simulator's "changing data" fault).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from attrs import field, frozen

from tcbridge.simulator.changes import Changed, Changes, effective
from tcbridge.simulator.runs import Front, Run
from tcbridge.simulator.slots import Slot, _Listing
from tcbridge.simulator.tables import (
    _TYPE_CODE,
    DEFAULT_OWNERS,
    PERIOD,
    TYPES,
    _owner_type,
)


@frozen
class Dataset:
    """
    A generated, read-only set of indicators spread over owners and types.

    Build one with L{generate}.  Items are computed on demand, as JSON text
    (L{typed_json}, L{generic_json}) or as dicts (L{typed_item},
    L{generic_item}, L{typed_page}, L{generic_page}); nothing per item is
    kept.

    :ivar owners: the owner names, in L{generate}'s order.
    :ivar default_owner: the owner served when a request names none.
    :ivar seed: the seed every item is derived from.
    """

    owners: tuple[str, ...]
    default_owner: str
    seed: int
    _counts: tuple[tuple[int, ...], ...] = field(repr=False)
    _owner_index: dict[str, int] = field(eq=False, repr=False)
    _listings: dict[tuple[int, int], _Listing] = field(eq=False, repr=False, factory=dict)
    #: what changed since the data set was generated (L{tcbridge.simulator.changes})
    changes: Changes = field(eq=False, repr=False, factory=Changes)

    def owner_type(self, owner: str) -> str:
        """
        Return the ThreatConnect owner type of C{owner}: C{"Organization"},
        C{"Community"} or C{"Source"}.

        :raises KeyError: for an unknown owner.
        """
        self._owner_index[owner]
        return _owner_type(owner)

    def owner_id(self, owner: str) -> int:
        """
        Return the numeric ThreatConnect id of C{owner}.

        :raises KeyError: for an unknown owner.
        """
        return self._owner_index[owner] + 1

    def count(self, owner: str, type: str) -> int:
        """
        Return how many indicators of ThreatConnect type C{type} (C{"File"},
        C{"Address"}, C{"Host"}, C{"URL"} or C{"EmailAddress"}) C{owner} has.

        :raises KeyError: for an unknown owner or type.
        """
        return self._counts[self._owner_index[owner]][_TYPE_CODE[type]]

    def total(self, owner: str) -> int:
        """
        Return how many indicators of all types C{owner} has: the length of
        its generic (C{/v2/indicators}) listing.

        :raises KeyError: for an unknown owner.
        """
        return sum(self._counts[self._owner_index[owner]])

    def active_count(self, owner: str, type: str) -> int:
        """
        Return how many of C{owner}'s C{type} indicators are active: the
        length of its v2 per-type listing, and of the v3 listing for that
        owner and type, when nothing is filtered and no fault has changed the
        data.  The inactive ones are C{count(owner, type) - active_count(owner,
        type)}.

        :raises KeyError: for an unknown owner or type.
        """
        o = self._owner_index[owner]
        code = _TYPE_CODE[type]
        listing = self._listing(o, code)
        return listing.rank(listing.active_mask(True), self._counts[o][code])

    def active_total(self, owner: str) -> int:
        """
        Return how many of C{owner}'s indicators of all types are active: the
        length of its generic (C{/v2/indicators}) listing, or of its v3
        listing without a type condition.

        :raises KeyError: for an unknown owner.
        """
        return sum(self.active_count(owner, type) for type in TYPES)

    def is_active(self, owner: str, type: str, index: int) -> bool:
        """
        Say whether indicator number C{index} of C{owner}'s C{type}
        indicators is active.

        :raises KeyError: for an unknown owner or type.
        """
        listing = self._listing(self._owner_index[owner], _TYPE_CODE[type])
        return index % PERIOD in listing.active_set()

    def active_indexes(self, owner: str, type: str) -> list[int]:
        """
        Return the indexes of C{owner}'s active C{type} indicators, in order
        (what an unfiltered listing serves, before any fault).

        :raises KeyError: for an unknown owner or type.
        """
        o = self._owner_index[owner]
        code = _TYPE_CODE[type]
        listing = self._listing(o, code)
        mask = listing.active_mask(True)
        return list(listing.indexes(mask, 0, listing.rank(mask, self._counts[o][code])))

    def v3_item(
        self, owner: str, type: str, index: int, tags: bool = False, assess: bool = False
    ) -> dict[str, Any]:
        """
        Return indicator number C{index} of C{owner}'s C{type} indicators as
        C{/v3/indicators} serves it.  Indexes past L{count} are allowed: they
        are the items a "changing" fault inserts.

        :param tags: add C{tags} (C{fields=tags}).
        :param assess: add the threat assessment (C{fields=threatAssess}).
        :raises KeyError: for an unknown owner or type.
        """
        listing = self._listing(self._owner_index[owner], _TYPE_CODE[type])
        item: dict[str, Any] = orjson.loads(b"[" + listing.v3([index], tags, assess) + b"]")[0]
        return item

    def run(
        self,
        owner: str,
        type: str,
        key: object,
        slot_test: Callable[[Slot], bool],
        item_test: Callable[[str], bool] | None = None,
        front: Front | None = None,
        item_key: object = None,
    ) -> Run:
        """
        Select C{owner}'s C{type} items whose slot passes C{slot_test} (and,
        if given, whose summary passes C{item_test}), with C{front} applied.

        :param key: a hashable name for C{slot_test}; masks are cached by it.
        :param item_key: a hashable name for C{item_test}; the items that
            pass it are cached by it (a scan of the whole listing otherwise).
        :raises KeyError: for an unknown owner or type.
        """
        o = self._owner_index[owner]
        code = _TYPE_CODE[type]
        n = self._counts[o][code]
        listing = self._listing(o, code)
        mask = listing.mask(key, slot_test)
        front = front or Front()
        head: list[int] = []
        if front.added:
            mask_set = frozenset(mask)
            for index in reversed(listing.new_items(n, front.added)):
                if index % PERIOD in mask_set and (
                    item_test is None or item_test(listing.summary(index))
                ):
                    head.append(index)
        lo = listing.rank(mask, min(front.cut, n))
        hi = listing.rank(mask, n)
        explicit: list[int] | None = None
        if item_test is not None:
            cache_key = (key, item_key, lo, hi)
            explicit = listing.explicit.get(cache_key) if item_key is not None else None
            if explicit is None:
                explicit = [
                    i for i in listing.indexes(mask, lo, hi) if item_test(listing.summary(i))
                ]
                if item_key is not None:
                    if len(listing.explicit) >= 16:
                        listing.explicit.clear()
                    listing.explicit[cache_key] = explicit
        changed = self.changes.of(owner, type)
        if changed:
            base = explicit if explicit is not None else listing.indexes(mask, lo, hi)
            explicit = self._with_changes(
                listing, changed, (key, item_key, lo, hi, front), base, slot_test, item_test
            )
            cut = min(front.cut, n)
            explicit = [i for i in explicit if i >= cut]
        return Run(owner, type, listing, head, mask, lo, hi, explicit, changed)

    def summary(self, owner: str, type: str, index: int) -> str:
        """
        The summary (generic form's value) of item C{index} of C{owner}'s
        C{type} listing.
        """
        return self._listing(self._owner_index[owner], _TYPE_CODE[type]).summary(index)

    def item_slot(self, owner: str, type: str, index: int) -> Slot:
        """
        The generated slot of item C{index} of C{owner}'s C{type} listing.

        :raises KeyError: for an unknown owner or type.
        :raises IndexError: for an index beyond the listing.
        """
        o = self._owner_index[owner]
        code = _TYPE_CODE[type]
        if not 0 <= index < self._counts[o][code]:
            raise IndexError(f"{owner} has no {type} item {index}")
        return self._listing(o, code).slot(index)

    def _with_changes(
        self,
        listing: _Listing,
        changed: dict[int, Changed],
        key: object,
        base: Sequence[int],
        slot_test: Callable[[Slot], bool],
        item_test: Callable[[str], bool] | None,
    ) -> list[int]:
        """
        The generated items a selection takes when some items changed: those
        of C{base} (what it takes from the generated data) that did not
        change, and the changed ones (not deleted) whose new state passes
        C{slot_test} (and C{item_test}), in index order.  Cached per
        selection and change count.
        """
        cache_key = ("changes", key, self.changes.version)
        found = listing.explicit.get(cache_key)
        if found is not None:
            return found
        kept = [i for i in base if i not in changed]
        for index, state in changed.items():
            if state.deleted_at is not None:
                continue
            slot = effective(listing.slot(index), state)
            if slot_test(slot) and (item_test is None or item_test(listing.summary(index))):
                kept.append(index)
        kept.sort()
        if len(listing.explicit) >= 16:
            listing.explicit.clear()
        listing.explicit[cache_key] = kept
        return kept

    def shift_front(self, owner: str, type: str, front: Front, shift: int) -> Front:
        """
        Return C{front} after C{shift} items appear at (positive) or disappear
        from (negative) the front of C{owner}'s active C{type} listing.

        New items are the active items past the end of the generated data,
        the newest first; deletions take the newest new items first, then the
        first active items of the data (and any inactive ones before them).

        :raises KeyError: for an unknown owner or type.
        """
        if shift >= 0:
            return Front(front.added + shift, front.cut)
        o = self._owner_index[owner]
        code = _TYPE_CODE[type]
        n = self._counts[o][code]
        listing = self._listing(o, code)
        gone = -shift
        take = min(front.added, gone)
        added, gone = front.added - take, gone - take
        cut = front.cut
        if gone:
            mask = listing.active_mask(True)
            target = listing.rank(mask, min(cut, n)) + gone - 1
            cut = n if target >= listing.rank(mask, n) else listing.index(mask, target) + 1
        return Front(added, cut)

    def typed_item(self, owner: str, type: str, index: int) -> dict[str, Any]:
        """
        Return indicator number C{index} of C{owner}'s C{type} indicators, as
        a v2 per-type listing (C{/v2/indicators/<branch>}) serves it with
        C{includes=tags}.

        :raises KeyError: for an unknown owner or type.
        :raises IndexError: if C{index} is not below L{count}.
        """
        if not 0 <= index < self.count(owner, type):
            raise IndexError(f"{type} index {index} out of range for {owner!r}")
        item: dict[str, Any] = orjson.loads(self.typed_json(owner, type, index, 1))[0]
        return item

    def generic_item(self, owner: str, index: int) -> dict[str, Any]:
        """
        Return item number C{index} of C{owner}'s generic listing
        (C{/v2/indicators}, C{/v1/indicators}): the common fields plus C{type}
        and C{summary}.  A file's summary joins the hashes it has with
        C{" : "} in the order md5, sha1, sha256.

        :raises KeyError: for an unknown owner.
        :raises IndexError: if C{index} is not below L{total}.
        """
        if not 0 <= index < self.total(owner):
            raise IndexError(f"generic index {index} out of range for {owner!r}")
        item: dict[str, Any] = orjson.loads(self.generic_json(owner, index, 1))[0]
        return item

    def typed_page(
        self, owner: str, type: str, start: int, limit: int, tags: bool = True
    ) -> list[dict[str, Any]]:
        """
        Return up to C{limit} items of L{typed_item} from C{start} on (an
        empty list past the end).

        :param tags: include the C{tag} lists (ThreatConnect sends them only
            when asked with C{includes=tags}).
        :raises KeyError: for an unknown owner or type.
        """
        items: list[dict[str, Any]] = orjson.loads(self.typed_json(owner, type, start, limit, tags))
        return items

    def generic_page(self, owner: str, start: int, limit: int) -> list[dict[str, Any]]:
        """
        Return up to C{limit} items of L{generic_item} from C{start} on (an
        empty list past the end).

        :raises KeyError: for an unknown owner.
        """
        items: list[dict[str, Any]] = orjson.loads(self.generic_json(owner, start, limit))
        return items

    def typed_json(self, owner: str, type: str, start: int, limit: int, tags: bool = True) -> bytes:
        """
        Return L{typed_page} as UTF-8 JSON text (an array), without building
        dicts: this is what the simulator serves.

        :raises KeyError: for an unknown owner or type.
        """
        o = self._owner_index[owner]
        code = _TYPE_CODE[type]
        stop = min(start + limit, self._counts[o][code])
        if start >= stop:
            return b"[]"
        return b"".join([b"[", self._listing(o, code).typed(max(start, 0), stop, tags), b"]"])

    def generic_json(self, owner: str, start: int, limit: int) -> bytes:
        """
        Return L{generic_page} as UTF-8 JSON text (an array), without building
        dicts.

        :raises KeyError: for an unknown owner.
        """
        o = self._owner_index[owner]
        parts: list[bytes] = []
        start = max(start, 0)
        stop = start + limit
        offset = 0
        for code, n in enumerate(self._counts[o]):
            lo = max(start - offset, 0)
            hi = min(stop - offset, n)
            if lo < hi:
                parts.append(self._listing(o, code).generic(lo, hi))
            offset += n
            if offset >= stop:
                break
        return b"".join([b"[", b",".join(parts), b"]"])

    def _listing(self, o: int, code: int) -> _Listing:
        """
        Return the (cached) generator for owner number C{o}, type C{code}.
        """
        listing = self._listings.get((o, code))
        if listing is None:
            listing = self._listings[(o, code)] = _Listing(self, o, code)
        return listing


def generate(
    count: int,
    owners: Sequence[str] = DEFAULT_OWNERS,
    seed: int = 1,
    default_owner: str | None = None,
) -> Dataset:
    """
    Describe a data set of C{count} File, Address and Host indicators split
    evenly over C{owners} (the first owners take the remainder), and within
    each owner about 40% File, 30% Address and 30% Host.  Each non-empty owner
    also has a few C{URL} and C{EmailAddress} indicators (not counted in
    C{count}) that only the generic listings serve.

    :param count: File, Address and Host indicators in all owners together.
    :param owners: owner names, unique.
    :param seed: every item is a function of the seed, owner, type and index.
    :param default_owner: the owner served when a request names none;
        the first owner if not given.
    :raises ValueError: for a negative count, no owners, duplicate owners or
        a default owner that is not one of them.
    """
    names = tuple(owners)
    if count < 0:
        raise ValueError("count must not be negative")
    if not names:
        raise ValueError("at least one owner is needed")
    if len(set(names)) != len(names):
        raise ValueError("owner names must be unique")
    default = names[0] if default_owner is None else default_owner
    if default not in names:
        raise ValueError(f"default owner {default!r} is not one of the owners")
    per, extra = divmod(count, len(names))
    counts = []
    for i in range(len(names)):
        n = per + (1 if i < extra else 0)
        files = n * 4 // 10
        addresses = n * 3 // 10
        few = min(20, 1 + n // 200) if n else 0
        counts.append((files, addresses, n - files - addresses, few, few))
    return Dataset(
        owners=names,
        default_owner=default,
        seed=seed,
        counts=tuple(counts),
        owner_index={name: i for i, name in enumerate(names)},
    )
