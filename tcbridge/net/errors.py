# -*- test-case-name: tests.unit.test_tc_client -*-
"""
Network failures and error pages as one readable line: the exceptions inside
Twisted's wrappers (C{ResponseNeverReceived} and friends), a one-line
reason, TLS verification failures, cancellations, and the first line of an
error page.  Shared by the ThreatConnect client and the Carbon Black server
sync.
"""

from __future__ import annotations

import html
import re

from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

#: The longest line quoted from a server or an exception.
MAX_LINE = 200
_TAG = re.compile(r"<[^>]*>")


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """
    C{text} on one line (white space collapsed), cut to C{limit} characters
    with C{...}.
    """
    clean = " ".join(text.split())
    if len(clean) > limit:
        clean = clean[: limit - 3] + "..."
    return clean


def first_line(body: bytes | bytearray) -> str:
    """
    The first non-empty line of a response body (an HTML error page, say),
    tags stripped, entities unescaped, on one line of at most L{MAX_LINE}
    characters; C{""} if there is none.
    """
    text = _TAG.sub(" ", body.decode("utf-8", errors="replace"))
    for line in text.splitlines():
        clean = one_line(html.unescape(line))
        if clean:
            return clean
    return ""


def leaves(exc: BaseException) -> list[BaseException]:
    """
    The underlying exceptions of C{exc}: itself, or (for Twisted's wrappers
    such as C{ResponseNeverReceived} and C{ResponseFailed}) the exceptions in
    its C{reasons}, recursively.
    """
    reasons = getattr(exc, "reasons", None)
    if isinstance(reasons, list) and reasons:
        found: list[BaseException] = []
        for reason in reasons:
            value = reason.value if isinstance(reason, Failure) else reason
            if isinstance(value, BaseException):
                found += leaves(value)
        if found:
            return found
    return [exc]


def openssl_text(exc: BaseException) -> str | None:
    """
    The reason strings of an C{OpenSSL.SSL.Error} (a list of
    C{(library, function, reason)} tuples), joined; C{None} for anything
    else.
    """
    if not type(exc).__module__.startswith("OpenSSL"):
        return None
    parts: list[str] = []
    for arg in exc.args:
        if isinstance(arg, list):
            for item in arg:
                if isinstance(item, tuple) and item:
                    parts.append(str(item[-1]))
                else:
                    parts.append(str(item))
        elif arg:
            parts.append(str(arg))
    text = "; ".join(p for p in parts if p)
    return text or None


def reason_text(exc: BaseException) -> str:
    """
    A short, single-line description of a transport error, unwrapping
    Twisted's wrapper exceptions (C{ResponseNeverReceived} and friends).
    """
    parts = []
    for leaf in leaves(exc):
        text = openssl_text(leaf) or " ".join(str(leaf).split()) or type(leaf).__name__
        if text not in parts:
            parts.append(text)
    return one_line("; ".join(parts))


def tls_verification_failure(exc: BaseException) -> str | None:
    """
    If C{exc} is, or wraps, a failure to verify the server's TLS certificate,
    the verification error in a few words; otherwise C{None}.

    OpenSSL reports an untrusted chain (self-signed, unknown issuer,
    expired) as C{OpenSSL.SSL.Error} with the reason C{"certificate verify
    failed"} (a verify callback may add the detail, e.g. C{"certificate
    verify failed: self-signed certificate"}); Twisted's host name check
    fails with C{service_identity}'s C{VerificationError}.
    """
    for leaf in leaves(exc):
        text = openssl_text(leaf)
        if text is not None and "certificate verify failed" in text.lower():
            return text
        module = type(leaf).__module__
        if module.startswith("service_identity") and "Error" in type(leaf).__name__:
            detail = " ".join(str(leaf).split())
            return f"certificate does not match the host name ({detail:.150})"
    return None


def is_cancellation(exc: BaseException) -> bool:
    """
    Whether C{exc} is, or wraps, a cancellation (which is how treq's timeout
    shows up).
    """
    return any(
        isinstance(leaf, CancelledError | ierror.ConnectingCancelledError) for leaf in leaves(exc)
    )
