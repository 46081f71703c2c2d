# -*- test-case-name: tests.integration.test_tc_transport -*-
"""
Tests for L{tcbridge.net.agent} and L{tcbridge.net.proxy}: TLS policies and CONNECT
proxies, against real servers on 127.0.0.1 and the real reactor.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from OpenSSL import SSL
from service_identity.exceptions import VerificationError
from treq.client import HTTPClient
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError
from twisted.logger import LogLevel, capturedLogs
from twisted.web.client import HTTPConnectionPool, ResponseNeverReceived

from tcbridge.net.agent import make_agent
from tcbridge.net.proxy import ProxyError, ProxyTimeoutError
from tcbridge.secrets import mask_url
from tests.helpers import real_reactor
from tests.helpers_tls import LOCALHOST, PKI, Servers, make_pki

USER = "svc bridge"
PASSWORD = "p@ss:w/rd%"
#: The proxy URL for USER and PASSWORD, percent-encoded.
QUOTED = "svc%20bridge:p%40ss%3Aw%2Frd%25"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """
    A CA bundle and a server certificate for localhost and 127.0.0.1.
    """
    folder: Path = tmp_path_factory.mktemp("pki")
    return make_pki(folder)


@pytest_twisted.async_yield_fixture
async def servers() -> AsyncIterator[Servers]:
    """
    Servers on 127.0.0.1 that are all closed after the test.
    """
    started = Servers(real_reactor())
    yield started
    await started.close()


@pytest_twisted.async_yield_fixture
async def pool() -> AsyncIterator[HTTPConnectionPool]:
    """
    A persistent connection pool, emptied after the test.
    """
    made = HTTPConnectionPool(real_reactor(), persistent=True)
    yield made
    await made.closeCachedConnections()


async def _get(client: HTTPClient, url: str) -> tuple[int, bytes]:
    response = await client.get(url, timeout=TIMEOUT, reactor=real_reactor())
    return response.code, await response.content()


@pytest_twisted.ensureDeferred
async def test_ca_file_verifies(pki: PKI, servers: Servers, pool: HTTPConnectionPool) -> None:
    """
    With C{ca_file}, a server whose certificate that bundle's second CA
    signed is trusted.
    """
    port, hello = servers.web(pki)
    client = HTTPClient(make_agent(real_reactor(), pool=pool, ca_file=pki.ca_file))
    assert await _get(client, f"https://localhost:{port}/x") == (200, b"hello /x")
    assert hello.paths == [b"/x"]


@pytest_twisted.ensureDeferred
async def test_platform_trust_rejects_private_ca(
    pki: PKI, servers: Servers, pool: HTTPConnectionPool
) -> None:
    """
    Without C{ca_file} the platform trust store is used, so a certificate
    from a private CA fails with C{ResponseNeverReceived} wrapping
    OpenSSL's C{certificate verify failed} and the server sees no request.
    """
    port, hello = servers.web(pki)
    client = HTTPClient(make_agent(real_reactor(), pool=pool))
    with pytest.raises(ResponseNeverReceived) as info:
        await _get(client, f"https://localhost:{port}/x")
    reasons = [f.value for f in info.value.reasons]
    assert len(reasons) == 1
    assert isinstance(reasons[0], SSL.Error)
    assert "certificate verify failed" in str(reasons[0])
    assert hello.paths == []


@pytest_twisted.ensureDeferred
async def test_name_mismatch(pki: PKI, servers: Servers, pool: HTTPConnectionPool) -> None:
    """
    A certificate from a trusted CA for another name fails with
    C{ResponseNeverReceived} wrapping service_identity's
    C{VerificationError}, which names the expected host.  (The test proxy
    sends every tunnel to 127.0.0.1, so any host name reaches the server.)
    """
    port, hello = servers.web(pki)
    proxy_port, _ = servers.proxy()
    agent = make_agent(
        real_reactor(), pool=pool, proxy=f"http://{LOCALHOST}:{proxy_port}", ca_file=pki.ca_file
    )
    with pytest.raises(ResponseNeverReceived) as info:
        await _get(HTTPClient(agent), f"https://tc.example:{port}/x")
    reasons = [f.value for f in info.value.reasons]
    assert len(reasons) == 1
    assert isinstance(reasons[0], VerificationError)
    assert "tc.example" in str(reasons[0])
    assert hello.paths == []


@pytest_twisted.ensureDeferred
async def test_verify_false(pki: PKI, servers: Servers, pool: HTTPConnectionPool) -> None:
    """
    C{verify=False} accepts any certificate and logs one warning naming the
    host, however many requests follow; the connection is pooled, but only
    for agents with the same TLS policy: a verifying agent on the same pool
    makes (and rejects) a connection of its own.
    """
    port, _ = servers.web(pki)
    client = HTTPClient(make_agent(real_reactor(), pool=pool, verify=False))
    with capturedLogs() as events:
        assert await _get(client, f"https://localhost:{port}/a") == (200, b"hello /a")
        assert await _get(client, f"https://localhost:{port}/b") == (200, b"hello /b")
    warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
    assert len(warnings) == 1
    assert warnings[0]["host"] == "localhost"
    assert warnings[0]["port"] == port
    assert "verification is OFF" in warnings[0]["log_format"]
    assert servers.tracker.count == 1

    verifying = HTTPClient(make_agent(real_reactor(), pool=pool))
    with pytest.raises(ResponseNeverReceived):
        await _get(verifying, f"https://localhost:{port}/c")
    assert servers.tracker.count == 2


@pytest_twisted.ensureDeferred
async def test_https_through_proxy(pki: PKI, servers: Servers, pool: HTTPConnectionPool) -> None:
    """
    Through a CONNECT proxy, an https request succeeds with the proxy's
    credentials percent-decoded, TLS runs end to end (the proxy relays only
    ciphertext), and a second request reuses the pooled tunnel.
    """
    port, hello = servers.web(pki)
    proxy_port, proxy = servers.proxy((USER, PASSWORD))
    agent = make_agent(
        real_reactor(),
        pool=pool,
        proxy=f"http://{QUOTED}@{LOCALHOST}:{proxy_port}",
        ca_file=pki.ca_file,
    )
    client = HTTPClient(agent)
    assert await _get(client, f"https://localhost:{port}/secret-path") == (
        200,
        b"hello /secret-path",
    )
    assert await _get(client, f"https://localhost:{port}/again") == (200, b"hello /again")

    assert hello.paths == [b"/secret-path", b"/again"]
    assert len(proxy.requests) == 1
    line, headers = proxy.requests[0]
    assert line == f"CONNECT localhost:{port} HTTP/1.1"
    assert headers["host"] == f"localhost:{port}"
    token = headers["proxy-authorization"].removeprefix("Basic ")
    assert base64.b64decode(token).decode() == f"{USER}:{PASSWORD}"
    assert proxy.relayed[:1] == b"\x16"  # a TLS handshake record
    assert b"secret-path" not in proxy.relayed
    assert b"GET" not in proxy.relayed


@pytest_twisted.ensureDeferred
async def test_proxy_refuses(pki: PKI, servers: Servers, pool: HTTPConnectionPool) -> None:
    """
    Wrong proxy credentials give C{ProxyError} naming the proxy, the target
    and the 407 status line, but not the password.
    """
    port, hello = servers.web(pki)
    proxy_port, _ = servers.proxy((USER, "right"))
    agent = make_agent(
        real_reactor(),
        pool=pool,
        proxy=f"http://{QUOTED}@{LOCALHOST}:{proxy_port}",
        ca_file=pki.ca_file,
    )
    with pytest.raises(ProxyError) as info:
        await _get(HTTPClient(agent), f"https://localhost:{port}/x")
    assert str(info.value) == (
        f"proxy 127.0.0.1:{proxy_port} refused CONNECT localhost:{port}: "
        "407 Proxy Authentication Required"
    )
    assert info.value.status == 407
    for secret in (PASSWORD, QUOTED, "p%40ss", "p@ss"):
        assert secret not in str(info.value)
        assert secret not in repr(info.value)
    assert hello.paths == []


@pytest_twisted.ensureDeferred
async def test_silent_proxy(servers: Servers, pool: HTTPConnectionPool) -> None:
    """
    A proxy that never answers CONNECT gives C{ProxyTimeoutError} (also a
    Twisted C{TimeoutError}) after C{connect_timeout}; a request timeout that
    comes first cancels the attempt with C{CancelledError} instead.
    """
    proxy_url = f"http://{QUOTED}@{LOCALHOST}:{servers.silent()}"
    agent = make_agent(real_reactor(), pool=pool, proxy=proxy_url, connect_timeout=0.2)
    with pytest.raises(ProxyTimeoutError) as info:
        await _get(HTTPClient(agent), "https://tc.example/x")
    assert isinstance(info.value, ierror.TimeoutError)
    assert str(info.value) == (
        f"proxy {LOCALHOST}:{info.value.proxy.rpartition(':')[2]} did not answer "
        "CONNECT tc.example:443 within 0.2 seconds"
    )
    assert PASSWORD not in str(info.value)

    agent = make_agent(real_reactor(), pool=pool, proxy=proxy_url)
    with pytest.raises(CancelledError):
        await HTTPClient(agent).get("https://tc.example/x", timeout=0.2, reactor=real_reactor())


@pytest_twisted.ensureDeferred
async def test_http_through_proxy(servers: Servers, pool: HTTPConnectionPool) -> None:
    """
    A plain http target is reached through a CONNECT tunnel too, without
    credentials when the proxy URL has none.
    """
    port, hello = servers.web()
    proxy_port, proxy = servers.proxy()
    agent = make_agent(real_reactor(), pool=pool, proxy=f"http://{LOCALHOST}:{proxy_port}/")
    assert await _get(HTTPClient(agent), f"http://{LOCALHOST}:{port}/y") == (200, b"hello /y")
    assert hello.paths == [b"/y"]
    line, headers = proxy.requests[0]
    assert line == f"CONNECT {LOCALHOST}:{port} HTTP/1.1"
    assert "proxy-authorization" not in headers
    assert b"GET /y HTTP/1.1" in proxy.relayed


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://user:password@proxy.example:3128", "http://user:***@proxy.example:3128"),
        ("http://user:p%40ss@proxy.example:3128/", "http://user:***@proxy.example:3128/"),
        ("http://user:p@ss@proxy.example:3128", "http://user:***@proxy.example:3128"),
        ("http://user:pa/ss@proxy.example:3128", "http://user:***@proxy.example:3128"),
        ("http://user@proxy.example:3128", "http://user@proxy.example:3128"),
        ("http://proxy.example:3128", "http://proxy.example:3128"),
        ("https://tc.example:8443/api?owner=a@b", "https://tc.example:8443/api?owner=a@b"),
        ("user:secret@proxy.example", "user:***@proxy.example"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    """
    C{mask_url} hides the password, even an unencoded one, and nothing else.
    """
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("socks5://user:s3cret@proxy.example:1080", "unsupported scheme 'socks5'"),
        ("https://user:s3cret@proxy.example:3128", "unsupported scheme 'https'"),
        ("user:s3cret@proxy.example:3128", "no scheme"),
        ("http://user:s3cret@proxy.example:31x8", "the port must be a number"),
        ("http://user:s3/cret@proxy.example:3128", "unexpected path"),
        ("http://user:s3cret@:3128", "no host"),
    ],
)
def test_bad_proxy_url(url: str, problem: str) -> None:
    """
    A bad proxy URL is a C{ValueError} naming the problem, never the
    password.
    """
    with pytest.raises(ValueError, match="proxy URL") as info:
        make_agent(real_reactor(), pool=HTTPConnectionPool(real_reactor()), proxy=url)
    assert problem in str(info.value)
    assert "s3" not in str(info.value)
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_bad_ca_file(tmp_path: Path) -> None:
    """
    An unreadable or certificate-less C{ca_file} is a C{ValueError} naming
    the file.
    """
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match=r"missing\.pem.*cannot read"):
        make_agent(real_reactor(), pool=HTTPConnectionPool(real_reactor()), ca_file=missing)
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"empty\.pem.*no valid PEM certificate"):
        make_agent(real_reactor(), pool=HTTPConnectionPool(real_reactor()), ca_file=str(empty))
