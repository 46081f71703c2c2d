"""
Tests for L{tcbridge.feed.reserved} and its use by the builder: values that
can never be a meaningful IOC are left out by default and counted under
their own reason; private ranges only when asked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tcbridge.config import load_config
from tcbridge.feed.builder import FeedBuilder, FeedSettings
from tcbridge.feed.reserved import (
    PRIVATE_ADDRESS,
    RESERVED_ADDRESS,
    RESERVED_NAME,
    left_out,
    reason_for,
)
from tcbridge.sync.work import feed_settings
from tests.unit.test_feed_builder import address, host

RESERVED = [
    ("ipv4", "127.0.0.1"),
    ("ipv4", "127.255.1.2"),
    ("ipv4", "0.0.0.0"),  # noqa: S104
    ("ipv4", "255.255.255.255"),
    ("ipv4", "224.0.0.1"),
    ("ipv4", "239.255.255.250"),
    ("ipv4", "169.254.169.254"),
    ("ipv6", "::1"),
    ("ipv6", "::"),
    ("ipv6", "ff02::1"),
    ("ipv6", "fe80::1"),
    ("ipv6", "febf::1"),
    ("dns", "localhost"),
    ("dns", "printer.localhost"),
    ("dns", "nothing.invalid"),
]
PRIVATE = [
    ("ipv4", "10.1.2.3"),
    ("ipv4", "172.16.0.1"),
    ("ipv4", "172.31.255.254"),
    ("ipv4", "192.168.1.1"),
    ("ipv4", "192.0.2.10"),
    ("ipv4", "198.51.100.7"),
    ("ipv4", "203.0.113.99"),
    ("ipv6", "fd12:3456::1"),
    ("ipv6", "fc00::1"),
    ("ipv6", "2001:db8::1"),
]
ORDINARY = [
    ("ipv4", "1.2.3.4"),
    ("ipv4", "172.32.0.1"),
    ("ipv4", "128.0.0.1"),
    ("ipv4", "223.255.255.255"),
    ("ipv4", "240.0.0.1"),
    ("ipv4", "100.64.0.1"),
    ("ipv6", "2a02:1::1"),
    ("ipv6", "fc::1"),
    ("ipv6", "fec0::1"),
    ("dns", "localhost.example.com"),
    ("dns", "invalid.example"),
    ("dns", "mylocalhost"),
    ("dns", "evil.example.com"),
]


@pytest.mark.parametrize(("kind", "text"), RESERVED + PRIVATE + ORDINARY)
def test_reasons(kind: str, text: str) -> None:
    """
    Each value gets its reason (private ones only when asked), and a value
    checked in a column gets the same answer as alone.
    """
    reserved = RESERVED_NAME if kind == "dns" else RESERVED_ADDRESS
    expected = reserved if (kind, text) in RESERVED else None
    assert reason_for(kind, text, private=False) == expected
    if (kind, text) in PRIVATE:
        expected = PRIVATE_ADDRESS
    assert reason_for(kind, text, private=True) == expected
    column = [t for k, t in RESERVED + PRIVATE + ORDINARY if k == kind]
    assert left_out(kind, column, True)[column.index(text)] == expected


def _values(doc: dict[str, object]) -> set[str]:
    reports = doc["reports"]
    assert isinstance(reports, list)
    return {v for r in reports for vs in r["iocs"].values() for v in vs}


@pytest.mark.parametrize("grouping", ["Condensed", "MaxCondensed", "Expanded"])
def test_left_out_by_default_and_counted(grouping: str) -> None:
    """
    By default reserved values are left out and counted under their own
    reasons; exclude_reserved = false keeps them; exclude_private = true
    leaves out private and documentation addresses too.
    """
    indicators = [
        address("127.0.0.1", id="1"),
        address("ff02::1", id="2"),
        address("10.0.0.1", id="3"),
        address("8.8.8.8", id="4"),
        host("localhost", id="5"),  # no dot: never a Carbon Black dns value anyway
        host("a.localhost", id="7"),
        host("b.invalid", id="8"),
        host("evil.example.com", id="6"),
    ]

    def build(**kw: bool) -> tuple[set[str], dict[str, int]]:
        builder = FeedBuilder(FeedSettings(grouping=grouping, min_score=0, **kw))  # type: ignore[arg-type]
        builder.add(indicators)
        return _values(builder.build()), builder.stats.skipped

    kept, skipped = build()
    assert kept == {"10.0.0.1", "8.8.8.8", "evil.example.com"}
    assert skipped[RESERVED_ADDRESS] == 2 and skipped[RESERVED_NAME] == 2
    assert skipped["invalid dns"] == 1
    kept, skipped = build(exclude_reserved=False)
    assert len(kept) == 7 and RESERVED_ADDRESS not in skipped
    kept, skipped = build(exclude_private=True)
    assert kept == {"8.8.8.8", "evil.example.com"} and skipped[PRIVATE_ADDRESS] == 1
    kept, _ = build(exclude_reserved=False, exclude_private=True)
    assert "10.0.0.1" not in kept and "127.0.0.1" in kept


def test_config_options(tmp_path: Path) -> None:
    """
    exclude_reserved (default true) and exclude_private (default false) are
    read in either section, reach the feed settings, and show on the page.
    """
    base = (
        "[threatconnect]\nurl=https://tc.example\napi_key=1\nsecret_key=2\nsources=*\n"
        "[bridge]\ncache_folder=\n"
    )
    path = tmp_path / "a.conf"
    path.write_text(base)
    config = load_config(str(path))
    assert (config.feed.exclude_reserved, config.feed.exclude_private) == (True, False)
    assert ("left out", "reserved values") in config.display()
    path.write_text(base + "exclude_reserved=false\nexclude_private=yes\n")
    config = load_config(str(path))
    settings, _ = feed_settings(config)
    assert (settings.exclude_reserved, settings.exclude_private) == (False, True)
    assert ("left out", "private and documentation addresses") in config.display()
