# -*- test-case-name: tests.test_simulator -*-
"""
The ThreatConnect API simulator: a Klein app that serves a generated
L{Dataset} through a signed subset of the v1/v2 API.

Every request is authenticated exactly as ThreatConnect does it: the
C{Timestamp} header must be within C{skew_window} seconds of the simulator's
clock, and C{Authorization: TC <access id>:<signature>} must carry the
HMAC-SHA256 of the raw request target as received (never a re-encoded form),
so a client that signs one string and sends another is caught.

Served under a configurable prefix (C{/api} or none)::

    GET /v2/owners
    GET /v2/types/indicatorTypes
    GET /v2/indicators/files | addresses | hosts   (owner=, resultStart=, resultLimit=)
    GET /v2/indicators  and  /v1/indicators[/]      (generic: type + summary)
    GET /v2/indicators/deleted                      (always empty)

The simulator also records every request (L{Simulator.requests}) and can be
told to fail the next requests (L{Simulator.fail_next}).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping
from functools import partial
from hmac import compare_digest
from typing import Any, Final
from urllib.parse import parse_qs

import orjson
from attrs import define, field, frozen
from klein import Klein
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
)
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web import http
from twisted.web.http import datetimeToString
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from tcbridge.logs import bridge_observer
from tcbridge.simulator.data import Dataset, generate
from tcbridge.threatconnect.signing import signature

__all__ = [
    "DemoServer",
    "QuietSite",
    "RecordedRequest",
    "Simulator",
    "new_credentials",
    "simulator_prefix",
    "start_demo",
]

log = Logger(observer=bridge_observer)

#: Runs a page-building function, typically in a thread; see L{Simulator}.
Runner = Callable[[Callable[[], bytes]], "Deferred[bytes]"]

#: v2 per-type branches the simulator serves: branch -> (type name, list key).
BRANCHES: Final = {
    "files": ("File", "file"),
    "addresses": ("Address", "address"),
    "hosts": ("Host", "host"),
}

#: The C{/v2/types/indicatorTypes} answer for the generated types.
_INDICATOR_TYPES: Final = (
    ("Address", "addresses", "address", "ip"),
    ("EmailAddress", "emailAddresses", "emailAddress", "address"),
    ("File", "files", "file", "md5"),
    ("Host", "hosts", "host", "hostName"),
    ("URL", "urls", "url", "text"),
)

MAX_RESULT_LIMIT: Final = 10000
DEFAULT_RESULT_LIMIT: Final = 100

MSG_INVALID_TIMESTAMP: Final = "Invalid timestamp"
MSG_TIME_RANGE: Final = "Timestamp out of acceptable time range"
MSG_ACCESS_DENIED: Final = "Access Denied"
MSG_SIGNATURE: Final = "Signature data did not match expected result"
MSG_NOT_FOUND: Final = "The requested resource was not found"
MSG_PAGING: Final = (
    "The resultStart and resultLimit query parameters must be integers and the "
    "maximum value for resultLimit is 10000"
)

#: Keep at most this many entries in L{Simulator.requests}; older ones are dropped.
MAX_RECORDED: Final = 100_000


@frozen
class RecordedRequest:
    """
    One request as the simulator saw it.

    :ivar method: the HTTP method, e.g. C{"GET"}.
    :ivar target: the raw request target exactly as received (path and
        query, still percent- or form-encoded), decoded as Latin-1.
    :ivar timestamp: the C{Timestamp} header, or C{None}.
    :ivar authorization: the C{Authorization} header, or C{None}.
    :ivar status: the HTTP status the simulator answered with.
    """

    method: str
    target: str
    timestamp: str | None
    authorization: str | None
    status: int


@define
class _Fault:
    """
    A pending injected failure (see L{Simulator.fail_next}).
    """

    status: int
    body: bytes
    content_type: str
    remaining: int


class _FailureError(Exception):
    """
    Answer the current request with a v2 failure envelope.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _header(request: IRequest, name: bytes) -> str | None:
    """
    Return the first value of request header C{name} as text, or C{None}.
    """
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def simulator_prefix(prefix: str) -> str:
    """
    Normalise a path prefix: C{""} or C{"/x"} without a trailing C{/}.
    """
    prefix = prefix.strip("/")
    return f"/{prefix}" if prefix else ""


class Simulator:
    """
    A ThreatConnect API simulator over a generated L{Dataset}.

    :ivar app: the Klein app; L{resource} gives its resource.
    :ivar requests: every request received, oldest first (at most
        L{MAX_RECORDED}).
    :ivar clock_skew: seconds added to the clock's time to give the
        simulator's own idea of "now" (used for the C{Timestamp} check and the
        C{Date} header), to model a host whose clock is wrong.
    """

    app = Klein()

    def __init__(
        self,
        dataset: Dataset,
        clock: IReactorTime,
        credentials: Mapping[str, str],
        prefix: str = "/api",
        auth_error_status: int = 401,
        skew_window: int = 300,
        prefetch: Runner | None = None,
    ) -> None:
        """
        :param dataset: the indicators to serve.
        :param clock: IReactorTime provider, the source of "now".
        :param credentials: API access id -> secret key.
        :param prefix: path prefix everything is served under (C{"/api"} or
            C{""}); a trailing C{/} is ignored.
        :param auth_error_status: HTTP status of authentication failures
            (401, or 403 like ThreatConnect's 2017 documentation).
        :param skew_window: seconds a C{Timestamp} may differ from "now".
        :param prefetch: if given, after serving a full page of a listing the
            simulator asks this runner to build the next page (same owner,
            type and limit) ahead of time, typically in a thread:
            C{partial(deferToThreadPool, reactor, reactor.getThreadPool())}.
            Sequential pagers then find their page ready, so the simulator's
            own work overlaps the client's.  Answers are byte-identical with
            or without it.
        """
        self._dataset = dataset
        self._clock = clock
        self._credentials = dict(credentials)
        self._prefix = simulator_prefix(prefix)
        self._auth_error_status = auth_error_status
        self._skew_window = skew_window
        self._faults: list[_Fault] = []
        self._prefetch = prefetch
        self._prefetched: tuple[tuple[object, ...], Deferred[bytes]] | None = None
        self.requests: list[RecordedRequest] = []
        self.clock_skew: float = 0.0

    @property
    def dataset(self) -> Dataset:
        """
        The data set being served.
        """
        return self._dataset

    def resource(self) -> IResource:
        """
        Return the simulator as a Twisted web resource.
        """
        return self.app.resource()

    def now(self) -> float:
        """
        Return the simulator's idea of the current time (seconds since the
        epoch): the clock's time plus L{clock_skew}.
        """
        return self._clock.seconds() + self.clock_skew

    def fail_next(
        self, status: int, body: bytes, content_type: str = "text/html", times: int = 1
    ) -> None:
        """
        Answer the next C{times} requests that pass authentication with
        C{status}, C{body} and C{Content-Type: content_type} instead of
        serving them.  Calls queue up: the first call's failures come first.
        """
        if times > 0:
            self._faults.append(_Fault(status, body, content_type, times))

    @app.route("/", branch=True)
    def _dispatch(self, request: Request) -> bytes | Deferred[bytes]:
        """
        Authenticate, apply any injected fault, then route the request.
        """
        target = request.uri.decode("latin-1")
        method = request.method.decode("latin-1")
        timestamp = _header(request, b"timestamp")
        authorization = _header(request, b"authorization")
        request.setHeader(b"Date", datetimeToString(int(self.now())))
        body: bytes | Deferred[bytes]
        try:
            self._authenticate(method, target, timestamp, authorization)
            if self._faults:
                fault = self._faults[0]
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[0]
                status, body = fault.status, fault.body
                request.setHeader(b"Content-Type", fault.content_type.encode("latin-1"))
            else:
                status = 200
                body = self._route(method, target)
                request.setHeader(b"Content-Type", b"application/json")
        except _FailureError as failure:
            status = failure.status
            body = orjson.dumps({"status": "Failure", "message": failure.message})
            request.setHeader(b"Content-Type", b"application/json")
        request.setResponseCode(status)
        self.requests.append(RecordedRequest(method, target, timestamp, authorization, status))
        if len(self.requests) > MAX_RECORDED:
            del self.requests[: len(self.requests) - MAX_RECORDED]
        log.debug("{method} {target} -> {status}", method=method, target=target, status=status)
        return body

    def _authenticate(
        self, method: str, target: str, timestamp: str | None, authorization: str | None
    ) -> None:
        """
        Check ThreatConnect's HMAC authentication over the raw C{target}.

        :raises _FailureError: with the message ThreatConnect gives.
        """
        status = self._auth_error_status
        if timestamp is None or not (timestamp.isascii() and timestamp.isdigit()):
            raise _FailureError(status, MSG_INVALID_TIMESTAMP)
        ts = int(timestamp)
        if abs(self.now() - ts) > self._skew_window:
            raise _FailureError(status, MSG_TIME_RANGE)
        if authorization is None or not authorization.startswith("TC "):
            raise _FailureError(status, MSG_ACCESS_DENIED)
        access_id, sep, given = authorization[3:].partition(":")
        secret = self._credentials.get(access_id)
        if not sep or secret is None:
            raise _FailureError(status, MSG_ACCESS_DENIED)
        expected = signature(secret, target, method, ts)
        if not compare_digest(expected.encode("ascii"), given.encode("latin-1")):
            raise _FailureError(status, MSG_SIGNATURE)

    def _route(self, method: str, target: str) -> bytes | Deferred[bytes]:
        """
        Serve an authenticated request for C{target}.

        :raises _FailureError: for unknown paths, bad parameters or owners.
        """
        path, _, query = target.partition("?")
        if self._prefix:
            if not (path == self._prefix or path.startswith(self._prefix + "/")):
                raise _FailureError(404, MSG_NOT_FOUND)
            path = path[len(self._prefix) :]
        if len(path) > 1:
            path = path.rstrip("/")
        if method not in ("GET", "HEAD"):
            raise _FailureError(405, "Method not allowed")
        params = {k.lower(): v for k, v in parse_qs(query, keep_blank_values=True).items()}
        if path == "/v2/owners":
            return self._owners(params)
        if path == "/v2/types/indicatorTypes":
            return _envelope("indicatorType", _indicator_types(), 0, True)
        if path in ("/v2/indicators", "/v1/indicators"):
            return self._generic(params)
        if path == "/v2/indicators/deleted":
            self._owner(params)
            start, _ = _paging(params)
            return _envelope("indicator", [], 0, start == 0)
        if path.startswith("/v2/indicators/"):
            branch = BRANCHES.get(path[len("/v2/indicators/") :])
            if branch is not None:
                return self._typed(params, *branch)
        raise _FailureError(404, MSG_NOT_FOUND)

    def _owner(self, params: dict[str, list[str]]) -> str:
        """
        Return the owner a request names, or the default owner.

        :raises _FailureError: 403 for an owner the API user cannot see.
        """
        names = params.get("owner")
        if not names:
            return self._dataset.default_owner
        if names[0] not in self._dataset.owners:
            raise _FailureError(403, MSG_ACCESS_DENIED)
        return names[0]

    def _owners(self, params: dict[str, list[str]]) -> bytes:
        """
        Serve C{/v2/owners}.
        """
        start, limit = _paging(params)
        ds = self._dataset
        owners = [
            {"id": ds.owner_id(name), "name": name, "type": ds.owner_type(name)}
            for name in ds.owners[start : start + limit]
        ]
        return _envelope("owner", owners, len(ds.owners), start == 0)

    def _typed(self, params: dict[str, list[str]], type: str, key: str) -> bytes | Deferred[bytes]:
        """
        Serve one page of a per-type listing.
        """
        owner = self._owner(params)
        start, limit = _paging(params)
        tags = _wants_tags(params)
        ds = self._dataset
        count = ds.count(owner, type)

        def build(at: int) -> bytes:
            return _raw_envelope(key, ds.typed_json(owner, type, at, limit, tags), count, at == 0)

        return self._page(("typed", owner, type, limit, tags), start, limit, count, build)

    def _generic(self, params: dict[str, list[str]]) -> bytes | Deferred[bytes]:
        """
        Serve one page of the generic (type and summary) listing.
        """
        owner = self._owner(params)
        start, limit = _paging(params)
        ds = self._dataset
        total = ds.total(owner)

        def build(at: int) -> bytes:
            return _raw_envelope("indicator", ds.generic_json(owner, at, limit), total, at == 0)

        return self._page(("generic", owner, limit), start, limit, total, build)

    def _page(
        self,
        listing: tuple[object, ...],
        start: int,
        limit: int,
        total: int,
        build: Callable[[int], bytes],
    ) -> bytes | Deferred[bytes]:
        """
        Return page C{build(start)} of C{listing}, from the prefetched page if
        it is that one, and prefetch the next page if a runner is set.
        """
        key = (*listing, start)
        pending, self._prefetched = self._prefetched, None
        body: bytes | Deferred[bytes]
        if pending is not None and pending[0] == key:
            body = pending[1]
            body.addErrback(lambda _: build(start))
        else:
            if pending is not None:
                pending[1].addErrback(lambda _: None)
            body = build(start)
        after = start + limit
        if self._prefetch is not None and limit > 0 and after < total:
            self._prefetched = ((*listing, after), self._prefetch(lambda: build(after)))
        return body


def _paging(params: dict[str, list[str]]) -> tuple[int, int]:
    """
    Return C{(resultStart, resultLimit)} from the query.

    :raises _FailureError: 400 for non-integers, negative values or a limit over
        L{MAX_RESULT_LIMIT}.
    """
    try:
        start = int(params["resultstart"][0]) if "resultstart" in params else 0
        limit = int(params["resultlimit"][0]) if "resultlimit" in params else DEFAULT_RESULT_LIMIT
    except ValueError:
        raise _FailureError(400, MSG_PAGING) from None
    if start < 0 or limit < 0 or limit > MAX_RESULT_LIMIT:
        raise _FailureError(400, MSG_PAGING)
    return start, limit


def _wants_tags(params: dict[str, list[str]]) -> bool:
    """
    Say whether the query asks for tags (C{includes=tags} or C{includeTags=true}).
    """
    return "tags" in params.get("includes", ()) or "true" in params.get("includetags", ())


def _indicator_types() -> list[dict[str, Any]]:
    """
    Return the C{indicatorType} list for the generated types.
    """
    return [
        {
            "name": name,
            "custom": "false",
            "parsable": "true",
            "apiBranch": branch,
            "apiEntity": entity,
            "value1Label": label,
        }
        for name, branch, entity, label in _INDICATOR_TYPES
    ]


def _envelope(key: str, items: list[dict[str, Any]], count: int, with_count: bool) -> bytes:
    """
    Serialise a v2 success envelope; C{resultCount} only when C{with_count}.
    """
    data: dict[str, Any] = {"resultCount": count, key: items} if with_count else {key: items}
    return orjson.dumps({"status": "Success", "data": data})


def _raw_envelope(key: str, items: bytes, count: int, with_count: bool) -> bytes:
    """
    Like L{_envelope}, for C{items} already serialised as a JSON array.
    """
    head = f'"resultCount":{count},' if with_count else ""
    return b"".join([f'{{"status":"Success","data":{{{head}"{key}":'.encode(), items, b"}}"])


class QuietSite(Site):
    """
    A L{Site} that writes no access log: the simulator logs requests at debug
    level only.
    """

    def log(self, request: http.Request) -> None:
        """
        Do not log C{request}.
        """


@frozen
class DemoServer:
    """
    A simulator listening on a loopback port, with generated credentials.

    :ivar base_url: e.g. C{"http://127.0.0.1:41234/api"}.
    :ivar api_key: the generated API access id.
    :ivar secret_key: the generated secret key.
    :ivar owners: the owners the data set has.
    :ivar simulator: the running simulator.
    :ivar port: the listening port; C{port.stopListening()} stops it.
    """

    base_url: str
    api_key: str
    secret_key: str = field(repr=False)
    owners: tuple[str, ...]
    simulator: Simulator
    port: IListeningPort

    def stop(self) -> Deferred[None]:
        """
        Stop listening; the Deferred fires when the port is closed.
        """
        result = self.port.stopListening()
        return result if result is not None else succeed(None)


def new_credentials() -> tuple[str, str]:
    """
    Return a random C{(access id, secret key)} pair shaped like
    ThreatConnect's: a 20-digit access id and a 64-character secret.
    """
    access_id = "".join(secrets.choice(string.digits) for _ in range(20))
    alphabet = string.ascii_letters + string.digits
    secret_key = "".join(secrets.choice(alphabet) for _ in range(64))
    return access_id, secret_key


async def start_demo(
    reactor: IReactorTCP,
    count: int = 2000,
    port: int = 0,
    seed: int = 1,
    prefix: str = "/api",
    interface: str = "127.0.0.1",
    prefetch: bool = False,
) -> DemoServer:
    """
    Start a simulator with C{count} generated indicators and fresh random
    credentials, listening on C{interface} (loopback by default).

    :param reactor: the reactor (IReactorTCP and IReactorTime provider).
    :param count: File, Address and Host indicators over the default owners.
    :param port: TCP port, 0 for any free port.
    :param seed: data set seed.
    :param prefix: API path prefix.
    :param interface: address to listen on.
    :param prefetch: build the next page of a listing in the reactor's
        thread pool ahead of the request (see L{Simulator}); worth it when
        the simulator has a process of its own, not when it shares one with
        the client.
    """
    access_id, secret_key = new_credentials()
    dataset = generate(count, seed=seed)
    clock: IReactorTime = reactor  # type: ignore[assignment]
    runner: Runner | None = None
    if prefetch:
        threaded: IReactorThreads = reactor  # type: ignore[assignment]
        runner = partial(deferToThreadPool, threaded, threaded.getThreadPool())
    simulator = Simulator(dataset, clock, {access_id: secret_key}, prefix=prefix, prefetch=runner)
    endpoint = endpoints.TCP4ServerEndpoint(reactor, port, interface=interface)
    listening = await endpoint.listen(QuietSite(simulator.resource()))
    actual = listening.getHost().port
    return DemoServer(
        base_url=f"http://{interface}:{actual}{simulator_prefix(prefix)}",
        api_key=access_id,
        secret_key=secret_key,
        owners=dataset.owners,
        simulator=simulator,
        port=listening,
    )
