"""
Tests for L{tcbridge.feed.merge}: a feed built from pages split between
two builders, one merged into the other, is the feed one builder given
every page builds, in every grouping.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcbridge.feed.builder import FeedBuilder, FeedSettings
from tcbridge.feed.filters import Exclusions
from tcbridge.threatconnect.records import Indicator
from tests.unit.test_feed_builder import address, file, host

GROUPINGS = ("Condensed", "MaxCondensed", "Expanded")
WEB = "https://app.example.com/auth/indicators/details"


def _made(seed: int, count: int) -> list[Indicator]:
    """
    Indicators of three labels with what makes merging hard: tags, links
    and descriptions kept as shared codes, values several indicators hold,
    ids used twice, ids that are not numbers, values in upper case, ids
    and timestamps too large for 32 bits.
    """
    rng = random.Random(seed)
    made = []
    for n in range(count):
        label = rng.choice(("Common Community", "Example Organization", "Other"))
        common: dict[str, Any] = {
            "id": rng.choice(
                (str(n + 1), str(n + 1), str(rng.randrange(5) + 1), f"x{n}", str(2**40 + n))
            ),
            "source": label,
            "rating": float(rng.randrange(1, 6)),
            "last_modified": rng.choice((1_700_000_000, 2**40)) + rng.randrange(1000),
            "tags": tuple(rng.sample(("APT 28", "Botnet", "Phishing", "Crime"), rng.randrange(3))),
            "description": rng.choice((None, None, "seen in a campaign", "dropper")),
        }
        kind = rng.randrange(3)
        if kind == 0:
            md5 = f"{rng.randrange(60):032x}"
            shown = md5.upper() if rng.random() < 0.3 else md5
            link = f"{WEB}/file.xhtml?file={shown}&owner={label}"
            made.append(file(shown, web_link=link, **common))
        elif kind == 1:
            ip = f"198.51.{rng.randrange(3)}.{rng.randrange(40)}"
            made.append(address(ip, web_link=f"{WEB}/address.xhtml?address={ip}", **common))
        else:
            name = f"h{rng.randrange(50)}.example.com"
            made.append(host(name, web_link=f"{WEB}/host.xhtml?host={name}", **common))
    return made


def _settings(grouping: str) -> FeedSettings:
    excluded = Exclusions.from_lines(ips=["198.51.0.0/24"], hosts=["h3.example.com"])
    return FeedSettings(grouping=grouping, exclusions=excluded, min_score=40)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    grouping=st.sampled_from(GROUPINGS),
    seed=st.integers(0, 10_000),
    picks=st.lists(st.booleans(), min_size=1, max_size=40),
)
def test_a_merged_builder_builds_the_same_feed(grouping: str, seed: int, picks: list[bool]) -> None:
    """
    Pages dealt to two builders in any way, merged, give the bytes and the
    figures one builder gives.
    """
    indicators = _made(seed, 200)
    pages = [indicators[at : at + 7] for at in range(0, len(indicators), 7)]
    here, there = FeedBuilder(_settings(grouping)), FeedBuilder(_settings(grouping))
    for number, page in enumerate(pages):
        (there if picks[number % len(picks)] else here).add(page)
    here.merge(there)
    whole = FeedBuilder(_settings(grouping))
    for page in pages:
        whole.add(page)
    assert here.build_bytes() == whole.build_bytes()
    assert here.stats == whole.stats


def test_a_merged_builder_cannot_build_again() -> None:
    """
    The builder merged into another one has given its pages away.
    """
    here, there = FeedBuilder(), FeedBuilder()
    there.add([file()])
    here.merge(there)
    with pytest.raises(RuntimeError):
        there.build_bytes()
    assert b'"md5"' in here.build_bytes()
