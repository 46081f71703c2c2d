# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
IOC lists as JSON text, straight from packed values: the inside of a JSON
list (C{"a","b"}), byte-identical to what orjson writes for the same
strings.  Hex digests, dotted quads and host names never hold anything JSON
must escape; numpy turns whole arrays of packed values into text at once.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Final

import numpy as np

_HEX: Final = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_QUOTE: Final = ord('"')
_COMMA: Final = ord(",")
_DOT: Final = ord(".")
# Each octet as three bytes, padded with NULs that are deleted afterwards.
_OCTETS: Final = np.frombuffer(
    b"".join(str(n).encode().ljust(3, b"\0") for n in range(256)), dtype=np.uint8
).reshape(256, 3)


def hex_list(packed: bytes, width: int) -> bytes:
    """
    Packed digests of C{width} bytes as the inside of a JSON list of
    lower-case hex strings: C{"ab..","cd.."}.
    """
    values = np.frombuffer(packed, dtype=np.uint8).reshape(-1, width)
    out = np.empty((len(values), 2 * width + 3), dtype=np.uint8)
    out[:, 0] = _QUOTE
    out[:, -2] = _QUOTE
    out[:, -1] = _COMMA
    out[:, 1:-2:2] = _HEX[values >> 4]
    out[:, 2:-2:2] = _HEX[values & 15]
    return out.tobytes()[:-1]


def ipv4_list(packed: bytes) -> bytes:
    """
    Packed IPv4 addresses as the inside of a JSON list of dotted quads.
    """
    values = np.frombuffer(packed, dtype=np.uint8).reshape(-1, 4)
    out = np.zeros((len(values), 18), dtype=np.uint8)
    out[:, 0] = _QUOTE
    for octet in range(4):
        out[:, 1 + 4 * octet : 4 + 4 * octet] = _OCTETS[values[:, octet]]
        if octet < 3:
            out[:, 4 + 4 * octet] = _DOT
    out[:, 16] = _QUOTE
    out[:, 17] = _COMMA
    return out.tobytes().translate(None, b"\0")[:-1]


def ipv6_list(packed: bytes) -> bytes:
    """
    Packed IPv6 addresses as the inside of a JSON list in compressed form
    (as C{ipaddress} writes them: the C library's form, except for addresses
    it writes with an IPv4 part).
    """
    texts = []
    for at in range(0, len(packed), 16):
        value = packed[at : at + 16]
        text = socket.inet_ntop(socket.AF_INET6, value)
        texts.append(ipaddress.IPv6Address(value).compressed if "." in text else text)
    return ('"' + '","'.join(texts) + '"').encode("ascii")


def names_list(names: Sequence[bytes]) -> bytes:
    """
    Host names as the inside of a JSON list, in the order given.
    """
    return b'"' + b'","'.join(names) + b'"'
