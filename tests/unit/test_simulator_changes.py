"""
The simulator's data changing over time (L{tcbridge.simulator.changes}):
changed ratings, confidences and tags show in every listing with their new
C{lastModified} (or the old one, for a quiet tag change), deactivated items
leave the default listings, deleted ones leave every listing and appear in
the deleted listings; C{modifiedSince} (v2) and TQL C{lastModified} (v3)
select what changed; churn changes a fraction at random, reproducibly, also
through a signed POST.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from tcbridge.simulator.changes import iso
from tests.helpers import result_of
from tests.unit.test_simulator import TS, Harness, harness, sign
from tests.unit.test_simulator_v3 import v3

CC = "Common Community"
OWNER = quote(CC)
#: After every generated date (the generated data spans 2014 to 2024).
NOW = 1_800_000_000


def _harness(count: int) -> Harness:
    """
    A simulator whose clock reads L{NOW}, later than every generated date,
    so that what changes now is the newest.
    """
    h = harness(count=count)
    h.clock.advance(NOW - TS)
    return h


def _typed(h: Harness, query: str = "") -> list[dict[str, Any]]:
    reply = h.get(f"/api/v2/indicators/hosts?owner={OWNER}&resultLimit=10000{query}")
    assert reply.code == 200, reply.body
    items: list[dict[str, Any]] = reply.json()["data"]["host"]
    return items


def _v3_hosts(h: Harness, tql: str = "") -> list[dict[str, Any]]:
    query = 'typeName IN ("Host")' + (f" AND {tql}" if tql else "")
    reply = v3(h, query, owner=OWNER, resultLimit="10000", fields="tags")
    assert reply.code == 200, reply.body
    items: list[dict[str, Any]] = reply.json()["data"]
    return items


def test_changed_item_shows_its_new_state_everywhere() -> None:
    """
    A rating change shows in the v2 per-type and generic listings and on v3,
    with C{lastModified} moved to the time of the change; other items are
    untouched.
    """
    h = _harness(300)
    before = _typed(h)
    h.clock.advance(3600)
    h.sim.change(CC, "Host", 3, rating=4.5, confidence=77)
    after = _typed(h)
    assert len(after) == len(before)
    [index] = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    changed = after[index]
    assert (changed["rating"], changed["confidence"]) == (4.5, 77)
    assert changed["lastModified"] == iso(NOW + 3600)
    summary = changed["hostName"]
    generic = h.get(f"/api/v2/indicators?owner={OWNER}&resultLimit=10000").json()
    [item] = [i for i in generic["data"]["indicator"] if i["summary"] == summary]
    assert (item["rating"], item["lastModified"]) == (4.5, iso(NOW + 3600))
    [v3_item] = [i for i in _v3_hosts(h) if i["summary"] == summary]
    assert (v3_item["rating"], v3_item["lastModified"]) == (4.5, iso(NOW + 3600))


def test_quiet_tag_change_keeps_last_modified() -> None:
    """
    A tag change without C{lastModified} moving (as ThreatConnect does for
    tags) shows new tags and the old date, so a delta by date cannot see it.
    """
    h = _harness(300)
    h.clock.advance(60)
    state = h.sim.change(CC, "Host", 5, touch=False, tag_names=("Escalated",))
    assert state.modified == h.sim.dataset.item_slot(CC, "Host", 5).modified
    items = _typed(h, "&includeTags=true")
    [item] = [i for i in items if [t["name"] for t in i.get("tag", [])] == ["Escalated"]]
    assert item["lastModified"] == iso(state.modified)
    assert _typed(h, f"&modifiedSince={quote(iso(NOW))}") == []


def test_deactivated_and_deleted_items() -> None:
    """
    A deactivated item leaves the default listings and shows among the
    inactive ones; a deleted item leaves every listing and is listed,
    without an id, by both deleted endpoints (v3 by C{deletedSince}).
    """
    h = _harness(300)
    everything = _typed(h)
    h.clock.advance(60)
    h.sim.change(CC, "Host", 0, active=False)
    h.sim.change(CC, "Host", 1, deleted=True)
    names = [item["hostName"] for item in _typed(h)]
    assert len(names) == len(everything) - 2
    inactive = h.get(
        f"/api/v2/indicators/hosts?owner={OWNER}&filters=active%3Dfalse&resultLimit=10000"
    )
    gone = {item["hostName"] for item in everything} - set(names)
    assert len({i["hostName"] for i in inactive.json()["data"]["host"]} & gone) == 1
    deleted = h.get(f"/api/v2/indicators/deleted?owner={OWNER}").json()["data"]
    assert deleted["resultCount"] == 1
    [record] = deleted["indicator"]
    assert record["summary"] in gone and "id" not in record and record["lastModified"] is None
    since = quote(iso(NOW + 30))
    v3_deleted = h.get(f"/api/v3/indicators/deleted?deletedSince={since}").json()["data"]
    assert [r["summary"] for r in v3_deleted] == [record["summary"]]
    later = quote(iso(NOW + 120))
    assert h.get(f"/api/v3/indicators/deleted?deletedSince={later}").json()["data"] == []
    # Without owner=, only the default owner's deletions (ThreatConnect's
    # default organization); another owner's are listed when it is named.
    other = next(name for name in h.sim.dataset.owners if name != CC)
    h.sim.change(other, "Host", 0, deleted=True)
    unnamed = h.get(f"/api/v3/indicators/deleted?deletedSince={since}").json()["data"]
    assert {r["ownerName"] for r in unnamed} == {CC}
    named = h.get(f"/api/v3/indicators/deleted?owner={quote(other)}").json()["data"]
    assert [r["ownerName"] for r in named] == [other]


def test_changes_since_a_time() -> None:
    """
    v2 C{modifiedSince=} and v3 TQL C{lastModified >} give exactly the items
    changed after that time (touched changes; deletions leave).
    """
    h = _harness(600)
    h.clock.advance(600)
    for index in (2, 7, 11):
        h.sim.change(CC, "Host", index, rating=1.0)
    h.sim.change(CC, "Host", 13, deleted=True)
    since = iso(NOW + 300)
    v2 = _typed(h, f"&modifiedSince={quote(since)}")
    assert len(v2) == 3 and {item["rating"] for item in v2} == {1.0}
    assert len(_v3_hosts(h, f'lastModified > "{since}"')) == 3


def test_churn_is_reproducible_and_reaches_every_kind_of_change() -> None:
    """
    Churn changes the asked fraction of the per-type items, the same ones
    for the same seed, with every kind of change among them; over HTTP it is
    a signed POST.
    """
    first, second = harness(count=3000), harness(count=3000)
    plan = first.sim.churn(0.02, seed=5)
    assert plan == second.sim.churn(0.02, seed=5)
    total = sum(
        first.sim.dataset.count(o, t)
        for o in first.sim.dataset.owners
        for t in ("File", "Address", "Host")
    )
    assert len(plan) == round(total * 0.02)
    assert {what for *_, what in plan} >= {"rating", "tags-quiet", "deactivate", "delete"}
    h = _harness(300)
    body = orjson.dumps({"fraction": 0.05, "seed": 3})
    target = "/api/_simulator/churn"
    d = h.stub.post(
        "http://127.0.0.1" + target,
        data=body,
        headers=sign(target, int(h.clock.seconds()), method="POST"),
    )
    h.stub.flush()
    response = result_of(d)
    content = response.content()
    h.stub.flush()
    assert response.code == 200
    assert orjson.loads(result_of(content))["changed"] > 0
    assert h.sim.dataset.changes.version > 0
