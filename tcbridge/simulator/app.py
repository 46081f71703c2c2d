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
    GET /v2/indicators/deleted                      (owner=, type=; paged)
    GET /v3/indicators   (tql=, fields=, resultStart=, resultLimit=, owner=,
                          sorting=, count=true)
    GET /v3/security/owners   (resultStart=, resultLimit=, count=true)
    GET /v3/indicators/deleted    (owner=, type=, deletedSince=; paged)
    POST /_simulator/churn        (a test harness's: {"fraction": F, "seed": S})

v2 listings take C{modifiedSince=} (ISO 8601): only items whose
C{lastModified} is at or after it.  Data changes over time through
L{Simulator.change} and L{Simulator.churn} (L{tcbridge.simulator.changes}).

Inactive indicators (about 2%, see L{tcbridge.simulator.data}) are hidden by
default: from v2 unless C{filters=} names C{active=false} (C{filters=active%3D
false} gives only inactive ones; C{filters=active%3Dtrue,active%3Dfalse&
orParams=true} gives both; other filter terms are ignored), and from v3
unless the TQL says C{indicatorActive EQ false} (or, for both,
C{(indicatorActive EQ true OR indicatorActive EQ false)}).

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

import random
from collections.abc import Mapping
from hmac import compare_digest
from typing import Any, Final
from urllib.parse import parse_qs

import orjson
from attrs import evolve, frozen
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    ITCPTransport,
)
from twisted.logger import Logger
from twisted.web.http import datetimeToString
from twisted.web.resource import IResource
from twisted.web.server import Request

from tcbridge.logs import bridge_observer
from tcbridge.simulator.changes import Changed, apply_change, churn_plan
from tcbridge.simulator.data import Dataset
from tcbridge.simulator.faults import STATUS_KINDS, Fault, make_fault
from tcbridge.simulator.listings import Listings, Runner
from tcbridge.simulator.params import (
    MSG_ACCESS_DENIED,
    MSG_INVALID_TIMESTAMP,
    MSG_NOT_FOUND,
    MSG_SIGNATURE,
    MSG_TIME_RANGE,
    FailureError,
    envelope,
    error_body,
    header,
    indicator_types,
)
from tcbridge.simulator.tables import TYPED_TYPES
from tcbridge.threatconnect.signing import signature

__all__ = ["RecordedRequest", "Simulator", "simulator_prefix"]

log = Logger(observer=bridge_observer)


#: v2 per-type branches the simulator serves: branch -> (type name, list key).
BRANCHES: Final = {
    "files": ("File", "file"),
    "addresses": ("Address", "address"),
    "hosts": ("Host", "host"),
}

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


def _transport(request: Request) -> ITCPTransport:
    """
    Return the connection C{request} came in on.
    """
    transport: ITCPTransport = request.channel.transport  # type: ignore[assignment]
    return transport


def simulator_prefix(prefix: str) -> str:
    """
    Normalise a path prefix: C{""} or C{"/x"} without a trailing C{/}.
    """
    prefix = prefix.strip("/")
    return f"/{prefix}" if prefix else ""


class Simulator(Listings):
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
        super().__init__(dataset, simulator_prefix(prefix), prefetch)
        self._clock = clock
        self._credentials = dict(credentials)
        self._auth_error_status = auth_error_status
        self._skew_window = skew_window
        self._faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.clock_skew: float = 0.0
        #: Seconds every served answer waits on the clock before it is
        #: sent, as a remote ThreatConnect's round trip does (the answers
        #: to requests sent together wait side by side).
        self.latency: float = 0.0

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
        timestamp = header(request, b"timestamp")
        authorization = header(request, b"authorization")
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
        except FailureError as failure:
            status = failure.status
            body = error_body(v3, failure.message)
            request.setHeader(b"Content-Type", b"application/json")
        request.setResponseCode(status)
        self._record(method, target, timestamp, authorization, status, fault)
        if fault is None:
            return self._delayed(body, self.latency) if self.latency > 0 else body
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

        :raises FailureError: with the message ThreatConnect gives.
        """
        status = self._auth_error_status
        if timestamp is None or not (timestamp.isascii() and timestamp.isdigit()):
            raise FailureError(status, MSG_INVALID_TIMESTAMP)
        ts = int(timestamp)
        if abs(self.now() - ts) > self._skew_window:
            raise FailureError(status, MSG_TIME_RANGE)
        if authorization is None or not authorization.startswith("TC "):
            raise FailureError(status, MSG_ACCESS_DENIED)
        access_id, sep, given = authorization[3:].partition(":")
        secret = self._credentials.get(access_id)
        if not sep or secret is None:
            raise FailureError(status, MSG_ACCESS_DENIED)
        expected = signature(secret, target, method, ts)
        if not compare_digest(expected.encode("ascii"), given.encode("latin-1")):
            raise FailureError(status, MSG_SIGNATURE)

    def _strip_prefix(self, path: str) -> str:
        """
        Return C{path} without the prefix, or C{""} when outside it.
        """
        if not self._prefix:
            return path
        if not (path == self._prefix or path.startswith(self._prefix + "/")):
            return ""
        return path[len(self._prefix) :]

    def change(
        self, owner: str, type: str, index: int, *, touch: bool = True, **state: Any
    ) -> Changed:
        """
        Change generated item C{index} of C{owner}'s C{type} listing now:
        C{rating}, C{confidence}, C{tag_names}, C{active} as given, or
        C{deleted=True} to delete it.  C{lastModified} moves to now unless
        C{touch} is false (ThreatConnect does not move it on every change,
        tags for one).  Returns the item's new state.

        :raises KeyError: for an unknown owner or type.
        :raises IndexError: for an index beyond the listing.
        """
        now = int(self.now())
        current = self._dataset.changes.of(owner, type).get(index)
        if current is None:
            current = Changed.of(self._dataset.item_slot(owner, type, index))
        deleted = bool(state.pop("deleted", False))
        new = evolve(current, **state)
        if touch:
            new = evolve(new, modified=now)
        if deleted:
            new = evolve(new, deleted_at=now)
        self._dataset.changes.record(owner, type, index, new)
        return new

    def churn(self, fraction: float, seed: int = 1) -> list[tuple[str, str, int, str]]:
        """
        Change C{fraction} of the per-type items at random, now (see
        L{tcbridge.simulator.changes.churn_plan}: rating, confidence and tag
        changes, deactivations, deletions); the same seed gives the same
        changes.  Returns them as C{(owner, type, index, what)}.
        """
        ds = self._dataset
        counts = [(o, t, ds.count(o, t)) for o in ds.owners for t in TYPED_TYPES]
        plan = churn_plan(counts, fraction, seed)
        rng = random.Random(seed)
        now = int(self.now())
        for owner, type, index, what in plan:
            current = ds.changes.of(owner, type).get(index)
            if current is None:
                current = Changed.of(ds.item_slot(owner, type, index))
            ds.changes.record(owner, type, index, apply_change(current, what, now, rng))
        return plan

    def _churn_request(self, request: Request) -> bytes:
        """
        C{POST /_simulator/churn} with C{{"fraction": F, "seed": S}}: L{churn}
        (for benchmarks that change the data between syncs from another
        process; signed like every request).
        """
        try:
            doc = orjson.loads(request.content.read() if request.content else b"")
            fraction = float(doc["fraction"])
            seed = int(doc.get("seed", 1))
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(fraction)
        except (ValueError, KeyError, TypeError, OverflowError, orjson.JSONDecodeError):
            raise FailureError(
                400, 'expected {"fraction": 0.005, "seed": 1}, a fraction from 0 to 1'
            ) from None
        plan = self.churn(fraction, seed)
        return orjson.dumps({"changed": len(plan), "status": "Success"})

    def _route(self, method: str, target: str, request: Request) -> bytes | Deferred[bytes]:
        """
        Serve an authenticated request for C{target}.

        :raises FailureError: for unknown paths, bad parameters or owners.
        """
        path, _, query = target.partition("?")
        path = self._strip_prefix(path)
        if not path:
            raise FailureError(404, MSG_NOT_FOUND)
        if len(path) > 1:
            path = path.rstrip("/")
        if path == "/_simulator/churn" and method == "POST":
            return self._churn_request(request)
        if method not in ("GET", "HEAD"):
            raise FailureError(405, "Method not allowed")
        params = {k.lower(): v for k, v in parse_qs(query, keep_blank_values=True).items()}
        if path == "/v3/indicators":
            return self._v3_indicators(params, request, query)
        if path == "/v3/security/owners":
            return self._v3_owners(params, request, query)
        if path == "/v3/indicators/deleted":
            return self._v3_deleted(params)
        if path == "/v2/owners":
            return self._owners(params)
        if path == "/v2/types/indicatorTypes":
            return envelope("indicatorType", indicator_types(), 0, True)
        if path in ("/v2/indicators", "/v1/indicators"):
            return self._generic(params)
        if path == "/v2/indicators/deleted":
            return self._v2_deleted(params)
        if path.startswith("/v2/indicators/"):
            branch = BRANCHES.get(path[len("/v2/indicators/") :])
            if branch is not None:
                return self._typed(params, *branch)
        raise FailureError(404, MSG_NOT_FOUND)
