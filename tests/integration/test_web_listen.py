# -*- test-case-name: tests.integration.test_web_listen -*-
"""
Tests for L{tcbridge.web.listen}: plain and TLS listener endpoints, bad
certificate and key files, and the real FeedApp served over TLS on
127.0.0.1 to a treq client that trusts only the test CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM
from treq.client import HTTPClient
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.task import Clock
from twisted.web.client import HTTPConnectionPool
from twisted.web.server import Site

from tcbridge.net.agent import make_agent
from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore, Snapshot, count_iocs
from tcbridge.web.app import FeedApp
from tcbridge.web.guard import guard
from tcbridge.web.listen import listener_endpoint, tls_options
from tests.helpers import real_reactor
from tests.helpers_tls import LOCALHOST, PKI, Servers, make_pki

TIMEOUT = 10.0
MD5 = "0123456789abcdef0123456789abcdef"
USER = "carbonblack"
PASSWORD = "pw-for-cb:1"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
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
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOCALHOST))]
            ),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _chain_pki(folder: Path) -> tuple[str, str, str]:
    """
    A root CA, an intermediate it signed and a server certificate the
    intermediate signed.  Returns the root's file (the only thing the client
    trusts), the server's chain file (intermediate first, to show order does
    not matter) and its key file.
    """
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _issue("chain test root", root_key, None, root_key, ca=True)
    mid_key = ec.generate_private_key(ec.SECP256R1())
    mid = _issue("chain test intermediate", mid_key, root.subject, root_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _issue("localhost", leaf_key, mid.subject, mid_key, ca=False)
    (folder / "root.pem").write_bytes(_pem(root))
    (folder / "chain.pem").write_bytes(_pem(mid) + _pem(leaf))
    (folder / "chain.key").write_bytes(_key_pem(leaf_key))
    return str(folder / "root.pem"), str(folder / "chain.pem"), str(folder / "chain.key")


def _write_server_files(pki: PKI, folder: Path) -> tuple[str, str]:
    cert = folder / "server.pem"
    key = folder / "server.key"
    cert.write_bytes(pki.server.dump(FILETYPE_PEM))
    key.write_bytes(pki.server.privateKey.dump(FILETYPE_PEM))
    return str(cert), str(key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """
    A CA bundle and a server certificate for localhost and 127.0.0.1.
    """
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server_files(pki: PKI, tmp_path: Path) -> tuple[str, str]:
    """
    The server certificate and its key, as PEM files.
    """
    return _write_server_files(pki, tmp_path)


@pytest_twisted.async_yield_fixture
async def servers() -> AsyncIterator[Servers]:
    """
    Listening ports and connections, all closed after the test.
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


def _feed_site(**auth: Any) -> Site:
    clock = Clock()
    clock.advance(1_800_000_000)
    store = FeedStore(empty_body=b'{"feedinfo":{},"reports":[]}')
    reports = [{"id": "r1", "title": "t", "timestamp": 1, "score": 80, "iocs": {"md5": [MD5]}}]
    body = orjson.dumps({"feedinfo": {"name": "threatconnectintegration"}, "reports": reports})
    store.swap(Snapshot.of(body, 1, count_iocs(reports), clock.seconds()))
    app = FeedApp(store, SyncStatus(started_at=clock.seconds()), clock)
    site = Site(guard(app.resource(), **auth))
    site.noisy = False
    return site


async def _serve(servers: Servers, cert: str, key: str, **auth: Any) -> int:
    endpoint = listener_endpoint(
        real_reactor(), address=LOCALHOST, port=0, tls_cert=cert, tls_key=key
    )
    port = await endpoint.listen(servers.tracker.factory(_feed_site(**auth)))
    servers.ports.append(port)
    return int(port.getHost().port)


# -- Real sockets ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_feed_over_tls_with_basic_auth(
    pki: PKI, server_files: tuple[str, str], servers: Servers, pool: HTTPConnectionPool
) -> None:
    """
    The real FeedApp, guarded by Basic auth, served over TLS: a client
    trusting the test CA gets a 401 without credentials and the feed with
    them.
    """
    port = await _serve(servers, *server_files, username=USER, password=PASSWORD)
    client = HTTPClient(make_agent(real_reactor(), pool=pool, ca_file=pki.ca_file))
    url = f"https://{LOCALHOST}:{port}/threatconnect/json"
    response = await client.get(url, timeout=TIMEOUT, reactor=real_reactor())
    body = await response.content()
    assert response.code == 401 and MD5.encode() not in body
    response = await client.get(url, auth=(USER, PASSWORD), timeout=TIMEOUT, reactor=real_reactor())
    body = await response.content()
    assert response.code == 200
    assert orjson.loads(body)["reports"][0]["iocs"]["md5"] == [MD5]


@pytest_twisted.ensureDeferred
async def test_full_chain_is_sent(
    tmp_path: Path, servers: Servers, pool: HTTPConnectionPool
) -> None:
    """
    The intermediate certificates in the certificate file are sent, so a
    client that trusts only the root verifies the server.
    """
    root, chain, key = _chain_pki(tmp_path)
    port = await _serve(servers, chain, key)
    client = HTTPClient(make_agent(real_reactor(), pool=pool, ca_file=root))
    response = await client.get(
        f"https://{LOCALHOST}:{port}/threatconnect/json", timeout=TIMEOUT, reactor=real_reactor()
    )
    assert response.code == 200
    assert MD5.encode() in await response.content()


# -- Endpoints --------------------------------------------------------------------


def test_plain_endpoints_by_address_family() -> None:
    """
    Without TLS files, an IPv4 address gives a TCP4 endpoint and an IPv6
    address a TCP6 endpoint, on the given interface and port.
    """
    reactor = object()
    v4 = listener_endpoint(reactor, address="127.0.0.1", port=6100)
    assert isinstance(v4, TCP4ServerEndpoint)
    assert (v4._interface, v4._port) == ("127.0.0.1", 6100)
    v6 = listener_endpoint(reactor, address="::1", port=0)
    assert isinstance(v6, TCP6ServerEndpoint)
    assert v6._interface == "::1"


def test_tls_endpoint(server_files: tuple[str, str]) -> None:
    """
    With both files, the endpoint is TLS on the given interface, and older
    protocol versions than TLS 1.2 are off.
    """
    endpoint = listener_endpoint(
        object(), address="::1", port=8443, tls_cert=server_files[0], tls_key=server_files[1]
    )
    assert isinstance(endpoint, SSL4ServerEndpoint)
    assert (endpoint._interface, endpoint._port) == ("::1", 8443)
    options = endpoint._sslContextFactory
    # CertificateOptions keeps its SSL options here; TLS 1.0 and 1.1 are off.
    assert options._options & SSL.OP_NO_TLSv1
    assert options._options & SSL.OP_NO_TLSv1_1


def test_combined_pem_file(server_files: tuple[str, str], tmp_path: Path) -> None:
    """
    The certificate and key may be one file.
    """
    combined = tmp_path / "combined.pem"
    combined.write_bytes(Path(server_files[0]).read_bytes() + Path(server_files[1]).read_bytes())
    tls_options(str(combined), str(combined))


# -- Bad input --------------------------------------------------------------------


def _error(**kwargs: Any) -> str:
    with pytest.raises(ValueError) as raised:
        listener_endpoint(object(), **{"address": LOCALHOST, "port": 0, **kwargs})
    message = str(raised.value)
    assert "\n" not in message
    assert "PRIVATE KEY" not in message and "BEGIN" not in message
    return message


def test_missing_files(server_files: tuple[str, str], tmp_path: Path) -> None:
    """
    An unreadable certificate or key file is named in the error.
    """
    cert, key = server_files
    missing = str(tmp_path / "missing.pem")
    message = _error(tls_cert=missing, tls_key=key)
    assert missing in message and "certificate" in message
    message = _error(tls_cert=cert, tls_key=missing)
    assert missing in message and "key" in message
    message = _error(tls_cert=str(tmp_path), tls_key=key)
    assert str(tmp_path) in message


def test_invalid_files(server_files: tuple[str, str], tmp_path: Path) -> None:
    """
    Files that hold no certificate or no key are refused by name; a key
    file holding only a certificate is refused too.
    """
    cert, key = server_files
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem file\n")
    assert f"{junk} holds no valid PEM certificate" in _error(tls_cert=str(junk), tls_key=key)
    assert f"{junk} holds no valid PEM private key" in _error(tls_cert=cert, tls_key=str(junk))
    assert "no valid PEM private key" in _error(tls_cert=cert, tls_key=cert)
    assert "no valid PEM certificate" in _error(tls_cert=key, tls_key=key)


def test_mismatched_certificate_and_key(server_files: tuple[str, str], tmp_path: Path) -> None:
    """
    A key that belongs to no certificate in the file is refused, naming
    both files and showing no key material.
    """
    other = ec.generate_private_key(ec.SECP256R1())
    other_key = tmp_path / "other.key"
    other_key.write_bytes(_key_pem(other))
    message = _error(tls_cert=server_files[0], tls_key=str(other_key))
    assert message == (
        f"listener TLS certificate file {server_files[0]} does not match the key in {other_key}"
    )


def test_encrypted_key(server_files: tuple[str, str], tmp_path: Path) -> None:
    """
    An encrypted key is refused with a clear message.
    """
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1()), b"hunter2"))
    message = _error(tls_cert=server_files[0], tls_key=str(encrypted))
    assert "is encrypted" in message and "hunter2" not in message


def test_half_tls_address_and_port(server_files: tuple[str, str]) -> None:
    """
    Only one of the two TLS files, a host name instead of an address, or a
    port out of range, is refused.
    """
    assert "both" in _error(tls_cert=server_files[0])
    assert "both" in _error(tls_key=server_files[1])
    assert "not an IP address" in _error(address="localhost")
    assert "65536" in _error(port=65536)
