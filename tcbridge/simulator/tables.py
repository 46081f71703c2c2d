# -*- test-case-name: tests.unit.test_simulator -*-
"""
The simulator's data tables: the owners and types, the words, TLDs, tags and
descriptions values are made of, the date and rating tables, and the period
with which incidental attributes repeat (see L{tcbridge.simulator.data}).
"""

from __future__ import annotations

import time
from typing import Final

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


_LINK_PAGES: Final = (
    "file.xhtml?file=",
    "address.xhtml?address=",
    "host.xhtml?host=",
    "url.xhtml?orgid=",
    "emailaddress.xhtml?emailaddress=",
)
