# -*- test-case-name: tests.integration.test_tc_transport -*-
"""
Reaching a server through an HTTP proxy: the proxy URL read and checked
(L{parse_proxy}), and an endpoint factory (L{ProxyEndpointFactory}) whose
connections are C{CONNECT} tunnels through it, for L{tcbridge.net.agent}.

Proxy passwords never appear in logs, exception text or C{repr}s; use
L{tcbridge.secrets.mask_url} to show a proxy URL.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from attrs import define, field, frozen
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from tcbridge.logs import bridge_observer
from tcbridge.secrets import mask_url

__all__ = ["ProxyEndpointFactory", "ProxyError", "ProxyTimeoutError", "parse_proxy"]

log = Logger(observer=bridge_observer)

#: The longest CONNECT answer head (status line and headers) we read.
_MAX_HEAD = 16 * 1024
#: The longest status line quoted in an error.
_MAX_STATUS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL_SHAPE = "http://[user:password@]host:port"


class ProxyError(ierror.ConnectError):
    """
    The HTTP proxy could not be reached or would not open a tunnel.

    C{str()} is one line naming the proxy (host and port, never the
    credentials), the target and what went wrong, e.g.
    C{proxy proxy.example:3128 refused CONNECT tc.example:443: 407 Proxy
    Authentication Required}.

    :ivar proxy: the proxy as C{host:port}.
    :ivar target: the tunnel's target as C{host:port}.
    :ivar status: the proxy's HTTP status code, if it answered.
    """

    def __init__(self, message: str, *, proxy: str, target: str, status: int | None = None):
        """
        :param message: the whole one-line message.
        :param proxy: the proxy as C{host:port}.
        :param target: the target as C{host:port}.
        :param status: the proxy's HTTP status code, if it answered.
        """
        super().__init__(string=message)
        self.message = message
        self.proxy = proxy
        self.target = target
        self.status = status

    def __str__(self) -> str:
        """
        The message alone (not L{ConnectError}'s generic prefix).
        """
        return self.message

    def __repr__(self) -> str:
        return f"ProxyError({self.message!r})"


class ProxyTimeoutError(ProxyError, ierror.TimeoutError):
    """
    The proxy did not accept the connection, or did not answer C{CONNECT},
    within the connect timeout.  It is also a
    L{twisted.internet.error.TimeoutError}.
    """


# -- URLs -------------------------------------------------------------------


def _hostport(host: str, port: int) -> str:
    """
    C{host:port}, with brackets around an IPv6 address.
    """
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@frozen
class Proxy:
    """
    A parsed C{http://} proxy URL.

    :ivar host: the proxy's host name or address.
    :ivar port: the proxy's port.
    :ivar authorization: the C{Proxy-Authorization} header value, if any.
    """

    host: str
    port: int
    authorization: bytes | None = field(repr=False)

    @property
    def name(self) -> str:
        """
        The proxy as C{host:port}, for messages.
        """
        return _hostport(self.host, self.port)


def parse_proxy(url: str) -> Proxy:
    """
    Parse an C{https_proxy}-style URL, C{http://[user:password@]host[:port]}
    (user and password percent-encoded; the port defaults to 80).

    :raises ValueError: naming the problem and the masked URL.
    """
    shown = mask_url(url)

    def bad(problem: str) -> ValueError:
        return ValueError(f"proxy URL {shown!r}: {problem}; expected {_URL_SHAPE}")

    if "://" not in url:
        raise bad("no scheme")
    scheme = url.split("://", 1)[0].lower()
    if scheme != "http":
        raise bad(f"unsupported scheme {scheme!r} (only http:// proxies are supported)")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port_text = parts.netloc.rpartition("@")[2]
    except ValueError:
        raise bad("not a valid URL") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad(
            "unexpected path, query or fragment (percent-encode special "
            "characters in the user name and password)"
        )
    if not host:
        raise bad("no host")
    # The port, without urllib's messages (which can quote the netloc).
    port = 80
    if port_text.startswith("["):
        port_text = port_text.partition("]")[2]
    if ":" in port_text:
        digits = port_text.rpartition(":")[2]
        if not digits.isdigit() or not 0 < int(digits) < 65536:
            raise bad("the port must be a number from 1 to 65535")
        port = int(digits)
    authorization = None
    if parts.username is not None:
        user = unquote(parts.username)
        password = unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}".encode("ascii")
    return Proxy(host=host, port=port, authorization=authorization)


# -- CONNECT tunnels --------------------------------------------------------


def _sanitize(raw: bytes) -> str:
    """
    A status line from the network, fit to quote in a one-line message.
    """
    text = _CONTROL.sub("?", raw.decode("latin-1")).strip()
    if len(text) > _MAX_STATUS:
        text = text[: _MAX_STATUS - 3] + "..."
    return text


class _TunnelProtocol(Protocol):
    """
    Sends C{CONNECT}, reads the answer, then hands the connection to the
    protocol the caller's factory builds, and relays to it from then on.
    """

    def __init__(self, tunnel: _Tunnel) -> None:
        self._tunnel = tunnel
        self._buffer = b""
        self._inner: IProtocol | None = None
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """
        Send the C{CONNECT} request and start the answer timeout.
        """
        tunnel = self._tunnel
        if tunnel.ready.called:  # cancelled while connecting
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        tunnel.protocol = self
        self.transport.write(tunnel.request())  # type: ignore[union-attr]
        self._timer = tunnel.clock.callLater(tunnel.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        t = self._tunnel
        self._refuse(
            f"did not answer CONNECT {t.target} within {t.timeout:g} seconds", ProxyTimeoutError
        )

    def _stop_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _refuse(
        self, what: str, kind: type[ProxyError] = ProxyError, status: int | None = None
    ) -> None:
        """
        Give up on the tunnel with a L{ProxyError} (or C{kind}) saying the
        proxy C{what}.
        """
        t = self._tunnel
        self._fail(
            kind(f"proxy {t.proxy.name} {what}", proxy=t.proxy.name, target=t.target, status=status)
        )

    def _fail(self, error: Exception) -> None:
        """
        Give up on the tunnel: report C{error} and drop the connection.
        """
        self._stop_timer()
        if not self._tunnel.ready.called:
            self._tunnel.ready.errback(Failure(error))
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def abort(self) -> None:
        """
        Drop the connection (the caller cancelled).
        """
        self._stop_timer()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        """
        Before the tunnel is up, collect the C{CONNECT} answer; afterwards
        pass everything on.
        """
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        if self._tunnel.ready.called:
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        t = self._tunnel
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                self._refuse(f"sent an over-long answer to CONNECT {t.target}")
            return
        head, rest = self._buffer[:end], self._buffer[end + 4 :]
        self._buffer = b""
        status_line = head.split(b"\r\n", 1)[0]
        words = status_line.split(None, 2)
        if len(words) < 2 or not words[0].startswith(b"HTTP/") or not words[1].isdigit():
            self._refuse(
                f"sent an invalid answer to CONNECT {t.target}: {_sanitize(status_line)!r}"
            )
            return
        status = int(words[1])
        if not 200 <= status < 300:
            shown = _sanitize(b" ".join(words[1:]))
            self._refuse(f"refused CONNECT {t.target}: {shown}", status=status)
            return
        self._stop_timer()
        self._start_inner(rest)

    def _start_inner(self, rest: bytes) -> None:
        """
        The tunnel is open: connect the caller's protocol to it.
        """
        t = self._tunnel
        assert self.transport is not None
        inner = t.factory.buildProtocol(self.transport.getPeer())
        if inner is None:
            self._fail(ierror.ConnectError(string="the protocol factory built no protocol"))
            return
        self._inner = inner
        inner.makeConnection(self.transport)
        t.ready.callback(inner)
        if rest and self.transport is not None:
            inner.dataReceived(rest)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Pass the loss on, or report a tunnel that never opened.
        """
        self._stop_timer()
        if self._inner is not None:
            self._inner.connectionLost(reason)
            return
        t = self._tunnel
        if not t.ready.called:
            self._refuse(f"closed the connection before answering CONNECT {t.target}")


@define(eq=False)
class _Tunnel:
    """
    The state of one C{CONNECT} attempt.
    """

    proxy: Proxy
    target: str
    factory: IProtocolFactory
    clock: IReactorTime
    timeout: float
    ready: Deferred[IProtocol]
    protocol: _TunnelProtocol | None = None

    def request(self) -> bytes:
        """
        The C{CONNECT} request head.
        """
        target = self.target.encode("ascii")
        lines = [b"CONNECT " + target + b" HTTP/1.1", b"Host: " + target]
        if self.proxy.authorization is not None:
            lines.append(b"Proxy-Authorization: " + self.proxy.authorization)
        return b"\r\n".join(lines) + b"\r\n\r\n"


class _TunnelFactory(Factory):
    """
    Builds the one L{_TunnelProtocol} of a tunnel; starts and stops the
    caller's factory with it, as an endpoint would.
    """

    noisy = False

    def __init__(self, tunnel: _Tunnel) -> None:
        self._tunnel = tunnel

    def doStart(self) -> None:
        self._tunnel.factory.doStart()

    def doStop(self) -> None:
        self._tunnel.factory.doStop()

    def buildProtocol(self, addr: IAddress | None) -> _TunnelProtocol:
        return _TunnelProtocol(self._tunnel)


@implementer(IStreamClientEndpoint)
class _ConnectTunnelEndpoint:
    """
    Connects to the proxy, asks it for a tunnel to C{host:port} with
    C{CONNECT}, then gives the tunnel to the protocol.  Its C{connect} fires
    when the tunnel is open, with L{ProxyError} when the proxy refuses or
    cannot be reached, and with L{ProxyTimeoutError} after C{timeout} seconds
    without a connection or an answer.
    """

    def __init__(
        self,
        reactor: Any,
        proxy: Proxy,
        host: str,
        port: int,
        timeout: float,
    ) -> None:
        self._reactor = reactor
        self._proxy = proxy
        self._target = _hostport(host, port)
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"<CONNECT {self._target} via proxy {self._proxy.name}>"

    def connect(self, protocol_factory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Open a tunnel and connect C{protocol_factory}'s protocol through it.
        """
        connecting: Deferred[Any] | None = None

        def cancel(d: Deferred[IProtocol]) -> None:
            if tunnel.protocol is not None:
                tunnel.protocol.abort()
            elif connecting is not None:
                connecting.cancel()

        ready: Deferred[IProtocol] = Deferred(cancel)
        tunnel = _Tunnel(
            proxy=self._proxy,
            target=self._target,
            factory=protocol_factory,
            clock=self._reactor,
            timeout=self._timeout,
            ready=ready,
        )
        endpoint = HostnameEndpoint(
            self._reactor, self._proxy.host, self._proxy.port, timeout=self._timeout
        )
        connecting = endpoint.connect(_TunnelFactory(tunnel))
        connecting.addErrback(self._connect_failed, tunnel)
        return ready

    def _connect_failed(self, failure: Failure, tunnel: _Tunnel) -> None:
        """
        Report a failure to reach the proxy, naming it; cancellations pass
        through unchanged.
        """
        if tunnel.ready.called:
            return
        if failure.check(ierror.ConnectingCancelledError):
            tunnel.ready.errback(failure)
            return
        name = self._proxy.name
        error: ProxyError
        if failure.check(ierror.TimeoutError):
            error = ProxyTimeoutError(
                f"proxy {name} did not accept a connection within {self._timeout:g} seconds",
                proxy=name,
                target=self._target,
            )
        else:
            reason = " ".join(str(failure.value).split()) or type(failure.value).__name__
            error = ProxyError(
                f"cannot connect to proxy {name}: {reason}", proxy=name, target=self._target
            )
        tunnel.ready.errback(Failure(error))


@implementer(IAgentEndpointFactory)
class ProxyEndpointFactory:
    """
    Endpoints for an L{Agent} that tunnel every request through the proxy:
    TLS inside the tunnel for C{https}, plain for C{http}.
    """

    def __init__(self, reactor: Any, proxy: Proxy, policy: IPolicyForHTTPS, timeout: float) -> None:
        self._reactor = reactor
        self._proxy = proxy
        self._policy = policy
        self._timeout = timeout

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        A tunnel to C{uri}'s host and port, wrapped in TLS for C{https}.
        """
        try:
            host = uri.host.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"the host of {uri.toBytes()!r} is not ASCII") from None
        tunnel = _ConnectTunnelEndpoint(self._reactor, self._proxy, host, uri.port, self._timeout)
        if uri.scheme == b"http":
            return tunnel
        if uri.scheme == b"https":
            creator = self._policy.creatorForNetloc(uri.host, uri.port)
            return wrapClientTLS(creator, tunnel)
        raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
