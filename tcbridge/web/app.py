# -*- test-case-name: tests.test_web -*-
"""
The bridge's HTTP routes: the feed for Carbon Black, the diagnostics page,
the HTML view of the feed and the two images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from attrs import define, field
from klein import Klein
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from tcbridge.logs import bridge_observer
from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore, Snapshot
from tcbridge.web import pages

HTML = b"text/html; charset=utf-8"


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
    _parsed: tuple[Snapshot, list[dict[str, Any]]] | None = field(default=None, init=False)

    def resource(self) -> Any:
        """
        The twisted.web resource to serve.
        """
        return self.app.resource()

    @app.route("/threatconnect/json", methods=["GET", "HEAD"])
    def feed_json(self, request: IRequest) -> bytes:
        """
        The published feed, exactly as published; before the first success,
        valid feedinfo with no reports.
        """
        body = self._store.body()
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-cache")
        if self._store.current is not None:
            request.setHeader(b"ETag", self._store.current.etag.encode("ascii"))
        return body

    @app.route("/", methods=["GET", "HEAD"])
    def index(self, request: IRequest) -> pages.Page:
        """
        The diagnostics page.
        """
        request.setHeader(b"Content-Type", HTML)
        return pages.index_page(
            self._status,
            self._store.current,
            self._config_rows,
            self._feedinfo,
            self._clock.seconds(),
        )

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
