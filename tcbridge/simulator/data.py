# -*- test-case-name: tests.test_simulator -*-
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
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
class _Slot:
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
        self._slots: list[_Slot | None] = [None] * PERIOD

    def _slot(self, j: int) -> _Slot:
        """
        Return slot C{j}, computing it the first time.
        """
        slot = self._slots[j]
        if slot is None:
            slot = self._slots[j] = self._make_slot(j)
        return slot

    def _make_slot(self, j: int) -> _Slot:
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
        if d[10] >= 13:
            common += f',"rating":{orjson.dumps(_RATINGS[d[11] % 11]).decode()}'
        if d[12] >= 13:
            common += f',"confidence":{d[13] % 101}'
        common += f',"webLink":"{self._link_base}'
        tail = ""
        if d[14] < 4:
            tail = f',"description":{orjson.dumps(_HOSTILE_DESCRIPTION).decode()}'
        elif d[14] < 80:
            text = _DESCRIPTIONS[d[15] % len(_DESCRIPTIONS)]
            tail = f',"description":{orjson.dumps(text).decode()}'
        tags = ""
        if d[24] < 64:
            first = d[25] % len(_TAGS)
            chosen = [first]
            if d[24] < 24:
                chosen.append((first + 1 + d[26] % (len(_TAGS) - 1)) % len(_TAGS))
            tag_list = [{"name": _TAGS[t], "webLink": self._tag_links[t]} for t in chosen]
            tags = f',"tag":{orjson.dumps(tag_list).decode()}'
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
        return _Slot(
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
        )

    def _value(self, index: int, slot: _Slot) -> tuple[str, str, str]:
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
        slots = self._slots
        slot_of = self._slot
        value_of = self._value
        id_base = self._id_base
        link_owner = self._link_owner
        out = []
        for index in range(start, stop):
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
        slots = self._slots
        slot_of = self._slot
        value_of = self._value
        id_base = self._id_base
        link_owner = self._link_owner
        out = []
        for index in range(start, stop):
            slot = slots[index % PERIOD] or slot_of(index % PERIOD)
            link, _, summary = value_of(index, slot)
            ident = slot.id_text.format(id_base + index)
            out.append(
                f'{{"id":{ident}{slot.generic_head}{link}{link_owner}"{slot.tail}'
                f',"summary":"{summary}"}}'.encode()
            )
        return b",".join(out)


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
