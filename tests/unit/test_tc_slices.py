"""
Tests for L{tcbridge.threatconnect.slices}: a page parsed a slice at a time
is exactly the page parsed whole, or the caller is told to parse it whole.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer

from tcbridge.threatconnect.slices import parse_in_slices
from tests.helpers import result_of

_ITEM = st.fixed_dictionaries(
    {"id": st.integers(0, 10**9)},
    optional={
        "summary": st.text(alphabet='ab},{"[]\\ ', max_size=12),
        "tag": st.lists(st.fixed_dictionaries({"name": st.text(alphabet='x},{"', max_size=5)})),
        "tags": st.fixed_dictionaries(
            {"data": st.lists(st.fixed_dictionaries({"id": st.integers(0, 99)}))}
        ),
    },
)


def _parse(body: bytes, key: str, size: int) -> tuple[Any, int]:
    pauses: list[int] = []

    async def pause() -> None:
        pauses.append(1)

    return result_of(defer.ensureDeferred(parse_in_slices(body, key, size, pause))), len(pauses)


@settings(max_examples=300)
@given(st.lists(_ITEM, max_size=40), st.sampled_from(["v2", "v3"]), st.integers(1, 200))
def test_slices_equal_whole(items: list[dict[str, Any]], shape: str, size: int) -> None:
    """
    Whatever the items hold (braces, commas and quotes in strings, nested
    lists of objects), the sliced parse gives the whole parse, or nothing.
    """
    if shape == "v2":
        doc: dict[str, Any] = {"status": "Success", "data": {"resultCount": 3, "file": items}}
        key = "file"
    else:
        doc = {"data": items, "next": "https://x.example/api?a=[1]", "status": "Success"}
        key = "data"
    body = orjson.dumps(doc)
    parsed, _ = _parse(body, key, size)
    assert parsed is None or parsed == orjson.loads(body)


def test_big_page_in_slices() -> None:
    """
    A page of many items is parsed in several slices with a pause before
    each, and gives the same document.
    """
    items = [
        {"id": n, "md5": f"{n:032x}", "tag": [{"name": "a"}, {"name": "b"}]} for n in range(5000)
    ]
    body = orjson.dumps({"status": "Success", "data": {"file": items}})
    parsed, pauses = _parse(body, "file", 20_000)
    assert parsed == orjson.loads(body)
    assert pauses > 5


def test_refused_shapes() -> None:
    """
    A body without the list, with the marker text already in it, or that is
    not JSON is left to be parsed whole.
    """
    assert _parse(b'{"status":"Success","data":{}}', "file", 10)[0] is None
    assert _parse(b'{"data":[1,2', "data", 1)[0] is None
    marker = orjson.dumps({"data": [{"id": 1}], "x": "\u0000tcbridge-items\u0000"})
    assert _parse(marker, "data", 1)[0] is None
    assert _parse(b'{"data":[]}', "data", 1)[0] == {"data": []}
