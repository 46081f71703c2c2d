# -*- test-case-name: tests.unit.test_web -*-
"""
The bridge's HTTP routes: the feed for Carbon Black (with validators,
conditional requests and gzip), the diagnostics page, the HTML view of the
feed, C{/healthz}, C{/metrics} and the two images.

The feed route never compresses or hashes per request: the snapshot carries
its gzip form and both ETags, computed once per publish; the empty document
served before the first publish gets the same treatment once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from email.utils import formatdate
from typing import Any

import orjson
from attrs import define, field, frozen
from klein import Klein
from prometheus_client.registry import CollectorRegistry
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from werkzeug.exceptions import HTTPException

from tcbridge.explain import Explanation
from tcbridge.feed.deflate import gzip_feed
from tcbridge.logs import bridge_observer
from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore, Snapshot
from tcbridge.synclog import SyncLog
from tcbridge.web import pages
from tcbridge.web.conditional import accepts_gzip, none_match, not_modified_since
from tcbridge.web.health import (
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_STALE_AFTER_INTERVALS,
    assess,
    health_document,
)
from tcbridge.web.index import index_page
from tcbridge.web.metrics import (
    CONTENT_TYPE,
    BridgeCollector,
    RequestCounts,
    exposition,
    make_registry,
    no_requests,
)
from tcbridge.web.stream import STREAM_OVER, Streamed

HTML = b"text/html; charset=utf-8"
JSON = b"application/json"


@frozen
class Representation:
    """
    The feed document in both encodings, with their validators.

    :ivar last_modified: an HTTP date, or C{None} (the empty document).
    :ivar modified_at: C{last_modified} as whole seconds since the epoch.
    """

    body: bytes
    etag: bytes
    gzip_body: bytes
    gzip_etag: bytes
    last_modified: bytes | None
    modified_at: int | None

    @classmethod
    def of_snapshot(cls, snapshot: Snapshot) -> Representation:
        """
        The snapshot's own bytes and validators, computed when it was made.
        """
        return cls(
            body=snapshot.body,
            etag=snapshot.etag.encode("ascii"),
            gzip_body=snapshot.gzip_body,
            gzip_etag=snapshot.gzip_etag.encode("ascii"),
            last_modified=(
                snapshot.last_modified or formatdate(snapshot.published_at, usegmt=True)
            ).encode("ascii"),
            modified_at=int(snapshot.published_at),
        )

    @classmethod
    def of_empty(cls, body: bytes) -> Representation:
        """
        The document served before the first publish (small: hashed and
        compressed inline, once).
        """
        digest = hashlib.sha256(body).hexdigest()[:32]
        return cls(
            body=body,
            etag=f'"{digest}"'.encode("ascii"),
            gzip_body=gzip_feed(body),
            gzip_etag=f'"{digest}-gzip"'.encode("ascii"),
            last_modified=None,
            modified_at=None,
        )


def _header(request: IRequest, name: bytes) -> bytes | None:
    values = request.requestHeaders.getRawHeaders(name)
    if not values:
        return None
    return b",".join(values)


def _parse_reports(body: bytes) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = orjson.loads(body)["reports"]
    return reports


def _page_number(request: IRequest) -> int | None:
    raw = request.args.get(b"page", [b"1"])[0]
    try:
        number = int(raw)
    except ValueError:
        return None
    return number if number >= 1 else None


@define
class FeedApp:
    """
    Klein routes over an injected store and status.

    :param config_rows: configuration shown on the diagnostics page, secrets
        already masked.
    :param feedinfo: the feed's feedinfo, shown on the page.
    :param images: PNG bytes by file name (C{threatconnect.png},
        C{carbonblack.png}).
    :param run_heavy: runs blocking work (parsing the feed for the HTML
        view) off the reactor thread; inline by default.
    :param interval_seconds: the sync interval (keyword-only), for the
        health rules.
    :param stale_after_intervals: how many intervals old the feed may get
        before C{/healthz} says failing (keyword-only).
    :param request_counts: returns the ThreatConnect client's requests by
        outcome, for C{/metrics} (keyword-only; none by default).
    :param sync_log: the sync history, for the page and C{/history.json}
        (keyword-only).
    :param explain: answers C{/explain} for one value (blocking: run with
        C{run_heavy}; keyword-only).
    """

    app = Klein()
    log = Logger(observer=bridge_observer)

    _store: FeedStore
    _status: SyncStatus
    _clock: IReactorTime
    _config_rows: Sequence[tuple[str, str]] = field(factory=list)
    _feedinfo: Mapping[str, Any] = field(factory=dict)
    _images: Mapping[str, bytes] = field(factory=dict)
    _run_heavy: Callable[..., Deferred[Any]] = field(default=maybeDeferred)
    _interval_seconds: float = field(default=DEFAULT_INTERVAL_SECONDS, kw_only=True)
    _stale_after_intervals: float = field(default=DEFAULT_STALE_AFTER_INTERVALS, kw_only=True)
    _request_counts: RequestCounts = field(default=no_requests, kw_only=True)
    _sync_log: SyncLog | None = field(default=None, kw_only=True)
    _explain: Callable[[str], Explanation] | None = field(default=None, kw_only=True)
    _parsed: tuple[Snapshot, list[dict[str, Any]]] | None = field(default=None, init=False)
    _empty: Representation | None = field(default=None, init=False)
    _registry: CollectorRegistry = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._registry = make_registry(
            BridgeCollector(
                self._store,
                self._status,
                self._clock.seconds,
                self._request_counts,
                self._interval_seconds,
                self._stale_after_intervals,
            )
        )

    def set_schedule(self, interval_seconds: float, stale_after_intervals: float) -> None:
        """
        Judge health against a new sync interval (after a config reload).
        """
        self._interval_seconds = interval_seconds
        self._stale_after_intervals = stale_after_intervals

    def resource(self) -> Any:
        """
        The twisted.web resource to serve.
        """
        return self.app.resource()

    def _representation(self) -> Representation:
        snapshot = self._store.current
        if snapshot is not None:
            return Representation.of_snapshot(snapshot)
        empty = self._empty
        if empty is None or empty.body is not self._store.empty_body:
            self._empty = empty = Representation.of_empty(self._store.empty_body)
        return empty

    @app.route("/threatconnect/json", methods=["GET", "HEAD"])
    def feed_json(self, request: IRequest) -> bytes | Resource:
        """
        The published feed, exactly as published; before the first success,
        valid feedinfo with no reports.

        Carries C{ETag}, C{Last-Modified} (once a feed is published),
        C{Vary: Accept-Encoding} and C{Content-Length}; answers
        C{If-None-Match} (which wins over C{If-Modified-Since}) and
        C{If-Modified-Since} with 304; sends the precomputed gzip form when
        C{Accept-Encoding} allows it.
        """
        rep = self._representation()
        use_gzip = bool(rep.gzip_body) and accepts_gzip(_header(request, b"Accept-Encoding"))
        body, etag = (rep.gzip_body, rep.gzip_etag) if use_gzip else (rep.body, rep.etag)
        request.setHeader(b"Vary", b"Accept-Encoding")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"ETag", etag)
        if rep.last_modified is not None:
            request.setHeader(b"Last-Modified", rep.last_modified)
        if_none_match = _header(request, b"If-None-Match")
        if if_none_match is not None:
            unchanged = none_match(if_none_match, etag)
        else:
            if_modified_since = _header(request, b"If-Modified-Since")
            unchanged = if_modified_since is not None and not_modified_since(
                if_modified_since, rep.modified_at
            )
        if unchanged:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"Content-Type", JSON)
        if use_gzip:
            request.setHeader(b"Content-Encoding", b"gzip")
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        if request.method == b"HEAD":
            return b""
        return Streamed(body) if len(body) > STREAM_OVER else body

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: IRequest) -> bytes:
        """
        The bridge's health as JSON (see L{tcbridge.web.health}): 200 when ok
        or degraded, 503 when failing.  Reads only the status.
        """
        status, snapshot, now = self._status, self._store.current, self._clock.seconds()
        health = assess(status, snapshot, now, self._interval_seconds, self._stale_after_intervals)
        code, body = health_document(health, status, snapshot, now)
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", JSON)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        return b"" if request.method == b"HEAD" else body

    @app.route("/metrics", methods=["GET", "HEAD"])
    def metrics(self, request: IRequest) -> bytes:
        """
        Prometheus metrics (see L{tcbridge.web.metrics}).
        """
        body = exposition(self._registry)
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        return b"" if request.method == b"HEAD" else body

    @app.route("/", methods=["GET", "HEAD"])
    def index(self, request: IRequest) -> pages.Page:
        """
        The diagnostics page.
        """
        request.setHeader(b"Content-Type", HTML)
        now = self._clock.seconds()
        snapshot = self._store.current
        return index_page(
            self._status,
            snapshot,
            self._config_rows,
            self._feedinfo,
            now,
            health=assess(
                self._status, snapshot, now, self._interval_seconds, self._stale_after_intervals
            ),
            history=None if self._sync_log is None else self._sync_log.records,
        )

    @app.route("/explain", methods=["GET", "HEAD"])
    def explain(self, request: IRequest) -> Deferred[Any] | pages.Page | bytes:
        """
        Why each C{value} asked for is (not) in the feed (see
        L{tcbridge.explain}); C{format=json} for JSON.
        """
        args = request.args or {}
        values = [v.decode("utf-8", "replace").strip() for v in args.get(b"value", [])]
        values = [v for v in values if v][:20]
        wants_json = args.get(b"format", [b""])[0] == b"json"
        explain = self._explain
        if explain is None or not values:
            request.setHeader(b"Content-Type", HTML)
            if explain is None:
                request.setResponseCode(404)
                return pages.message_page(
                    "Explain", "Nothing is kept to explain (no cache_folder)."
                )
            return pages.explain_page([], "")

        def answer(found: list[Explanation]) -> pages.Page | bytes:
            if wants_json:
                body = orjson.dumps([e.as_json() for e in found])
                request.setHeader(b"Content-Type", JSON)
                request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
                return b"" if request.method == b"HEAD" else body
            request.setHeader(b"Content-Type", HTML)
            return pages.explain_page(found, values[0] if len(values) == 1 else "")

        d: Deferred[list[Explanation]] = self._run_heavy(lambda: [explain(v) for v in values])
        return d.addCallback(answer)

    @app.route("/history.json", methods=["GET", "HEAD"])
    def history_json(self, request: IRequest) -> bytes:
        """
        The kept sync records, oldest first (see L{tcbridge.synclog}).
        """
        body = b'{"syncs":[]}' if self._sync_log is None else self._sync_log.as_json()
        request.setHeader(b"Content-Type", JSON)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        return b"" if request.method == b"HEAD" else body

    @app.route("/feed.html", methods=["GET", "HEAD"])
    def feed_html(self, request: IRequest) -> pages.Page | Deferred[pages.Page]:
        """
        The feed as an HTML table, one page of reports at a time, or one
        report with all its IOCs (C{?report=ID}).
        """
        request.setHeader(b"Content-Type", HTML)
        number = _page_number(request)
        if number is None:
            request.setResponseCode(400)
            return pages.message_page("Bad request", "page must be a whole number from 1 up.")
        report_ids = request.args.get(b"report")
        wanted = report_ids[0].decode("utf-8", "replace") if report_ids else None
        return ensureDeferred(self._feed_html(request, number, wanted))

    async def _feed_html(self, request: IRequest, number: int, wanted: str | None) -> pages.Page:
        snapshot = self._store.current
        reports = await self._reports(snapshot)
        if wanted is None:
            return pages.feed_page(snapshot, reports, number)
        for report in reports:
            if report["id"] == wanted:
                return pages.report_page(report, number)
        request.setResponseCode(404)
        return pages.message_page("No such report", f"The feed has no report {wanted!r}.")

    async def _reports(self, snapshot: Snapshot | None) -> list[dict[str, Any]]:
        """
        The published feed's reports, parsed from its bytes off the reactor
        thread the first time the HTML view asks for them after a publish.
        """
        if snapshot is None:
            return []
        cached = self._parsed
        if cached is None or cached[0] is not snapshot:
            reports = await self._run_heavy(_parse_reports, snapshot.body)
            self._parsed = cached = (snapshot, reports)
        return cached[1]

    @app.route("/<string:name>.png", methods=["GET", "HEAD"])
    def image(self, request: IRequest, name: str) -> bytes:
        """
        The logos shown on the pages.
        """
        data = self._images.get(f"{name}.png")
        if data is None:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"not found\n"
        request.setHeader(b"Content-Type", b"image/png")
        request.setHeader(b"Cache-Control", b"max-age=86400")
        return data

    @app.handle_errors(Exception)
    def error(self, request: IRequest, failure: Any) -> pages.Page:
        """
        Klein's own errors (404 for unknown paths, 405 for other methods) as
        short pages; anything else is a 500 that is logged, never a traceback
        shown to the client.
        """
        request.setHeader(b"Content-Type", HTML)
        if isinstance(failure.value, HTTPException):
            code = failure.value.code or 500
            request.setResponseCode(code)
            return pages.message_page(
                f"{code} {failure.value.name}", failure.value.description or ""
            )
        self.log.failure("Error serving {uri}", failure, uri=request.uri)
        request.setResponseCode(500)
        return pages.message_page("500 Internal error", "The error was logged.")
