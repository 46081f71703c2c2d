"""
The pull side of a delta sync, against the simulator with data that changes:
with C{modified_since}, owner and C{*} sources (v2 and v3) and TQL sources
bring only what changed since then, deactivated indicators among them (to
the inactive handler) and those rated below the minimum too; the deleted
listings (L{tcbridge.threatconnect.deleted}) name what was deleted.
"""

from __future__ import annotations

from typing import Any

import pytest
from attrs import evolve
from twisted.internet import defer

from tcbridge.model import Source
from tcbridge.threatconnect.deleted import Deleted, deleted_of_owners, list_deleted
from tcbridge.threatconnect.errors import ThreatConnectError
from tcbridge.threatconnect.pull import PullOptions, iso_time, pull_source
from tcbridge.threatconnect.records import IndicatorBatch
from tests.helpers import failure_of, result_of
from tests.unit.test_sync import Harness

#: Later than every generated date, so that what changes now is the newest.
NOW = 1_900_000_000
CC = "Common Community"


def _harness() -> Harness:
    h = Harness(count=900)
    h.clock.advance(NOW - h.clock.seconds())
    return h


def _pull(h: Harness, source: Source, options: PullOptions) -> tuple[list[str], list[str]]:
    """
    The values a pull hands on as active, and as inactive.
    """
    active: list[str] = []
    inactive: list[str] = []

    def values(batches: list[IndicatorBatch]) -> list[str]:
        return [v for b in batches for column in b.values.values() for v in column if v]

    options = evolve(options, on_inactive=lambda batches: inactive.extend(values(batches)))
    d = defer.ensureDeferred(
        pull_source(h.client, source, options, lambda batches: active.extend(values(batches)))
    )
    result_of(h.settle(d))
    return active, inactive


def _changes(h: Harness) -> dict[str, Any]:
    """
    Change five Common Community hosts an hour from now: two ratings (one
    below any minimum), a quiet tag change, a deactivation, a deletion.
    """
    h.clock.advance(3600)
    sim = h.simulator
    names = {i: sim.dataset.summary(CC, "Host", i) for i in range(5)}
    sim.change(CC, "Host", 0, rating=5.0)
    sim.change(CC, "Host", 1, rating=0.5)
    sim.change(CC, "Host", 2, touch=False, tag_names=("Quiet",))
    sim.change(CC, "Host", 3, active=False)
    sim.change(CC, "Host", 4, deleted=True)
    return names


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_delta_brings_only_what_changed(version: str) -> None:
    """
    A delta of an owner brings the indicators modified since, the
    deactivated one as inactive, the one rated down (the feed side leaves it
    out); not the quiet tag change (its date did not move), not the deleted
    one.  Without the delta, everything comes.
    """
    h = _harness()
    names = _changes(h)
    options = PullOptions(api_version=version, min_rating=1.0, modified_since=NOW + 1800)
    active, inactive = _pull(h, Source(CC, "owner", CC), options)
    assert sorted(active) == sorted([names[0], names[1]])
    assert inactive == [names[3]]
    full, _ = _pull(h, Source(CC, "owner", CC), evolve(options, modified_since=None))
    assert len(full) > 100 and names[4] not in full and names[3] not in full


def test_delta_of_every_owner_and_of_a_tql_source() -> None:
    """
    C{*} and TQL sources take the same term: a TQL source's own conditions
    still apply (in parentheses) on top of the date.
    """
    h = _harness()
    names = _changes(h)
    options = PullOptions(api_version="v3", modified_since=NOW + 1800)
    active, _ = _pull(h, Source("*", "all", "*"), options)
    assert sorted(active) == sorted([names[0], names[1]])
    tql = Source("hot", "tql", 'typeName IN ("Host") AND rating >= 4')
    active, _ = _pull(h, tql, options)
    assert active == [names[0]]


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_deleted_listing(version: str) -> None:
    """
    The deleted listing names the deleted indicator by owner, type and
    summary; on v3 only deletions since the given time.
    """
    h = _harness()
    names = _changes(h)
    d = defer.ensureDeferred(list_deleted(h.client, CC, since=iso_time(NOW), api_version=version))
    assert result_of(h.settle(d)) == [Deleted(CC, "Host", names[4])]
    if version == "v3":
        later = defer.ensureDeferred(
            list_deleted(h.client, CC, since=iso_time(NOW + 7200), api_version="v3")
        )
        assert result_of(h.settle(later)) == []


class _HeldClient:
    """
    A client whose answers the test gives, request by request: what was
    asked, the Deferreds it waits on, and which were cancelled.
    """

    base_url = "https://tc.example/api"

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.waiting: dict[str, defer.Deferred[Any]] = {}
        self.cancelled: list[str] = []

    def request_target(self, target: str) -> str:
        return "/api" + target

    async def get_json(self, target: str, items: str | None = None) -> Any:
        owner = target.split("owner=")[1].split("&")[0]
        self.asked.append(owner)
        waiting: defer.Deferred[Any] = defer.Deferred(
            lambda _, owner=owner: self.cancelled.append(owner)
        )
        self.waiting[owner] = waiting
        return await waiting

    def answer(self, owner: str, summary: str) -> None:
        self.waiting.pop(owner).callback(
            {"status": "Success", "data": [{"type": "Host", "summary": summary}]}
        )


def test_deleted_of_several_owners_are_asked_for_at_once_and_kept_in_order() -> None:
    """
    The deleted listings of several owners are asked for at the same time,
    up to the limit (the next starts as one ends), and come back in the
    owners' order whatever order the answers come in.
    """
    client = _HeldClient()
    owners = ["A", "B", "C"]
    d = deleted_of_owners(client, owners, since=iso_time(NOW), api_version="v3", at_once=2)
    assert client.asked == ["A", "B"]
    client.answer("B", "b.example")
    assert client.asked == ["A", "B", "C"]
    client.answer("C", "c.example")
    assert not d.called
    client.answer("A", "a.example")
    assert result_of(d) == [
        [Deleted("A", "Host", "a.example")],
        [Deleted("B", "Host", "b.example")],
        [Deleted("C", "Host", "c.example")],
    ]


def test_one_failed_deleted_listing_cancels_the_others() -> None:
    """
    When one owner's deleted listing fails, the listings still waiting for
    an answer are cancelled, those still waiting for their turn are never
    sent, and the whole fails with that error; cancelling the whole does
    the same.
    """
    client = _HeldClient()
    d = deleted_of_owners(client, ["A", "B", "C", "D"], api_version="v3", at_once=2)
    refused = ThreatConnectError("ThreatConnect refused the request", status=403)
    client.waiting.pop("B").errback(refused)
    assert failure_of(d).value is refused
    assert client.asked == ["A", "B"] and client.cancelled == ["A"]
    again = _HeldClient()
    d = deleted_of_owners(again, ["A", "B", "C", "D"], api_version="v3", at_once=2)
    d.cancel()
    assert again.asked == ["A", "B"] and sorted(again.cancelled) == ["A", "B"]
    assert failure_of(d).check(defer.CancelledError)
