# -*- test-case-name: tests.integration.test_web_listen -*-
"""
The web listener's endpoint: plain TCP on an IPv4 or IPv6 address, or TLS
with a certificate chain and key read from PEM files.

Bad files are refused before anything listens, with one-line
L{ValueError} messages that name the files and never contain key material.
TLS is 1.2 or later.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from OpenSSL import crypto
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
)
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.ssl import CertificateOptions, TLSVersion

_ServerKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror or e}") from None


def _certificates(path: str) -> list[x509.Certificate]:
    data = _read(path, "listener TLS certificate file")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(
            f"listener TLS certificate file {path} holds no valid PEM certificate"
        ) from None


def _private_key(path: str) -> _ServerKey:
    data = _read(path, "listener TLS key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(
            f"listener TLS key file {path} is encrypted; give an unencrypted PEM key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        # The parser's own message is not shown: it could quote the file.
        raise ValueError(f"listener TLS key file {path} holds no valid PEM private key") from None
    if not isinstance(key, _ServerKey):
        raise ValueError(f"listener TLS key file {path} holds a key type TLS servers cannot use")
    return key


def tls_options(tls_cert: str, tls_key: str) -> CertificateOptions:
    """
    TLS 1.2+ server options from a PEM certificate file (the server's
    certificate and any intermediates, in any order) and a PEM key file
    (unencrypted; it may be the same file as C{tls_cert}).

    :raises ValueError: when a file cannot be read or parsed, or when no
        certificate in C{tls_cert} matches the key in C{tls_key}.
    """
    certificates = _certificates(tls_cert)
    key = _private_key(tls_key)
    public = key.public_key().public_bytes(*_SPKI)
    for index, certificate in enumerate(certificates):
        if certificate.public_key().public_bytes(*_SPKI) == public:
            leaf = certificate
            chain = certificates[:index] + certificates[index + 1 :]
            break
    else:
        raise ValueError(
            f"listener TLS certificate file {tls_cert} does not match the key in {tls_key}"
        )
    return CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=crypto.X509.from_cryptography(leaf),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain],
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )


def listener_endpoint(
    reactor: Any,
    *,
    address: str,
    port: int,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> IStreamServerEndpoint:
    """
    The endpoint the web listener listens on.

    :param reactor: an L{IReactorTCP} (and L{IReactorSSL} for TLS).
    :param address: the IPv4 or IPv6 address to listen on.
    :param port: the TCP port (0 picks a free one).
    :param tls_cert: a PEM file with the server certificate and its
        intermediates; with C{tls_key}, the listener speaks TLS only.
    :param tls_key: the PEM file with the certificate's unencrypted key.
    :raises ValueError: with a one-line message for a bad address or port,
        only one of C{tls_cert} and C{tls_key}, or unusable TLS files.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"listener address {address!r} is not an IP address") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listener port {port} is not between 0 and 65535")
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("listener TLS needs both a certificate file and a key file")
    if tls_cert is not None and tls_key is not None:
        # Twisted's TCP port picks IPv4 or IPv6 from the interface address.
        return SSL4ServerEndpoint(reactor, port, tls_options(tls_cert, tls_key), interface=address)
    if ip.version == 6:
        return TCP6ServerEndpoint(reactor, port, interface=address)
    return TCP4ServerEndpoint(reactor, port, interface=address)
