# -*- test-case-name: tests.integration.test_tc_transport -*-
"""
The agent the bridge reaches servers with (ThreatConnect, and the Carbon
Black server when it synchronizes the feed there): an
L{twisted.web.iweb.IAgent} to wrap in L{treq.client.HTTPClient}.

L{make_agent} picks the TLS policy and the route:

  - TLS is verified against the platform trust store by default, against
    I{only} the certificates of a PEM bundle when C{ca_file} is given (an
    on-prem ThreatConnect with a private CA), or not at all when
    C{verify=False} (still TLS; a warning naming the host is logged once).
  - With C{proxy="http://[user:password@]host:port"} every request goes
    through an HTTP C{CONNECT} tunnel to the target's host and port; TLS to
    an C{https} target runs end to end inside the tunnel (the proxy only
    relays bytes), an C{http} target is spoken to in the clear.

Connections are pooled in the given L{HTTPConnectionPool}, in a partition of
their own: an agent never reuses a connection that was made under another
TLS policy or another proxy, even when several agents share the pool.

The proxy tunnel itself is L{tcbridge.net.proxy}.  Proxy passwords never
appear in logs, exception text or C{repr}s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from typing import Any

from attrs import field, frozen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.internet.ssl import Certificate, CertificateOptions, trustRootFromCertificates
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HostnameCachingHTTPSPolicy,
    HTTPConnectionPool,
)
from twisted.web.iweb import IAgent, IPolicyForHTTPS
from zope.interface import implementer

from tcbridge.logs import bridge_observer
from tcbridge.net.proxy import ProxyEndpointFactory, parse_proxy
from tcbridge.secrets import mask_url

__all__ = ["make_agent"]

log = Logger(observer=bridge_observer)


# -- TLS policies -----------------------------------------------------------


def _load_trust_root(ca_file: str) -> tuple[object, str]:
    """
    Trust exactly the certificates of the PEM bundle C{ca_file}.

    :return: the trust root and a digest of the certificates (for pool keys).
    :raises ValueError: naming the file when it cannot be read or holds no
        PEM certificate.
    """
    try:
        with open(ca_file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"ca_file {ca_file!r}: cannot read it: {e.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(
            f"ca_file {ca_file!r}: no valid PEM certificate "
            "(expected one or more '-----BEGIN CERTIFICATE-----' blocks)"
        ) from None
    pems = [cert.public_bytes(Encoding.PEM) for cert in certs]
    digest = hashlib.sha256(b"".join(pems)).hexdigest()
    root = trustRootFromCertificates([Certificate.loadPEM(pem) for pem in pems])
    return root, digest


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedCreator:
    """
    TLS without certificate verification, still sending SNI for a DNS name.
    """

    def __init__(self, options: CertificateOptions, hostname: bytes) -> None:
        self._options = options
        text = hostname.decode("ascii")
        self._sni = None if isIPAddress(text) or isIPv6Address(text) else hostname

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        """
        A connection that accepts any server certificate.
        """
        connection = self._options.clientConnectionForTLS(tls_protocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        return connection


@implementer(IPolicyForHTTPS)
class _UnverifiedPolicy:
    """
    TLS with no certificate verification; logs a warning the first time each
    host is connected to.
    """

    def __init__(self) -> None:
        self._options = CertificateOptions(verify=False)
        self._warned: set[tuple[bytes, int]] = set()

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        """
        A creator for C{hostname}; warn once per host and port.
        """
        if (hostname, port) not in self._warned:
            self._warned.add((hostname, port))
            log.warn(
                "TLS certificate verification is OFF for {host}:{port} (verify = false): "
                "the connection is encrypted but the server is not authenticated",
                host=hostname.decode("ascii", "replace"),
                port=port,
            )
        return _UnverifiedCreator(self._options, hostname)


# -- Pool partitions ---------------------------------------------------------


class _PoolPartition:
    """
    A view of an L{HTTPConnectionPool} whose keys are prefixed with a route
    tag, so agents with different TLS policies or proxies never exchange
    connections (L{Agent} keys connections on scheme, host and port only).
    Only the part of the pool interface that L{Agent} uses is offered.
    """

    def __init__(self, pool: HTTPConnectionPool, tag: Hashable) -> None:
        self._pool = pool
        self._tag = tag

    @property
    def persistent(self) -> bool:
        """
        Whether the underlying pool keeps connections open.
        """
        return bool(self._pool.persistent)

    def getConnection(self, key: Hashable, endpoint: IStreamClientEndpoint) -> Deferred[Any]:
        """
        A connection from the pool, under this partition's key.
        """
        return self._pool.getConnection((self._tag, key), endpoint)


@frozen
class _Route:
    """
    What makes connections interchangeable besides scheme, host and port.
    C{secret} is a digest of the proxy credentials, never shown.
    """

    proxy: str | None
    secret: str | None = field(repr=False)
    trust: str


# -- The agent ---------------------------------------------------------------


def make_agent(
    reactor: Any,
    *,
    pool: HTTPConnectionPool,
    connect_timeout: float = 30.0,
    proxy: str | None = None,
    ca_file: str | None = None,
    verify: bool = True,
) -> IAgent:
    """
    An agent for ThreatConnect, to wrap in L{treq.client.HTTPClient}.

    :param reactor: the reactor (L{IReactorTCP}, L{IReactorTime} and a
        resolver, as for L{HostnameEndpoint}).
    :param pool: where connections are kept between requests; this agent
        uses a partition of its own (see the module docstring).
    :param connect_timeout: seconds to wait for a TCP connection (and, with a
        proxy, for each of the proxy's connection and its C{CONNECT} answer).
    :param proxy: C{http://[user:password@]host[:port]} (percent-encoded
        credentials, port 80 by default), or C{None} to connect directly.
    :param ca_file: a PEM bundle; when given, servers are verified against
        only its certificates instead of the platform trust store.
    :param verify: C{False} turns certificate verification off (C{ca_file}
        is then not read); a warning naming the host is logged on the first
        connection to each host.
    :raises ValueError: for a bad proxy URL or an unusable C{ca_file}, with a
        message that never contains the proxy password.
    """
    parsed = parse_proxy(proxy) if proxy is not None else None
    policy: IPolicyForHTTPS
    if not verify:
        policy = _UnverifiedPolicy()
        trust = "none"
    elif ca_file is not None:
        root, digest = _load_trust_root(ca_file)
        policy = HostnameCachingHTTPSPolicy(BrowserLikePolicyForHTTPS(trustRoot=root))
        trust = f"ca:{digest}"
    else:
        policy = HostnameCachingHTTPSPolicy(BrowserLikePolicyForHTTPS())
        trust = "platform"

    secret = None
    if parsed is not None and parsed.authorization is not None:
        secret = hashlib.sha256(parsed.authorization).hexdigest()
    route = _Route(proxy=parsed.name if parsed else None, secret=secret, trust=trust)
    partition = _PoolPartition(pool, route)

    if parsed is None:
        return Agent(reactor, contextFactory=policy, connectTimeout=connect_timeout, pool=partition)
    log.info("Connecting to ThreatConnect through proxy {proxy}", proxy=mask_url(proxy or ""))
    factory = ProxyEndpointFactory(reactor, parsed, policy, connect_timeout)
    return Agent.usingEndpointFactory(reactor, factory, pool=partition)
