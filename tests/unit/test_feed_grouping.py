"""
Tests for L{tcbridge.feed.grouping}: every label's values of one IOC kind
grouped by (labels, score), checked against a plain model of what the
groups must hold, with the values a sort can trip on (host names that
are prefixes of others, hashes sharing their first bytes, values repeated
under one label and shared by several).
"""

from __future__ import annotations

from array import array
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from tcbridge.feed.columns import FIXED_WIDTH, PackedColumn
from tcbridge.feed.grouping import condense

#: host names: few letters, so that prefixes and repeats are common
_names = st.text("ab.", min_size=1, max_size=12).map(lambda text: text.encode())
#: 16-byte values: a few shared heads (first eight bytes) and tails
_hashes = st.tuples(
    st.sampled_from([b"\x00" * 8, b"\xff" * 8, b"12345678"]), st.integers(0, 3)
).map(lambda parts: parts[0] + bytes([parts[1]]) * 8)
_records = st.tuples(
    st.integers(0, 2),  # label
    st.integers(0, 3),  # which score
    st.integers(0, 2**40),  # timestamp
    st.integers(0, 3),  # tag set id
)


def _columns(
    kind: str, values: list[bytes], records: list[tuple[int, int, int, int]]
) -> list[tuple[int, PackedColumn]]:
    columns: dict[int, PackedColumn] = {}
    for value, (label, score, timestamp, tags) in zip(values, records, strict=False):
        column = columns.setdefault(label, PackedColumn(kind))
        column.data += value + (b"\n" if kind == "dns" else b"")
        column.meta.append(timestamp << 7 | score * 20)
        if column.tags is None:
            column.tags = array("H")
        column.tags.append(tags)
    return sorted(columns.items())


def _model(
    values: list[bytes], records: list[tuple[int, int, int, int]]
) -> tuple[dict[tuple[tuple[int, ...], int], tuple[list[bytes], int, dict[int, int]]], int]:
    """
    The groups as (labels, score) -> (sorted values, newest timestamp, tag
    set counts), and the repeats of a value under one label.
    """
    seen: dict[bytes, list[tuple[int, int, int, int]]] = defaultdict(list)
    for value, record in zip(values, records, strict=False):
        seen[value].append(record)
    groups: dict[tuple[tuple[int, ...], int], tuple[list[bytes], int, dict[int, int]]] = {}
    repeats = 0
    for value, found in seen.items():
        labels = tuple(sorted({label for label, *_ in found}))
        repeats += len(found) - len({label for label, *_ in found})
        score = max(score * 20 for _, score, _, _ in found)
        newest = max(timestamp for _, _, timestamp, _ in found)
        members, top, tags = groups.get((labels, score), ([], 0, {}))
        members.append(value)
        for tag in {tag for *_, tag in found if tag}:
            tags[tag] = tags.get(tag, 0) + 1
        groups[(labels, score)] = (members, max(top, newest), tags)
    return {key: (sorted(v), t, tags) for key, (v, t, tags) in groups.items()}, repeats


def _check(kind: str, values: list[bytes], records: list[tuple[int, int, int, int]]) -> None:
    count = min(len(values), len(records))
    values, records = values[:count], records[:count]
    if not count:
        return  # the build never condenses a kind without values
    found, repeats = condense(kind, _columns(kind, values, records))
    expected, expected_repeats = _model(values, records)
    assert repeats == expected_repeats
    got = {}
    for group in found:
        packed = b"".join(group.parts)
        if kind == "dns":
            members = packed.split(b"\n")[:-1]
        else:
            width = FIXED_WIDTH[kind]
            members = [packed[at : at + width] for at in range(0, len(packed), width)]
            # Fixed-width values come sorted by their bytes.
            assert members == sorted(members)
        assert group.count == len(members)
        got[(group.labels, group.score)] = (sorted(members), group.timestamp, group.tags)
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(values=st.lists(_names, max_size=60), records=st.lists(_records, max_size=60))
def test_host_names_group_as_the_model_says(
    values: list[bytes], records: list[tuple[int, int, int, int]]
) -> None:
    """
    Host names (among them names that begin other names, and repeats)
    land each in one group, with the labels that gave it, its best score,
    the newest timestamp and its tag sets counted once per name.
    """
    _check("dns", values, records)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(_hashes, max_size=60), records=st.lists(_records, max_size=60))
def test_hashes_sharing_their_first_bytes_group_as_the_model_says(
    values: list[bytes], records: list[tuple[int, int, int, int]]
) -> None:
    """
    Hashes whose first eight bytes are the same but which differ after
    them stay apart and come in the order of their bytes.
    """
    _check("md5", values, records)


def test_many_host_names_over_many_buckets() -> None:
    """
    Enough host names for several buckets, shared by labels, come out
    once each with their labels.
    """
    names = [f"h{n % 70000}.example{n % 7}".encode() for n in range(150000)]
    records = [(n % 3, n % 4, n, 0) for n in range(150000)]
    _check("dns", names, records)


def test_a_name_of_hundreds_of_characters_among_short_ones() -> None:
    """
    A host name of 253 characters (the longest valid) among thousands of
    short ones, some of which begin it, groups as the model says.
    """
    long = (b"a" * 62 + b".") * 4 + b"b"
    names = [long, long[:63], long[:100], b"a", long] + [
        f"n{n}.example".encode() for n in range(5000)
    ]
    records = [(n % 3, n % 4, n, n % 2) for n in range(len(names))]
    _check("dns", names, records)
