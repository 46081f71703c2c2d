# -*- test-case-name: tests.integration.test_tc_transport -*-
"""
Test helpers for real-socket TLS and proxy tests on 127.0.0.1: a throwaway
certificate authority, a twisted.web server (TLS or plain) and a small HTTP
CONNECT proxy that only relays bytes.  Everything listens on 127.0.0.1 only
and L{Servers.close} closes every port and connection it opened.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path
from typing import Any

from attrs import define, field
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL.crypto import FILETYPE_PEM
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import PrivateCertificate
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

LOCALHOST = "127.0.0.1"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """
    A self-signed CA certificate and its key.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@define
class PKI:
    """
    A test CA and a server certificate for C{localhost} and 127.0.0.1.

    :ivar ca_file: a PEM bundle of an unrelated CA I{followed by} the test CA
        (so a loader that reads only the first certificate fails).
    :ivar server: the server's certificate and key, for
        L{PrivateCertificate.options}.
    """

    ca_file: str
    server: PrivateCertificate


def make_pki(folder: Path) -> PKI:
    """
    Generate a CA and a server certificate it signed; write the CA bundle
    under C{folder}.
    """
    ca_key, ca_cert = _ca("tcbridge test CA")
    _, other_cert = _ca("tcbridge unrelated CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOCALHOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    bundle = folder / "ca-bundle.pem"
    bundle.write_bytes(
        other_cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    server = PrivateCertificate.loadPEM(
        cert.public_bytes(serialization.Encoding.PEM) + _pem_key(key)
    )
    return PKI(ca_file=str(bundle), server=server)


# -- Connection tracking ----------------------------------------------------


class _Tracked(ProtocolWrapper):
    """
    A protocol wrapper that reports its connection's end.
    """

    def __init__(self, factory: Any, wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)


class Tracker:
    """
    Remembers connections so a test can close them all and wait.
    """

    def __init__(self) -> None:
        self.open: list[Any] = []
        self.count = 0

    def factory(self, wrapped: Any) -> WrappingFactory:
        """
        Wrap C{wrapped} so its connections are tracked.
        """
        tracker = self

        class Wrapping(WrappingFactory):
            protocol = _Tracked
            noisy = False

            def buildProtocol(self, addr: Any) -> Any:
                proto = super().buildProtocol(addr)
                tracker.track(proto)
                return proto

        return Wrapping(wrapped)

    def track(self, proto: Any) -> None:
        """
        Track C{proto}, which must have a C{lost} Deferred.
        """
        self.count += 1
        self.open.append(proto)
        proto.lost.addBoth(lambda _: self.open.remove(proto))

    async def close(self) -> None:
        """
        Abort every open connection and wait until all are gone.
        """
        waits = [p.lost for p in self.open]
        for p in list(self.open):
            if p.transport is not None:
                p.transport.abortConnection()
        await gatherResults(waits)


# -- Web servers ------------------------------------------------------------


class Hello(Resource):
    """
    Answers every GET with C{hello <path>} and records the paths.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[bytes] = []

    def render_GET(self, request: Request) -> bytes:
        self.paths.append(request.path)
        return b"hello " + request.path


@define
class Servers:
    """
    Everything a test started; C{close()} stops it all.
    """

    reactor: Any
    tracker: Tracker = field(factory=Tracker)
    ports: list[IListeningPort] = field(factory=list)

    def web(self, pki: PKI | None = None) -> tuple[int, Hello]:
        """
        Start a web server on 127.0.0.1 (TLS with C{pki}'s server
        certificate, plain without); return its port and resource.
        """
        hello = Hello()
        site = Site(hello)
        site.noisy = False
        factory = self.tracker.factory(site)
        if pki is None:
            port = self.reactor.listenTCP(0, factory, interface=LOCALHOST)
        else:
            port = self.reactor.listenSSL(0, factory, pki.server.options(), interface=LOCALHOST)
        self.ports.append(port)
        return port.getHost().port, hello

    def proxy(self, credentials: tuple[str, str] | None = None) -> tuple[int, ConnectProxy]:
        """
        Start a CONNECT proxy on 127.0.0.1; return its port and state.
        """
        state = ConnectProxy(self, credentials)
        port = self.reactor.listenTCP(0, state.factory(), interface=LOCALHOST)
        self.ports.append(port)
        return port.getHost().port, state

    def silent(self) -> int:
        """
        Start a server on 127.0.0.1 that accepts connections and never
        answers; return its port.
        """
        factory = self.tracker.factory(Factory.forProtocol(Protocol))
        port = self.reactor.listenTCP(0, factory, interface=LOCALHOST)
        self.ports.append(port)
        return int(port.getHost().port)

    async def close(self) -> None:
        """
        Stop listening and close every connection.
        """
        stopping = [port.stopListening() for port in self.ports]
        await gatherResults([d for d in stopping if d is not None])
        await self.tracker.close()


# -- The CONNECT proxy --------------------------------------------------------


class _Outbound(Protocol):
    """
    The proxy's connection to the target: relays back to the client.
    """

    def __init__(self, inbound: _ProxyConnection) -> None:
        self.inbound = inbound
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        assert self.inbound.transport is not None
        self.inbound.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.inbound.transport is not None:
            self.inbound.transport.loseConnection()
        self.lost.callback(None)


class _ProxyConnection(Protocol):
    """
    One client of the proxy: reads C{CONNECT}, checks credentials, then
    relays to 127.0.0.1:<requested port> whatever host was asked for.
    """

    def __init__(self, state: ConnectProxy) -> None:
        self.state = state
        self.buffer = b""
        self.outbound: _Outbound | None = None
        self.pending: list[bytes] = []
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.outbound is not None:
            self.state.relayed += data
            assert self.outbound.transport is not None
            self.outbound.transport.write(data)
            return
        if self.pending or b"\r\n\r\n" in self.buffer:
            self.state.relayed += data
            self.pending.append(data)
            return
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        head, rest = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.state.requests.append((lines[0], headers))
        method, target, _ = lines[0].split(" ", 2)
        assert self.transport is not None
        if method != "CONNECT":
            self.transport.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            self.transport.loseConnection()
            return
        if self.state.credentials is not None:
            user, password = self.state.credentials
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            if headers.get("proxy-authorization") != f"Basic {token}":
                self.transport.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\n'
                    b"Content-Length: 0\r\n\r\n"
                )
                self.transport.loseConnection()
                return
        if rest:
            self.state.relayed += rest
            self.pending.append(rest)
        port = int(target.rpartition(":")[2])
        endpoint = TCP4ClientEndpoint(self.state.servers.reactor, LOCALHOST, port)
        factory = Factory.forProtocol(lambda: _Outbound(self))
        endpoint.connect(factory).addCallbacks(self._connected, self._failed)

    def _connected(self, outbound: _Outbound) -> None:
        self.state.servers.tracker.track(outbound)
        if self.transport is None or self.lost.called:
            assert outbound.transport is not None
            outbound.transport.loseConnection()
            return
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.outbound = outbound
        assert outbound.transport is not None
        for chunk in self.pending:
            outbound.transport.write(chunk)
        self.pending = []

    def _failed(self, failure: Failure) -> None:
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.outbound is not None and self.outbound.transport is not None:
            self.outbound.transport.loseConnection()
        self.lost.callback(None)


class ConnectProxy:
    """
    A minimal HTTP CONNECT proxy for tests.

    :ivar requests: each C{CONNECT} request line with its headers (lower-case
        names).
    :ivar relayed: every byte relayed from clients to targets.
    """

    def __init__(self, servers: Servers, credentials: tuple[str, str] | None) -> None:
        self.servers = servers
        self.credentials = credentials
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.relayed = b""

    def factory(self) -> Factory:
        """
        The listening factory; its connections are tracked.
        """
        state = self

        class _Factory(Factory):
            noisy = False

            def buildProtocol(self, addr: Any) -> _ProxyConnection:
                proto = _ProxyConnection(state)
                state.servers.tracker.track(proto)
                return proto

        return _Factory()


def write_listener_pair(folder: Path) -> tuple[Path, Path]:
    """
    Write a server certificate and its private key as the PEM files
    C{listener_tls_cert} and C{listener_tls_key} name; return both paths.
    """
    server = make_pki(folder).server
    cert, key = folder / "listener.crt", folder / "listener.key"
    cert.write_bytes(server.dump(FILETYPE_PEM))
    key.write_bytes(server.privateKey.dump(FILETYPE_PEM))
    return cert, key
