# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
Feed document to bytes with orjson.

The builder produces documents in a deterministic order (reports sorted by
id, IOC lists sorted, dict keys in a fixed order), so no key sorting happens
here and equal documents give byte-identical output.
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps(doc: dict[str, Any]) -> bytes:
    """
    Serialise a feed document as compact UTF-8 JSON, keys in insertion order.

    @raise TypeError: (C{orjson.JSONEncodeError}) if the document holds
        something JSON cannot represent.
    """
    return orjson.dumps(doc)


def dumps_pretty(doc: dict[str, Any]) -> bytes:
    """
    Serialise a feed document indented by two spaces, with a final newline,
    for people reading it.
    """
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
