"""
Tests for syncing several ThreatConnect instances into one feed: each
instance is asked with its own keys, its reports name it, a value two
instances hold appears once at the higher score, and one instance failing
keeps the whole previous feed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from attrs import evolve
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock

from tcbridge.feed.document import FeedInfo, empty_document
from tcbridge.feed.serialize import dumps
from tcbridge.feed.validator import validate_bytes
from tcbridge.model import Source
from tcbridge.simulator import Simulator, generate
from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore
from tcbridge.sync.cycle import SyncCycle
from tcbridge.sync.delta import Incremental
from tcbridge.threatconnect.client import ThreatConnectClient
from tests.helpers import failure_of, result_of
from tests.helpers_config import make_config
from tests.unit.test_sync_delta import CC, NOW, Store

KEY, SECRET = "12345678901234567890", "main-secret"
PARTNER_KEY, PARTNER_SECRET = "09876543210987654321", "partner-secret"
START = 1_800_000_000.0


class TwoInstances:
    """
    A bridge with a main instance and a C{partner} one, each a simulator
    in memory (the same generated data, so every value is held by both),
    on one fake clock.
    """

    def __init__(self, partner_secret: str = PARTNER_SECRET, grouping: str = "Expanded") -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.main = Simulator(generate(300), self.clock, {KEY: SECRET}, prefix="/api")
        self.partner = Simulator(
            generate(300), self.clock, {PARTNER_KEY: PARTNER_SECRET}, prefix="/api"
        )
        self.stubs = [StubTreq(self.main.resource()), StubTreq(self.partner.resource())]
        main_url, partner_url = "https://tc.example/api", "https://partner.example/api"
        clients = [
            ThreatConnectClient(stub, self.clock, url, key, secret, 30, random=lambda: 0.5)
            for stub, url, key, secret in (
                (self.stubs[0], main_url, KEY, SECRET),
                (self.stubs[1], partner_url, PARTNER_KEY, partner_secret),
            )
        ]
        config = make_config(
            path="test.conf",
            layout="v2",
            api_url=main_url,
            web_url="https://tc.example/auth",
            api_key=KEY,
            secret_key=SECRET,
            sources=(Source("*", "all", "*"),),
            grouping=grouping,
            max_attempts=1,
        )
        partner = evolve(
            config.threatconnect,
            api_url=partner_url,
            api_key=PARTNER_KEY,
            secret_key=partner_secret,
            sources=(Source("partner/*", "all", "*", instance="partner"),),
            instance="partner",
        )
        self.config = evolve(config, other_instances=(partner,))
        self.store = FeedStore(empty_body=dumps(empty_document(FeedInfo())))
        self.status = SyncStatus(started_at=START)
        self.cycle = SyncCycle(
            self.config,
            clients[0],
            self.store,
            self.status,
            self.clock,
            other_clients=(clients[1],),
        )

    def run(self, cycle: SyncCycle | None = None) -> defer.Deferred[Any]:
        d = defer.ensureDeferred((cycle or self.cycle).run())
        fired: list[Any] = []
        d.addBoth(lambda r: (fired.append(True), r)[1])
        for _ in range(10_000):
            for stub in self.stubs:
                stub.flush()
            if fired:
                break
            self.clock.advance(1)
        return d


def _incremental_cycle(bridge: TwoInstances, folder: Path) -> tuple[Store, Incremental, SyncCycle]:
    """
    A second cycle on the same two instances, with incremental sync over
    an indicator store in C{folder}.
    """
    store = Store(str(folder))
    incremental = Incremental(store.run, full_every=10**9, overlap=600)
    cycle = SyncCycle(
        bridge.config,
        bridge.cycle.client,
        FeedStore(empty_body=dumps(empty_document(FeedInfo()))),
        SyncStatus(started_at=bridge.clock.seconds()),
        bridge.clock,
        incremental=incremental,
        other_clients=bridge.cycle.other_clients,
    )
    return store, incremental, cycle


def _reports(body: bytes) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = orjson.loads(body)["reports"]
    return reports


@pytest.mark.parametrize("grouping", ["Expanded", "Condensed"])
def test_both_instances_reach_one_feed_each_value_once(grouping: str) -> None:
    """
    Both instances are pulled with their own keys; their owners show up
    as sources (the partner's under C{partner/}); every value appears once
    in the feed, and a value the partner rates higher is reported at the
    partner's score: Condensed, in the group of values both instances
    report, whose id names the partner; Expanded, in the one report of
    that indicator, titled with both.
    """
    bridge = TwoInstances(grouping=grouping)
    value = generate(300).typed_item("Common Community", "File", 0)["md5"]
    bridge.partner.change("Common Community", "File", 0, rating=5, confidence=100)
    snapshot = result_of(bridge.run())
    assert validate_bytes(snapshot.body) == []
    names = {row.name for row in bridge.status.sources}
    assert "Common Community" in names and "partner/Common Community" in names
    assert bridge.cycle.requests == bridge.status.requests > 2
    reports = _reports(snapshot.body)
    values = [v for r in reports for vs in r["iocs"].values() for v in vs]
    assert len(values) == len(set(values))
    (holder,) = [r for r in reports if value in r["iocs"].get("md5", [])]
    assert holder["score"] == 100
    if grouping == "Condensed":
        assert "partner" in holder["id"] and holder["id"].endswith("-md5-100")
    else:
        assert "partner/Common Community" in holder["title"]
        assert "Common Community" in holder["title"].replace("partner/Common Community", "")


def test_one_instance_failing_keeps_the_whole_previous_feed() -> None:
    """
    When the partner instance refuses the bridge, the cycle fails, says
    which instance, and the feed both instances made last time stays
    published.
    """
    bridge = TwoInstances()
    first = result_of(bridge.run())
    broken = TwoInstances(partner_secret="not-the-secret")
    broken.store = bridge.store
    broken.cycle = SyncCycle(
        broken.config,
        broken.cycle.client,
        bridge.store,
        broken.status,
        broken.clock,
        other_clients=broken.cycle.other_clients,
    )
    failure_of(broken.run())
    assert bridge.store.current is first
    assert broken.status.last_error is not None
    assert broken.status.last_error.startswith("[threatconnect:partner] ThreatConnect refused")
    assert "wrong secret_key" in broken.status.last_error


def test_group_links_point_at_each_instance() -> None:
    """
    A Condensed report of the partner's alone links to the partner's web
    UI and names the owner as the partner knows it.
    """
    bridge = TwoInstances(grouping="Condensed")
    partner = evolve(bridge.config.other_instances[0], web_url="https://partner.example/auth")
    bridge.cycle.reconfigure(
        evolve(bridge.config, other_instances=(partner,)),
        bridge.cycle.client,
        other_clients=bridge.cycle.other_clients,
    )
    value = generate(300).typed_item("Common Community", "File", 0)["md5"]
    bridge.main.change("Common Community", "File", 0, deleted=True)
    reports = _reports(result_of(bridge.run()).body)
    (holder,) = [r for r in reports if value in r["iocs"].get("md5", [])]
    assert holder["link"].startswith(
        "https://partner.example/auth/browse/index.xhtml#/?owner=Common%20Community"
    )
    others = [r for r in reports if not r["id"].startswith("partner")]
    assert others and all(r["link"].startswith("https://tc.example/auth/") for r in others)


def test_deltas_over_two_instances_publish_what_a_full_sync_publishes(tmp_path: Path) -> None:
    """
    With incremental sync, changes in either instance (a rating up in the
    partner, a deletion there, a rating down in the main one) reach the
    feed by a delta that asks each instance only for what changed, with the
    same bytes a full sync publishes; the store keeps each instance's rows
    under its name.
    """
    bridge = TwoInstances(grouping="Expanded")
    bridge.clock.advance(NOW - START)
    store, incremental, delta = _incremental_cycle(bridge, tmp_path)

    def sync() -> tuple[bytes, bytes]:
        bridge.clock.advance(3600)
        one, other = (result_of(bridge.run(cycle)).body for cycle in (delta, bridge.cycle))
        return one, other

    first, reference = sync()
    assert first == reference
    bridge.partner.change(CC, "File", 0, rating=5.0, confidence=100)
    bridge.partner.change(CC, "Host", 4, deleted=True)
    bridge.main.change(CC, "Host", 4, rating=0.0)
    bridge.partner.requests.clear()
    changed, full = sync()
    assert changed == full != first
    assert incremental.last_delta is not None
    asked = [r.target for r in bridge.partner.requests]
    assert any("modifiedSince" in t for t in asked) and any("/deleted" in t for t in asked)
    kept = {row.instance for row in store.db.indicators()}
    assert kept == {"default", "partner"}
    assert all(row.source.startswith("partner/") for row in store.db.indicators("partner"))


def test_a_removed_instance_leaves_the_store_at_the_next_full_sync(tmp_path: Path) -> None:
    """
    Once an instance is taken out of the configuration, the next (full)
    sync forgets its indicators in the store too: no later delta brings
    them back.
    """
    bridge = TwoInstances()
    bridge.clock.advance(NOW - START)
    store, incremental, cycle = _incremental_cycle(bridge, tmp_path)

    def partner_reports() -> int:
        bridge.clock.advance(3600)
        reports = _reports(result_of(bridge.run(cycle)).body)
        return sum("partner/" in r["title"] for r in reports)

    assert partner_reports() > 0
    cycle.reconfigure(evolve(bridge.config, other_instances=()), bridge.cycle.client)
    cycle.request_full_sync()
    assert partner_reports() == 0
    assert {row.instance for row in store.db.indicators()} == {"default"}
    bridge.main.change(CC, "Host", 3, rating=5.0)
    assert partner_reports() == 0
    assert incremental.last_delta is not None


def test_request_counts_never_go_back_across_a_reload() -> None:
    """
    New clients from a reload during a sync start counting where the old
    ones stood when the sync ended (the metrics are counters).
    """
    bridge = TwoInstances()
    result_of(bridge.run())
    old_main, (old_partner,) = bridge.cycle.client, bridge.cycle.other_clients
    bridge.status.running = True
    fresh = [
        ThreatConnectClient(stub, bridge.clock, client.base_url, client.api_key, secret, 30)
        for stub, client, secret in (
            (bridge.stubs[0], old_main, SECRET),
            (bridge.stubs[1], old_partner, PARTNER_SECRET),
        )
    ]
    bridge.cycle.reconfigure(bridge.config, fresh[0], other_clients=(fresh[1],))
    old_partner.requests += 5  # the running sync goes on with the old clients
    old_partner.status_counts[200] = old_partner.status_counts.get(200, 0) + 5
    before = bridge.cycle.requests, dict(bridge.cycle.status_counts)
    bridge.status.running = False
    result_of(bridge.run())
    assert bridge.cycle.client is fresh[0]
    assert bridge.cycle.requests > before[0]
    assert bridge.cycle.status_counts[200] > before[1][200]
