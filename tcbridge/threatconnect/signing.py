# -*- test-case-name: tests.unit.test_signing -*-
"""
ThreatConnect HMAC request signing: a pure function of the request target as
sent, the method, the timestamp and the secret key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def string_to_sign(request_target: str, method: str, timestamp: int) -> str:
    """
    Build ThreatConnect's string to sign: C{<path>?<query>:<METHOD>:<ts>}.

    :param request_target: path and raw query exactly as they go on the wire,
        including any C{/api} prefix of the base URL; no scheme or host.
    """
    return f"{request_target}:{method.upper()}:{int(timestamp)}"


def signature(secret_key: str, request_target: str, method: str, timestamp: int) -> str:
    """
    Return the Base64 HMAC-SHA256 signature ThreatConnect expects.
    """
    message = string_to_sign(request_target, method, timestamp).encode("utf-8")
    digest = hmac.new(secret_key.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def authorization(
    api_key: str, secret_key: str, request_target: str, method: str, timestamp: int
) -> dict[str, str]:
    """
    Return the C{Timestamp} and C{Authorization} headers for one request.
    """
    sig = signature(secret_key, request_target, method, timestamp)
    return {
        "Timestamp": str(int(timestamp)),
        "Authorization": f"TC {api_key}:{sig}",
    }
