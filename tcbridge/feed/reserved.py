# -*- test-case-name: tests.unit.test_feed_reserved -*-
"""
Values that can never be a meaningful IOC, and private ones.

An alert on 127.0.0.1 or C{localhost} fires on every host and means
nothing, so these are left out by default (C{exclude_reserved = true}):

 - addresses: loopback (127.0.0.0/8, ::1), unspecified (0.0.0.0, ::),
   broadcast (255.255.255.255), multicast (224.0.0.0/4, ff00::/8) and
   link-local (169.254.0.0/16, fe80::/10);
 - names: C{localhost}, and every name under the reserved C{.localhost}
   and C{.invalid} domains (RFC 6761).

Private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7) and
the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32) can be meaningful inside one network, so they are left out
only with C{exclude_private = true}.

The functions take canonical texts (L{tcbridge.feed.iocs}) a whole column
at a time and answer with the reason for each value, or C{None}; IPv4
texts are checked by their leading octets, without parsing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

#: Skip reasons, as counted on the page.
RESERVED_ADDRESS: Final = "reserved address"
RESERVED_NAME: Final = "reserved name"
PRIVATE_ADDRESS: Final = "private or documentation address"

_V4_RESERVED: Final = (
    "127.",
    "0.0.0.0",  # noqa: S104 (a value to match, not an address to bind)
    "169.254.",
    "255.255.255.255",
    *(f"{octet}." for octet in range(224, 240)),
)
_V4_PRIVATE: Final = (
    "10.",
    *(f"172.{octet}." for octet in range(16, 32)),
    "192.168.",
    "192.0.2.",
    "198.51.100.",
    "203.0.113.",
)
_V6_PRIVATE: Final = (
    ipaddress.IPv6Network("fc00::/7"),
    ipaddress.IPv6Network("2001:db8::/32"),
)


def _v4_reason(text: str, private: bool) -> str | None:
    # Canonical texts have no leading zeros, so "0.0.0.0" matches only itself.
    if text.startswith(_V4_RESERVED):
        return RESERVED_ADDRESS
    if private and text.startswith(_V4_PRIVATE):
        return PRIVATE_ADDRESS
    return None


def _v6_reason(text: str, private: bool) -> str | None:
    address = ipaddress.IPv6Address(text)
    if (
        address.is_loopback
        or address.is_unspecified
        or address.is_multicast
        or address.is_link_local
    ):
        return RESERVED_ADDRESS
    if private and any(address in network for network in _V6_PRIVATE):
        return PRIVATE_ADDRESS
    return None


def _name_reason(text: str) -> str | None:
    if text == "localhost" or text.endswith((".localhost", ".invalid")):
        return RESERVED_NAME
    return None


def left_out(kind: str, texts: Sequence[str], private: bool) -> list[str | None]:
    """
    For each canonical value of C{kind} (C{ipv4}, C{ipv6} or C{dns}), why
    it is left out, or C{None} to keep it.

    :param private: also leave out private and documentation addresses.
    """
    if kind == "ipv4":
        first = _V4_RESERVED + (_V4_PRIVATE if private else ())
        if not any(text.startswith(first) for text in texts):
            return [None] * len(texts)
        return [_v4_reason(text, private) for text in texts]
    if kind == "ipv6":
        return [_v6_reason(text, private) for text in texts]
    if kind == "dns":
        if not any(text.endswith(("localhost", ".invalid")) for text in texts):
            return [None] * len(texts)
        return [_name_reason(text) for text in texts]
    return [None] * len(texts)


def reason_for(kind: str, text: str, private: bool) -> str | None:
    """
    Why one canonical value is left out, or C{None} (see L{left_out}).
    """
    return left_out(kind, [text], private)[0]


__all__ = ["PRIVATE_ADDRESS", "RESERVED_ADDRESS", "RESERVED_NAME", "left_out", "reason_for"]
