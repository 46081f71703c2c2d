# -*- test-case-name: tests.unit.test_signing -*-
"""
Known-answer tests for ThreatConnect request signing (API reference §1.1).
"""

from __future__ import annotations

import pytest

from tcbridge.threatconnect.signing import authorization, signature, string_to_sign

SECRET = "example-secret-key"
TS = 1513703787

VECTORS = [
    ("/api/v2/owners", "PXd4pJuGWXxmDlCrpJUeAqDoSkmQSk5E66jDY62GXjo="),
    (
        "/api/v2/indicators/hosts?owner=Common%20Community&resultStart=0&resultLimit=100",
        "d9PUx7wHwMEWZq5fq+XDZvdgUEwHgFYM7HrXYUx1Bms=",
    ),
    (
        "/api/v2/indicators/hosts?owner=Common+Community&resultStart=0&resultLimit=100",
        "6jJrtYyp8xYEhJt1F+ro3L07Witenc5zZu3q+SMaN80=",
    ),
]


@pytest.mark.parametrize(("target", "expected"), VECTORS)
def test_vectors(target: str, expected: str) -> None:
    """
    The signature of each documented request target matches the published
    vector, so ThreatConnect accepts the request.
    """
    assert signature(SECRET, target, "GET", TS) == expected


def test_string_to_sign() -> None:
    """
    The signed string is C{target:METHOD:timestamp} with the method in upper
    case and no C{?} added when there is no query.
    """
    assert string_to_sign("/api/v2/owners", "get", TS) == "/api/v2/owners:GET:1513703787"


def test_authorization_headers() -> None:
    """
    The headers carry the timestamp as a decimal string and
    C{TC <accessId>:<signature>}.
    """
    headers = authorization("1234", SECRET, "/api/v2/owners", "GET", TS)
    assert headers == {
        "Timestamp": "1513703787",
        "Authorization": "TC 1234:PXd4pJuGWXxmDlCrpJUeAqDoSkmQSk5E66jDY62GXjo=",
    }


def test_space_forms_differ() -> None:
    """
    C{%20} and C{+} sign differently: the signature covers the raw bytes.
    """
    assert VECTORS[1][1] != VECTORS[2][1]
