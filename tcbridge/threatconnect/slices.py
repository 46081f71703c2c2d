# -*- test-case-name: tests.unit.test_tc_client -*-
"""
Parsing a big page a slice at a time.

One C{orjson.loads} of a page of 10,000 indicators holds the reactor for
15-20 ms.  L{parse_in_slices} gives exactly the same document, but parses
the page's item list in slices of about C{size} bytes, with a pause on the
reactor between them, so a request that arrives meanwhile waits a few
milliseconds at most.

How: the item list is the first C{"<key>":[} in the body (the list holds
the items, so nothing in them can come first, and a quote inside a string
is always escaped).  The text around the list, with the list replaced by a
marker, must parse as the envelope, with the marker found there exactly
once; the list is cut only between two items (at C{},{}), and every slice
must parse as a list on its own: a cut inside an item leaves brackets
unbalanced, so the slice fails to parse.  If anything does not check out,
the answer is C{None} and the caller parses the whole body as usual.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson

_MARKER: Final = "\u0000tcbridge-items\u0000"
_MARKER_JSON: Final = orjson.dumps(_MARKER)
#: how far from its end the list may close (the envelope's tail is small)
_TAIL: Final = 65536
_MAX_CLOSINGS: Final = 32


def _closing(body: bytes | bytearray, opening: int) -> list[int]:
    """
    Where the item list may close: the last few C{]} of the body.
    """
    found: list[int] = []
    at = len(body)
    floor = max(opening, len(body) - _TAIL)
    while len(found) < _MAX_CLOSINGS:
        at = body.rfind(b"]", floor, at)
        if at < 0:
            break
        found.append(at)
    return found


def _cuts(body: bytes | bytearray, start: int, end: int, size: int) -> list[tuple[int, int]]:
    """
    Spans of the list's text (between its brackets) about C{size} bytes
    long, cut between two items (an item boundary C{},{"} seen where
    C{"id"} follows is preferred).
    """
    spans = []
    at = start
    while end - at > size:
        cut = body.find(b'},{"id"', at + size, end)
        if cut < 0:
            cut = body.find(b'},{"', at + size, end)
        if cut < 0:
            break
        spans.append((at, cut + 1))
        at = cut + 2
    spans.append((at, end))
    return spans


def _slot(envelope: Any) -> tuple[Any, Any] | None:
    """
    The container and key holding the marker, if it is there exactly once
    (looked for in objects and lists three levels deep).
    """
    found: list[tuple[Any, Any]] = []

    def look(node: Any, depth: int) -> None:
        if isinstance(node, dict):
            pairs: Any = node.items()
        elif isinstance(node, list):
            pairs = enumerate(node)
        else:
            return
        for key, value in pairs:
            if value == _MARKER:
                found.append((node, key))
            elif depth < 3:
                look(value, depth + 1)

    look(envelope, 0)
    return found[0] if len(found) == 1 else None


async def parse_in_slices(
    body: bytes | bytearray,
    key: str,
    size: int,
    pause: Callable[[], Awaitable[None]],
) -> Any | None:
    """
    The parsed document, its list C{"<key>":[...]} parsed in slices of
    about C{size} bytes with C{await pause()} before each; C{None} if the
    body does not split cleanly (then parse it whole).
    """
    opening = body.find(b'"' + key.encode() + b'":[')
    if opening < 0:
        return None
    opening = body.index(b"[", opening)
    for closing in _closing(body, opening):
        text = bytes(body[:opening]) + _MARKER_JSON + bytes(body[closing + 1 :])
        try:
            envelope = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        slot = _slot(envelope)
        if slot is None:
            return None
        items: list[Any] = []
        if body[opening + 1 : closing].strip():
            for start, end in _cuts(body, opening + 1, closing, size):
                await pause()
                try:
                    items += orjson.loads(b"[" + bytes(body[start:end]) + b"]")
                except orjson.JSONDecodeError:
                    return None
        container, where = slot
        container[where] = items
        return envelope
    return None
