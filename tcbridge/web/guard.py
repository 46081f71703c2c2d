# -*- test-case-name: tests.unit.test_web_guard -*-
"""
Optional protection for the whole web listener: an IP allow-list, then HTTP
Basic and/or Bearer-token authentication.

L{guard} wraps the site's root resource, so every route (the feed, the
pages, the images, C{/healthz}, C{/metrics}) is checked before the wrapped
resource sees the request.  A refused request gets a short plain-text 403 or
401 with no feed data; the wrapped resource is never asked to render it.

With no allow-list and no credentials (the default, for a listener on
127.0.0.1) L{guard} returns the resource unchanged.

Secrets are compared as SHA-256 digests with L{hmac.compare_digest}, and are
never logged, echoed in a response or put in an exception message.  Each
refusal is logged as a structured warning (client address, path, reason),
at most once a minute per client and reason when a clock is given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import implementer

from tcbridge.logs import bridge_observer

#: Seconds during which repeated refusals of one client for one reason are
#: counted instead of logged (only when L{guard} is given a clock).
LOG_INTERVAL = 60.0

#: Refusals remembered for rate-limiting before the table is cleared.
_MAX_TRACKED = 4096

#: Longest request path put in a log event.
_MAX_PATH = 200

_FORBIDDEN = b"403 Forbidden: this address may not use this server.\n"
_UNAUTHORIZED = b"401 Unauthorized: valid credentials are required.\n"

log = Logger(observer=bridge_observer)


def _digest(value: bytes) -> bytes:
    """
    A fixed-length stand-in for a secret, so comparing two of them takes
    the same time whatever their lengths.
    """
    return hashlib.sha256(value).digest()


def _same(presented: bytes, expected_digest: bytes) -> bool:
    return hmac.compare_digest(_digest(presented), expected_digest)


def client_ip(request: IRequest) -> IPv4Address | IPv6Address | None:
    """
    The client's IP address (an IPv4-mapped IPv6 address becomes the IPv4
    address), or C{None} when the peer is not an IP endpoint.
    """
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    if not isinstance(host, str):
        return None
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _allowed(
    ip: IPv4Address | IPv6Address | None, allow: Sequence[IPv4Network | IPv6Network]
) -> bool:
    if not allow:
        return True
    if ip is None:
        return False
    candidates: list[IPv4Address | IPv6Address] = [ip]
    if isinstance(ip, IPv4Address):
        # An allow-list written as ::ffff:a.b.c.d/n still matches.
        candidates.append(IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed))
    return any(c.version == net.version and c in net for c in candidates for net in allow)


class _Check:
    """
    The configured checks; L{refusal} says why a request is refused.
    """

    def __init__(
        self,
        username: str | None,
        password: str | None,
        token: str | None,
        allow: Sequence[IPv4Network | IPv6Network],
        realm: str,
        clock: IReactorTime | None,
    ) -> None:
        self.allow = tuple(allow)
        self._user = None if username is None else _digest(username.encode("utf-8"))
        self._password = None if password is None else _digest(password.encode("utf-8"))
        self._token = None if token is None else _digest(token.encode("utf-8"))
        challenges = []
        if self._user is not None:
            challenges.append(f'Basic realm="{realm}", charset="UTF-8"'.encode())
        if self._token is not None:
            challenges.append(f'Bearer realm="{realm}"'.encode())
        self.challenges = challenges
        self._clock = clock
        self._last_logged: dict[tuple[str, str], tuple[float, int]] = {}

    @property
    def needs_credentials(self) -> bool:
        return bool(self.challenges)

    def refusal(self, request: IRequest) -> tuple[int, str] | None:
        """
        C{None} to let C{request} through, or the response code and a reason
        for the log.
        """
        if not _allowed(client_ip(request), self.allow):
            return 403, "address not allowed"
        if not self.needs_credentials:
            return None
        header = request.getHeader(b"authorization")
        if not header:
            return 401, "no credentials"
        scheme, _, value = header.strip().partition(b" ")
        value = value.strip()
        scheme = scheme.lower()
        if scheme == b"basic" and self._user is not None:
            return self._basic(value)
        if scheme == b"bearer" and self._token is not None:
            if not value or b" " in value:
                return 401, "malformed credentials"
            return None if _same(value, self._token) else (401, "wrong credentials")
        return 401, "unsupported authentication scheme"

    def _basic(self, value: bytes) -> tuple[int, str] | None:
        assert self._user is not None and self._password is not None
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return 401, "malformed credentials"
        user, colon, password = decoded.partition(b":")
        if not colon:
            return 401, "malformed credentials"
        # Both comparisons always run, so timing does not tell which failed.
        user_ok = _same(user, self._user)
        password_ok = _same(password, self._password)
        return None if user_ok & password_ok else (401, "wrong credentials")

    def log_refusal(self, request: IRequest, code: int, reason: str) -> None:
        """
        Log one refused request, rate-limited per client and reason when a
        clock was given.
        """
        peer = request.getClientAddress()
        client = str(getattr(peer, "host", None) or type(peer).__name__)
        path = request.path.decode("utf-8", "replace")
        if len(path) > _MAX_PATH:
            path = path[:_MAX_PATH] + "..."
        suppressed = 0
        if self._clock is not None:
            now = self._clock.seconds()
            key = (client, reason)
            last = self._last_logged.get(key)
            if last is not None and now - last[0] < LOG_INTERVAL:
                self._last_logged[key] = (last[0], last[1] + 1)
                return
            if len(self._last_logged) >= _MAX_TRACKED:
                self._last_logged.clear()
            suppressed = last[1] if last is not None else 0
            self._last_logged[key] = (now, 0)
        log.warn(
            "Refused a request from {client} for {path}: {reason} (HTTP {code})"
            + ("; {suppressed} more since the last such warning" if suppressed else ""),
            client=client,
            path=path,
            reason=reason,
            code=code,
            suppressed=suppressed,
        )


@implementer(IResource)
class _Refused:
    """
    The short answer to a refused request.
    """

    isLeaf = True

    def __init__(self, code: int, challenges: Sequence[bytes]) -> None:
        self._code = code
        self._challenges = challenges

    def render(self, request: IRequest) -> bytes:
        body = _FORBIDDEN if self._code == 403 else _UNAUTHORIZED
        request.setResponseCode(self._code)
        if self._code == 401:
            request.responseHeaders.setRawHeaders(b"WWW-Authenticate", list(self._challenges))
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        return b"" if request.method == b"HEAD" else body

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        return self

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError("a refusal has no children")


@implementer(IResource)
class Guarded:
    """
    A resource that checks every request before handing it to the resource
    it wraps.  It is a leaf exactly when the wrapped resource is, so a leaf
    (such as a Klein app) still sees the whole path.
    """

    def __init__(self, wrapped: IResource, check: _Check) -> None:
        self._wrapped = wrapped
        self._check = check
        self.isLeaf = bool(getattr(wrapped, "isLeaf", False))

    def _refused(self, request: IRequest) -> _Refused | None:
        refusal = self._check.refusal(request)
        if refusal is None:
            return None
        code, reason = refusal
        self._check.log_refusal(request, code, reason)
        return _Refused(code, self._check.challenges)

    def render(self, request: IRequest) -> bytes | int:
        refused = self._refused(request)
        if refused is not None:
            return refused.render(request)
        result: bytes | int = self._wrapped.render(request)
        return result

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        refused = self._refused(request)
        if refused is not None:
            return refused
        child: IResource = self._wrapped.getChildWithDefault(name, request)
        return child

    def putChild(self, path: bytes, child: IResource) -> None:
        self._wrapped.putChild(path, child)


def guard(
    resource: IResource,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    allow: Sequence[IPv4Network | IPv6Network] = (),
    realm: str = "tcbridge",
    clock: IReactorTime | None = None,
) -> IResource:
    """
    Protect C{resource} (the site's root) with an IP allow-list and
    optional credentials.

    A request from an address outside C{allow} gets a 403.  Then, if
    credentials are configured, a request without a valid
    C{Authorization: Basic} (C{username} and C{password}) or
    C{Authorization: Bearer} (C{token}) header gets a 401 with a
    C{WWW-Authenticate} challenge; when both are configured either is
    accepted.

    :param username: the HTTP Basic user; give it with C{password}.
    :param password: the HTTP Basic password.
    :param token: the Bearer token.
    :param allow: the networks clients may come from; empty allows every
        address.  IPv4-mapped IPv6 clients are matched as IPv4.
    :param realm: the realm named in the challenge.
    :param clock: when given, refusals are logged at most once per
        L{LOG_INTERVAL} per client and reason (the next event counts the
        ones skipped); without it every refusal is logged.
    :return: C{resource} itself when nothing is configured, else a wrapper.
    :raises ValueError: for an incomplete or unusable configuration; the
        message never contains a secret.
    """
    if (username is None) != (password is None):
        raise ValueError("listener username and password must be set together")
    if username is not None and (not username or ":" in username):
        raise ValueError("listener username must be non-empty and must not contain ':'")
    if password is not None and not password:
        raise ValueError("listener password must not be empty")
    if token is not None and (not token or any(c.isspace() for c in token)):
        raise ValueError("listener token must be non-empty and contain no spaces")
    if not realm or any(c in realm for c in '"\\\r\n'):
        raise ValueError("realm must be non-empty and contain no quotes, backslashes or newlines")
    for network in allow:
        if not isinstance(network, IPv4Network | IPv6Network):
            raise ValueError(f"allow-list entries must be IP networks, not {network!r}")
    if username is None and token is None and not allow:
        return resource
    return Guarded(resource, _Check(username, password, token, allow, realm, clock))
