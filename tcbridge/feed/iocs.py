# -*- test-case-name: tests.unit.test_feed_iocs -*-
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
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress
from typing import Final, Literal, TypeVar

T = TypeVar("T")

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


# -- whole columns ------------------------------------------------------------
#
# The builder reads a page's values as columns (one list per field).  These
# functions apply the rules above to a whole column at once: a run of values
# is checked in one go (joined, one regular expression); a run that fails is
# split in halves until the values that need a closer look are found, and
# those go through the per-value functions, with the same results.


def _bad_lines(valid: str) -> Callable[[str], Iterator[re.Match[str]]]:
    """
    A finder of the lines of a text that are not wholly C{valid}.
    """
    return re.compile(rf"^(?!(?:{valid})$).*$", re.MULTILINE).finditer


_HEX_LINES: Final = {
    32: _bad_lines("[0-9a-fA-F]{32}"),
    64: _bad_lines("[0-9a-fA-F]{64}"),
}
_IPV4_BAD: Final = _bad_lines(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
_DNS_BAD: Final = _bad_lines(rf"(?=.{{1,{_MAX_DNS_LENGTH}}}$){_LABEL}(?:\.{_LABEL})+")


def _doubtful(
    values: Sequence[str], find_bad: Callable[[str], Iterator[re.Match[str]]], lower: bool = False
) -> tuple[list[int], list[str]]:
    """
    The positions of C{values} that are not plainly valid, and the values
    (lower-cased if asked): one regular expression scan over the values
    joined by newlines finds the lines that do not match.  A value that is
    not a string, or holds a newline, is doubtful too (then every value is,
    and the caller checks each), and so is, with C{lower}, one that is not
    ASCII.
    """
    if not values:
        return [], []
    if set(map(type, values)) != {str}:
        return list(range(len(values))), list(values)
    joined = "\n".join(values)
    if joined.count("\n") != len(values) - 1:
        return list(range(len(values))), list(values)
    doubtful: list[int] = []
    if lower:
        if not joined.isascii():
            doubtful = [p for p, value in enumerate(values) if not value.isascii()]
        joined = joined.lower()
    line = 0
    at = 0
    for match in find_bad(joined):
        start = match.start()
        line += joined.count("\n", at, start)
        at = start
        doubtful.append(line)
    if lower:
        doubtful = sorted(set(doubtful))
        return doubtful, joined.split("\n")
    return doubtful, list(values)


def _without(items: list[T], positions: Iterable[int]) -> list[T]:
    """
    C{items} without those at C{positions}.
    """
    keep = bytearray(b"\x01") * len(items)
    for position in positions:
        keep[position] = 0
    return list(compress(items, keep))


def _ipv6_text(value: str) -> str | None:
    """
    The canonical text of an IPv6 address (as L{classify_ip} gives it), or
    C{None}: the C library parses and prints it, and C{ipaddress} does both
    for what the C library refuses or prints with an embedded IPv4 part.
    """
    try:
        text = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, value))
    except (OSError, ValueError):
        text = None
    if text is None or "." in text:
        found = classify_ip(value)
        return found[1] if found is not None and found[0] == "ipv6" else None
    return text


def _present(raw: Sequence[str | None]) -> tuple[list[int], list[str], list[int]]:
    """
    The rows holding something (a non-empty string, or anything else that
    is not empty), what they hold, and the other rows.
    """
    present = list(map(bool, raw))
    if False not in present:
        return list(range(len(raw))), list(raw), []  # type: ignore[arg-type]
    rows = list(compress(range(len(raw)), present))
    values = list(compress(raw, present))
    missing = [row for row, there in enumerate(present) if not there]
    return rows, values, missing  # type: ignore[return-value]


def pack_hashes(
    kind: Literal["md5", "sha256"], raw: Sequence[str | None]
) -> tuple[list[int], bytes, list[int]]:
    """
    Normalise a column of raw hashes of one kind.

    :return: the rows holding a valid value, those values packed (16 or 32
        bytes each, in row order), and the rows holding an invalid one.
        Rows whose value is missing or empty are in neither list.
    """
    rows, values, _ = _present(raw)
    doubtful, _ = _doubtful(values, _HEX_LINES[32 if kind == "md5" else 64])
    if not doubtful:
        return rows, bytes.fromhex("".join(values)), []
    check = _MD5 if kind == "md5" else _SHA256
    bad = [p for p in doubtful if not isinstance(values[p], str) or check(values[p]) is None]
    packed = bytes.fromhex("".join(_without(values, bad)))
    return _without(rows, bad), packed, [rows[p] for p in bad]


def classify_ips(
    raw: Sequence[str | None],
) -> tuple[list[int], list[str], list[int], list[str], list[int], list[int]]:
    """
    Classify a column of raw addresses (see L{classify_ip}).

    :return: the IPv4 rows and their canonical texts, the IPv6 rows and
        theirs, the rows with an invalid value and the rows with none.
    """
    rows, values, missing = _present(raw)
    doubtful, _ = _doubtful(values, _IPV4_BAD)
    if not doubtful:
        return rows, values, [], [], [], missing
    v6_rows: list[int] = []
    v6: list[str] = []
    bad: list[int] = []
    others: list[int] = []
    for position in doubtful:
        value = values[position]
        text = (
            _ipv6_text(value)
            if isinstance(value, str) and ":" in value and "%" not in value and value.isascii()
            else None
        )
        if text is not None:
            v6_rows.append(rows[position])
            v6.append(text)
        elif isinstance(value, str) and _IPV4(value) is not None:
            others.append(position)  # not doubtful after all (a non-string was in the run)
        else:
            bad.append(rows[position])
    plain = [p for p in doubtful if p not in set(others)]
    return _without(rows, plain), _without(values, plain), v6_rows, v6, bad, missing


def normalise_hosts(raw: Sequence[str | None]) -> tuple[list[int], list[str], list[int], list[int]]:
    """
    Normalise a column of raw host names (see L{normalise_dns}).

    :return: the rows holding a valid name and the canonical names, the rows
        with an invalid name and the rows with none.
    """
    rows, values, missing = _present(raw)
    doubtful, names = _doubtful(values, _DNS_BAD, lower=True)
    if not doubtful:
        return rows, names, [], missing
    bad: list[int] = []
    for position in doubtful:
        name = normalise_dns(values[position])
        if name is None:
            bad.append(position)
        else:
            names[position] = name
    return _without(rows, bad), _without(names, bad), [rows[p] for p in bad], missing
