"""
Over real TCP on 127.0.0.1 (moved here from the
ThreatConnect client unit tests, which need no socket).
"""

from __future__ import annotations

import datetime
import ipaddress

import pytest
import pytest_twisted

from tcbridge.threatconnect.diagnosis import (
    TLS_HINT,
)
from tcbridge.threatconnect.errors import (
    ConnectionFailed,
    TLSVerificationError,
)
from tests.helpers_tc import (
    SECRET,
    ScriptedTC,
    always,
    real_client,
    success,
)
from tests.unit.test_tc_client import OWNERS


def self_signed_pem() -> bytes:
    """
    A fresh self-signed certificate for 127.0.0.1 and its key, in PEM.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest_twisted.ensureDeferred
async def test_loopback_site_sees_signed_target() -> None:
    """
    Over a real TCP connection to a twisted.web Site on 127.0.0.1, the
    server's raw request target equals the signed target, for every encoding
    form a config can contain.
    """
    from twisted.internet import reactor
    from twisted.web.server import Site

    targets = [
        "/v2/owners?resultStart=0&resultLimit=10000",
        "/v2/indicators/hosts?owner=Common%20Community&resultStart=0&resultLimit=100",
        "/v2/indicators/hosts?owner=Common+Community&resultStart=0&resultLimit=100",
        "/v2/indicators?owner=A%2CB&filters=rating%3E3&x=(y)&n=O'Brien",
        "/v1/indicators/?owner=Common Community",
    ]
    resource = ScriptedTC(always(success(OWNERS)))
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")  # type: ignore[attr-defined]
    client, pool = real_client(reactor, f"http://127.0.0.1:{port.getHost().port}/api")
    try:
        for target in targets:
            assert (await client.get_json(target))["data"] == OWNERS
    finally:
        await port.stopListening()
        await pool.closeCachedConnections()
    assert [s.uri for s in resource.seen] == [client.request_target(t) for t in targets]
    assert resource.seen[-1].uri == "/api/v1/indicators/?owner=Common%20Community"
    assert all(s.signature_ok() for s in resource.seen)


@pytest_twisted.ensureDeferred
async def test_loopback_refused() -> None:
    """
    A closed port on 127.0.0.1 gives ConnectionFailed naming host and port.
    """
    from twisted.internet import reactor
    from twisted.web.server import Site

    port = reactor.listenTCP(0, Site(ScriptedTC(always(success(OWNERS)))), interface="127.0.0.1")  # type: ignore[attr-defined]
    number = port.getHost().port
    await port.stopListening()
    client, pool = real_client(reactor, f"http://127.0.0.1:{number}/api")
    with pytest.raises(ConnectionFailed) as info:
        await client.get_json("/v2/owners")
    await pool.closeCachedConnections()
    assert f"127.0.0.1:{number}" in info.value.message
    assert "refused" in info.value.message.lower()


@pytest_twisted.ensureDeferred
async def test_self_signed_certificate_real_tls() -> None:
    """
    A real HTTPS server on 127.0.0.1 with a self-signed certificate: the
    client fails at once (no retry) with a TLSVerificationError naming the
    host, port and verification error, and a hint to set ca_file.
    """
    from twisted.internet import reactor
    from twisted.internet.ssl import PrivateCertificate
    from twisted.web.server import Site

    options = PrivateCertificate.loadPEM(self_signed_pem()).options()
    resource = ScriptedTC(always(success({"owner": []})))
    port = reactor.listenSSL(  # type: ignore[attr-defined]
        0, Site(resource), options, interface="127.0.0.1"
    )
    number = port.getHost().port
    client, pool = real_client(reactor, f"https://127.0.0.1:{number}/api")
    try:
        with pytest.raises(TLSVerificationError) as info:
            await client.get_json("/v2/owners")
    finally:
        await port.stopListening()
        await pool.closeCachedConnections()
    err = info.value
    assert isinstance(err, ConnectionFailed)
    assert err.status is None
    assert err.message == f"connection to 127.0.0.1:{number} failed: TLS certificate verify failed"
    assert err.hint == TLS_HINT
    assert str(err) == (
        f"Could not reach ThreatConnect for GET /api/v2/owners: connection to "
        f"127.0.0.1:{number} failed: TLS certificate verify failed. {TLS_HINT}"
    )
    assert client.requests == 1
    assert client.status_counts == {"connection": 1}
    assert resource.seen == []
    assert SECRET not in str(err) + repr(err)
