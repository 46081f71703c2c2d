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

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import Any, Final
from urllib.parse import quote, quote_plus

import orjson
from attrs import field, frozen

#: ThreatConnect type names, in the order the generic listing serves them.
TYPES: Final = ("File", "Address", "Host", "URL", "EmailAddress")

#: The types that have their own C{/v2/indicators/<branch>} listing.
TYPED_TYPES: Final = ("File", "Address", "Host")

#: Owner names used when none are given.
DEFAULT_OWNERS: Final = ("Common Community", "Example Organization", "Subscriber Community")

_WEB: Final = "https://app.threatconnect.com/auth"
_V3_WEB: Final = "https://app.threatconnect.com/#/details/indicators/"

# 2014-01-01T00:00:00Z, and about nine years after it.
_BASE_EPOCH: Final = 1388534400
_DATE_SPAN: Final = 9 * 365 * 86400
_MODIFIED_SPAN: Final = 400 * 86400

# First octets for generated IPv4 addresses: public unicast only, so that a
# feed validator that refuses private or loopback space does not skew counts.
_FIRST_OCTETS: Final = tuple(
    o for o in range(1, 224) if o not in (10, 100, 127, 169, 172, 192, 198, 203)
)
_IPV4_SPACE: Final = len(_FIRST_OCTETS) << 24
_IPV4_STEP: Final = 2654435761  # prime, hence coprime with _IPV4_SPACE

_WORDS_A: Final = (
    "amber",
    "blue",
    "crimson",
    "dark",
    "early",
    "fast",
    "green",
    "hidden",
    "iron",
    "jade",
    "keen",
    "lunar",
    "mellow",
    "night",
    "olive",
    "proud",
    "quiet",
    "rapid",
    "silent",
    "tidal",
    "urban",
    "violet",
    "wild",
    "young",
    "zesty",
    "cold",
    "bright",
    "hollow",
    "golden",
    "misty",
    "stormy",
    "frozen",
)
_WORDS_B: Final = (
    "panda",
    "falcon",
    "update",
    "cdn",
    "mail",
    "login",
    "secure",
    "portal",
    "cloud",
    "files",
    "static",
    "api",
    "sync",
    "drive",
    "office",
    "bank",
    "shop",
    "news",
    "media",
    "track",
    "stats",
    "verify",
    "account",
    "support",
    "service",
    "gate",
    "relay",
    "node",
    "proxy",
    "host",
    "data",
    "share",
)
_TLDS: Final = ("com", "net", "org", "info", "biz", "ru", "cn", "io", "xyz", "top", "co.uk", "de")

_DESCRIPTIONS: Final = (
    "Observed in phishing campaign targeting finance departments.",
    "C2 infrastructure associated with commodity malware.",
    "Reported by a community member; not independently verified.",
    "Seen in sandbox detonation of a malicious Office document.",
    "Downloader stage; drops a second-stage payload.",
    "Sinkholed domain, kept for historical correlation.",
    "Ünïcødé campaign — 攻撃 indicator (non-ASCII text).",
    'Related to the 2019 "invoice" wave; see report TC-1234.',
)
_HOSTILE_DESCRIPTION: Final = '<script>alert("x")</script> & <b>bold</b>'

_TAGS: Final = (
    "China",
    "APT28",
    "Phishing",
    "Ransomware",
    "Botnet",
    "C2",
    "Targeted Attack",
    "Malware",
    "Banking Trojan",
    "Exploit Kit",
)

_TYPE_CODE: Final = {name: code for code, name in enumerate(TYPES)}
_RATINGS: Final = tuple(i * 0.5 for i in range(11))

# Lookup tables for fast date formatting: "YYYY-MM-DDT" per day of the data
# set's span (with a day's margin for the -04:00 form), "HH:MM:" per minute
# of a day, "SS" per second.
_DAY0: Final = _BASE_EPOCH // 86400 - 1
_DAYS: Final = tuple(
    time.strftime("%Y-%m-%dT", time.gmtime((_DAY0 + i) * 86400))
    for i in range((_DATE_SPAN + _MODIFIED_SPAN) // 86400 + 3)
)
_HHMM: Final = tuple(f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
_SS: Final = tuple(f"{s:02d}" for s in range(60))


def _stamp(t: int, form: int) -> str:
    """
    Format epoch seconds C{t} as ThreatConnect does, in one of three forms:
    0, no zone; 1, C{Z}; 2, a C{-04:00} offset (the same instant).
    """
    if form == 2:
        day, sec = divmod(t - 14400, 86400)
        return f"{_DAYS[day - _DAY0]}{_HHMM[sec // 60]}{_SS[sec % 60]}-04:00"
    day, sec = divmod(t, 86400)
    if form == 1:
        return f"{_DAYS[day - _DAY0]}{_HHMM[sec // 60]}{_SS[sec % 60]}Z"
    return f"{_DAYS[day - _DAY0]}{_HHMM[sec // 60]}{_SS[sec % 60]}"


def _owner_type(name: str) -> str:
    """
    Guess a plausible ThreatConnect owner type from an owner name.
    """
    if "Organization" in name or "Org" in name.split():
        return "Organization"
    if "Source" in name or "Feed" in name:
        return "Source"
    return "Community"


#: Items of one owner and type repeat their incidental attributes (dates,
#: rating, confidence, description, tags, which hashes a file has, whether a
#: value is invalid or shared...) with this period; ids and values are unique
#: per index.  The attributes of one period are computed once, when first
#: needed, which makes serving a page several times faster.
PERIOD: Final = 1024

#: A slot is inactive when a byte of its digest is below this: 5/256, ~2%.
_INACTIVE_BELOW: Final = 5

#: Masks cached per listing, at most.
_MAX_MASKS: Final = 256


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
        return Run(owner, type, listing, head, mask, lo, hi, explicit)

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


@frozen
class Slot:
    """
    The incidental attributes shared by the items of one owner and type
    whose index is the same modulo L{PERIOD}, as JSON fragments.

    :ivar id_text: C{'"{}"'} (the id as a string) or C{"{}"} (a number).
    :ivar head: from C{,"ownerName"} to the opening quote of C{webLink}'s
        value, then the link's start (typed form).
    :ivar generic_head: the same with C{"type"} (generic form).
    :ivar tail: the description, if any.
    :ivar tags: the C{tag} list, if any.
    :ivar invalid: the value is deliberately invalid.
    :ivar shared: the value is the first owner's value at the same index.
    :ivar variant: type-specific: for a file, which hashes it has (0: md5;
        1: sha256; 2: all three; 3: md5 and sha256; 4: sha1); for an address,
        1 for IPv6; for a host, the C{dnsActive}/C{whoisActive} fragment.
    :ivar upper: file hashes are upper case.
    :ivar size: a file has a C{size}.
    :ivar words: C{"adjective-noun"} for host names.
    :ivar tld: top-level domain for host names.
    :ivar word2: C{"adjective.noun"} for e-mail addresses and URL paths.
    :ivar byte: a small number that varies between slots.
    :ivar active: the items are active (about 98% of slots).
    :ivar added: C{dateAdded}, epoch seconds.
    :ivar modified: C{lastModified}, epoch seconds.
    :ivar rating: the rating, or C{None} when unset.
    :ivar confidence: the confidence, or C{None} when unset.
    :ivar tag_names: the tags' names.
    :ivar v3_head: v3 form, from C{,"ownerId"} to C{"type"}'s value.
    :ivar v3_mid: v3 form, from C{,"rating"} to C{"activeLocked"}.
    :ivar v3_tags: v3 C{,"tags":{...}} (C{fields=tags}), or C{""}.
    :ivar v3_assess: v3 threat assessment fields (C{fields=threatAssess}).
    :ivar v3_variant: v3 host C{dnsActive}/C{whoisActive} (booleans).
    """

    id_text: str
    head: str
    generic_head: str
    tail: str
    tags: str
    invalid: bool
    shared: bool
    variant: int | str
    upper: bool
    size: bool
    words: str
    tld: str
    word2: str
    byte: int
    active: bool
    added: int
    modified: int
    rating: float | None
    confidence: int | None
    tag_names: tuple[str, ...]
    v3_head: str
    v3_mid: str
    v3_tags: str
    v3_assess: str
    v3_variant: str


class _Listing:
    """
    Generates the items of one owner and type as JSON text.
    """

    def __init__(self, ds: Dataset, o: int, code: int) -> None:
        """
        Bind the constants of owner number C{o} and type C{code} of C{ds}.
        """
        owner = ds.owners[o]
        type = TYPES[code]
        self._o = o
        self._code = code
        self._seed = ds.seed
        self._n_owners = len(ds.owners)
        self._owner_json = orjson.dumps(owner).decode()
        self._type_json = orjson.dumps(type).decode()
        owner_q = quote_plus(owner)
        self._link_base = f"{_WEB}/indicators/details/{_LINK_PAGES[code]}"
        self._link_owner = f"&owner={owner_q}"
        self._tag_links = tuple(
            f"{_WEB}/tags/tag.xhtml?tag={quote(tag)}&owner={owner_q}" for tag in _TAGS
        )
        self._prefix = f"{ds.seed}\x00{owner}\x00{type}\x00".encode()
        self._prefix0 = f"{ds.seed}\x00{ds.owners[0]}\x00{type}\x00".encode()
        self._value_prefix = f"{ds.seed}\x00\x00{type}\x00".encode()
        self._id_base = ((o * 5 + code) << 28) + 1000
        self._v6_heads = tuple(
            f"2a02:{vo + 1:x}{ds.seed % 4096:03x}:" for vo in range(len(ds.owners))
        )
        self._slots: list[Slot | None] = [None] * PERIOD
        self._active: dict[bool, tuple[int, ...]] = {}
        self._masks: dict[object, tuple[int, ...]] = {}
        self.explicit: dict[object, list[int]] = {}

    def active_mask(self, active: bool) -> tuple[int, ...]:
        """
        Return the slots whose items are active (C{active}) or inactive, in
        order.  Only the digests are computed, not the slots.
        """
        mask = self._active.get(active)
        if mask is None:
            flags = [
                blake2b(self._prefix + b"#%d" % j, digest_size=32).digest()[21] >= _INACTIVE_BELOW
                for j in range(PERIOD)
            ]
            self._active[True] = tuple(j for j in range(PERIOD) if flags[j])
            self._active[False] = tuple(j for j in range(PERIOD) if not flags[j])
            mask = self._active[active]
        return mask

    def active_set(self) -> frozenset[int]:
        """
        Return the active slots as a set.
        """
        return frozenset(self.active_mask(True))

    def mask(self, key: object, test: Callable[[Slot], bool]) -> tuple[int, ...]:
        """
        Return the slots that pass C{test}, in order, cached under C{key}.
        """
        mask = self._masks.get(key)
        if mask is None:
            if len(self._masks) >= _MAX_MASKS:
                self._masks.clear()
            mask = self._masks[key] = tuple(j for j in range(PERIOD) if test(self._slot(j)))
        return mask

    @staticmethod
    def rank(mask: Sequence[int], index: int) -> int:
        """
        Return how many indexes below C{index} have their slot in C{mask}.
        """
        full, rest = divmod(index, PERIOD)
        return full * len(mask) + bisect_left(mask, rest)

    @staticmethod
    def index(mask: Sequence[int], rank: int) -> int:
        """
        Return the index of rank C{rank} among the indexes whose slot is in
        C{mask} (which must not be empty).
        """
        full, rest = divmod(rank, len(mask))
        return full * PERIOD + mask[rest]

    @staticmethod
    def indexes(mask: Sequence[int], lo: int, hi: int) -> Sequence[int]:
        """
        Return the indexes of ranks C{lo} to C{hi} (exclusive) among those
        whose slot is in C{mask}.
        """
        k = len(mask)
        if k == PERIOD:
            return range(lo, hi)
        if hi <= lo:
            return []
        return [(r // k) * PERIOD + mask[r % k] for r in range(lo, hi)]

    def new_items(self, n: int, added: int) -> list[int]:
        """
        Return the indexes of the first C{added} active items past C{n}: the
        items a "changing" fault inserts, oldest first.
        """
        mask = self.active_mask(True)
        if not mask or added <= 0:
            return []
        first = self.rank(mask, n)
        return [self.index(mask, first + k) for k in range(added)]

    def summary(self, index: int) -> str:
        """
        Return the summary (generic form's value) of item C{index}.
        """
        return self._value(index, self._slot(index % PERIOD))[2]

    def _slot(self, j: int) -> Slot:
        """
        Return slot C{j}, computing it the first time.
        """
        slot = self._slots[j]
        if slot is None:
            slot = self._slots[j] = self._make_slot(j)
        return slot

    def _make_slot(self, j: int) -> Slot:
        """
        Compute slot C{j} from a digest of C{(seed, owner, type, j)}, and the
        owner-independent parts of values from one of C{(seed, type, j)}.
        """
        d = blake2b(self._prefix + b"#%d" % j, digest_size=32).digest()
        v = blake2b(self._value_prefix + b"#%d" % j, digest_size=32).digest()
        added = _BASE_EPOCH + int.from_bytes(d[3:7], "big") % _DATE_SPAN
        modified = added + int.from_bytes(d[7:10], "big") % _MODIFIED_SPAN
        form = d[2] % 3
        common = f',"dateAdded":"{_stamp(added, form)}","lastModified":"{_stamp(modified, form)}"'
        rating: float | None = None
        confidence: int | None = None
        mid = ""
        if d[10] >= 13:
            rating = _RATINGS[d[11] % 11]
            common += f',"rating":{orjson.dumps(rating).decode()}'
        if d[12] >= 13:
            confidence = d[13] % 101
            common += f',"confidence":{confidence}'
        mid = common[common.index('"lastModified"') :].partition(",")[2]
        mid = f",{mid}" if mid else ""
        common += f',"webLink":"{self._link_base}'
        tail = ""
        if d[14] < 4:
            tail = f',"description":{orjson.dumps(_HOSTILE_DESCRIPTION).decode()}'
        elif d[14] < 80:
            text = _DESCRIPTIONS[d[15] % len(_DESCRIPTIONS)]
            tail = f',"description":{orjson.dumps(text).decode()}'
        tags = ""
        chosen: list[int] = []
        v3_tags = ""
        if d[24] < 64:
            first = d[25] % len(_TAGS)
            chosen = [first]
            if d[24] < 24:
                chosen.append((first + 1 + d[26] % (len(_TAGS) - 1)) % len(_TAGS))
            tag_list = [{"name": _TAGS[t], "webLink": self._tag_links[t]} for t in chosen]
            tags = f',"tag":{orjson.dumps(tag_list).decode()}'
            v3_list = [{"id": t + 11, "name": _TAGS[t]} for t in chosen]
            v3_tags = f',"tags":{{"data":{orjson.dumps(v3_list).decode()}}}'
        active = d[21] >= _INACTIVE_BELOW
        assess_rating = round(d[22] * 5 / 255, 2)
        v3_assess = (
            f',"threatAssessRating":{orjson.dumps(assess_rating).decode()}'
            f',"threatAssessConfidence":{d[23] % 101}'
            f',"threatAssessScore":{int.from_bytes(d[27:29], "big") % 1001}'
            f',"threatAssessScoreObserved":{d[28] % 101}'
            f',"threatAssessScoreFalsePositive":0'
        )
        v3_mid = (
            f'{mid}{tail},"privateFlag":false,"active":{"true" if active else "false"}'
            ',"activeLocked":false'
        )
        v3_variant = ""
        variant: int | str = 0
        if self._code == 0:
            pick = d[16] % 100
            variant = (
                0 if pick < 30 else 1 if pick < 55 else 2 if pick < 90 else 3 if pick < 97 else 4
            )
        elif self._code == 1:
            variant = 1 if d[16] < 26 else 0
        elif self._code == 2:
            dns = "true" if d[16] < 230 else "false"
            whois = "true" if d[17] < 150 else "false"
            variant = f',"dnsActive":"{dns}","whoisActive":"{whois}"'
            v3_variant = f',"dnsActive":{dns},"whoisActive":{whois}'
        return Slot(
            id_text='"{}"' if d[1] < 26 else "{}",
            head=f',"ownerName":{self._owner_json}{common}',
            generic_head=f',"ownerName":{self._owner_json},"type":{self._type_json}{common}',
            tail=tail,
            tags=tags,
            invalid=d[0] < 4,
            shared=self._o > 0 and d[20] < 3,
            variant=variant,
            upper=d[18] < 51,
            size=d[19] < 128,
            words=f"{_WORDS_A[v[0] % 32]}-{_WORDS_B[v[1] % 32]}",
            tld=_TLDS[v[2] % len(_TLDS)],
            word2=f"{_WORDS_A[v[3] % 32]}.{_WORDS_B[v[4] % 32]}",
            byte=v[5],
            active=active,
            added=added,
            modified=modified,
            rating=rating,
            confidence=confidence,
            tag_names=tuple(_TAGS[t] for t in chosen),
            v3_head=(
                f',"ownerId":{self._o + 1},"ownerName":{self._owner_json}'
                f',"dateAdded":"{_stamp(added, 1)}","lastModified":"{_stamp(modified, 1)}"'
                f',"type":{self._type_json}'
            ),
            v3_mid=v3_mid,
            v3_tags=v3_tags,
            v3_assess=v3_assess,
            v3_variant=v3_variant,
        )

    def _value(self, index: int, slot: Slot) -> tuple[str, str, str]:
        """
        Return C{(link value, type-specific fields, summary)} of item C{index}.
        """
        code = self._code
        vo = 0 if slot.shared else self._o
        if code == 0:
            prefix = self._prefix0 if slot.shared else self._prefix
            h = blake2b(prefix + b"%d" % index, digest_size=64).hexdigest()
            size = f',"size":{1024 + int(h[100:106], 16)}' if slot.size else ""
            variant = slot.variant
            if slot.invalid:
                md5 = "zzzz" + h[68:96]
                return md5, f',"md5":"{md5}"{size}', md5
            if slot.upper:
                h = h.upper()
            if variant == 0:
                md5 = h[64:96]
                return md5, f',"md5":"{md5}"{size}', md5
            if variant == 1:
                sha256 = h[:64]
                return sha256, f',"sha256":"{sha256}"{size}', sha256
            if variant == 2:
                md5, sha1, sha256 = h[64:96], h[88:128], h[:64]
                return (
                    md5,
                    f',"md5":"{md5}","sha1":"{sha1}","sha256":"{sha256}"{size}',
                    f"{md5} : {sha1} : {sha256}",
                )
            if variant == 3:
                md5, sha256 = h[64:96], h[:64]
                return md5, f',"md5":"{md5}","sha256":"{sha256}"{size}', f"{md5} : {sha256}"
            sha1 = h[88:128]
            return sha1, f',"sha1":"{sha1}"{size}', sha1
        if code == 1:
            if slot.invalid:
                ip = f"999.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
            elif slot.variant:
                ip = f"{self._v6_heads[vo]}{index >> 16:x}:{index & 0xFFFF:x}::{slot.byte:x}"
            else:
                n = (index * _IPV4_STEP + vo * 1000003 + self._seed * 7919) % _IPV4_SPACE
                ip = f"{_FIRST_OCTETS[n >> 24]}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
            return ip, f',"ip":"{ip}"', ip
        host = f"{slot.words}{index * self._n_owners + vo:x}.{slot.tld}"
        if code == 2:
            if slot.invalid:
                host = f"bad_host{index}!.example"
            return host, f',"hostName":"{host}"{slot.variant}', host
        if code == 3:
            text = f"http://{host}/{slot.word2.partition('.')[2]}/{index}.php?id={slot.byte}"
            return str(self._id_base + index), f',"text":"{text}"', text
        address = f"{slot.word2}{index}@{host}"
        return address.replace("@", "%40"), f',"address":"{address}"', address

    def typed(self, start: int, stop: int, tags: bool) -> bytes:
        """
        Return items C{start} to C{stop} (exclusive) as comma-separated JSON
        objects in UTF-8, per-type form.
        """
        return self.typed_at(range(start, stop), tags)

    def typed_at(self, indexes: Sequence[int], tags: bool) -> bytes:
        """
        Return items C{indexes} as comma-separated JSON objects in UTF-8,
        per-type form.
        """
        slots = self._slots
        slot_of = self._slot
        value_of = self._value
        id_base = self._id_base
        link_owner = self._link_owner
        out = []
        for index in indexes:
            slot = slots[index % PERIOD] or slot_of(index % PERIOD)
            link, fields, _ = value_of(index, slot)
            ident = slot.id_text.format(id_base + index)
            extra = slot.tail + slot.tags if tags else slot.tail
            out.append(f'{{"id":{ident}{slot.head}{link}{link_owner}"{extra}{fields}}}'.encode())
        return b",".join(out)

    def generic(self, start: int, stop: int) -> bytes:
        """
        Return items C{start} to C{stop} (exclusive) as comma-separated JSON
        objects in UTF-8, generic form (C{type} and C{summary}).
        """
        return self.generic_at(range(start, stop))

    def generic_at(self, indexes: Sequence[int]) -> bytes:
        """
        Return items C{indexes} as comma-separated JSON objects in UTF-8,
        generic form.
        """
        slots = self._slots
        slot_of = self._slot
        value_of = self._value
        id_base = self._id_base
        link_owner = self._link_owner
        out = []
        for index in indexes:
            slot = slots[index % PERIOD] or slot_of(index % PERIOD)
            link, _, summary = value_of(index, slot)
            ident = slot.id_text.format(id_base + index)
            out.append(
                f'{{"id":{ident}{slot.generic_head}{link}{link_owner}"{slot.tail}'
                f',"summary":"{summary}"}}'.encode()
            )
        return b",".join(out)

    def v3(self, indexes: Sequence[int], tags: bool, assess: bool) -> bytes:
        """
        Return items C{indexes} as comma-separated JSON objects in UTF-8, in
        the v3 form: integer C{id}, C{ownerId}, dates with C{Z}, C{type},
        C{summary}, C{active}, boolean host flags, C{webLink} to the v3 UI
        and C{legacyLink}; C{tags} and the threat assessment when asked.
        """
        slots = self._slots
        slot_of = self._slot
        value_of = self._value
        id_base = self._id_base
        link_base = self._link_base
        link_owner = self._link_owner
        host = self._code == 2
        out = []
        for index in indexes:
            slot = slots[index % PERIOD] or slot_of(index % PERIOD)
            link, fields, summary = value_of(index, slot)
            if host:
                fields = f',"hostName":"{link}"{slot.v3_variant}'
            ident = id_base + index
            extra = (slot.v3_tags if tags else "") + (slot.v3_assess if assess else "")
            out.append(
                f'{{"id":{ident}{slot.v3_head},"summary":"{summary}"{slot.v3_mid}{fields}'
                f',"webLink":"{_V3_WEB}{ident}/overview"'
                f',"legacyLink":"{link_base}{link}{link_owner}"{extra}}}'.encode()
            )
        return b",".join(out)


@frozen
class Front:
    """
    How the front of one owner and type's listing has changed (see
    L{Dataset.shift_front}).

    :ivar added: how many new items precede the generated ones, the newest
        first.
    :ivar cut: generated items with a lower index are deleted.
    """

    added: int = 0
    cut: int = 0


@frozen
class Run:
    """
    The selected items of one owner and type, in listing order: first the
    inserted items (C{head}), then the generated items of ranks C{lo} to
    C{hi} among those whose slot is in C{mask} (or C{explicit}, when a
    per-item condition applies).
    """

    owner: str
    type: str
    listing: _Listing = field(repr=False, eq=False)
    head: list[int] = field(repr=False)
    mask: tuple[int, ...] = field(repr=False)
    lo: int
    hi: int
    explicit: list[int] | None = field(repr=False)

    def __len__(self) -> int:
        """
        Return how many items the run selects.
        """
        body = self.hi - self.lo if self.explicit is None else len(self.explicit)
        return len(self.head) + body

    def indexes(self, start: int, stop: int) -> Sequence[int]:
        """
        Return the item indexes at positions C{start} to C{stop} (exclusive)
        of the run.
        """
        h = len(self.head)
        out: list[int] = self.head[start:stop] if start < h else []
        a, b = max(start - h, 0), max(stop - h, 0)
        if a >= b:
            return out
        if self.explicit is not None:
            rest: Sequence[int] = self.explicit[a:b]
        else:
            rest = self.listing.indexes(self.mask, self.lo + a, min(self.lo + b, self.hi))
        if not out:
            return rest
        out.extend(rest)
        return out

    def typed(self, start: int, stop: int, tags: bool) -> bytes:
        """
        Return positions C{start} to C{stop} in the v2 per-type form.
        """
        return self.listing.typed_at(self.indexes(start, stop), tags)

    def generic(self, start: int, stop: int) -> bytes:
        """
        Return positions C{start} to C{stop} in the v2 generic form.
        """
        return self.listing.generic_at(self.indexes(start, stop))

    def v3(self, start: int, stop: int, tags: bool, assess: bool) -> bytes:
        """
        Return positions C{start} to C{stop} in the v3 form.
        """
        return self.listing.v3(self.indexes(start, stop), tags, assess)


def page_runs(runs: Sequence[Run], start: int, stop: int) -> list[tuple[Run, int, int]]:
    """
    Return C{(run, from, to)} for the parts of the concatenation of C{runs}
    at positions C{start} to C{stop}.
    """
    parts = []
    offset = 0
    for run in runs:
        n = len(run)
        lo, hi = max(start - offset, 0), min(stop - offset, n)
        if lo < hi:
            parts.append((run, lo, hi))
        offset += n
        if offset >= stop:
            break
    return parts


_LINK_PAGES: Final = (
    "file.xhtml?file=",
    "address.xhtml?address=",
    "host.xhtml?host=",
    "url.xhtml?orgid=",
    "emailaddress.xhtml?emailaddress=",
)


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
