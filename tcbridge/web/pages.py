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
from tcbridge.store import Snapshot
from tcbridge.web.format import http_time

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
