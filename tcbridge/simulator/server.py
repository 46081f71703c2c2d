# -*- test-case-name: tests.unit.test_simulator -*-
"""
The simulator listening on a port: a site that logs nothing, fresh
credentials, and L{start_simulator}.
"""

from __future__ import annotations

import secrets
import string
from functools import partial
from typing import Any

from attrs import field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IListeningPort,
)
from twisted.internet.threads import deferToThreadPool
from twisted.web import http
from twisted.web.server import Site

from tcbridge.simulator.app import Runner, Simulator, simulator_prefix
from tcbridge.simulator.data import generate


class QuietSite(Site):
    """
    A L{Site} that writes no access log: the simulator logs requests at debug
    level only.
    """

    def log(self, request: http.Request) -> None:
        """
        Do not log C{request}.
        """


@frozen
class DemoServer:
    """
    A simulator listening on a loopback port, with generated credentials.

    :ivar base_url: e.g. C{"http://127.0.0.1:41234/api"}.
    :ivar api_key: the generated API access id.
    :ivar secret_key: the generated secret key.
    :ivar owners: the owners the data set has.
    :ivar simulator: the running simulator.
    :ivar port: the listening port; C{port.stopListening()} stops it.
    """

    base_url: str
    api_key: str
    secret_key: str = field(repr=False)
    owners: tuple[str, ...]
    simulator: Simulator
    port: IListeningPort

    def stop(self) -> Deferred[None]:
        """
        Stop listening; the Deferred fires when the port is closed.
        """
        result = self.port.stopListening()
        return result if result is not None else succeed(None)


def new_credentials() -> tuple[str, str]:
    """
    Return a random C{(access id, secret key)} pair shaped like
    ThreatConnect's: a 20-digit access id and a 64-character secret.
    """
    access_id = "".join(secrets.choice(string.digits) for _ in range(20))
    alphabet = string.ascii_letters + string.digits
    secret_key = "".join(secrets.choice(alphabet) for _ in range(64))
    return access_id, secret_key


def start_simulator(
    reactor: Any,
    count: int = 2000,
    port: int = 0,
    seed: int = 1,
    prefix: str = "/api",
    interface: str = "127.0.0.1",
    prefetch: bool = False,
) -> DemoServer:
    """
    Start a simulator with C{count} generated indicators and fresh random
    credentials, listening on C{interface} (loopback by default).

    :param reactor: the reactor (IReactorTCP, IReactorTime and, with
        C{prefetch}, IReactorThreads).
    :param count: File, Address and Host indicators over the default owners.
    :param port: TCP port, 0 for any free port.
    :param seed: data set seed.
    :param prefix: API path prefix.
    :param interface: address to listen on.
    :param prefetch: build the next page of a listing in the reactor's
        thread pool ahead of the request (see L{Simulator}); worth it when
        the simulator has a process of its own, not when it shares one with
        the client.
    """
    access_id, secret_key = new_credentials()
    dataset = generate(count, seed=seed)
    runner: Runner | None = None
    if prefetch:
        runner = partial(deferToThreadPool, reactor, reactor.getThreadPool())
    simulator = Simulator(dataset, reactor, {access_id: secret_key}, prefix=prefix, prefetch=runner)
    listening = reactor.listenTCP(port, QuietSite(simulator.resource()), interface=interface)
    actual = listening.getHost().port
    return DemoServer(
        base_url=f"http://{interface}:{actual}{simulator_prefix(prefix)}",
        api_key=access_id,
        secret_key=secret_key,
        owners=dataset.owners,
        simulator=simulator,
        port=listening,
    )
