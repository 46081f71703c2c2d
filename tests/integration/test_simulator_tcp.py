"""
Over real TCP on 127.0.0.1 (moved here from the
simulator unit tests, which need no socket).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.iweb import IResponse

from tcbridge.simulator import start_simulator
from tcbridge.threatconnect.signing import authorization
from tests.unit.test_simulator_faults import OWNERS, _Body


async def _tcp_get(reactor: Any, base_url: str, key: str, secret: str) -> IResponse:
    """
    GET the owners over TCP with a fresh connection.
    """
    origin = base_url.removesuffix("/api")
    headers = authorization(key, secret, OWNERS, "GET", int(reactor.seconds()))
    client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    response: IResponse = await client.get(origin + OWNERS, headers=headers)
    return response


@pytest_twisted.ensureDeferred
async def test_start_simulator_over_tcp() -> None:
    """
    C{start_simulator} listens on a loopback port with fresh credentials and
    serves a signed page over real TCP.
    """
    from twisted.internet import reactor

    demo = start_simulator(reactor, count=300)
    try:
        assert demo.base_url.startswith("http://127.0.0.1:")
        assert demo.base_url.endswith("/api")
        assert demo.secret_key not in repr(demo)
        assert demo.owners == ("Common Community", "Example Organization", "Subscriber Community")
        origin = demo.base_url.removesuffix("/api")
        target = "/api/v2/indicators/files?owner=Common+Community&resultStart=0&resultLimit=10"
        headers = authorization(
            demo.api_key, demo.secret_key, target, "GET", int(reactor.seconds())
        )
        pool = HTTPConnectionPool(reactor, persistent=False)
        client = HTTPClient(Agent(reactor, pool=pool))
        response = await client.get(origin + target, headers=headers)
        body = orjson.loads(await response.content())
        assert response.code == 200
        assert body["data"]["resultCount"] == demo.simulator.dataset.active_count(
            "Common Community", "File"
        )
        assert len(body["data"]["file"]) == 10
        assert demo.simulator.requests[-1].target == target
    finally:
        await demo.stop()


@pytest_twisted.ensureDeferred
async def test_truncated_and_reset_over_tcp() -> None:
    """
    Over real TCP, C{truncated} sends fewer bytes than its C{Content-Length}
    before closing, and C{reset} drops the connection with no response.
    """
    from twisted.internet import reactor

    demo = start_simulator(reactor, count=60)
    try:
        demo.simulator.fault_next("truncated", keep=10)
        response = await _tcp_get(reactor, demo.base_url, demo.api_key, demo.secret_key)
        declared = response.length
        body = _Body()
        done: Deferred[None] = Deferred()
        original = body.connectionLost

        def lost(reason: Failure | None = None) -> None:
            original(reason)
            done.callback(None)

        body.connectionLost = lost  # type: ignore[method-assign]
        response.deliverBody(body)
        await done
        assert isinstance(declared, int)
        assert len(body.data) == 10 < declared
        assert body.reason is not None and body.reason.check(ResponseFailed)
        demo.simulator.fault_next("reset")
        with pytest.raises(Exception, match=r"ResponseNeverReceived|Connection"):
            await _tcp_get(reactor, demo.base_url, demo.api_key, demo.secret_key)
        ok = await _tcp_get(reactor, demo.base_url, demo.api_key, demo.secret_key)
        assert ok.code == 200
        await ok.content()
        assert [r.status for r in demo.simulator.requests] == [200, 0, 200]
    finally:
        await demo.stop()
