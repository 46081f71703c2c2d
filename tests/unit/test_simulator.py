# -*- test-case-name: tests.unit.test_simulator -*-
"""
Tests for L{tcbridge.simulator}: the generated data set, the signed API
simulator (driven in memory through StubTreq with a L{Clock}), the demo
server over real loopback TCP, and the command line.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from attrs import frozen
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from tcbridge.simulator import Dataset, Simulator, generate
from tcbridge.simulator.__main__ import parse_args
from tcbridge.simulator.app import RecordedRequest
from tcbridge.simulator.params import MSG_PAGING
from tcbridge.simulator.tables import PERIOD
from tcbridge.threatconnect.signing import authorization
from tests.helpers import result_of

API_KEY = "12345678901234567890"
SECRET = "example-secret-key"
TS = 1513703787

HOSTS_PCT20 = "/api/v2/indicators/hosts?owner=Common%20Community&resultStart=0&resultLimit=100"
HOSTS_PLUS = "/api/v2/indicators/hosts?owner=Common+Community&resultStart=0&resultLimit=100"


@frozen
class Reply:
    """
    A response read to the end.
    """

    code: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        """
        Return the body parsed as JSON.
        """
        return orjson.loads(self.body)

    def header(self, name: str) -> str | None:
        """
        Return the first value of response header C{name}, or C{None}.
        """
        values = self.headers.getRawHeaders(name)
        return None if not values else values[0]


@frozen
class Harness:
    """
    A simulator on a L{Clock}, reachable through L{StubTreq}.
    """

    sim: Simulator
    clock: Clock
    stub: StubTreq

    def get(self, target: str, headers: dict[str, str] | None = None) -> Reply:
        """
        GET C{target} (path and raw query) with exactly C{headers}; signed
        with the test credentials at the clock's time when C{headers} is
        C{None}.
        """
        if headers is None:
            headers = sign(target, int(self.clock.seconds()))
        d = self.stub.get("http://127.0.0.1" + target, headers=headers)
        d.addCallback(
            lambda r: r.content().addCallback(lambda body: Reply(r.code, r.headers, body))
        )
        self.stub.flush()
        result: Reply = result_of(d)
        return result


def sign(
    target: str, ts: int = TS, key: str = API_KEY, secret: str = SECRET, method: str = "GET"
) -> dict[str, str]:
    """
    Return ThreatConnect's auth headers for C{target}.
    """
    return authorization(key, secret, target, method, ts)


def harness(count: int = 200, seed: int = 1, prefix: str = "/api", **kwargs: Any) -> Harness:
    """
    Build a simulator over C{generate(count, seed=seed)} whose clock reads
    L{TS}.
    """
    clock = Clock()
    clock.advance(TS)
    sim = Simulator(generate(count, seed=seed), clock, {API_KEY: SECRET}, prefix=prefix, **kwargs)
    return Harness(sim, clock, StubTreq(sim.resource()))


def page_through(h: Harness, path: str, key: str, owner: str, limit: int) -> list[Any]:
    """
    Page through C{path} for C{owner} until a short page; check that
    C{resultCount} appears exactly on the first page and return all items.
    """
    items: list[Any] = []
    start = 0
    while True:
        reply = h.get(f"{path}?owner={owner}&resultStart={start}&resultLimit={limit}")
        assert reply.code == 200
        data = reply.json()["data"]
        assert ("resultCount" in data) == (start == 0)
        if start == 0:
            expected = data["resultCount"]
        items.extend(data[key])
        if len(data[key]) < limit:
            break
        start += limit
    assert len(items) == expected
    return items


# Authentication


def test_signing_vector_owners() -> None:
    """
    The reference vector for C{/api/v2/owners} is accepted, and the owners
    come back in a v2 envelope with C{id}, C{name} and C{type}.
    """
    h = harness()
    headers = sign("/api/v2/owners")
    assert headers["Authorization"] == (
        f"TC {API_KEY}:PXd4pJuGWXxmDlCrpJUeAqDoSkmQSk5E66jDY62GXjo="
    )
    reply = h.get("/api/v2/owners", headers)
    assert reply.code == 200
    assert reply.header("Content-Type") == "application/json"
    assert reply.json() == {
        "status": "Success",
        "data": {
            "resultCount": 3,
            "owner": [
                {"id": 1, "name": "Common Community", "type": "Community"},
                {"id": 2, "name": "Example Organization", "type": "Organization"},
                {"id": 3, "name": "Subscriber Community", "type": "Community"},
            ],
        },
    }


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (HOSTS_PCT20, "d9PUx7wHwMEWZq5fq+XDZvdgUEwHgFYM7HrXYUx1Bms="),
        (HOSTS_PLUS, "6jJrtYyp8xYEhJt1F+ro3L07Witenc5zZu3q+SMaN80="),
    ],
)
def test_signing_vectors_owner_forms(target: str, expected: str) -> None:
    """
    The reference vectors for an owner written with C{%20} and with C{+}
    are both accepted, and both select the owner C{Common Community}.
    """
    h = harness()
    headers = sign(target)
    assert headers["Authorization"] == f"TC {API_KEY}:{expected}"
    reply = h.get(target, headers)
    assert reply.code == 200
    hosts = reply.json()["data"]["host"]
    assert hosts
    assert {item["ownerName"] for item in hosts} == {"Common Community"}


@pytest.mark.parametrize(
    "timestamp", [None, "", "abc", "1513703787.5", "-1513703787", "\uff11\uff12"]
)
def test_invalid_timestamp(timestamp: str | None) -> None:
    """
    A missing or non-numeric C{Timestamp} gives the auth error status with
    the message C{Invalid timestamp}.
    """
    h = harness()
    headers = sign("/api/v2/owners")
    if timestamp is None:
        del headers["Timestamp"]
    else:
        headers["Timestamp"] = timestamp
    reply = h.get("/api/v2/owners", headers)
    assert reply.code == 401
    assert reply.header("Content-Type") == "application/json"
    assert reply.json() == {"status": "Failure", "message": "Invalid timestamp"}


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-301, False), (-300, True), (0, True), (300, True), (301, False)]
)
def test_skew_window(offset: int, accepted: bool) -> None:
    """
    A timestamp up to 300 s either side of the simulator's clock is
    accepted; one second further is refused with C{Timestamp out of
    acceptable time range}.
    """
    h = harness()
    ts = TS + offset
    reply = h.get("/api/v2/owners", sign("/api/v2/owners", ts))
    if accepted:
        assert reply.code == 200
    else:
        assert reply.code == 401
        assert reply.json()["message"] == "Timestamp out of acceptable time range"


def test_clock_skew_models_wrong_host_clock() -> None:
    """
    C{clock_skew} moves the simulator's "now": a request stamped with the
    clock's time is refused once the skew exceeds the window, and the
    C{Date} header reports the skewed time.
    """
    h = harness()
    assert h.get("/api/v2/owners").header("Date") == "Tue, 19 Dec 2017 17:16:27 GMT"
    h.sim.clock_skew = 600
    reply = h.get("/api/v2/owners")
    assert reply.code == 401
    assert reply.json()["message"] == "Timestamp out of acceptable time range"
    assert reply.header("Date") == "Tue, 19 Dec 2017 17:26:27 GMT"
    assert h.get("/api/v2/owners", sign("/api/v2/owners", TS + 600)).code == 200


def test_skew_follows_clock() -> None:
    """
    The window is measured against the injected clock's current time, so
    advancing the clock past the window expires a signed request.
    """
    h = harness()
    headers = sign("/api/v2/owners")
    assert h.get("/api/v2/owners", headers).code == 200
    h.clock.advance(301)
    assert h.get("/api/v2/owners", headers).code == 401


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Bearer abc",
        "TC-Token APIV2:430:c8mTcH:1234567890123:7mbiy0=",
        f"TC {API_KEY}",
        "TC 99999999999999999999:PXd4pJuGWXxmDlCrpJUeAqDoSkmQSk5E66jDY62GXjo=",
        f"tc {API_KEY}:PXd4pJuGWXxmDlCrpJUeAqDoSkmQSk5E66jDY62GXjo=",
    ],
)
def test_access_denied(value: str | None) -> None:
    """
    A missing or malformed C{Authorization} header, or an unknown access
    id, gives C{Access Denied} with the auth error status.
    """
    h = harness()
    headers = sign("/api/v2/owners")
    if value is None:
        del headers["Authorization"]
    else:
        headers["Authorization"] = value
    reply = h.get("/api/v2/owners", headers)
    assert reply.code == 401
    assert reply.json() == {"status": "Failure", "message": "Access Denied"}


def test_signature_mismatch_wrong_secret() -> None:
    """
    A signature made with the wrong secret gives C{Signature data did not
    match expected result}.
    """
    h = harness()
    reply = h.get("/api/v2/owners", sign("/api/v2/owners", secret="not-the-secret"))
    assert reply.code == 401
    assert reply.json() == {
        "status": "Failure",
        "message": "Signature data did not match expected result",
    }


@pytest.mark.parametrize(
    ("signed", "sent"),
    [
        (HOSTS_PCT20, HOSTS_PLUS),
        (HOSTS_PLUS, HOSTS_PCT20),
        (
            "/api/v2/indicators/hosts?owner=Common%%20Community",
            "/api/v2/indicators/hosts?owner=Common%25%2520Community",
        ),
        ("/v2/owners", "/api/v2/owners"),
        ("/api/v2/owners?", "/api/v2/owners"),
    ],
)
def test_signature_over_raw_target(signed: str, sent: str) -> None:
    """
    The signature is checked over the request target exactly as sent: a
    client that signs one encoding (or drops the C{/api} prefix) and sends
    another is refused, even when both decode to the same request.
    """
    h = harness()
    reply = h.get(sent, sign(signed))
    assert reply.code == 401
    assert reply.json()["message"] == "Signature data did not match expected result"


def test_signature_covers_method() -> None:
    """
    A signature made for another method is refused.
    """
    h = harness()
    reply = h.get("/api/v2/owners", sign("/api/v2/owners", method="POST"))
    assert reply.code == 401
    assert reply.json()["message"] == "Signature data did not match expected result"


def test_auth_error_status_configurable() -> None:
    """
    With C{auth_error_status=403} every authentication failure uses 403.
    """
    h = harness(auth_error_status=403)
    assert h.get("/api/v2/owners", {}).code == 403
    assert h.get("/api/v2/owners", sign("/api/v2/owners", TS - 1000)).code == 403
    assert h.get("/api/v2/owners", sign("/api/v2/owners", secret="x")).code == 403


def test_auth_checked_before_routing() -> None:
    """
    Unauthenticated requests get the auth error even for unknown paths or
    bad parameters.
    """
    h = harness()
    assert h.get("/api/nowhere", {}).code == 401
    assert h.get("/api/v2/indicators?resultLimit=99999", {}).code == 401


# Routing and listings


def test_unknown_path_404() -> None:
    """
    An unknown path, a branch the simulator does not serve, or a path outside
    the prefix answers 404 with the v2 failure envelope.
    """
    h = harness()
    for target in ("/api/v2/nothing", "/api/v2/indicators/urls", "/v2/owners", "/apix/v2/owners"):
        reply = h.get(target)
        assert reply.code == 404, target
        assert reply.header("Content-Type") == "application/json"
        assert reply.json() == {
            "status": "Failure",
            "message": "The requested resource was not found",
        }


def test_empty_prefix() -> None:
    """
    With prefix C{""} the API is served at the root.
    """
    h = harness(prefix="")
    assert h.get("/v2/owners").code == 200
    assert h.get("/api/v2/owners").code == 404


def test_paging_defaults() -> None:
    """
    Without C{resultStart} and C{resultLimit} the first 100 items come back,
    with C{resultCount} (the number of active items).
    """
    h = harness(count=1000)
    data = h.get("/api/v2/indicators/files").json()["data"]
    assert data["resultCount"] == h.sim.dataset.active_count("Common Community", "File")
    assert len(data["file"]) == 100


@pytest.mark.parametrize(
    ("branch", "type", "key"),
    [("files", "File", "file"), ("addresses", "Address", "address"), ("hosts", "Host", "host")],
)
@pytest.mark.parametrize("owner", ["Common%20Community", "Example+Organization"])
def test_page_through_owner(branch: str, type: str, key: str, owner: str) -> None:
    """
    Paging through a whole owner and type returns exactly its active items
    (C{active_count}), in order, with no duplicates; C{resultCount} appears
    only on the first page.
    """
    h = harness(count=600)
    items = page_through(h, f"/api/v2/indicators/{branch}", key, owner, 17)
    name = owner.replace("%20", " ").replace("+", " ")
    ds = h.sim.dataset
    assert len(items) == ds.active_count(name, type) > 17
    assert len({str(item["id"]) for item in items}) == len(items)
    assert {item["ownerName"] for item in items} == {name}
    index = ds.active_indexes(name, type)[5]
    assert items[5] == {k: v for k, v in ds.typed_item(name, type, index).items() if k != "tag"}


def test_page_past_end() -> None:
    """
    A page that starts past the end is empty and has no C{resultCount}.
    """
    h = harness(count=30)
    data = h.get("/api/v2/indicators/hosts?resultStart=5000&resultLimit=10").json()["data"]
    assert data == {"host": []}


def test_result_limit_bounds() -> None:
    """
    C{resultLimit=10000} is served; anything over it, a negative or a
    non-integer value answers 400 with ThreatConnect's paging message.
    """
    h = harness(count=30)
    assert h.get("/api/v2/indicators/files?resultLimit=10000").code == 200
    for query in (
        "resultLimit=10001",
        "resultLimit=abc",
        "resultLimit=",
        "resultStart=x",
        "resultStart=-1",
        "resultLimit=-5",
        "resultStart=1.5",
    ):
        reply = h.get(f"/api/v2/indicators/files?{query}")
        assert reply.code == 400, query
        assert reply.json() == {"status": "Failure", "message": MSG_PAGING}
    assert h.get("/api/v2/owners?resultLimit=10001").code == 400


def test_unknown_owner_403() -> None:
    """
    An owner the API user cannot see answers 403 C{Access Denied}, on the
    typed and the generic listings alike.
    """
    h = harness()
    for target in (
        "/api/v2/indicators/files?owner=Nobody",
        "/api/v2/indicators?owner=common+community",
        "/api/v1/indicators/?owner=Nobody%20Else",
    ):
        reply = h.get(target)
        assert reply.code == 403, target
        assert reply.json() == {"status": "Failure", "message": "Access Denied"}


def test_default_owner() -> None:
    """
    Without C{owner=} the default owner's indicators are served.
    """
    clock = Clock()
    clock.advance(TS)
    sim = Simulator(generate(60, default_owner="Example Organization"), clock, {API_KEY: SECRET})
    h = Harness(sim, clock, StubTreq(sim.resource()))
    hosts = h.get("/api/v2/indicators/hosts").json()["data"]["host"]
    assert {item["ownerName"] for item in hosts} == {"Example Organization"}


def test_tags_only_when_asked() -> None:
    """
    C{tag} lists are sent only with C{includes=tags} (or C{includeTags=true}),
    as ThreatConnect does.
    """
    h = harness(count=300)
    plain = h.get("/api/v2/indicators/files?resultLimit=200").json()["data"]["file"]
    assert not any("tag" in item for item in plain)
    for query in ("includes=additional&includes=tags", "includeTags=true"):
        tagged = h.get(f"/api/v2/indicators/files?resultLimit=200&{query}").json()
        assert any("tag" in item for item in tagged["data"]["file"])


@pytest.mark.parametrize(
    "path", ["/api/v2/indicators", "/api/v1/indicators", "/api/v1/indicators/"]
)
def test_generic_listing(path: str) -> None:
    """
    The generic listings page through every type of an owner, with C{type}
    and C{summary}; multi-hash files are summarised C{"md5 : sha1 : sha256"}
    with only the hashes present.
    """
    h = harness(count=900)
    items = page_through(h, path, "indicator", "Subscriber%20Community", 50)
    ds = h.sim.dataset
    assert len(items) == ds.active_total("Subscriber Community")
    assert Counter(item["type"] for item in items) == {
        t: ds.active_count("Subscriber Community", t)
        for t in ("File", "Address", "Host", "URL", "EmailAddress")
    }
    shapes: Counter[tuple[int, ...]] = Counter()
    files = [item for item in items if item["type"] == "File"]
    active_files = ds.active_indexes("Subscriber Community", "File")
    for index, item in zip(active_files, files, strict=True):
        typed = ds.typed_item("Subscriber Community", "File", index)
        present = [typed[k] for k in ("md5", "sha1", "sha256") if k in typed]
        assert item["summary"] == " : ".join(present)
        assert item["id"] == typed["id"]
        shapes[tuple(len(v) for v in present)] += 1
    assert shapes[(32, 40, 64)] > 0
    assert shapes[(32, 64)] > 0
    assert shapes[(32,)] > 0
    assert shapes[(64,)] > 0
    assert re.fullmatch(
        r"[0-9a-fA-F]{32} : [0-9a-fA-F]{40} : [0-9a-fA-F]{64}",
        next(item["summary"] for item in files if item["summary"].count(" : ") == 2),
    )


def test_indicator_types_and_deleted() -> None:
    """
    C{/v2/types/indicatorTypes} lists the branches and entities, and
    C{/v2/indicators/deleted} answers an empty list.
    """
    h = harness()
    types = h.get("/api/v2/types/indicatorTypes").json()["data"]["indicatorType"]
    assert {(t["name"], t["apiBranch"], t["apiEntity"]) for t in types} >= {
        ("File", "files", "file"),
        ("Address", "addresses", "address"),
        ("Host", "hosts", "host"),
    }
    assert h.get("/api/v2/indicators/deleted").json() == {
        "status": "Success",
        "data": {"resultCount": 0, "indicator": []},
    }


def test_prefetch_serves_identical_pages() -> None:
    """
    With a prefetch runner the simulator builds the next page of a listing
    ahead of the request and serves it from there, byte-identical to what it
    would build on demand; requests that do not follow on are built afresh.
    """
    ran: list[Callable[[], bytes]] = []

    def runner(work: Callable[[], bytes]) -> Deferred[bytes]:
        ran.append(work)
        return succeed(work())

    plain = harness(count=900)
    h = harness(count=900, prefetch=runner)
    targets = [
        f"/api/v2/indicators/hosts?owner=Example+Organization&resultStart={s}&resultLimit=40"
        for s in (0, 40, 80, 40)
    ] + [f"/api/v2/indicators?resultStart={s}&resultLimit=100" for s in (0, 100, 200, 300)]
    for target in targets:
        assert h.get(target).body == plain.get(target).body, target
    # No prefetch past the end: 88 active hosts (pages at 40 and 80 are the
    # last ones worth building ahead) and about 300 generic items.
    assert len(ran) == 6


def test_prefetch_waits_for_pending_page() -> None:
    """
    A request for the page being prefetched waits for it; a failed prefetch
    falls back to building the page on demand.
    """
    pending: list[Deferred[bytes]] = []

    def runner(work: Callable[[], bytes]) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        d.addCallback(lambda _: work())
        pending.append(d)
        return d

    plain = harness(count=900)
    h = harness(count=900, prefetch=runner)
    first = "/api/v2/indicators/files?resultStart=0&resultLimit=50"
    second = "/api/v2/indicators/files?resultStart=50&resultLimit=50"
    third = "/api/v2/indicators/files?resultStart=100&resultLimit=50"
    h.get(first)
    got: list[bytes] = []
    d = h.stub.get("http://127.0.0.1" + second, headers=sign(second))
    d.addCallback(lambda r: r.content()).addCallback(got.append)
    h.stub.flush()
    assert got == []
    pending[0].callback(None)
    h.stub.flush()
    assert got == [plain.get(second).body]
    pending[1].errback(RuntimeError("thread died"))
    assert h.get(third).body == plain.get(third).body


def test_determinism() -> None:
    """
    The same seed gives byte-identical pages; another seed gives other data.
    """
    target = "/api/v2/indicators/files?owner=Example+Organization&resultLimit=500"
    first = harness(count=3000).get(target).body
    assert harness(count=3000).get(target).body == first
    assert harness(count=3000, seed=2).get(target).body != first


def test_generation_independent_of_access_order() -> None:
    """
    An item's text does not depend on what was generated before it: a page
    read first equals the same page read after the ones before it, and the
    items of one period differ from those of the next only in id and value.
    """
    first = generate(9000).typed_json("Example Organization", "Host", 2000, 100)
    other = generate(9000)
    other.typed_json("Example Organization", "Host", 0, 2000)
    other.typed_json("Example Organization", "File", 0, 3000)
    assert other.typed_json("Example Organization", "Host", 2000, 100) == first
    ds = generate(12000)
    a = ds.typed_item("Common Community", "Address", 3)
    b = ds.typed_item("Common Community", "Address", 3 + PERIOD)
    assert a["ip"] != b["ip"]
    assert a["id"] != b["id"]
    assert a["dateAdded"] == b["dateAdded"]


def test_fail_next() -> None:
    """
    C{fail_next} makes the next N authenticated requests answer with the
    given status, body and content type; unauthenticated requests do not use
    them up, and service resumes afterwards.
    """
    h = harness()
    h.sim.fail_next(502, b"<html>Bad Gateway</html>", times=2)
    h.sim.fail_next(503, b"", content_type="text/plain")
    assert h.get("/api/v2/owners", {}).code == 401
    for _ in range(2):
        reply = h.get("/api/v2/owners")
        assert (reply.code, reply.body) == (502, b"<html>Bad Gateway</html>")
        assert reply.header("Content-Type") == "text/html"
    reply = h.get("/api/v2/owners")
    assert (reply.code, reply.body, reply.header("Content-Type")) == (503, b"", "text/plain")
    assert h.get("/api/v2/owners").code == 200
    assert [r.status for r in h.sim.requests] == [401, 502, 502, 503, 200]


def test_request_log_records_raw_target() -> None:
    """
    Each request is recorded with its method, raw target (encoding kept),
    C{Timestamp}, C{Authorization} and the status answered.
    """
    h = harness()
    h.get(HOSTS_PLUS)
    h.get(HOSTS_PCT20)
    h.get("/api/v2/owners", {"Timestamp": "x"})
    assert h.sim.requests == [
        RecordedRequest("GET", HOSTS_PLUS, str(TS), sign(HOSTS_PLUS)["Authorization"], 200),
        RecordedRequest("GET", HOSTS_PCT20, str(TS), sign(HOSTS_PCT20)["Authorization"], 200),
        RecordedRequest("GET", "/api/v2/owners", "x", None, 401),
    ]


# The data set


def test_dataset_counts() -> None:
    """
    C{count} is split over the owners, and within an owner about 40% File,
    30% Address, 30% Host; URL and EmailAddress come on top, and C{total}
    counts everything in the generic listing.
    """
    ds = generate(1000)
    typed = {(o, t): ds.count(o, t) for o in ds.owners for t in ("File", "Address", "Host")}
    assert sum(typed.values()) == 1000
    assert typed[("Common Community", "File")] == 133
    assert typed[("Common Community", "Address")] == 100
    for owner in ds.owners:
        extra = ds.count(owner, "URL") + ds.count(owner, "EmailAddress")
        assert 0 < extra < 20
        own = sum(typed[(owner, t)] for t in ("File", "Address", "Host"))
        assert ds.total(owner) == extra + own
    assert ds.default_owner == "Common Community"
    assert generate(0).total("Common Community") == 0


def test_dataset_bounds() -> None:
    """
    Items past the end, unknown owners and unknown types are refused.
    """
    ds = generate(30)
    with pytest.raises(IndexError):
        ds.typed_item("Common Community", "File", ds.count("Common Community", "File"))
    with pytest.raises(IndexError):
        ds.generic_item("Common Community", ds.total("Common Community"))
    with pytest.raises(KeyError):
        ds.count("Nobody", "File")
    with pytest.raises(KeyError):
        ds.count("Common Community", "Mutex")
    with pytest.raises(ValueError):
        generate(10, default_owner="Nobody")


def test_dataset_is_lazy_and_comparable() -> None:
    """
    A data set of a million indicators is built at once (nothing per item is
    stored), and two data sets with the same parameters are equal.
    """
    big = generate(1_000_000)
    assert big.count("Subscriber Community", "Host") > 100_000
    assert big.typed_item("Subscriber Community", "Host", 99_999)["hostName"]
    assert big == generate(1_000_000)
    assert big != generate(1_000_000, seed=2)


def _all_typed(ds: Dataset) -> list[tuple[str, str, dict[str, Any]]]:
    """
    Return every per-type item of C{ds} with its owner and type.
    """
    return [
        (owner, type, ds.typed_item(owner, type, i))
        for owner in ds.owners
        for type in ("File", "Address", "Host")
        for i in range(ds.count(owner, type))
    ]


def test_dataset_realism() -> None:
    """
    The generated data has ThreatConnect's untidiness: int and string ids,
    three date forms, missing ratings and confidences, rating and confidence
    in range, a few invalid values, upper-case hashes, IPv6 addresses,
    string booleans on hosts, hostile descriptions, tags, web links, and a
    few values shared between owners.
    """
    ds = generate(6000)
    items = _all_typed(ds)
    n = len(items)
    ids = [item["id"] for _, _, item in items]
    assert any(isinstance(i, int) for i in ids) and any(isinstance(i, str) for i in ids)
    assert len({str(i) for i in ids}) == n
    forms = Counter(
        "Z" if s.endswith("Z") else "offset" if s.endswith("-04:00") else "none"
        for _, _, item in items
        for s in (item["dateAdded"], item["lastModified"])
    )
    assert set(forms) == {"Z", "offset", "none"}
    missing_rating = sum("rating" not in item for _, _, item in items) / n
    missing_confidence = sum("confidence" not in item for _, _, item in items) / n
    assert 0.02 < missing_rating < 0.08
    assert 0.02 < missing_confidence < 0.08
    assert all(0 <= item["rating"] <= 5 for _, _, item in items if "rating" in item)
    assert {3.5, 4.0} <= {item.get("rating") for _, _, item in items}
    assert all(0 <= item["confidence"] <= 100 for _, _, item in items if "confidence" in item)

    files = [item for _, t, item in items if t == "File"]
    addresses = [item["ip"] for _, t, item in items if t == "Address"]
    hosts = [item for _, t, item in items if t == "Host"]
    invalid = (
        sum(item.get("md5", "").startswith("zzzz") for item in files)
        + sum(ip.startswith("999.") for ip in addresses)
        + sum(item["hostName"].startswith("bad_host") for item in hosts)
    )
    assert 0.005 < invalid / n < 0.03
    assert any(item.get("md5", "").isupper() for item in files)
    assert any(set(item) & {"md5", "sha1", "sha256"} == {"sha1"} for item in files)
    assert any(":" in ip for ip in addresses)
    assert all(
        item["dnsActive"] in ("true", "false") and item["whoisActive"] in ("true", "false")
        for item in hosts
    )
    descriptions = Counter(item.get("description") for _, _, item in items)
    assert descriptions['<script>alert("x")</script> & <b>bold</b>'] > 0
    assert any("tag" in item for _, _, item in items)
    host = hosts[0]
    assert host["webLink"] == (
        "https://app.threatconnect.com/auth/indicators/details/host.xhtml"
        f"?host={host['hostName']}&owner=Common+Community"
    )
    values = Counter(
        (
            t,
            item.get("ip")
            or item.get("hostName")
            or item.get("md5")
            or item.get("sha256")
            or item.get("sha1"),
        )
        for _, t, item in items
    )
    shared = sum(1 for count in values.values() if count > 1)
    assert 0 < shared < n * 0.03


# The demo server and the command line


def test_parse_args() -> None:
    """
    The command line takes the port, count, seed and prefix.
    """
    args = parse_args(["--port", "0", "--count", "10", "--seed", "7", "--prefix", "", "--prefetch"])
    assert (args.port, args.count, args.seed, args.prefix, args.prefetch) == (0, 10, 7, "", True)
    defaults = parse_args([])
    assert (defaults.port, defaults.count, defaults.seed, defaults.prefix) == (
        8443,
        100000,
        1,
        "/api",
    )
    assert defaults.prefetch is False
