# -*- test-case-name: tests.test_tc_client -*-
"""
Typed errors for talking to ThreatConnect.

Every error carries a user-facing C{message} (ThreatConnect's own text where
it gave one), the HTTP C{status} if a response arrived, and the request
C{target} (path and query as sent, never a secret).  C{str(err)} is a single
line fit for a log, the diagnostics page or a console.
"""

from __future__ import annotations


def _one_line(text: str) -> str:
    """
    Collapse all white space (including newlines) in C{text} to single spaces.
    """
    return " ".join(text.split())


class ThreatConnectError(Exception):
    """
    A request to ThreatConnect did not give usable data.

    :ivar message: user-facing text: ThreatConnect's own message where it gave
        one, otherwise a description of what went wrong.
    :ivar status: the HTTP status code, or C{None} when no response arrived.
    :ivar target: the request target (path and query) as sent, e.g.
        C{/api/v2/owners?resultStart=0&resultLimit=10000}.
    """

    _verb = "ThreatConnect request failed:"

    message: str
    status: int | None
    target: str

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        target: str = "",
        method: str = "GET",
        detail: str | None = None,
    ) -> None:
        """
        :param message: the user-facing message (see the class docstring).
        :param status: the HTTP status code, if any.
        :param target: the request target as sent.
        :param method: the HTTP method, for C{str()}.
        :param detail: the text after C{"<METHOD> <target>: "} in C{str()};
            defaults to C{message}.
        """
        self.message = _one_line(message)
        self.status = status
        self.target = target
        self.method = method
        self._detail = _one_line(detail if detail is not None else message)
        super().__init__(self.message)

    def __str__(self) -> str:
        """
        One line: what happened, to which request, and why.
        """
        return f"{self._verb} {self.method} {self.target}: {self._detail}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, "
            f"status={self.status!r}, target={self.target!r})"
        )


class AuthError(ThreatConnectError):
    """
    ThreatConnect refused the credentials or the access (HTTP 401 or 403).

    Retrying will not help: check the API key, the secret key, the clock and
    the owner's permissions.
    """

    _verb = "ThreatConnect refused"


class ApiError(ThreatConnectError):
    """
    ThreatConnect answered with an error: a non-2xx status other than
    401/403, or a 2xx whose JSON C{status} is not C{"Success"}.
    """

    _verb = "ThreatConnect refused"


class ResponseError(ThreatConnectError):
    """
    ThreatConnect's answer could not be read: not JSON, truncated, or not the
    expected shape.  C{message} says which.
    """

    _verb = "ThreatConnect sent an unreadable response to"


class RequestTimeout(ThreatConnectError):  # noqa: N818 (contract name)
    """
    No complete answer arrived within the client's timeout.
    """

    _verb = "ThreatConnect did not answer"


class ConnectionFailed(ThreatConnectError):  # noqa: N818 (contract name)
    """
    No HTTP exchange was possible: connection refused or reset, DNS failure,
    TLS failure.  C{message} names the host and the underlying reason.
    """

    _verb = "Could not reach ThreatConnect for"
