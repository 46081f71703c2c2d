# -*- test-case-name: tests.unit.test_web -*-
"""
The HTML pages, built with twisted.web.template tags so that every value,
including hostile text from ThreatConnect, is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from twisted.web.template import Element, Tag, TagLoader, tags

from tcbridge.explain import Explanation
from tcbridge.status import SyncStatus
from tcbridge.store import Snapshot
from tcbridge.synclog import SyncRecord
from tcbridge.web.charts import history_section
from tcbridge.web.format import age, http_time, when
from tcbridge.web.health import DEGRADED, FAILING, Health, held_back

IOC_KINDS = ("md5", "sha256", "ipv4", "ipv6", "dns")
REPORTS_PER_PAGE = 100
IOCS_PER_CELL = 25
IOCS_PER_REPORT_PAGE = 1000

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; } tr.alt td { background: #f7f7f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #176117; font-weight: bold; } .bad { color: #a11; font-weight: bold; }
.warn { color: #8a5a00; } .ioc { font-family: monospace; }
.error { background: #fdecea; border: 1px solid #a11; padding: 0.5em; }
"""


class Page(Element):
    """
    A whole page as an L{Element}, which is what Klein renders (a bare L{Tag}
    would be sent as an empty body).
    """

    def __init__(self, tag: Tag) -> None:
        super().__init__(loader=TagLoader(tag))


def page(title: str, *body: Any) -> Page:
    """
    A whole HTML page with the common header.
    """
    return Page(
        tags.html(
            tags.head(
                tags.meta(charset="utf-8"),
                tags.title(title),
                tags.style(_STYLE),
            ),
            tags.body(*body),
        )
    )


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()
) -> Tag:
    """
    A table with a header row and alternately shaded rows; columns whose
    index is in C{numeric} are right-aligned.
    """
    body = []
    for i, row in enumerate(rows):
        cells = [
            tags.td(str(cell), class_="num") if j in numeric else tags.td(cell)
            for j, cell in enumerate(row)
        ]
        body.append(tags.tr(*cells, class_="alt" if i % 2 else ""))
    return tags.table(tags.tr(*[tags.th(h) for h in headers]), *body)


def state_of(status: SyncStatus, snapshot: Snapshot | None) -> Tag:
    """
    One word for how the bridge is doing, coloured; when the shrink guard
    holds a new feed back, its message (which says how to accept the feed).
    """
    guard = held_back(status)
    if guard is not None:
        return tags.span("New feed held back: ", guard, class_="bad")
    if status.running and status.last_attempt_finished is None:
        return tags.span("First sync running", class_="warn")
    if status.last_error is not None and (
        status.last_success is None or (status.last_error_at or 0) >= (status.last_success or 0)
    ):
        if snapshot is not None:
            return tags.span(
                "Degraded: the last sync did not publish; the previous feed is still served",
                class_="bad",
            )
        return tags.span("Failing: no sync has published a feed yet", class_="bad")
    if snapshot is None:
        return tags.span("No feed yet", class_="warn")
    return tags.span("OK", class_="ok")


def _cb_sync_text(status: SyncStatus, now: float) -> Any:
    """
    The last Carbon Black server sync and its last error (a warning: it
    never stops publishing).
    """
    if status.cb_last_sync is None and status.cb_last_error is None:
        return "not done (off, or no feed published yet)"
    parts: list[Any] = []
    if status.cb_last_sync is not None:
        parts.append(f"feed {status.cb_feed_id} synchronized {when(status.cb_last_sync, now)}")
    if status.cb_last_error is not None and (status.cb_last_error_at or 0) >= (
        status.cb_last_sync or 0
    ):
        parts.append(
            tags.span(
                f"last attempt failed {when(status.cb_last_error_at, now)}: {status.cb_last_error}",
                class_="warn",
            )
        )
    return tags.span(*[item for part in parts for item in (part, tags.br())][:-1])


def index_page(
    status: SyncStatus,
    snapshot: Snapshot | None,
    config_rows: Sequence[tuple[str, str]],
    feedinfo: Mapping[str, Any],
    now: float,
    *,
    health: Health | None = None,
    history: Sequence[SyncRecord] | None = None,
) -> Page:
    """
    The diagnostics page: sync state, health, feed age, the last error in
    ThreatConnect's words, counts per source, the feed's identity and the
    configuration (secrets masked), with links to the JSON and HTML views,
    C{/healthz} and C{/metrics}.

    :param health: the verdict of L{tcbridge.web.health.assess}; no health
        row without it.
    """
    last_sync: Any = when(status.last_attempt, now, "No sync performed")
    if status.running:
        progress = status.progress
        elapsed = None if status.last_attempt is None else now - status.last_attempt
        doing = f": {progress.describe(elapsed)}" if progress is not None else ""
        last_sync = f"{last_sync} (running now{doing})"
    elif status.last_error is not None and (status.last_error_at or 0) >= (
        status.last_attempt or 0
    ):
        # As the 2015 page did: the error right in the last-sync row.
        if status.last_success is None:
            last_sync = tags.span(f"No sync performed ({status.last_error})", class_="bad")
        else:
            last_sync = tags.span(f"{last_sync}: failed ({status.last_error})", class_="bad")
    error_row: Any = "None"
    if status.last_error is not None:
        error_row = tags.div(
            tags.strong(http_time(status.last_error_at)), ": ", status.last_error, class_="error"
        )
    rows: list[tuple[str, Any]] = [("State", state_of(status, snapshot))]
    if health is not None:
        css = {DEGRADED: "warn", FAILING: "bad"}.get(health.state, "ok")
        verdict: list[Any] = [tags.span(health.state, class_=css)]
        if health.reasons:
            verdict.append(": " + "; ".join(health.reasons))
        verdict += [" (", tags.a("/healthz", href="/healthz"), ")"]
        rows.append(("Health", tags.span(*verdict)))
    feed_age = "no feed published"
    if snapshot is not None:
        feed_age = age(snapshot.published_at, now)
        if health is not None:
            feed_age += f" (stale after {health.stale_after / 3600:g} h)"
    rows.append(("Feed age", feed_age))
    summary = table(
        ["Item", "Value"],
        [
            *rows,
            ("Last sync attempt", last_sync),
            ("Last successful sync", when(status.last_success, now)),
            ("Last error", error_row),
            (
                "Published feed",
                "none yet: serving feedinfo with no reports"
                if snapshot is None
                else f"{snapshot.reports} reports, {snapshot.iocs} IOCs, published "
                + when(snapshot.published_at, now)
                + (" (loaded from the cache at start)" if snapshot.from_cache else ""),
            ),
            (
                "Last sync took",
                "-"
                if status.last_duration is None
                else f"{status.last_duration:.1f} s, {status.requests} requests",
            ),
            ("Syncs since start", f"{status.cycles_ok} succeeded, {status.cycles_failed} failed"),
            ("Bridge started", when(status.started_at, now)),
            ("Carbon Black server sync", _cb_sync_text(status, now)),
        ],
    )
    body: list[Any] = [
        tags.div(
            tags.img(src="/carbonblack.png", alt="Carbon Black", height="60"),
            " ",
            tags.img(src="/threatconnect.png", alt="ThreatConnect", height="60"),
        ),
        tags.h1("Carbon Black <-> ThreatConnect Bridge"),
        tags.h2("Sync status"),
        summary,
    ]
    if history is not None:
        body += [tags.h2("Sync history"), *history_section(history)]
    body += [tags.h2("Explain"), explain_form()]
    if status.notices:
        body += [
            tags.h2("Configuration notices"),
            tags.ul(*[tags.li(n, class_="warn") for n in status.notices]),
        ]
    body += [
        tags.h2("Feed contents"),
        table(
            ["Format", "Description"],
            [
                (
                    tags.a("JSON", href="/threatconnect/json"),
                    "Designed for programmatic consumption; used by the Carbon Black EDR "
                    "server (add http://<this host>:<port>/threatconnect/json as a feed).",
                ),
                (
                    tags.a("HTML", href="/feed.html"),
                    "Designed for human consumption; used to explore feed contents and for "
                    "troubleshooting.",
                ),
                (
                    tags.a("Health", href="/healthz"),
                    "The bridge's health as JSON for monitoring: HTTP 200 when ok or "
                    "degraded, 503 when failing.",
                ),
                (
                    tags.a("Metrics", href="/metrics"),
                    "Prometheus metrics: syncs, durations, feed size and age, "
                    "ThreatConnect requests.",
                ),
            ],
        ),
        tags.h2("Last successful sync, per source"),
    ]
    if status.sources or status.pulls:
        body.append(
            table(
                [
                    "Source",
                    "Owners",
                    "Pages",
                    "Indicators read",
                    "Unreadable records",
                    "Inactive (left out)",
                    "Sent twice",
                    "Re-read (data changed)",
                ],
                [
                    (
                        p.source,
                        ", ".join(p.owners),
                        p.pages,
                        p.indicators,
                        p.skipped,
                        p.inactive,
                        p.duplicates,
                        p.restarts,
                    )
                    for p in status.pulls
                ],
                numeric=(2, 3, 4, 5, 6, 7),
            )
        )
        body.append(
            table(
                ["Owner / source", "Indicators", "IOCs in the feed"],
                [(s.name, s.indicators, s.iocs) for s in status.sources],
                numeric=(1, 2),
            )
        )
        body.append(
            table(
                ["IOC type", "IOCs in the feed"],
                [(k, status.iocs_by_kind.get(k, 0)) for k in IOC_KINDS],
                numeric=(1,),
            )
        )
        skipped = sorted(status.skipped.items())
        body.append(
            table(
                ["Left out of the feed, by reason", "Count"],
                skipped or [("nothing", 0)],
                numeric=(1,),
            )
        )
        if status.excluded_by:
            body.append(
                table(
                    ["Exclusion list", "IOCs it removed"],
                    sorted(status.excluded_by.items()),
                    numeric=(1,),
                )
            )
        if status.shared_iocs:
            body.append(
                tags.p(
                    f"{status.shared_iocs} IOCs were reported by more than one owner; each is in "
                    "the feed once, in a report whose title names all of them."
                )
            )
        if status.truncated_reports:
            body.append(
                tags.p(
                    f"{status.truncated_reports} reports were left out by max_reports (the "
                    "lowest scores and oldest first).",
                    class_="warn",
                )
            )
        for warning in status.feed_warnings:
            body.append(tags.p(warning, class_="warn"))
    else:
        body.append(tags.p("No successful sync since the bridge started."))
    info_rows = [(k, str(v)) for k, v in feedinfo.items() if k not in ("icon", "icon_small")]
    info_rows.append(("num_reports", str(0 if snapshot is None else snapshot.reports)))
    body += [
        tags.h2("Feed information"),
        table(["Feed Param Name", "Feed Param Value"], info_rows),
        tags.h2("Bridge configuration"),
        table(["Config Option", "Value"], config_rows),
        tags.p(tags.small("tcbridge, a ThreatConnect to Carbon Black EDR bridge.")),
    ]
    return page("Carbon Black <-> ThreatConnect Bridge", *body)


def safe_href(url: str) -> str | None:
    """
    C{url} if it is an http(s) link, else C{None}: a link from ThreatConnect
    data must not become a C{javascript:} link on our page.
    """
    lowered = url.strip().lower()
    return url if lowered.startswith(("https://", "http://")) else None


def _link(text: str, url: str) -> Any:
    href = safe_href(url)
    return tags.a(text, href=href) if href else text


def _ioc_cell(report: Mapping[str, Any]) -> Tag:
    """
    Every IOC type of a report, at most L{IOCS_PER_CELL} values of each, with
    a link to the whole report when there are more.
    """
    parts: list[Any] = []
    iocs = report.get("iocs", {})
    for kind in IOC_KINDS:
        values = iocs.get(kind) or []
        if not values:
            continue
        shown = values[:IOCS_PER_CELL]
        parts.append(tags.strong(f"{kind} ({len(values)})"))
        for value in shown:
            parts += [tags.br(), tags.span(value, class_="ioc")]
        if len(values) > len(shown):
            href = "/feed.html?" + urlencode({"report": report["id"]})
            parts += [tags.br(), tags.a(f"... {len(values) - len(shown)} more", href=href)]
        parts.append(tags.br())
    return tags.td(*parts)


def _pager(base: Mapping[str, str], page_number: int, pages: int) -> Tag:
    links: list[Any] = [f"Page {page_number} of {pages}. "]
    if page_number > 1:
        links.append(
            tags.a("previous", href="/feed.html?" + urlencode({**base, "page": page_number - 1}))
        )
        links.append(" ")
    if page_number < pages:
        links.append(
            tags.a("next", href="/feed.html?" + urlencode({**base, "page": page_number + 1}))
        )
    return tags.p(*links)


def feed_page(
    snapshot: Snapshot | None, reports: Sequence[Mapping[str, Any]], page_number: int
) -> Page:
    """
    The reports of the published feed, L{REPORTS_PER_PAGE} at a time.
    """
    pages = max(1, -(-len(reports) // REPORTS_PER_PAGE))
    page_number = min(max(1, page_number), pages)
    start = (page_number - 1) * REPORTS_PER_PAGE
    rows = []
    for i, report in enumerate(reports[start : start + REPORTS_PER_PAGE]):
        rows.append(
            tags.tr(
                tags.td(_link(report["id"], report["link"])),
                tags.td(report["title"]),
                tags.td(http_time(report["timestamp"])),
                tags.td(str(report["score"]), class_="num"),
                _ioc_cell(report),
                class_="alt" if i % 2 else "",
            )
        )
    header = tags.tr(
        *[tags.th(h) for h in ("ReportId", "ReportTitle", "Timestamp", "Score", "IOCs")]
    )
    return page(
        "Carbon Black ThreatConnect Feed",
        tags.p(tags.a("Diagnostics", href="/"), " | ", tags.a("JSON", href="/threatconnect/json")),
        tags.h1("Feed Reports"),
        tags.p(f"{len(reports)} reports, {snapshot.iocs if snapshot else 0} IOCs."),
        _pager({}, page_number, pages),
        tags.table(header, *rows),
        _pager({}, page_number, pages),
    )


def report_page(report: Mapping[str, Any], page_number: int) -> Page:
    """
    One report with all its IOCs, L{IOCS_PER_REPORT_PAGE} at a time.
    """
    values = [(kind, v) for kind in IOC_KINDS for v in report["iocs"].get(kind) or []]
    pages = max(1, -(-len(values) // IOCS_PER_REPORT_PAGE))
    page_number = min(max(1, page_number), pages)
    start = (page_number - 1) * IOCS_PER_REPORT_PAGE
    shown = values[start : start + IOCS_PER_REPORT_PAGE]
    return page(
        f"Report {report['id']}",
        tags.p(tags.a("All reports", href="/feed.html"), " | ", tags.a("Diagnostics", href="/")),
        tags.h1(report["title"]),
        table(
            ["Field", "Value"],
            [
                ("id", report["id"]),
                ("link", _link(report["link"], report["link"])),
                ("timestamp", http_time(report["timestamp"])),
                ("score", str(report["score"])),
                ("description", report.get("description", "")),
                ("tags", ", ".join(report.get("tags", []))),
                ("IOCs", str(len(values))),
            ],
        ),
        _pager({"report": report["id"]}, page_number, pages),
        table(["Type", "Value"], [(k, tags.span(v, class_="ioc")) for k, v in shown]),
    )


def explain_form(value: str = "") -> Tag:
    """
    The form that asks why a value is (not) in the feed.
    """
    return tags.form(
        tags.label("Why is this IOC (not) in my feed? ", for_="value"),
        tags.input(type="text", name="value", id="value", value=value, size="50"),
        tags.input(type="submit", value="Explain"),
        action="/explain",
        method="get",
    )


def explain_page(answers: Sequence[Explanation], value: str) -> Page:
    """
    The answers for the values asked about.
    """
    body: list[Any] = [tags.h1("Explain"), explain_form(value)]
    for answer in answers:
        body.append(tags.h2(tags.span(answer.value, class_="ioc"), f" ({answer.kind})"))
        body.append(tags.p(answer.verdict, class_="ok" if answer.in_feed else "warn"))
        if answer.reporters:
            body.append(
                table(
                    [
                        "Owner",
                        "Type",
                        "ThreatConnect id",
                        "Rating",
                        "Confidence",
                        "Score",
                        "Left out",
                    ],
                    [
                        (
                            _link(r.owner, r.link) if r.link else r.owner,
                            r.type,
                            r.id,
                            "" if r.rating is None else f"{r.rating:g}",
                            "" if r.confidence is None else str(r.confidence),
                            str(r.score),
                            r.left_out or "kept",
                        )
                        for r in answer.reporters
                    ],
                )
            )
    body.append(tags.p(tags.a("Diagnostics", href="/")))
    return page("Explain", *body)


def message_page(title: str, message: str) -> Page:
    """
    A short page for errors such as a bad query parameter.
    """
    return page(title, tags.h1(title), tags.p(message), tags.p(tags.a("Diagnostics", href="/")))
