# -*- test-case-name: tests.unit.test_simulator -*-
"""
The items of one owner and type, computed on demand: their slots (the
attributes that repeat every L{PERIOD} items) and their JSON text in the v2
and v3 forms.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

import orjson
from attrs import frozen

if TYPE_CHECKING:
    from tcbridge.simulator.data import Dataset
from tcbridge.simulator.tables import (
    _BASE_EPOCH,
    _DATE_SPAN,
    _DESCRIPTIONS,
    _FIRST_OCTETS,
    _HOSTILE_DESCRIPTION,
    _INACTIVE_BELOW,
    _IPV4_SPACE,
    _IPV4_STEP,
    _LINK_PAGES,
    _MAX_MASKS,
    _MODIFIED_SPAN,
    _RATINGS,
    _TAGS,
    _TLDS,
    _V3_WEB,
    _WEB,
    _WORDS_A,
    _WORDS_B,
    PERIOD,
    TYPES,
    _stamp,
)


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
        #: the start of a tag's link, its name to follow (changed items)
        self.tag_link = f"{_WEB}/tags/tag.xhtml?owner={owner_q}&tag="
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

    def slot(self, index: int) -> Slot:
        """
        The slot of item C{index}.
        """
        return self._slot(index % PERIOD)

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
        tail = _description(d)
        chosen, tags, v3_tags = self._tags(d)
        active = d[21] >= _INACTIVE_BELOW
        v3_mid = (
            f'{mid}{tail},"privateFlag":false,"active":{"true" if active else "false"}'
            ',"activeLocked":false'
        )
        variant, v3_variant = self._variant(d)
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
            v3_assess=_assess(d),
            v3_variant=v3_variant,
        )

    def _tags(self, d: bytes) -> tuple[list[int], str, str]:
        """
        The tags a slot's digest C{d} picks: their numbers, and their v2 and
        v3 JSON members.
        """
        if d[24] >= 64:
            return [], "", ""
        first = d[25] % len(_TAGS)
        chosen = [first]
        if d[24] < 24:
            chosen.append((first + 1 + d[26] % (len(_TAGS) - 1)) % len(_TAGS))
        tag_list = [{"name": _TAGS[t], "webLink": self._tag_links[t]} for t in chosen]
        v3_list = [{"id": t + 11, "name": _TAGS[t]} for t in chosen]
        return (
            chosen,
            f',"tag":{orjson.dumps(tag_list).decode()}',
            f',"tags":{{"data":{orjson.dumps(v3_list).decode()}}}',
        )

    def _variant(self, d: bytes) -> tuple[int | str, str]:
        """
        The type-specific variant a slot's digest C{d} picks (the hash
        forms of a File, IPv6 for an Address, the DNS and whois flags of a
        Host), and the v3 JSON members it adds.
        """
        if self._code == 0:
            pick = d[16] % 100
            return (
                0 if pick < 30 else 1 if pick < 55 else 2 if pick < 90 else 3 if pick < 97 else 4
            ), ""
        if self._code == 1:
            return (1 if d[16] < 26 else 0), ""
        if self._code == 2:
            dns = "true" if d[16] < 230 else "false"
            whois = "true" if d[17] < 150 else "false"
            return (
                f',"dnsActive":"{dns}","whoisActive":"{whois}"',
                f',"dnsActive":{dns},"whoisActive":{whois}',
            )
        return 0, ""

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
        return self._v2_at(indexes, generic=False, tags=tags)

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
        return self._v2_at(indexes, generic=True, tags=False)

    def _v2_at(self, indexes: Sequence[int], generic: bool, tags: bool) -> bytes:
        """
        Items C{indexes} in a v2 form: per-type (with or without tags), or
        generic (with C{type} and C{summary}).
        """
        slots = self._slots
        slot_of = self._slot
        value_of = self._value
        id_base = self._id_base
        link_owner = self._link_owner
        out = []
        for index in indexes:
            slot = slots[index % PERIOD] or slot_of(index % PERIOD)
            link, fields, summary = value_of(index, slot)
            ident = slot.id_text.format(id_base + index)
            # v2 says nothing of the active flag, except for an inactive item
            # (which is only served when asked for).
            tail = slot.tail if slot.active else slot.tail + ',"active":false'
            if generic:
                out.append(
                    f'{{"id":{ident}{slot.generic_head}{link}{link_owner}"{tail}'
                    f',"summary":"{summary}"}}'.encode()
                )
            else:
                extra = tail + slot.tags if tags else tail
                out.append(
                    f'{{"id":{ident}{slot.head}{link}{link_owner}"{extra}{fields}}}'.encode()
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


def _description(d: bytes) -> str:
    """
    The description member a slot's digest C{d} picks: none, a plain one,
    or (rarely) a hostile one.
    """
    if d[14] < 4:
        return f',"description":{orjson.dumps(_HOSTILE_DESCRIPTION).decode()}'
    if d[14] < 80:
        text = _DESCRIPTIONS[d[15] % len(_DESCRIPTIONS)]
        return f',"description":{orjson.dumps(text).decode()}'
    return ""


def _assess(d: bytes) -> str:
    """
    The v3 ThreatAssess members a slot's digest C{d} gives.
    """
    assess_rating = round(d[22] * 5 / 255, 2)
    return (
        f',"threatAssessRating":{orjson.dumps(assess_rating).decode()}'
        f',"threatAssessConfidence":{d[23] % 101}'
        f',"threatAssessScore":{int.from_bytes(d[27:29], "big") % 1001}'
        f',"threatAssessScoreObserved":{d[28] % 101}'
        f',"threatAssessScoreFalsePositive":0'
    )
