# -*- test-case-name: tests.unit.test_simulator_faults -*-
"""
Tests for the simulator's injected faults (L{Simulator.fault_next}): error
statuses, Retry-After, slow answers on the clock, truncated bodies, reset
connections, captive HTML pages and data changing between pages, in memory
through StubTreq and, for the connection-level faults, over loopback TCP.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.iweb import IResponse

from tcbridge.simulator.__main__ import parse_args
from tcbridge.simulator.faults import FAULT_KINDS
from tests.helpers import failure_of
from tests.unit.test_simulator import Harness, harness, sign

CC = "Common Community"
OWNERS = "/api/v2/owners"


class _Body(Protocol):
    """
    Collects a response body and why it ended.
    """

    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.reason = reason


def raw_get(h: Harness, target: str) -> tuple[IResponse, _Body]:
    """
    GET C{target} and deliver its body, however it ends.
    """
    got: list[IResponse] = []
    d = h.stub.get("http://127.0.0.1" + target, headers=sign(target, int(h.clock.seconds())))
    d.addCallback(got.append)
    h.stub.flush()
    assert got, "no response"
    body = _Body()
    got[0].deliverBody(body)
    h.stub.flush()
    return got[0], body


@pytest.mark.parametrize("kind", ["500", "502", "503", "504"])
def test_error_statuses_with_proxy_page(kind: str) -> None:
    """
    An error-status fault answers that status with a proxy's HTML page, once,
    and is recorded with its status and kind; then service resumes.
    """
    h = harness()
    h.sim.fault_next(kind)
    reply = h.get(OWNERS)
    assert reply.code == int(kind)
    assert reply.header("Content-Type") == "text/html"
    assert reply.body.startswith(b"<html>") and kind.encode() in reply.body
    assert reply.header("Retry-After") is None
    assert h.get(OWNERS).code == 200
    assert [(r.status, r.fault) for r in h.sim.requests] == [(int(kind), kind), (200, None)]


def test_empty_body_and_retry_after_on_503() -> None:
    """
    C{body=b""} gives an empty body; C{retry_after} adds C{Retry-After}.
    """
    h = harness()
    h.sim.fault_next("503", body=b"", retry_after=30)
    reply = h.get(OWNERS)
    assert (reply.code, reply.body, reply.header("Retry-After")) == (503, b"", "30")


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(None, "1"), (12, "12"), ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT")],
)
def test_429_retry_after(retry_after: int | str | None, header: str) -> None:
    """
    C{429} carries C{Retry-After}: seconds (default 1) or an HTTP date.
    """
    h = harness()
    options: dict[str, Any] = {} if retry_after is None else {"retry_after": retry_after}
    h.sim.fault_next("429", times=2, **options)
    for _ in range(2):
        reply = h.get(OWNERS)
        assert (reply.code, reply.header("Retry-After")) == (429, header)
    assert h.get(OWNERS).code == 200


def test_html_login_page() -> None:
    """
    C{html} answers 200 with an HTML login page, as a captive proxy would.
    """
    h = harness()
    h.sim.fault_next("html")
    reply = h.get("/api/v2/indicators/files")
    assert reply.code == 200
    assert reply.header("Content-Type") == "text/html; charset=utf-8"
    assert b"<form" in reply.body


def _answered_after(h: Harness, count: int, delay: float) -> list[bytes]:
    """
    Send C{count} owner-list requests together: nothing has come back just
    before C{delay} seconds pass on the clock; what has come back then.
    """
    got: list[bytes] = []
    for _ in range(count):
        d = h.stub.get("http://127.0.0.1" + OWNERS, headers=sign(OWNERS))
        d.addCallback(lambda r: r.content()).addCallback(got.append)
    h.stub.flush()
    h.clock.advance(delay - 0.01)
    h.stub.flush()
    assert got == []
    h.clock.advance(0.01)
    h.stub.flush()
    return got


def test_slow_answers_only_after_clock_advance() -> None:
    """
    C{slow} holds the real answer until C{delay} seconds pass on the
    simulator's clock; no real time passes.
    """
    h = harness()
    expected = h.get(OWNERS).body
    h.sim.fault_next("slow", delay=45)
    assert _answered_after(h, 1, 45) == [expected]
    assert h.clock.getDelayedCalls() == []
    assert h.sim.requests[-1].fault == "slow"


def test_latency_delays_every_answer_side_by_side() -> None:
    """
    With a latency, every answer comes that many seconds (on the clock)
    after its request; answers to requests sent together wait side by
    side, not one after another; the command line sets it, never below 0.
    """
    h = harness()
    expected = h.get(OWNERS).body
    h.sim.latency = 0.2
    assert _answered_after(h, 3, 0.2) == [expected] * 3
    assert parse_args(["--latency", "0.15"]).latency == 0.15
    assert parse_args([]).latency == 0.0
    with pytest.raises(SystemExit):
        parse_args(["--latency", "-1"])


def test_truncated_body_shorter_than_content_length() -> None:
    """
    C{truncated} declares the whole body's C{Content-Length}, sends only
    part of it and closes the connection: the client sees data loss.
    """
    h = harness(count=300)
    full = h.get("/api/v2/indicators/files").body
    h.sim.fault_next("truncated", keep=100)
    response, body = raw_get(h, "/api/v2/indicators/files")
    assert response.code == 200
    # The client turns Content-Length into .length.
    assert response.length == len(full)
    assert body.data == full[:100]
    assert body.reason is not None and body.reason.check(ResponseFailed)
    h.sim.fault_next("truncated")
    _, half = raw_get(h, "/api/v2/indicators/files")
    assert half.data == full[: len(full) // 2]
    assert [r.fault for r in h.sim.requests] == [None, "truncated", "truncated"]


def test_reset_aborts_without_response() -> None:
    """
    C{reset} drops the connection without a response; it is recorded with
    status 0.
    """
    h = harness()
    h.sim.fault_next("reset")
    d = h.stub.get("http://127.0.0.1" + OWNERS, headers=sign(OWNERS))
    h.stub.flush()
    failure = failure_of(d)
    assert failure.check(ResponseNeverReceived)
    assert (h.sim.requests[-1].status, h.sim.requests[-1].fault) == (0, "reset")
    assert h.get(OWNERS).code == 200


def test_faults_queue_and_match() -> None:
    """
    Faults queue with C{fail_next}'s; a request takes the first pending
    fault that matches its target; unauthenticated requests use none.
    """
    h = harness()
    h.sim.fault_next("504", match="/hosts")
    h.sim.fail_next(500, b"x")
    assert h.get(OWNERS, {}).code == 401
    assert h.get(OWNERS).code == 500
    assert h.get(OWNERS).code == 200
    assert h.get("/api/v2/indicators/hosts").code == 504
    assert [r.fault for r in h.sim.requests] == [None, "status", None, "504"]


def test_bad_fault_arguments() -> None:
    """
    Unknown kinds and options are refused at once.
    """
    h = harness()
    with pytest.raises(ValueError, match="unknown fault kind"):
        h.sim.fault_next("418")
    with pytest.raises(TypeError):
        h.sim.fault_next("slow", shift=3)
    with pytest.raises(ValueError):
        h.sim.fault_next("429", retry_after=1.5)
    assert set(FAULT_KINDS) >= {"500", "429", "slow", "truncated", "reset", "changing"}


def _page_ids(h: Harness, start: int, limit: int) -> tuple[list[Any], int | None]:
    """
    Return the ids of one page of Common Community's files and the
    C{resultCount}.
    """
    target = f"/api/v2/indicators/files?resultStart={start}&resultLimit={limit}"
    data = h.get(target).json()["data"]
    return [item["id"] for item in data["file"]], data.get("resultCount")


def test_changing_insert_shifts_offsets_forward() -> None:
    """
    After a page, C{shift=N} puts N new items at the front: the next page
    repeats the last N items already seen, and de-duplicating gives every
    original item with none lost; the new items are seen by the next pull.
    """
    h = harness(count=900)
    ds = h.sim.dataset
    original = [ds.typed_item(CC, "File", i)["id"] for i in ds.active_indexes(CC, "File")]
    h.sim.fault_next("changing", shift=3)
    first, count = _page_ids(h, 0, 20)
    assert count == len(original)
    second, _ = _page_ids(h, 20, 20)
    assert second[:3] == first[-3:]
    seen = first + second
    start = 40
    while True:
        page, _ = _page_ids(h, start, 20)
        seen += page
        start += 20
        if len(page) < 20:
            break
    assert len(seen) == len(original) + 3
    assert sorted(set(seen), key=seen.index) == original
    fresh, count = _page_ids(h, 0, 10000)
    assert count == len(original) + 3 == h.sim.visible_count(CC, "File")
    assert fresh[3:] == original and not set(fresh[:3]) & set(original)


def test_changing_delete_skips_items() -> None:
    """
    C{shift=-N} removes the first N items: the next page starts N items
    later, so N items still present are skipped by this pass.
    """
    h = harness(count=900)
    ds = h.sim.dataset
    original = [ds.typed_item(CC, "File", i)["id"] for i in ds.active_indexes(CC, "File")]
    h.sim.fault_next("changing", shift=-4)
    first, _ = _page_ids(h, 0, 20)
    second, count = _page_ids(h, 20, 20)
    assert first == original[:20]
    assert second == original[24:44]
    assert count is None
    assert _page_ids(h, 0, 5)[1] == len(original) - 4


def test_changing_applies_to_generic_and_v3() -> None:
    """
    The change is per owner and type, so the v2 generic and v3 listings that
    include it shift too; on a v3 or generic request it applies to the first
    owner and type the request listed.
    """
    h = harness(count=900)
    before = h.get("/api/v3/indicators?resultLimit=10000").json()["data"]
    h.sim.fault_next("changing", shift=2, match="/v3/")
    h.get("/api/v3/indicators?resultLimit=5")
    after = h.get("/api/v3/indicators?resultLimit=10000").json()["data"]
    assert [i["id"] for i in after[2:]] == [i["id"] for i in before]
    assert {i["type"] for i in after[:2]} == {"File"} and all(i["active"] for i in after[:2])
    generic = h.get("/api/v2/indicators?resultLimit=10000").json()["data"]["indicator"]
    assert [i["id"] for i in generic[:2]] == [i["id"] for i in after[:2]]
    h.sim.fault_next("changing", shift=-3, owner=CC, type="Host")
    h.get(OWNERS)
    hosts = h.get("/api/v3/indicators?tql=typeName%20EQ%20%22Host%22&resultLimit=10000")
    before_hosts = [i["id"] for i in before if i["type"] == "Host"]
    assert [i["id"] for i in hosts.json()["data"]] == before_hosts[3:]


def test_parse_args_fault() -> None:
    """
    C{--fault KIND[:N]} is repeatable and validated.
    """
    args = parse_args(["--fault", "503:2", "--fault", "reset"])
    assert args.fault == [("503", 2), ("reset", 1)]
    assert parse_args([]).fault == []
    with pytest.raises(SystemExit):
        parse_args(["--fault", "nope"])
