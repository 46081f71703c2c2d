# -*- test-case-name: tests.unit.test_tc_client,tests.unit.test_tc_diagnosis -*-
"""
Typed errors for talking to ThreatConnect.

Every error carries a user-facing C{message} (ThreatConnect's own text where
it gave one), the HTTP C{status} if a response arrived, the request C{target}
(path and query as sent, never a secret) and, where tcbridge can tell what
is probably wrong, a C{hint} saying what to do.  C{str(err)} is a single line
fit for a log, the diagnostics page or a console::

    ThreatConnect refused GET /api/v2/owners: HTTP 401: Timestamp out of
    acceptable time range. This host's clock is 912 seconds behind
    ThreatConnect; set the system clock (NTP).
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
        one, otherwise a description of what went wrong; ends with
        C{"(gave up after N attempts)"} when the request was retried.
    :ivar status: the HTTP status code, or C{None} when no response arrived.
    :ivar target: the request target (path and query) as sent, e.g.
        C{/api/v2/owners?resultStart=0&resultLimit=10000}.
    :ivar hint: what the user should probably do about it, as one or more
        sentences, or C{None} when tcbridge has nothing to add.
    :ivar attempts: how many times the request was sent before this error
        was final.
    :ivar retry_after: the seconds ThreatConnect asked the client to wait
        (C{Retry-After} on a 429 or 503), already capped; C{None} if it
        did not ask.
    :ivar instance: the named ThreatConnect instance the request went to;
        C{""} for the main one.
    """

    _verb = "ThreatConnect request failed:"

    message: str
    status: int | None
    target: str
    hint: str | None
    attempts: int
    retry_after: float | None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        target: str = "",
        method: str = "GET",
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        """
        :param message: the user-facing message (see the class docstring).
        :param status: the HTTP status code, if any.
        :param target: the request target as sent.
        :param method: the HTTP method, for C{str()}.
        :param detail: the text after C{"<METHOD> <target>: "} in C{str()};
            defaults to C{message}.
        :param hint: advice shown after the detail in C{str()}.
        """
        self.message = _one_line(message)
        self.status = status
        self.target = target
        self.method = method
        self._detail = _one_line(detail if detail is not None else message)
        self.hint = _one_line(hint) if hint else None
        self.attempts = 1
        self.retry_after = None
        self.instance = ""
        super().__init__(self.message)

    def in_instance(self, name: str) -> None:
        """
        Say that the request went to the named ThreatConnect instance
        (C{[threatconnect:<name>]}): C{str()} then starts with that section.
        """
        self.instance = name

    def gave_up(self, attempts: int) -> None:
        """
        Record that this error is the last of C{attempts} tries: the message
        and the one-line text gain C{"(gave up after N attempts)"}.
        """
        self.attempts = attempts
        if attempts > 1:
            suffix = f" (gave up after {attempts} attempts)"
            self.message += suffix
            self._detail += suffix
            self.args = (self.message,)

    def set_hint(self, hint: str | None) -> None:
        """
        Replace the hint (C{None} removes it).
        """
        self.hint = _one_line(hint) if hint else None

    @property
    def detail(self) -> str:
        """
        The text after C{"<METHOD> <target>: "} in C{str()}, without the hint.
        """
        return self._detail

    def __str__(self) -> str:
        """
        One line: what happened, to which request, why, and (if known) what
        to do about it.
        """
        text = f"{self._verb} {self.method} {self.target}: {self._detail}"
        if self.instance:
            text = f"[threatconnect:{self.instance}] {text}"
        if self.hint:
            text += (" " if text.endswith((".", "!", "?")) else ". ") + self.hint
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, "
            f"status={self.status!r}, target={self.target!r}, hint={self.hint!r})"
        )


class AuthError(ThreatConnectError):
    """
    ThreatConnect refused the credentials or the access (HTTP 401 or 403).

    Retrying will not help: check the API key, the secret key, the clock and
    the owner's permissions.  C{status} and C{message} tell a 403 "owner not
    found" apart from a bad signature.
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


class TruncatedResponseError(ResponseError):
    """
    The connection closed before the whole body arrived (fewer bytes than
    C{Content-Length}, or a close-delimited body that is not complete JSON).
    Unlike other L{ResponseError}s this is worth retrying.
    """


class NotJSONError(ResponseError):
    """
    A 2xx answer whose body is not JSON at all: empty, cut short with its
    length intact, or corrupted on the way.  Worth retrying: ThreatConnect
    answers JSON on success, so this is a glitch between it and us.
    """


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


class TLSVerificationError(ConnectionFailed):
    """
    ThreatConnect's TLS certificate could not be verified (an unknown or
    self-signed issuer, an expired certificate, a name that does not match
    the host).  Retrying will not help; C{hint} says what to configure.
    """
