# -*- test-case-name: tests.unit.test_synclog -*-
"""
The sync history on the page: two small SVG charts drawn on the server
(IOCs in the feed and sync duration, each sync a point, failed and held
back syncs marked in red) and a table of the last 20 syncs.  No script:
the charts are plain SVG elements made with twisted.web.template, so
every value is escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.web.template import Tag, tags

from tcbridge.synclog import SyncRecord
from tcbridge.web.format import http_time

WIDTH, HEIGHT, MARGIN = 600, 140, 40
ROWS = 20


def _svg(name: str, **attributes: str) -> Tag:
    tag = Tag(name)
    tag.attributes.update({key.rstrip("_").replace("_", "-"): v for key, v in attributes.items()})
    return tag


def chart(
    records: Sequence[SyncRecord], title: str, value: Callable[[SyncRecord], float], unit: str
) -> Tag:
    """
    One line chart of C{value} over the syncs, oldest on the left.
    """
    points = [(r, value(r)) for r in records]
    top = max((v for _, v in points), default=0.0) or 1.0
    span = max(len(points) - 1, 1)
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * 20

    def xy(index: int, v: float) -> tuple[float, float]:
        return MARGIN + plot_w * index / span, 20 + plot_h * (1 - v / top)

    good = [xy(i, v) for i, (r, v) in enumerate(points) if r.result == "published"]
    svg = _svg(
        "svg",
        xmlns="http://www.w3.org/2000/svg",
        width=str(WIDTH),
        height=str(HEIGHT),
        role="img",
        class_="chart",
    )
    svg(_svg("title")(title))
    svg(_svg("text", x="4", y="14", font_size="12")(f"{title} (max {top:,.0f} {unit})"))
    svg(
        _svg(
            "line",
            x1=str(MARGIN),
            y1=str(HEIGHT - 20),
            x2=str(WIDTH - MARGIN),
            y2=str(HEIGHT - 20),
            stroke="#999",
        )
    )
    if good:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in good)
        svg(_svg("polyline", points=line, fill="none", stroke="#1f5fa8", stroke_width="2"))
    for index, (record, v) in enumerate(points):
        x, y = xy(index, v if record.result == "published" else 0)
        colour = "#1f5fa8" if record.result == "published" else "#c0392b"
        mark = _svg("circle", cx=f"{x:.1f}", cy=f"{y:.1f}", r="3", fill=colour)
        mark(_svg("title")(f"{http_time(record.started)}: {record.result}"))
        svg(mark)
    return svg


def history_section(records: Sequence[SyncRecord]) -> list[Any]:
    """
    The page's sync history: charts, then the last L{ROWS} syncs.
    """
    if not records:
        return [tags.p("No sync recorded yet.")]
    rows = []
    for record in reversed(records[-ROWS:]):
        change = "" if record.change is None else f"{record.change:+,}"
        rows.append(
            tags.tr(
                tags.td(http_time(record.started)),
                tags.td(f"{record.seconds:.1f} s", class_="num"),
                tags.td(str(record.requests), class_="num"),
                tags.td(f"{record.iocs:,}" if record.result == "published" else "", class_="num"),
                tags.td(change, class_="num"),
                tags.td(record.result, class_="ok" if record.result == "published" else "bad"),
                tags.td(record.error or ""),
            )
        )
    return [
        chart(records, "IOCs in the feed", lambda r: r.iocs, "IOCs"),
        tags.br(),
        chart(records, "Sync duration", lambda r: r.seconds, "s"),
        tags.table(
            tags.tr(
                *[
                    tags.th(name)
                    for name in ("Started", "Took", "Requests", "IOCs", "Change", "Result", "Error")
                ]
            ),
            *rows,
        ),
        tags.p(tags.a("All kept syncs as JSON", href="/history.json")),
    ]
