# -*- test-case-name: tests.unit.test_web -*-
"""
The diagnostics page (C{/}): how the bridge is doing, what the last sync
read and left out, the sync history, and the configuration with secrets
masked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.web.template import Tag, tags

from tcbridge.status import SyncStatus
from tcbridge.store import Snapshot
from tcbridge.synclog import SyncRecord
from tcbridge.web.charts import history_section
from tcbridge.web.format import age, http_time, when
from tcbridge.web.health import DEGRADED, FAILING, Health, held_back
from tcbridge.web.pages import IOC_KINDS, Page, explain_form, page, table


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
    body: list[Any] = [
        tags.div(
            tags.img(src="/carbonblack.png", alt="Carbon Black", height="60"),
            " ",
            tags.img(src="/threatconnect.png", alt="ThreatConnect", height="60"),
        ),
        tags.h1("Carbon Black <-> ThreatConnect Bridge"),
        tags.h2("Sync status"),
        _summary(status, snapshot, now, health),
    ]
    if history is not None:
        body += [tags.h2("Sync history"), *history_section(history)]
    body += [tags.h2("Explain"), explain_form()]
    if status.notices:
        body += [
            tags.h2("Configuration notices"),
            tags.ul(*[tags.li(n, class_="warn") for n in status.notices]),
        ]
    body += [tags.h2("Feed contents"), _views(), tags.h2("Last successful sync, per source")]
    body += _per_source(status)
    body += _identity(feedinfo, snapshot, config_rows)
    return page("Carbon Black <-> ThreatConnect Bridge", *body)


def _last_sync(status: SyncStatus, now: float) -> Any:
    """
    The last sync attempt: when, running now (how far), or failed (why).
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
    return last_sync


def _summary(
    status: SyncStatus, snapshot: Snapshot | None, now: float, health: Health | None
) -> Tag:
    """
    The table at the top: state, health, feed age, last sync and error,
    the published feed, and the Carbon Black server sync.
    """
    last_sync = _last_sync(status, now)
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
    return table(
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
            ("Incremental sync", _incremental_text(status, now)),
        ],
    )


def _views() -> Tag:
    """
    The feed's views and the monitoring routes, with what each is for.
    """
    return table(
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
                "Prometheus metrics: syncs, durations, feed size and age, ThreatConnect requests.",
            ),
        ],
    )


def _per_source(status: SyncStatus) -> list[Any]:
    """
    What the last successful sync read and left out, per source, owner,
    IOC type and reason.
    """
    body: list[Any] = []
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
    return body


def _identity(
    feedinfo: Mapping[str, Any], snapshot: Snapshot | None, config_rows: Sequence[tuple[str, str]]
) -> list[Any]:
    """
    The feed's identity (its feedinfo) and the configuration, secrets masked.
    """
    info_rows = [(k, str(v)) for k, v in feedinfo.items() if k not in ("icon", "icon_small")]
    info_rows.append(("num_reports", str(0 if snapshot is None else snapshot.reports)))
    return [
        tags.h2("Feed information"),
        table(["Feed Param Name", "Feed Param Value"], info_rows),
        tags.h2("Bridge configuration"),
        table(["Config Option", "Value"], config_rows),
        tags.p(tags.small("tcbridge, a ThreatConnect to Carbon Black EDR bridge.")),
    ]


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


def _incremental_text(status: SyncStatus, now: float) -> str:
    """
    Where incremental syncs stand: the last full sync and delta, what the
    last cycle changed, each source's watermark.
    """
    inc = status.incremental
    if inc is None:
        return "off, or no sync committed yet (every sync pulls everything)"
    marks = ", ".join(
        f"{name} {http_time(mark)}" for name, mark in inc.watermarks if mark is not None
    )
    return (
        f"last full sync {when(inc.last_full, now)}; last delta {when(inc.last_delta, now)}; "
        f"the last cycle ({inc.kind}) added or updated {inc.added:,} and removed "
        f"{inc.removed:,} indicators; changes asked from: {marks or 'none yet'}"
    )


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
