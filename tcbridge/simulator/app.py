# -*- test-case-name: tests.unit.test_simulator -*-
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
    GET /v3/indicators   (tql=, fields=, resultStart=, resultLimit=, owner=,
                          sorting=, count=true)
    GET /v3/security/owners   (resultStart=, resultLimit=, count=true)
    GET /v3/indicators/deleted                      (always empty)

Inactive indicators (about 2%, see L{tcbridge.simulator.data}) are hidden by
default: from v2 unless C{filters=} names C{active=false} (C{filters=active%3D
false} gives only inactive ones; C{filters=active%3Dtrue,active%3Dfalse&
orParams=true} gives both; other filter terms are ignored), and from v3
unless the TQL says C{indicatorActive EQ false}.

v3 owner scope: C{owner=} names one owner; without it, a TQL with
C{ownerName} conditions selects among all owners, and a TQL without them
selects the default owner.  Items come in a fixed order whatever C{sorting=}
says (it is accepted and carried in the links): owner by owner in the data
set's order, types in the order File, Address, Host, URL, EmailAddress,
generated order within a type.  Pages carry an absolute C{next} (when more
items remain) and C{prev} (when C{resultStart>0}) built from the request's
scheme, C{Host} header and the prefix, keeping every original query
parameter byte for byte, with C{resultStart} moved on.  v3 errors (bad TQL:
400; an unknown C{owner=}: 403; authentication) use the v3 envelope
C{{"status":"Error","errCode":"0x1001","message":...}}.

The simulator also records every request (L{Simulator.requests}) and can be
told to fail the next requests (L{Simulator.fail_next},
L{Simulator.fault_next}; see L{tcbridge.simulator.faults}).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping
from functools import partial
from hmac import compare_digest
from typing import Any, Final
from urllib.parse import parse_qs, unquote_plus

import orjson
from attrs import field, frozen
from klein import Klein
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web import http
from twisted.web.http import datetimeToString
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from tcbridge.logs import bridge_observer
from tcbridge.simulator import tql
from tcbridge.simulator.data import TYPES, Dataset, Front, Run, Slot, generate, page_runs
from tcbridge.simulator.faults import STATUS_KINDS, Fault, make_fault
from tcbridge.threatconnect.signing import signature

__all__ = [
    "DemoServer",
    "QuietSite",
    "RecordedRequest",
    "Simulator",
    "new_credentials",
    "simulator_prefix",
    "start_simulator",
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
    :ivar status: the HTTP status the simulator answered with (0 when the
        connection was reset without a response).
    :ivar fault: the injected fault kind applied to the request, if any
        (C{"status"} for L{Simulator.fail_next}).
    """

    method: str
    target: str
    timestamp: str | None
    authorization: str | None
    status: int
    fault: str | None = None


class _FailureError(Exception):
    """
    Answer the current request with an error envelope (v2, or v3 for
    C{/v3/} paths).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_body(v3: bool, message: str) -> bytes:
    """
    Return the v2 or v3 error envelope for C{message}.
    """
    if v3:
        return orjson.dumps({"status": "Error", "errCode": "0x1001", "message": message})
    return orjson.dumps({"status": "Failure", "message": message})


def _active_only(slot: Slot) -> bool:
    """
    Say whether the items of C{slot} are active.
    """
    return slot.active


def _inactive_only(slot: Slot) -> bool:
    """
    Say whether the items of C{slot} are inactive.
    """
    return not slot.active


def _any_slot(slot: Slot) -> bool:
    """
    Accept every slot.
    """
    return True


_V2_VIEWS: Final[dict[frozenset[bool], Callable[[Slot], bool]]] = {
    frozenset((True,)): _active_only,
    frozenset((False,)): _inactive_only,
    frozenset((True, False)): _any_slot,
    frozenset(): lambda slot: False,
}


def _transport(request: Request) -> ITCPTransport:
    """
    Return the connection C{request} came in on.
    """
    transport: ITCPTransport = request.channel.transport  # type: ignore[assignment]
    return transport


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
        self._faults: list[Fault] = []
        self._fronts: dict[tuple[str, str], Front] = {}
        self._served: tuple[str, str] | None = None
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
            options = {"status": status, "body": body, "content_type": content_type}
            self._faults.append(make_fault("status", times, options))

    def fault_next(self, kind: str, times: int = 1, **options: Any) -> None:
        """
        Apply fault C{kind} to the next C{times} authenticated requests (that
        contain C{options["match"]} in their raw target, if given).  Faults
        queue up with those of L{fail_next}; a request takes the first
        pending fault that matches it.

        Kinds and options (see L{tcbridge.simulator.faults}): C{"500"},
        C{"502"}, C{"503"}, C{"504"} (C{body}, C{content_type},
        C{retry_after}); C{"429"} (C{retry_after}, default 1); C{"html"}
        (C{body}); C{"slow"} (C{delay} seconds on the clock, default 60);
        C{"truncated"} (C{keep} bytes, default half); C{"reset"};
        C{"changing"} (C{shift}, default 1; C{owner}, C{type}).

        :raises ValueError: for an unknown kind or a bad option value.
        :raises TypeError: for an option the kind does not take.
        """
        fault = make_fault(kind, times, options)
        if times > 0:
            self._faults.append(fault)

    def shift(self, owner: str, type: str, shift: int) -> None:
        """
        Make C{shift} new items appear at the front of C{owner}'s C{type}
        listing (positive), or the first C{-shift} items of its active
        listing disappear (negative), in every listing that includes them
        (v2 per-type and generic, v3).  This is what the C{"changing"} fault
        does after serving a request.

        New items are active, have fresh ids and values, and come newest
        first.  Deletions take the newest inserted items first, then the
        generated ones in order (inactive ones before a deleted active one go
        too).

        :raises KeyError: for an unknown owner or type.
        """
        front = self._fronts.get((owner, type), Front())
        self._fronts[(owner, type)] = self._dataset.shift_front(owner, type, front, shift)

    def front(self, owner: str, type: str) -> Front:
        """
        Return how the front of C{owner}'s C{type} listing has changed.
        """
        return self._fronts.get((owner, type), Front())

    def visible_count(self, owner: str, type: str, active: bool = True) -> int:
        """
        Return how many active (or inactive) C{type} items of C{owner} the
        listings serve now: L{Dataset.active_count} plus inserted, minus
        deleted items.

        :raises KeyError: for an unknown owner or type.
        """
        test = _active_only if active else _inactive_only
        return len(self._run(owner, type, ("v2", frozenset((active,))), test))

    def _run(
        self,
        owner: str,
        type: str,
        key: object,
        test: Callable[[Slot], bool],
        item_test: Callable[[str], bool] | None = None,
        item_key: object = None,
    ) -> Run:
        """
        Select C{owner}'s C{type} items with the current front.
        """
        front = self._fronts.get((owner, type))
        return self._dataset.run(owner, type, key, test, item_test, front, item_key)

    def _take_fault(self, target: str) -> Fault | None:
        """
        Use up one application of the first pending fault matching C{target}.
        """
        for i, fault in enumerate(self._faults):
            if fault.matches(target):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[i]
                return fault
        return None

    @app.route("/", branch=True)
    def _dispatch(self, request: Request) -> bytes | Deferred[bytes]:
        """
        Authenticate, apply any injected fault, then route the request.
        """
        target = request.uri.decode("latin-1")
        method = request.method.decode("latin-1")
        timestamp = _header(request, b"timestamp")
        authorization = _header(request, b"authorization")
        v3 = self._strip_prefix(target.partition("?")[0]).startswith("/v3/")
        request.setHeader(b"Date", datetimeToString(int(self.now())))
        body: bytes | Deferred[bytes]
        fault: Fault | None = None
        self._served = None
        try:
            self._authenticate(method, target, timestamp, authorization)
            fault = self._take_fault(target)
            if fault is not None and fault.kind in STATUS_KINDS:
                status, body, content_type, extra = fault.response()
                request.setHeader(b"Content-Type", content_type.encode("latin-1"))
                for name, value in extra.items():
                    request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
            elif fault is not None and fault.kind == "reset":
                self._record(method, target, timestamp, authorization, 0, fault)
                _transport(request).abortConnection()
                return Deferred()
            else:
                status = 200
                body = self._route(method, target, request)
                request.setHeader(b"Content-Type", b"application/json")
        except _FailureError as failure:
            status = failure.status
            body = _error_body(v3, failure.message)
            request.setHeader(b"Content-Type", b"application/json")
        request.setResponseCode(status)
        self._record(method, target, timestamp, authorization, status, fault)
        if fault is None:
            return body
        if fault.kind == "changing":
            owner = fault.options.get("owner")
            type = fault.options.get("type")
            served = self._served
            if owner is None and type is None and served is not None:
                owner, type = served
            elif served is not None:
                owner, type = owner or served[0], type or served[1]
            if owner is not None and type is not None:
                self.shift(owner, type, fault.options["shift"])
        elif fault.kind == "slow":
            return self._delayed(body, fault.options["delay"])
        elif fault.kind == "truncated":
            keep = fault.options.get("keep")
            if isinstance(body, Deferred):
                return body.addCallback(lambda b: self._truncate(request, b, keep))
            return self._truncate(request, body, keep)
        return body

    def _record(
        self,
        method: str,
        target: str,
        timestamp: str | None,
        authorization: str | None,
        status: int,
        fault: Fault | None,
    ) -> None:
        """
        Append a request to L{requests} and log it.
        """
        kind = None if fault is None else fault.kind
        self.requests.append(
            RecordedRequest(method, target, timestamp, authorization, status, kind)
        )
        if len(self.requests) > MAX_RECORDED:
            del self.requests[: len(self.requests) - MAX_RECORDED]
        log.debug(
            "{method} {target} -> {status} (fault: {fault})",
            method=method,
            target=target,
            status=status,
            fault=kind,
        )

    def _delayed(self, body: bytes | Deferred[bytes], delay: float) -> Deferred[bytes]:
        """
        Return C{body} after C{delay} seconds on the clock; the delay is
        cancelled if the client goes away.
        """
        calls: list[IDelayedCall] = []

        def cancel(_: Deferred[bytes]) -> None:
            if calls and calls[0].active():
                calls[0].cancel()

        d: Deferred[bytes] = Deferred(cancel)
        calls.append(self._clock.callLater(delay, d.callback, b""))
        return d.addCallback(lambda _: body)

    def _truncate(self, request: Request, body: bytes, keep: int | None) -> Deferred[bytes]:
        """
        Declare the whole of C{body} in C{Content-Length}, send only C{keep}
        bytes of it (half by default), then close the connection.
        """
        if keep is None:
            keep = len(body) // 2
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body[: min(keep, max(len(body) - 1, 0))])
        _transport(request).loseConnection()
        # Never fires: Klein cancels it when the connection is gone.
        return Deferred()

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

    def _strip_prefix(self, path: str) -> str:
        """
        Return C{path} without the prefix, or C{""} when outside it.
        """
        if not self._prefix:
            return path
        if not (path == self._prefix or path.startswith(self._prefix + "/")):
            return ""
        return path[len(self._prefix) :]

    def _route(self, method: str, target: str, request: Request) -> bytes | Deferred[bytes]:
        """
        Serve an authenticated request for C{target}.

        :raises _FailureError: for unknown paths, bad parameters or owners.
        """
        path, _, query = target.partition("?")
        path = self._strip_prefix(path)
        if not path:
            raise _FailureError(404, MSG_NOT_FOUND)
        if len(path) > 1:
            path = path.rstrip("/")
        if method not in ("GET", "HEAD"):
            raise _FailureError(405, "Method not allowed")
        params = {k.lower(): v for k, v in parse_qs(query, keep_blank_values=True).items()}
        if path == "/v3/indicators":
            return self._v3_indicators(params, request, query)
        if path == "/v3/security/owners":
            return self._v3_owners(params, request, query)
        if path == "/v3/indicators/deleted":
            start, _ = _paging(params)
            count = b',"count":0' if start == 0 and _wants_count(params) else b""
            return b'{"data":[]' + count + b',"status":"Success"}'
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
        active = _v2_active(params)
        run = self._run(owner, type, ("v2", active), _V2_VIEWS[active])
        count = len(run)
        self._served = (owner, type)

        def build(at: int) -> bytes:
            return _raw_envelope(key, b"[" + run.typed(at, at + limit, tags) + b"]", count, at == 0)

        listing = ("typed", owner, type, limit, tags, active, self.front(owner, type))
        return self._page(listing, start, limit, count, build)

    def _generic(self, params: dict[str, list[str]]) -> bytes | Deferred[bytes]:
        """
        Serve one page of the generic (type and summary) listing.
        """
        owner = self._owner(params)
        start, limit = _paging(params)
        active = _v2_active(params)
        runs = [self._run(owner, t, ("v2", active), _V2_VIEWS[active]) for t in TYPES]
        total = sum(len(run) for run in runs)
        self._served = (owner, TYPES[0])

        def build(at: int) -> bytes:
            parts = [run.generic(lo, hi) for run, lo, hi in page_runs(runs, at, at + limit)]
            return _raw_envelope("indicator", b"[" + b",".join(parts) + b"]", total, at == 0)

        fronts = tuple(self.front(owner, t) for t in TYPES)
        return self._page(("generic", owner, limit, active, fronts), start, limit, total, build)

    def _v3_indicators(self, params: dict[str, list[str]], request: Request, query: str) -> bytes:
        """
        Serve one page of C{/v3/indicators}.
        """
        start, limit = _paging(params)
        try:
            conditions = tql.parse(_tql_text(params))
        except tql.TqlError as e:
            raise _FailureError(400, str(e)) from None
        plan = tql.plan(conditions)
        ds = self._dataset
        if "owner" in params:
            scope = [self._owner(params)]
        elif plan.owner_conditions:
            scope = list(ds.owners)
        else:
            scope = [ds.default_owner]
        item_test = plan.item_test()
        runs = [
            self._run(owner, type, plan.slot_key, plan.slot_test, item_test, plan.item_key)
            for owner in plan.owners(scope)
            for type in plan.types
        ]
        if runs:
            self._served = (runs[0].owner, runs[0].type)
        elif scope and plan.types:
            self._served = (scope[0], plan.types[0])
        fields = {f.strip().lower() for value in params.get("fields", ()) for f in value.split(",")}
        tags, assess = "tags" in fields, "threatassess" in fields
        total = sum(len(run) for run in runs)
        page = page_runs(runs, start, start + limit)
        items = b",".join(run.v3(lo, hi, tags, assess) for run, lo, hi in page)
        path = "/v3/indicators"
        return self._v3_page(items, total, start, limit, params, request, path, query)

    def _v3_owners(self, params: dict[str, list[str]], request: Request, query: str) -> bytes:
        """
        Serve C{/v3/security/owners}.
        """
        start, limit = _paging(params)
        ds = self._dataset
        owners = [
            {
                "id": ds.owner_id(name),
                "name": name,
                "type": ds.owner_type(name),
                "ownerRole": "Director",
                "permIndicator": "FULL",
            }
            for name in ds.owners[start : start + limit]
        ]
        items = orjson.dumps(owners)[1:-1]
        total = len(ds.owners)
        path = "/v3/security/owners"
        return self._v3_page(items, total, start, limit, params, request, path, query)

    def _v3_page(
        self,
        items: bytes,
        total: int,
        start: int,
        limit: int,
        params: dict[str, list[str]],
        request: Request,
        path: str,
        query: str,
    ) -> bytes:
        """
        Wrap serialised C{items} in the v3 envelope, with C{count} (asked
        for, at start 0), C{next} and C{prev}.
        """
        out = [b'{"data":[', items, b"]"]
        if start == 0 and _wants_count(params):
            out.append(b',"count":%d' % total)
        if limit > 0 and start + limit < total:
            out.append(b',"next":' + orjson.dumps(self._link(request, path, query, start + limit)))
        if start > 0:
            back = max(start - limit, 0)
            out.append(b',"prev":' + orjson.dumps(self._link(request, path, query, back)))
        out.append(b',"status":"Success"}')
        return b"".join(out)

    def _link(self, request: Request, path: str, query: str, start: int) -> str:
        """
        Return the absolute URL of C{path} with the raw C{query}, whose
        C{resultStart} is set to C{start}; scheme and host come from the
        request.
        """
        scheme = "https" if request.isSecure() else "http"
        host = _header(request, b"host")
        if not host:
            address = request.getHost()
            host = f"{getattr(address, 'host', '127.0.0.1')}:{getattr(address, 'port', 80)}"
        pieces = []
        placed = False
        for piece in query.split("&") if query else []:
            if unquote_plus(piece.partition("=")[0]).lower() == "resultstart":
                if not placed:
                    pieces.append(f"resultStart={start}")
                    placed = True
                continue
            pieces.append(piece)
        if not placed:
            pieces.append(f"resultStart={start}")
        return f"{scheme}://{host}{self._prefix}{path}?{'&'.join(pieces)}"

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


def _tql_text(params: dict[str, list[str]]) -> str:
    """
    Return the query's TQL; several C{tql=} parameters are AND-ed.
    """
    return " AND ".join(t for t in params.get("tql", ()) if t.strip())


def _wants_count(params: dict[str, list[str]]) -> bool:
    """
    Say whether the query asks for C{count=true}.
    """
    return any(v.lower() == "true" for v in params.get("count", ()))


def _v2_active(params: dict[str, list[str]]) -> frozenset[bool]:
    """
    Return the C{active} values a v2 query selects: only C{True} unless
    C{filters=} has C{active=...} terms (AND-ed, or OR-ed with
    C{orParams=true}).
    """
    wanted = []
    for value in params.get("filters", ()):
        for term in value.split(","):
            name, sep, rest = term.strip().partition("=")
            if sep and name.strip().lower() == "active":
                wanted.append(rest.strip().lower() == "true")
    if not wanted:
        return frozenset((True,))
    values = frozenset(wanted)
    if any(v.lower() == "true" for v in params.get("orparams", ())) or len(values) == 1:
        return values
    return frozenset()


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


def start_simulator(
    reactor: Any,
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

    :param reactor: the reactor (IReactorTCP, IReactorTime and, with
        C{prefetch}, IReactorThreads).
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
    runner: Runner | None = None
    if prefetch:
        runner = partial(deferToThreadPool, reactor, reactor.getThreadPool())
    simulator = Simulator(dataset, reactor, {access_id: secret_key}, prefix=prefix, prefetch=runner)
    listening = reactor.listenTCP(port, QuietSite(simulator.resource()), interface=interface)
    actual = listening.getHost().port
    return DemoServer(
        base_url=f"http://{interface}:{actual}{simulator_prefix(prefix)}",
        api_key=access_id,
        secret_key=secret_key,
        owners=dataset.owners,
        simulator=simulator,
        port=listening,
    )
