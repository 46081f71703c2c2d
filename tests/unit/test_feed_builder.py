# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
Tests for L{tcbridge.feed.builder}, L{tcbridge.feed.document} and
L{tcbridge.feed.serialize}: indicators in, a valid deterministic feed out.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
import re
import struct
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tcbridge.feed.builder import FeedBuilder, FeedSettings
from tcbridge.feed.document import FeedInfo, empty_document, feedinfo_dict, get_icon_bytes
from tcbridge.feed.filters import Exclusions
from tcbridge.feed.job import build_feed_file
from tcbridge.feed.serialize import dumps, dumps_pretty
from tcbridge.feed.validator import validate_bytes, validate_document
from tcbridge.threatconnect.records import Indicator
from tests.helpers import result_of

MD5 = "9d67e81c0a6f1b5e4e1f2d3c4b5a6978"
SHA256 = "0123456789abcdef" * 4
PREFIX = "common_community-" + hashlib.sha1(b"Common Community").hexdigest()[:8]  # noqa: S324


def file(md5: str | None = MD5, sha256: str | None = None, **kw: Any) -> Indicator:
    """
    A File indicator from "Common Community" rated 4 (score 80).
    """
    kw.setdefault("rating", 4.0)
    kw.setdefault("source", "Common Community")
    return Indicator(owner="Common Community", type="File", md5=md5, sha256=sha256, **kw)


def address(ip: str, **kw: Any) -> Indicator:
    """
    An Address indicator from "Common Community" rated 4 (score 80).
    """
    kw.setdefault("rating", 4.0)
    kw.setdefault("source", "Common Community")
    return Indicator(owner="Common Community", type="Address", ip=ip, **kw)


def host(name: str, **kw: Any) -> Indicator:
    """
    A Host indicator from "Common Community" rated 4 (score 80).
    """
    kw.setdefault("rating", 4.0)
    kw.setdefault("source", "Common Community")
    return Indicator(owner="Common Community", type="Host", host=name, **kw)


def build(indicators: list[Indicator], **kw: Any) -> tuple[dict[str, Any], FeedBuilder]:
    """
    Build a feed from one page and check that it is valid.
    """
    builder = FeedBuilder(FeedSettings(**kw))
    builder.add(indicators)
    doc = builder.build()
    assert validate_document(doc) == []
    return doc, builder


def sample() -> list[Indicator]:
    """
    A mixed set of indicators from two sources.
    """
    return [
        file(MD5.upper(), SHA256, id="1", last_modified=100),
        file("b" * 32, id="2", last_modified=300, rating=2.0),
        address("10.0.0.1", id="3", last_modified=200),
        address("2001:DB8::1", id="4", last_modified=50),
        host("Evil.Example.COM.", id="5", last_modified=10),
        host("other.example", id="6", source="Common-Community", rating=5.0),
        file(None, sha256="c" * 64, id="7", source="Common-Community", rating=5.0),
    ]


def test_condensed() -> None:
    """
    Condensed grouping gives one report per source, IOC kind and score, with
    stable ids, descriptive titles and the newest lastModified as timestamp.
    """
    doc, builder = build(sample())
    reports = {report["id"]: report for report in doc["reports"]}
    assert list(reports) == sorted(reports)
    md5_80 = reports[f"{PREFIX}-md5-80"]
    assert md5_80 == {
        "id": f"{PREFIX}-md5-80",
        "timestamp": 100,
        "link": "https://app.threatconnect.com/browse/index.xhtml#/?owner=Common%20Community&type=File",
        "title": "ThreatConnect Common Community: File md5 IOCs, score 80",
        "score": 80,
        "iocs": {"md5": [MD5]},
    }
    assert reports[f"{PREFIX}-sha256-80"]["iocs"] == {"sha256": [SHA256]}
    assert reports[f"{PREFIX}-md5-40"]["iocs"] == {"md5": ["b" * 32]}
    assert reports[f"{PREFIX}-ipv4-80"]["iocs"] == {"ipv4": ["10.0.0.1"]}
    assert reports[f"{PREFIX}-ipv6-80"]["iocs"] == {"ipv6": ["2001:db8::1"]}
    assert reports[f"{PREFIX}-dns-80"]["iocs"] == {"dns": ["evil.example.com"]}
    other = [rid for rid in reports if not rid.startswith(PREFIX)]
    assert len(other) == 2
    assert all(rid.startswith("common_community-") for rid in other)
    assert builder.stats.reports == 8
    assert builder.stats.iocs_by_kind == {"md5": 2, "sha256": 2, "ipv4": 1, "ipv6": 1, "dns": 2}
    assert builder.stats.per_source["Common Community"].indicators == 5
    assert builder.stats.per_source["Common Community"].iocs == 6
    assert builder.stats.per_source["Common-Community"].iocs == 2


def test_max_condensed() -> None:
    """
    MaxCondensed grouping gives one report per source and score holding
    every IOC kind, keys in a fixed order.
    """
    doc, _ = build(sample(), grouping="MaxCondensed")
    reports = {report["id"]: report for report in doc["reports"]}
    main = reports[f"{PREFIX}-all-80"]
    assert list(main["iocs"]) == ["md5", "sha256", "ipv4", "ipv6", "dns"]
    assert main["title"] == "ThreatConnect Common Community: all IOCs, score 80"
    assert main["timestamp"] == 200
    assert reports[f"{PREFIX}-all-40"]["iocs"] == {"md5": ["b" * 32]}
    assert len(reports) == 3


def test_expanded() -> None:
    """
    Expanded grouping gives one report per indicator: its link is the
    indicator's web link, its title names the type and value, a File report
    holds both hashes and the description is carried over.
    """
    indicators = [
        file(
            MD5,
            SHA256,
            id="1234",
            last_modified=77,
            web_link="https://app.threatconnect.com/auth/indicators/details/file.xhtml?file=X",
            description="Dropper seen in <b>phishing</b>",
        ),
        host("evil.example", id="", rating=1.0),
    ]
    doc, _ = build(indicators, grouping="Expanded")
    first, second = doc["reports"]
    assert first == {
        "id": f"{PREFIX}-1234",
        "timestamp": 77,
        "link": "https://app.threatconnect.com/auth/indicators/details/file.xhtml?file=X",
        "title": "ThreatConnect Common Community: File 9d67e81c... (score 80)",
        "score": 80,
        "iocs": {"md5": [MD5], "sha256": [SHA256]},
        "description": "Dropper seen in <b>phishing</b>",
    }
    assert re.fullmatch(PREFIX + r"-h[0-9a-f]{16}", second["id"])
    assert second["title"] == "ThreatConnect Common Community: Host evil.example (score 20)"
    assert second["link"] == "https://app.threatconnect.com/"
    assert "description" not in second


def test_web_url_for_group_links() -> None:
    """
    Group reports link (best effort) to a ThreatConnect browse page for the
    owner and type under the configured web UI, or else under the site the
    indicators' own web links point at.
    """
    indicators = [file(web_link="https://sandbox.threatconnect.com/auth/x?id=1")]
    doc, _ = build(indicators)
    assert doc["reports"][0]["link"] == (
        "https://sandbox.threatconnect.com/browse/index.xhtml#/?owner=Common%20Community&type=File"
    )
    doc, _ = build(indicators, web_url="https://tc.example.org/")
    assert doc["reports"][0]["link"] == (
        "https://tc.example.org/browse/index.xhtml#/?owner=Common%20Community&type=File"
    )
    doc, _ = build(indicators, web_url="https://tc.example.org", grouping="MaxCondensed")
    assert doc["reports"][0]["link"] == (
        "https://tc.example.org/browse/index.xhtml#/?owner=Common%20Community"
    )


@pytest.mark.parametrize("grouping", ["Expanded", "Condensed", "MaxCondensed"])
def test_page_order_does_not_matter(grouping: str) -> None:
    """
    The same indicators in any page order and split give byte-identical
    feeds, so ETags are stable; build_bytes gives the same bytes as
    dumps(build()).
    """
    indicators = sample() + [file(f"{n:032x}", id=str(100 + n), last_modified=n) for n in range(50)]
    outputs = set()
    for seed in range(4):
        shuffled = indicators[:]
        random.Random(seed).shuffle(shuffled)
        for use_bytes in (False, True):
            builder = FeedBuilder(FeedSettings(grouping=grouping))  # type: ignore[arg-type]
            for start in range(0, len(shuffled), 7):
                builder.add(shuffled[start : start + 7])
            outputs.add(builder.build_bytes() if use_bytes else dumps(builder.build()))
    assert len(outputs) == 1
    assert validate_bytes(outputs.pop()) == []


def test_distinct_sources_get_distinct_ids() -> None:
    """
    Sources whose names differ only in punctuation or case still get
    different report ids.
    """
    names = ["Acme Corp", "Acme-Corp", "acme corp", "ACME_CORP"]
    doc, _ = build([file(f"{n:032x}", source=name) for n, name in enumerate(names)])
    ids = [report["id"] for report in doc["reports"]]
    assert len(set(ids)) == 4
    assert all(rid.startswith("acme_corp-") for rid in ids)


def test_invalid_values_are_counted_not_published() -> None:
    """
    Invalid values never reach the feed; each is counted under its reason,
    and a File with only a SHA-1 is counted as having no Carbon Black type.
    """
    indicators = [
        file(MD5 + "\n"),
        file("x" * 32, sha256=SHA256),
        file(None, sha256="short"),
        file(None, sha1="a" * 40),
        file(None),
        address("999.1.1.1"),
        address("1.2.3"),
        host("bad_host.example"),
        host("trail-.example"),
        Indicator(source="Common Community", owner="", type="URL", rating=5.0),
    ]
    doc, builder = build(indicators)
    assert [r["iocs"] for r in doc["reports"]] == [{"sha256": [SHA256]}]
    assert builder.stats.skipped == {
        "invalid md5": 2,
        "invalid sha256": 1,
        "sha1 only (no Carbon Black type)": 1,
        "missing value": 1,
        "invalid ipv4/ipv6": 2,
        "invalid dns": 2,
        "unsupported type URL": 1,
    }
    assert builder.stats.indicators == 10


def test_min_score_and_score_sources() -> None:
    """
    Indicators scoring below the minimum are left out; the score comes from
    the rating (x 20) or, if configured, from the confidence.
    """
    indicators = [
        file("1" * 32, rating=1.0, confidence=90),
        file("2" * 32, rating=3.0, confidence=10),
        file("3" * 32, rating=None, confidence=None),
    ]
    doc, builder = build(indicators, min_score=40)
    assert [(r["score"], r["iocs"]["md5"]) for r in doc["reports"]] == [(60, ["2" * 32])]
    assert builder.stats.skipped == {"below minimum score": 2}
    doc, _ = build(indicators, min_score=40, score_source="confidence")
    assert [(r["score"], r["iocs"]["md5"]) for r in doc["reports"]] == [(90, ["1" * 32])]
    doc, _ = build(indicators, min_score=0)
    assert sorted(r["score"] for r in doc["reports"]) == [0, 20, 60]


def test_exclusions() -> None:
    """
    Excluded values are dropped whatever their case or notation, and
    counted; the rest of the same indicator is kept.
    """
    exclusions = Exclusions.from_lines(
        hashes=[MD5.upper()], ips=["2001:0DB8:0:0::1"], hosts=["Evil.Example"]
    )
    indicators = [
        file(MD5, SHA256),
        address("2001:db8::1"),
        address("10.1.1.1"),
        host("evil.example."),
    ]
    doc, builder = build(indicators, exclusions=exclusions)
    iocs = [r["iocs"] for r in doc["reports"]]
    assert iocs == [{"ipv4": ["10.1.1.1"]}, {"sha256": [SHA256]}]
    assert builder.stats.skipped == {"excluded": 3}


def test_type_filter() -> None:
    """
    Only the configured ThreatConnect types are included; the others are
    counted as disabled.
    """
    doc, builder = build(sample(), types=frozenset({"Host"}))
    assert {kind for r in doc["reports"] for kind in r["iocs"]} == {"dns"}
    assert builder.stats.skipped == {"type disabled": 5}


def test_max_reports() -> None:
    """
    With max_reports, the reports with the highest score (then the newest
    timestamp, then the smallest id) are kept, still published in id order,
    and the rest are counted as truncated.
    """
    full, _ = build(sample())
    doc, builder = build(sample(), max_reports=3)
    ranked = sorted(full["reports"], key=lambda r: (-r["score"], -r["timestamp"], r["id"]))
    assert doc["reports"] == sorted(ranked[:3], key=lambda r: r["id"])
    assert [r["score"] for r in doc["reports"]] == [100, 100, 80]
    assert builder.stats.reports == 3
    assert builder.stats.truncated_reports == len(full["reports"]) - 3
    assert sum(builder.stats.iocs_by_kind.values()) == sum(
        len(values) for r in doc["reports"] for values in r["iocs"].values()
    )


def test_duplicates() -> None:
    """
    A value seen twice in one Condensed report appears once and is counted
    as a duplicate; an indicator seen twice in Expanded mode gives one
    report, the same whichever copy came first.
    """
    doc, builder = build([file(MD5), file(MD5.upper()), file(MD5, last_modified=9)])
    assert doc["reports"][0]["iocs"] == {"md5": [MD5]}
    assert doc["reports"][0]["timestamp"] == 9
    assert builder.stats.skipped == {"duplicate": 2}
    assert builder.stats.iocs_by_kind["md5"] == 1
    old = file(MD5, id="5", last_modified=1)
    new = file(MD5, id="5", last_modified=2)
    one, builder = build([old, new], grouping="Expanded")
    two, _ = build([new, old], grouping="Expanded")
    assert one == two
    assert len(one["reports"]) == 1
    assert one["reports"][0]["timestamp"] == 2
    assert builder.stats.skipped == {"duplicate": 1}


def test_untrusted_text_is_safe() -> None:
    """
    Source names with newlines and descriptions with lone surrogates still
    give a one-line title and serialisable output.
    """
    indicators = [
        file(source="Evil\nSource\r", description="bad \ud800 text", id="1"),
    ]
    for grouping in ("Expanded", "Condensed"):
        doc, _ = build(indicators, grouping=grouping)
        assert "\n" not in doc["reports"][0]["title"]
        assert validate_bytes(dumps(doc)) == []


def test_build_once() -> None:
    """
    A builder builds one feed: building again or adding afterwards is an
    error rather than a silently empty feed.
    """
    builder = FeedBuilder()
    builder.add([file()])
    builder.build()
    with pytest.raises(RuntimeError):
        builder.build()
    with pytest.raises(RuntimeError):
        builder.add([file()])


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_feedinfo_and_icons() -> None:
    """
    The feedinfo carries the ThreatConnect identity and both icons as
    base64 PNGs of the recommended sizes; the empty document is valid.
    """
    info = feedinfo_dict(FeedInfo())
    assert info["name"] == "threatconnectintegration"
    assert info["category"] == "Partner"
    assert _png_size(base64.b64decode(info["icon"])) == (370, 97)
    assert _png_size(base64.b64decode(info["icon_small"])) == (100, 100)
    assert _png_size(get_icon_bytes("carbonblack.png")) == (370, 97)
    assert get_icon_bytes("threatconnect.png") == base64.b64decode(info["icon"])
    with pytest.raises(KeyError):
        get_icon_bytes("../builder.py")
    doc = empty_document(FeedInfo(display_name="TC Test"))
    assert doc["reports"] == []
    assert doc["feedinfo"]["display_name"] == "TC Test"
    assert validate_document(doc) == []


def test_dumps_pretty() -> None:
    """
    The pretty form is the same document, indented, for people to read.
    """
    doc, _ = build(sample())
    pretty = dumps_pretty(doc)
    assert b"\n  " in pretty
    assert orjson.loads(pretty) == orjson.loads(dumps(doc))


_text = st.text(alphabet=st.characters(codec=None), max_size=20)
_hexish = st.one_of(
    st.none(),
    _text,
    st.text(alphabet="0123456789abcdefABCDEF\n ", min_size=30, max_size=66),
)
_indicators = st.builds(
    Indicator,
    source=st.sampled_from(["Common Community", "Acme-Corp", "", "\n", "x" * 80]) | _text,
    owner=_text,
    type=st.sampled_from(["File", "Address", "Host", "URL", "EmailAddress"]) | _text,
    id=st.one_of(_text, st.integers(0, 10**25).map(str)),
    md5=_hexish,
    sha1=_hexish,
    sha256=_hexish,
    ip=st.one_of(st.none(), _text, st.ip_addresses().map(str)),
    host=st.one_of(st.none(), _text, st.from_regex(r"[A-Za-z0-9.\-_]{1,70}", fullmatch=True)),
    rating=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    confidence=st.one_of(st.none(), st.integers()),
    last_modified=st.one_of(st.none(), st.integers()),
    web_link=_text,
    description=st.one_of(st.none(), _text),
    tags=st.lists(_text, max_size=3).map(tuple),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pages=st.lists(st.lists(_indicators, max_size=8), max_size=4),
    grouping=st.sampled_from(["Expanded", "Condensed", "MaxCondensed"]),
    min_score=st.integers(0, 100),
)
def test_any_input_gives_a_valid_feed(
    pages: list[list[Indicator]], grouping: str, min_score: int
) -> None:
    """
    Whatever ThreatConnect sends (arbitrary text, ratings, timestamps), the
    feed is valid and serialisable.
    """
    builder = FeedBuilder(FeedSettings(grouping=grouping, min_score=min_score))  # type: ignore[arg-type]
    for page in pages:
        builder.add(page)
    data = builder.build_bytes()
    assert validate_bytes(data) == []
    assert builder.stats.indicators == sum(map(len, pages))


OTHER = "Example Organization"
JOINED = f"Common Community + {OTHER}"


def test_cross_owner_dedupe_condensed() -> None:
    """
    A value two owners both report appears once, in a report whose title
    names both, at the higher score and the newer timestamp; per-source
    counts still credit each owner and shared_iocs counts the value once.
    """
    indicators = [
        file(MD5, rating=2.0, last_modified=10),
        file(MD5, rating=4.0, last_modified=5, source=OTHER),
        file("a" * 32, source=OTHER, last_modified=7),
    ]
    for grouping, what in (("Condensed", "File md5"), ("MaxCondensed", "all")):
        doc, builder = build(indicators, grouping=grouping)
        shared = [r for r in doc["reports"] if MD5 in r["iocs"].get("md5", [])]
        assert len(shared) == 1
        assert shared[0]["title"] == f"ThreatConnect {JOINED}: {what} IOCs, score 80"
        assert shared[0]["iocs"] == {"md5": [MD5]}
        assert shared[0]["timestamp"] == 10
        assert "owner=Common%20Community" in shared[0]["link"]
        values = [v for r in doc["reports"] for vs in r["iocs"].values() for v in vs]
        assert sorted(values) == sorted({MD5, "a" * 32})
        assert builder.stats.shared_iocs == 1
        assert builder.stats.per_source["Common Community"].iocs == 1
        assert builder.stats.per_source[OTHER].iocs == 2
        assert builder.stats.iocs_by_kind["md5"] == 2


def test_same_value_two_scores_one_source() -> None:
    """
    A value one source gives two scores (two indicators) appears once, at
    the higher score.
    """
    doc, builder = build([file(MD5, rating=1.0), file(MD5, rating=5.0)])
    assert [(r["score"], r["iocs"]) for r in doc["reports"]] == [(100, {"md5": [MD5]})]
    assert builder.stats.skipped == {"duplicate": 1}


def test_cross_owner_merge_expanded() -> None:
    """
    In Expanded mode indicators with the same IOCs from different owners
    become one report naming both, linking to the first owner's page; a
    value also in a different indicator stays only in the higher-scored one.
    """
    link_a = "https://app.threatconnect.com/auth/indicators/details/host.xhtml?host=a"
    indicators = [
        host("evil.example", id="7", web_link=link_a, tags=("Bad Guy",), rating=3.0),
        host("evil.example", id="9", source=OTHER, web_link="https://x.example/b", tags=("c2",)),
        file(MD5, SHA256, id="1", rating=5.0),
        file(MD5, id="2", source=OTHER, rating=1.0),
    ]
    doc, builder = build(indicators, grouping="Expanded")
    reports = doc["reports"]
    assert [r["id"] for r in reports] == [f"{PREFIX}-1", f"{PREFIX}-7"]
    evil = reports[1]
    assert evil["title"] == f"ThreatConnect {JOINED}: Host evil.example (score 80)"
    assert evil["link"] == link_a
    assert evil["tags"] == ["BadGuy", "c2"]
    assert reports[0]["iocs"] == {"md5": [MD5], "sha256": [SHA256]}
    assert builder.stats.skipped == {"duplicate": 1}
    assert builder.stats.shared_iocs == 1


def test_tags_in_every_mode() -> None:
    """
    Reports carry Carbon Black tags (ASCII letters and digits, at most 32
    characters, no empties or duplicates) in every grouping mode; group
    reports list the most frequent first, then alphabetically, at most 20;
    a report without tags has no tags key.
    """
    indicators = [
        file("1" * 32, tags=("APT-28", "zeta", "\u00e9t\u00e9!", "x" * 40)),
        file("2" * 32, tags=("apt 28", "zeta", "APT_28")),
        file("3" * 32, tags=tuple(f"t{n:02}" for n in range(30))),
        host("plain.example"),
    ]
    doc, _ = build(indicators)
    by_kind = {next(iter(r["iocs"])): r for r in doc["reports"]}
    tags = by_kind["md5"]["tags"]
    assert tags[:5] == ["APT28", "zeta", "apt28", "t", "t00"]
    assert len(tags) == 20 and "x" * 32 not in tags
    assert "tags" not in by_kind["dns"]
    doc, _ = build(indicators, grouping="MaxCondensed")
    assert doc["reports"][0]["tags"][:2] == ["APT28", "zeta"]
    doc, _ = build(indicators, grouping="Expanded")
    first = next(r for r in doc["reports"] if r["iocs"] == {"md5": ["1" * 32]})
    assert first["tags"] == ["APT28", "zeta", "t", "x" * 32]


def test_expanded_link_must_be_http() -> None:
    """
    An Expanded report links to the indicator's web link only when it is an
    http(s) URL; otherwise to the configured web UI.
    """
    doc, _ = build([host("a.example", web_link="javascript:alert(1)")], grouping="Expanded")
    assert doc["reports"][0]["link"] == "https://app.threatconnect.com/"
    doc, _ = build(
        [host("a.example", web_link="https://x y")], grouping="Expanded", web_url="https://tc/"
    )
    assert doc["reports"][0]["link"] == "https://tc/"


_LINK_HEADS = (
    "https://app.threatconnect.com/#/details/indicators/",
    "https://tc7.example/#/details/indicators/",
    "https://tc.example/auth/host.xhtml?host=",
    "javascript:",
    "http://",
    "https://x.example/",
)
_LINK_IDS = ("7", "71", "1000", "1 2", "\u00e91", "", "77", "s", "x", "007", "9" * 21)
_LINK_TAILS = ("/overview", "", "&owner=Common%20Community", " x")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example([("http://", "1000", "", False), ("http://", "7", "", False)])  # too short a link
@example([("https://x.example/", "1000", "", True), ("http://", "7", "", True)])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_LINK_HEADS),
            st.sampled_from(_LINK_IDS),
            st.sampled_from(_LINK_TAILS),
            st.booleans(),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_expanded_links_of_a_page_are_those_of_one_indicator_at_a_time(
    rows: list[tuple[str, str, str, bool]],
) -> None:
    """
    An Expanded feed's links are the same whether its indicators come in
    one page (where a link shaped like the one before it, by id as v3's
    webLink or by value as v2's links, is taken as that shape) or one page
    each: ids found in the text before them, ids a URL cannot hold, values
    in the link, links that are not http(s) included.
    """
    indicators = [
        host(
            f"h{n}.example",
            id=ident,
            web_link=head + (f"h{n}.example" if by_value else ident) + tail,
        )
        for n, (head, ident, tail, by_value) in enumerate(rows)
    ]
    settings_ = FeedSettings(grouping="Expanded", web_url="https://tc/")
    one_page = FeedBuilder(settings_)
    one_page.add(indicators)
    one_each = FeedBuilder(settings_)
    for indicator in indicators:
        one_each.add([indicator])
    assert one_page.build() == one_each.build()


def test_expanded_link_keeps_an_id_that_is_not_a_number() -> None:
    """
    An Expanded report whose indicator's id is not a plain number (its
    report id then takes a hash) still links to its web link as written.
    """
    link = "https://tc.example/#/details/indicators/abc/overview"
    doc, _ = build([host("a.example", id="abc", web_link=link)], grouping="Expanded")
    assert doc["reports"][0]["link"] == link
    doc, _ = build(
        [host("a.example", id="12", web_link=link.replace("abc", "12"))], grouping="Expanded"
    )
    assert doc["reports"][0]["link"] == link.replace("abc", "12")


def test_score_sources_and_min_rating() -> None:
    """
    The score can come from threatAssessScore or the max of all sources;
    min_rating compares the raw rating (unrated indicators fail a minimum
    above 0) and min_score the computed score, both applied.
    """
    indicators = [
        file("1" * 32, rating=1.0, confidence=90),
        file("2" * 32, rating=3.0, confidence=10),
        file("3" * 32, rating=None, confidence=70),
    ]
    doc, _ = build(indicators, score_source="max", min_score=0)
    assert sorted(r["score"] for r in doc["reports"]) == [60, 70, 90]
    doc, builder = build(indicators, score_source="max", min_rating=2.0, min_score=0)
    assert [r["score"] for r in doc["reports"]] == [60]
    assert builder.stats.skipped == {"below minimum rating": 2}
    doc, builder = build(indicators, score_source="confidence", min_rating=1.0, min_score=50)
    assert [r["score"] for r in doc["reports"]] == [90]
    assert builder.stats.skipped == {"below minimum rating": 1, "below minimum score": 1}
    doc, _ = build(indicators, score_source="threatAssessScore", min_score=0)
    assert [r["score"] for r in doc["reports"]] == [0]


def test_excluded_by_list() -> None:
    """
    IOC values removed by exclusion lists are counted per list name, by
    exact value, CIDR range and host suffix.
    """
    from tcbridge.feed.filters import Exclusions, parse_exclusion_file

    ips, _ = parse_exclusion_file("ips", "filtered_ips", "i", ["10.0.0.0/8"])
    hosts, _ = parse_exclusion_file("hosts", "filtered_hosts", "h", ["*.corp.example"])
    indicators = [address("10.2.3.4"), address("11.0.0.1"), host("a.corp.example")]
    doc, builder = build(indicators, exclusions=Exclusions.of([ips, hosts]))
    assert [r["iocs"] for r in doc["reports"]] == [{"ipv4": ["11.0.0.1"]}]
    assert builder.stats.excluded_by == {"filtered_ips": 1, "filtered_hosts": 1}
    assert builder.stats.skipped == {"excluded": 2}


def test_report_count_warning() -> None:
    """
    Above the warning threshold the stats advise fewer reports, suggesting
    Condensed unless the feed is already Condensed.
    """
    indicators = [file(f"{n:032x}", id=str(n)) for n in range(4)]
    _, builder = build(indicators, grouping="Expanded", report_warning_threshold=3)
    assert builder.stats.warnings == [
        "4 reports: Carbon Black advises fewer than 3 per feed; set ioc_grouping = Condensed"
    ]
    indicators = [file(f"{n:032x}", rating=n / 2) for n in range(4)]
    _, builder = build(indicators, report_warning_threshold=3, min_score=0)
    assert builder.stats.warnings == [
        "4 reports: Carbon Black advises fewer than 3 per feed; "
        "set max_reports, or ioc_grouping = MaxCondensed"
    ]
    _, builder = build(indicators)
    assert builder.stats.warnings == []


def _mixed() -> list[Indicator]:
    extra = [
        file(MD5, source=OTHER, tags=("Shared",), rating=5.0, last_modified=3),
        host("evil.example.com", source=OTHER, tags=("b", "a")),
        address("10.0.0.1", source="Third", tags=("a",)),
    ]
    return (
        sample()
        + extra
        + [
            file(f"{n:032x}", id=str(100 + n), last_modified=n, tags=(f"t{n % 3}",))
            for n in range(30)
        ]
    )


@pytest.mark.parametrize("grouping", ["Expanded", "Condensed", "MaxCondensed"])
def test_page_order_does_not_matter_with_dedupe_and_history(grouping: str) -> None:
    """
    With cross-owner duplicates, tags, links and a history, the same data
    in any page order gives byte-identical feeds and equal histories.
    """
    first = FeedBuilder(FeedSettings(grouping=grouping))  # type: ignore[arg-type]
    first.add(_mixed())
    first.build_bytes()
    outputs = set()
    histories = []
    for seed in range(4):
        shuffled = _mixed()[1:]
        random.Random(seed).shuffle(shuffled)
        builder = FeedBuilder(FeedSettings(grouping=grouping), history=first.history)  # type: ignore[arg-type]
        for start in range(0, len(shuffled), 5):
            builder.add(shuffled[start : start + 5])
        outputs.add(builder.build_bytes())
        histories.append(builder.history)
    assert len(outputs) == 1
    assert all(history == histories[0] for history in histories)
    assert validate_bytes(outputs.pop()) == []


_tag_text = st.text(alphabet=st.characters(codec=None), max_size=40)
_shared_indicators = st.builds(
    Indicator,
    source=st.sampled_from(["Common Community", OTHER, "Third", "A + B", ""]),
    owner=st.just("x"),
    type=st.sampled_from(["File", "Address", "Host"]),
    id=st.integers(0, 30).map(str),
    md5=st.sampled_from([None, MD5, "a" * 32, "B" * 32]),
    sha256=st.sampled_from([None, SHA256, "c" * 64]),
    ip=st.sampled_from([None, "10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:DB8::1"]),
    host=st.sampled_from([None, "evil.example", "EVIL.example.", "b.example"]),
    rating=st.one_of(st.none(), st.floats(-1, 6)),
    confidence=st.one_of(st.none(), st.integers(-5, 120)),
    last_modified=st.one_of(st.none(), st.integers(-5, 2**60)),
    web_link=st.one_of(_tag_text, st.just("https://app.threatconnect.com/x")),
    description=st.one_of(st.none(), _tag_text),
    tags=st.lists(_tag_text, max_size=25).map(tuple),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pages=st.lists(st.lists(_shared_indicators, max_size=10), max_size=4),
    grouping=st.sampled_from(["Expanded", "Condensed", "MaxCondensed"]),
    score_source=st.sampled_from(["rating", "confidence", "threatAssessScore", "max"]),
)
def test_shared_values_appear_once(
    pages: list[list[Indicator]], grouping: str, score_source: str
) -> None:
    """
    Indicators from several labels with arbitrary tags, text and ratings
    never give a document the validator rejects, and every IOC value
    appears at most once in the feed.
    """
    builder = FeedBuilder(
        FeedSettings(grouping=grouping, score_source=score_source, min_score=0)  # type: ignore[arg-type]
    )
    for page in pages:
        builder.add(page)
    doc = builder.build()
    assert validate_document(doc) == []
    values = [(k, v) for r in doc["reports"] for k, vs in r["iocs"].items() for v in vs]
    assert len(values) == len(set(values))
    assert sum(builder.stats.iocs_by_kind.values()) == len(values)


def test_shared_ids_lose_no_indicator() -> None:
    """
    Two indicators of one source that share a ThreatConnect id but differ
    in type or value both reach an Expanded feed, under distinct report
    ids that do not depend on the order the pages arrived in.
    """
    indicators = [
        file("a" * 32, id="7"),
        address("10.0.0.7", id="7"),
        host("twin.example.com", id="7"),
        file("c" * 32, id="8"),
    ]
    seen = []
    for order in (indicators, indicators[::-1]):
        doc, builder = build(order, grouping="Expanded")
        assert builder.stats.skipped.get("duplicate", 0) == 0
        ids = {r["id"]: sorted(v for vs in r["iocs"].values() for v in vs) for r in doc["reports"]}
        assert len(ids) == 4
        assert sorted(v for vs in ids.values() for v in vs) == sorted(
            ["a" * 32, "c" * 32, "10.0.0.7", "twin.example.com"]
        )
        seen.append(ids)
    assert seen[0] == seen[1]
    assert f"{PREFIX}-7" in seen[0]


def test_missing_ids_beside_numeric_ones() -> None:
    """
    A page where some indicators have a numeric id and others none builds:
    the ones without an id get a hashed id.
    """
    doc, _ = build(
        [file("a" * 32, id="12"), file("b" * 32, id=""), file("c" * 32, id="0")],
        grouping="Expanded",
    )
    ids = sorted(report["id"].rsplit("-", 1)[1] for report in doc["reports"])
    assert ids[:2] == ["0", "12"] and ids[2].startswith("h") and len(ids) == 3


@functools.cache
def _pulled_records(count: int) -> list[Any]:
    """
    Every indicator a pull of all owners of a simulator with C{count}
    indicators hands on, as records, in the order they came.
    """
    from twisted.internet import defer

    from tcbridge.model import Source
    from tcbridge.threatconnect.pull import PullOptions, pull_source
    from tests.unit.test_sync import Harness

    h = Harness(count=count)
    batches: list[Any] = []
    d = defer.ensureDeferred(
        pull_source(h.client, Source("*", "all", "*"), PullOptions(), batches.extend)
    )
    result_of(h.settle(d))
    return [record for batch in batches for record in batch.records()]


@settings(max_examples=8, deadline=None)
@given(
    grouping=st.sampled_from(["Expanded", "Condensed", "MaxCondensed"]),
    seed=st.integers(min_value=0, max_value=2**32),
    chunk=st.integers(min_value=1, max_value=700),
)
def test_feed_bytes_do_not_depend_on_the_order_indicators_come_in(
    tmp_path_factory: pytest.TempPathFactory, grouping: str, seed: int, chunk: int
) -> None:
    """
    The same indicators, taken in in any order and in pages of any size,
    give byte-identical feeds: a feed built from a store of indicators (in
    its own order) is the feed a pull gives.
    """
    pulled = _pulled_records(1500)
    shuffled = list(pulled)
    random.Random(seed).shuffle(shuffled)
    folder = str(tmp_path_factory.mktemp("feeds"))
    feeds = []
    for records, size in ((pulled, 500), (shuffled, chunk)):
        builder = FeedBuilder(FeedSettings(grouping=grouping))
        for at in range(0, len(records), size):
            builder.add(records[at : at + size])
        built = build_feed_file(builder, folder, gzip=False, pretty=False)
        with open(built.path, "rb") as f:
            feeds.append(f.read())
    assert feeds[0] == feeds[1]


def test_expanded_links_of_another_instance() -> None:
    """
    An Expanded report whose indicator came without a link points at the
    web UI of its own ThreatConnect instance, whether it is a report by
    itself or made of several indicators sharing a value.
    """
    settings = FeedSettings(
        grouping="Expanded",
        web_url="https://tc.example/auth",
        instance_web_urls=(("partner/", "https://partner.example/auth"),),
    )
    builder = FeedBuilder(settings)
    builder.add(
        [
            file("a" * 32, id="1", source="partner/Org"),
            file("b" * 32, id="2"),
            host("twice.example.com", id="3", source="partner/Org"),
            host("twice.example.com", id="4", source="partner/Org"),
        ]
    )
    links = {next(iter(r["iocs"].values()))[0]: r["link"] for r in builder.build()["reports"]}
    assert links == {
        "a" * 32: "https://partner.example/auth",
        "b" * 32: "https://tc.example/auth",
        "twice.example.com": "https://partner.example/auth",
    }


def test_expanded_ids_and_timestamps_of_any_size() -> None:
    """
    ThreatConnect ids and timestamps too large for 32 bits reach the
    Expanded feed exactly, whether they come before, between or after
    small ones, and the reports of the small ones are not changed by them.
    """
    small = [file(f"{n:032x}", id=str(n + 1), last_modified=100 + n) for n in range(3)]
    large = [
        file("f" * 32, id="123456789012345678", last_modified=2**40),
        host("wide.example", id=str(2**32), last_modified=2**32),
    ]
    feeds = []
    for pages in ([small, large], [large, small], [small[:1], large, small[1:]]):
        builder = FeedBuilder(FeedSettings(grouping="Expanded"))
        for page in pages:
            builder.add(page)
        feeds.append(dumps(builder.build()))
    assert feeds[0] == feeds[1] == feeds[2]
    reports = {r["id"]: r for r in orjson.loads(feeds[0])["reports"]}
    assert reports[f"{PREFIX}-123456789012345678"]["timestamp"] == 2**40
    assert reports[f"{PREFIX}-{2**32}"]["timestamp"] == 2**32
    assert [reports[f"{PREFIX}-{n + 1}"]["timestamp"] for n in range(3)] == [100, 101, 102]
    only_small = FeedBuilder(FeedSettings(grouping="Expanded"))
    only_small.add(small)
    large_ids = {f"{PREFIX}-123456789012345678", f"{PREFIX}-{2**32}"}
    kept = [r for r in orjson.loads(feeds[0])["reports"] if r["id"] not in large_ids]
    assert kept == only_small.build()["reports"]


def test_extended_keeps_arrays_narrow_until_a_value_needs_more() -> None:
    """
    L{extended} appends in place while values fit, and hands back a wider
    copy holding every value when one does not.
    """
    from array import array

    from tcbridge.feed.columns import extended

    codes = array("H", [1, 2])
    assert extended(codes, [3]) is codes and codes.tolist() == [1, 2, 3]
    wider = extended(codes, iter([70_000, 4]))
    assert wider.typecode == "I" and wider.tolist() == [1, 2, 3, 70_000, 4]
    widest = extended(wider, array("Q", [2**40]))
    assert widest.typecode == "Q" and widest.tolist()[-1] == 2**40
    assert extended(array("I", [5]), array("B", [6])).tolist() == [5, 6]
    with pytest.raises(OverflowError):
        extended(array("H"), [-1])


def test_expanded_with_more_labels_than_a_byte_holds() -> None:
    """
    Sources past the 256th keep their own reports and titles (the store's
    label column widens as it must).
    """
    names = [f"Owner {n:03d}" for n in range(300)]
    builder = FeedBuilder(FeedSettings(grouping="Expanded"))
    for n, name in enumerate(names):
        builder.add([host(f"h{n}.example", id=str(n + 1), source=name)])
    reports = builder.build()["reports"]
    titles = {r["title"].split(":")[0].removeprefix("ThreatConnect ") for r in reports}
    assert len(reports) == 300 and titles == set(names)
    by_value = {r["iocs"]["dns"][0]: r["title"] for r in reports}
    assert by_value["h299.example"].startswith("ThreatConnect Owner 299:")
