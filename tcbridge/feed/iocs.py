# -*- test-case-name: tests.test_feed_iocs -*-
"""
IOC value normalisation and validation: the one place where tcbridge decides
what a valid Carbon Black IOC value is.

Each C{normalise_*} function takes a raw value as ThreatConnect sent it and
returns the canonical form that goes into the feed, or C{None} when the value
cannot be a Carbon Black IOC of that kind.  The canonical forms are:

 - C{md5}, C{sha256}: exactly 32 / 64 hexadecimal digits, lower-cased.  Any
   other character, including surrounding white space or a trailing newline,
   makes the value invalid (nothing is stripped here: L{Indicator} values
   arrive already stripped, so a left-over newline means bad data).
 - C{ipv4}: a strict dotted quad, four decimal numbers 0-255 without leading
   zeros.  C{"01.2.3.4"} is rejected rather than guessed at, because
   C{inet_aton} reads a leading zero as octal while people mean decimal.
   Ports, CIDR suffixes, brackets and the short forms C{inet_aton} accepts
   (C{"1.2.3"}, C{"0x7f.1"}) are rejected.
 - C{ipv6}: anything C{ipaddress.IPv6Address} parses, except scoped addresses
   (C{"fe80::1%eth0"}), written in the compressed lower-case form
   C{ipaddress} produces.
 - C{dns}: lower-case ASCII, one trailing dot removed; after that 1-253
   characters, at least one dot, at most 127 labels, every label matching
   C{^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$} (so no C{_} and no leading or
   trailing hyphen).  An internationalised name is converted to punycode with
   Python's C{idna} codec when that codec can encode it.

L{invalid_feed_values} answers the validator's question "which of these
values in a feed document are not valid for this IOC key"; it accepts the
same values the normalisers accept in canonical form, plus upper-case hex,
upper-case host names, uncompressed IPv6 and one trailing dot on host names,
which the Carbon Black format allows.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import Final, Literal

IocKind = Literal["md5", "sha256", "ipv4", "ipv6", "dns"]

#: The Carbon Black IOC kinds tcbridge emits, in the order they appear in a
#: report's C{iocs} object.
IOC_KINDS: Final[tuple[IocKind, ...]] = ("md5", "sha256", "ipv4", "ipv6", "dns")

_MD5: Final = re.compile(r"[0-9a-fA-F]{32}").fullmatch
_SHA256: Final = re.compile(r"[0-9a-fA-F]{64}").fullmatch
_HEX_RUN: Final = re.compile(r"[0-9a-fA-F]*").fullmatch
_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4: Final = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}").fullmatch
_IPV4_LINES: Final = re.compile(rf"(?:{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\n)*").fullmatch
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# A whole host name: two or more labels.  Length limits are checked apart.
_DNS_NAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})+").fullmatch
# Bulk form, for lower-cased text: labels of 1-63 letters, digits and
# hyphens; hyphens at either end of a label are looked for separately.
_DNS_LINES: Final = re.compile(r"(?:[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+\.?\n)*").fullmatch
_EDGE_HYPHENS: Final = ("-.", ".-", "\n-", "-\n")
_MAX_DNS_LENGTH: Final = 253
_MAX_DNS_LABELS: Final = 127


def normalise_md5(value: str) -> str | None:
    """
    Return C{value} as a lower-case MD5 hex digest, or C{None} if it is not
    exactly 32 hexadecimal digits.
    """
    if isinstance(value, str) and _MD5(value) is not None:
        return value.lower()
    return None


def normalise_sha256(value: str) -> str | None:
    """
    Return C{value} as a lower-case SHA-256 hex digest, or C{None} if it is
    not exactly 64 hexadecimal digits.
    """
    if isinstance(value, str) and _SHA256(value) is not None:
        return value.lower()
    return None


def classify_ip(value: str) -> tuple[Literal["ipv4", "ipv6"], str] | None:
    """
    Tell whether C{value} is an IPv4 or an IPv6 address and return its
    canonical text, or C{None} if it is neither (see the module docstring for
    the exact rules: strict dotted quads, no leading zeros, no ports, no
    prefixes, no scope ids).
    """
    if not isinstance(value, str):
        return None
    if _IPV4(value) is not None:
        return ("ipv4", value)
    if ":" not in value or "%" in value or not value.isascii():
        return None
    try:
        address = ipaddress.IPv6Address(value)
    except ValueError:
        return None
    return ("ipv6", address.compressed)


def normalise_dns(value: str) -> str | None:
    """
    Return C{value} as a canonical host name (lower-case ASCII, no trailing
    dot, punycode for internationalised names), or C{None} if it breaks the
    Carbon Black DNS rules.
    """
    if not isinstance(value, str):
        return None
    if not value.isascii():
        try:
            value = value.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    name = value.lower()
    if name.endswith("."):
        name = name[:-1]
    if len(name) > _MAX_DNS_LENGTH or _DNS_NAME(name) is None:
        return None
    if name.count(".") >= _MAX_DNS_LABELS:  # unreachable within 253 chars; kept for clarity
        return None
    return name


def _is_feed_dns(value: str) -> bool:
    """
    Whether C{value} may appear as-is in a feed's C{dns} list: ASCII, any
    case, at most one trailing dot, otherwise the rules of L{normalise_dns}.
    """
    return isinstance(value, str) and value.isascii() and normalise_dns(value) is not None


def _is_feed_ipv4(value: str) -> bool:
    return isinstance(value, str) and _IPV4(value) is not None


def _is_feed_ipv6(value: str) -> bool:
    result = classify_ip(value)
    return result is not None and result[0] == "ipv6"


def _is_hex32(value: str) -> bool:
    return isinstance(value, str) and _MD5(value) is not None


def _is_hex64(value: str) -> bool:
    return isinstance(value, str) and _SHA256(value) is not None


_FEED_CHECKS: Final[dict[str, Callable[[str], bool]]] = {
    "md5": _is_hex32,
    "ja3": _is_hex32,
    "ja3s": _is_hex32,
    "sha256": _is_hex64,
    "ipv4": _is_feed_ipv4,
    "ipv6": _is_feed_ipv6,
    "dns": _is_feed_dns,
}

_HEX_WIDTH: Final[dict[str, int]] = {"md5": 32, "ja3": 32, "ja3s": 32, "sha256": 64}


def _bulk_ok(kind: str, values: Sequence[object]) -> bool:
    """
    A fast, whole-list check that returns C{True} only if every value is
    valid for C{kind}.  C{False} means "look at each value".
    """
    if set(map(type, values)) != {str}:
        return False
    strings: Sequence[str] = values  # type: ignore[assignment]
    width = _HEX_WIDTH.get(kind)
    if width is not None:
        return set(map(len, strings)) == {width} and _HEX_RUN("".join(strings)) is not None
    if kind == "ipv4" or kind == "dns":
        joined = "\n".join(strings) + "\n"
        if joined.count("\n") != len(strings):  # a value holds a newline
            return False
        if kind == "ipv4":
            return _IPV4_LINES(joined) is not None
        if not joined.isascii() or max(map(len, strings)) > _MAX_DNS_LENGTH:
            return False
        joined = joined.lower()
        if joined.startswith("-") or any(edge in joined for edge in _EDGE_HYPHENS):
            return False
        return _DNS_LINES(joined) is not None
    return False


def invalid_feed_values(kind: str, values: Sequence[object]) -> list[object]:
    """
    Return the members of C{values} that are not valid Carbon Black IOC
    values of C{kind} (one of C{md5}, C{sha256}, C{ipv4}, C{ipv6}, C{dns},
    C{ja3}, C{ja3s}), in their original order.  Non-strings are invalid.

    The common case, a list where everything is valid, is checked in bulk so
    that a million values take well under a second.

    @raise KeyError: if C{kind} is not one of the kinds above.
    """
    check = _FEED_CHECKS[kind]
    if len(values) > 4 and _bulk_ok(kind, values):
        return []
    return [v for v in values if not check(v)]  # type: ignore[arg-type]
