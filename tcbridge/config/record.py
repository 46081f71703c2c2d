# -*- test-case-name: tests.unit.test_config -*-
"""
The validated configuration: a frozen L{Config} made of one record per
concern (ThreatConnect, the feed, the sync, the listener, the Carbon Black
server, logging), so that each part of the bridge takes only what it uses.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from attrs import Factory, field, frozen

from tcbridge.model import (
    DEFAULT_LISTENER_ADDRESS,
    DEFAULT_LISTENER_PORT,
    DEFAULT_RETRIEVAL_MINUTES,
    KNOWN_TYPES,
    ApiVersion,
    Grouping,
    ScoreSource,
    Source,
)
from tcbridge.secrets import mask, mask_url

_SCORE_TEXT = {
    "rating": "rating x 20",
    "confidence": "confidence",
    "threatAssessScore": "ThreatAssess score / 10",
    "max": "the highest of rating x 20, confidence, ThreatAssess score / 10",
}


#: What an exclusion file lists.
ExclusionKind = Literal["hashes", "ips", "hosts"]


@frozen
class ExclusionFile:
    """
    One configured exclusion file, read but not interpreted.

    :ivar kind: C{"hashes"}, C{"ips"} or C{"hosts"}.
    :ivar option: how the user named it, e.g. C{filtered_hosts} or
        C{[exclusions] host}.
    :ivar path: the file.
    :ivar lines: its lines, as written.
    """

    kind: ExclusionKind
    option: str
    path: str
    lines: tuple[str, ...] = field(repr=False)


@frozen
class ThreatConnectSettings:
    """
    Where and how to reach ThreatConnect, and what to pull.

    :ivar api_url: the API base URL, no trailing slash; it keeps an C{/api}
        prefix if the user wrote one.
    :ivar web_url: where indicator links point.
    :ivar secret_key: never shown anywhere.
    :ivar secret_source: where the secret key came from, for the page.
    :ivar api_version: C{"v2"} (per-type endpoints; the default, served by
        every ThreatConnect in use) or C{"v3"} (C{/v3/indicators} with TQL).
    :ivar https_proxy: proxy URL, possibly with a password; shown only
        through L{mask_url}.
    :ivar ca_file: PEM bundle to verify ThreatConnect's certificate against
        instead of the system's trust store.
    :ivar verify_tls: C{False} only when the user turned verification off.
    :ivar max_attempts: tries per request, including the first.
    :ivar request_timeout: seconds one request may take.
    :ivar instance: the instance's name from a C{[threatconnect:<name>]}
        section; C{""} for the main one (C{[threatconnect]} or C{[auth]}).
        A named instance's sources are named C{<name>/<source>} and its
        indicators labelled C{<name>/<owner>}, so its report ids name it.
    """

    api_url: str
    web_url: str
    api_key: str
    secret_key: str = field(repr=False)
    sources: tuple[Source, ...]
    secret_source: str = "secret_key in the config file"  # noqa: S105 (a description)
    api_version: ApiVersion = "v2"
    https_proxy: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    verify_tls: bool = True
    max_attempts: int = 5
    request_timeout: float = 30.0
    page_size: int = 10000
    instance: str = ""

    @property
    def label_prefix(self) -> str:
        """
        What goes before an owner's name in this instance's labels.
        """
        return f"{self.instance}/" if self.instance else ""


@frozen
class FeedOptions:
    """
    What goes into the feed and how it is grouped.

    :ivar score_source: where a report's score comes from: C{rating} (x 20),
        C{confidence}, C{threatAssessScore} (/ 10) or C{max} of those.
    :ivar min_rating: indicators rated below this (0-5) are left out;
        C{None} for no rating filter.
    :ivar min_score: IOCs scored below this are left out (0-100).
    :ivar max_age_days: indicators whose C{lastModified} is older than
        this many days at the sync are left out; C{None}: no age limit.
    :ivar exclusions: the configured exclusion files, with their raw lines
        (the feed side interprets them).
    """

    types: frozenset[str] = frozenset(KNOWN_TYPES)
    score_source: ScoreSource = "rating"
    min_rating: float | None = None
    min_score: int = 20
    exclude_reserved: bool = True
    exclude_private: bool = False
    max_age_days: int | None = None
    grouping: Grouping = "Condensed"
    max_reports: int | None = None
    exclusions: tuple[ExclusionFile, ...] = ()
    pretty_print_json: bool = False


@frozen
class SyncSettings:
    """
    When syncs run and how their results are kept.

    :ivar deadline_minutes: a whole sync cycle fails after this long.
    :ivar cache_folder: where the published feed and the bridge's state are
        kept across restarts; C{None} for memory only.
    :ivar max_shrink_percent: a new feed with more than this many percent
        fewer IOCs than the published one is held back.
    :ivar stale_after_intervals: /healthz says failing when the feed is
        older than this many sync intervals.
    :ivar incremental: keep an indicator store in C{cache_folder} and ask
        ThreatConnect only for what changed between full syncs.
    :ivar full_sync_hours: with C{incremental}, hours between full syncs.
    :ivar delta_overlap_minutes: with C{incremental}, how far before the
        newest C{lastModified} seen a delta asks from (clock differences).
    """

    feed_retrieval_minutes: float = DEFAULT_RETRIEVAL_MINUTES
    deadline_minutes: float = 30.0
    cache_folder: str | None = None
    max_shrink_percent: float = 50.0
    stale_after_intervals: float = 3.0
    incremental: bool = False
    full_sync_hours: float = 24.0
    delta_overlap_minutes: float = 10.0


@frozen
class ListenerSettings:
    """
    The HTTP listener that serves the feed and the pages.

    :ivar tls_cert: serve over HTTPS with this PEM certificate chain (and
        C{tls_key}).
    :ivar username: with C{password}, HTTP basic auth on every route
        (Carbon Black can send them when it fetches the feed).
    :ivar token: a bearer token accepted on every route.
    :ivar allow: client networks allowed (empty: any).
    """

    address: str = DEFAULT_LISTENER_ADDRESS
    port: int = DEFAULT_LISTENER_PORT
    tls_cert: str | None = None
    tls_key: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    allow: tuple[str, ...] = ()


@frozen
class CarbonBlackSettings:
    """
    The optional Carbon Black EDR server the feed is registered and
    synchronized on after each publish.

    :ivar server_url: C{None} when that is off (also with C{skip_cb_sync}).
    :ivar host_address: how the Carbon Black server reaches this bridge.
    """

    server_url: str | None = None
    server_token: str | None = field(default=None, repr=False)
    verify_tls: bool = True
    ca_file: str | None = None
    host_address: str | None = None


@frozen
class LoggingSettings:
    """
    How much tcbridge logs, and its optional log file (rotated at
    C{max_bytes}, keeping C{backups} old files, as C{format} lines).
    """

    level: str = "INFO"
    file: str | None = None
    max_bytes: int = 10_000_000
    backups: int = 5
    format: Literal["text", "json"] = "text"


@frozen
class Config:
    """
    Everything tcbridge needs to run, validated.

    :ivar path: the file it came from (for messages).
    :ivar layout: C{"2015"} for the 2015 bridge layout ([auth], [sources]),
        C{"v2"} for the v2 connector layout ([threatconnect]), C{"demo"}
        for the built-in demo.
    :ivar notices: human sentences about options that are accepted but not
        active, not needed, or unknown; shown at start and on the page.
    :ivar other_instances: more ThreatConnect instances
        (C{[threatconnect:<name>]} sections), merged into the one feed.
    """

    path: str
    layout: Literal["2015", "v2", "demo"]
    threatconnect: ThreatConnectSettings
    feed: FeedOptions = Factory(FeedOptions)
    sync: SyncSettings = Factory(SyncSettings)
    listener: ListenerSettings = Factory(ListenerSettings)
    carbonblack: CarbonBlackSettings = Factory(CarbonBlackSettings)
    logging: LoggingSettings = Factory(LoggingSettings)
    notices: tuple[str, ...] = ()
    other_instances: tuple[ThreatConnectSettings, ...] = ()

    @property
    def instances(self) -> tuple[ThreatConnectSettings, ...]:
        """
        Every ThreatConnect instance, the main one first.
        """
        return (self.threatconnect, *self.other_instances)

    @property
    def sources(self) -> tuple[Source, ...]:
        """
        The sources of every instance, in order.
        """
        return tuple(source for tc in self.instances for source in tc.sources)

    def secrets(self) -> list[str]:
        """
        Every secret in this configuration, to strip from any text that
        leaves the process (a last line of defence: messages are built
        without them; see L{tcbridge.secrets.redact}).
        """
        listener = self.listener
        found = [self.carbonblack.server_token or "", listener.password or ""]
        found.append(listener.token or "")
        for tc in self.instances:
            found.append(tc.secret_key)
            if tc.https_proxy:
                password = urlsplit(tc.https_proxy).password
                if password:
                    found.append(password)
        return [s for s in found if len(s) >= 4]

    def display(self) -> list[tuple[str, str]]:
        """
        The settings as (name, value) rows for the diagnostics page, with
        every secret masked.
        """
        return [
            ("config file", self.path),
            ("layout", self.layout),
            *_threatconnect_rows(self.threatconnect),
            *_feed_rows(self.feed),
            *_network_rows(self.threatconnect, self.sync),
            *_listener_rows(self.listener),
            *_service_rows(self),
            *(row for tc in self.other_instances for row in _instance_rows(tc)),
        ]


def _instance_rows(tc: ThreatConnectSettings) -> list[tuple[str, str]]:
    """
    The rows of a named instance: its account, sources and network.
    """
    rows = [*_threatconnect_rows(tc), *_network_rows(tc, None)]
    return [(f"[threatconnect:{tc.instance}] {name}", value) for name, value in rows]


def _threatconnect_rows(tc: ThreatConnectSettings) -> list[tuple[str, str]]:
    return [
        ("ThreatConnect API url", tc.api_url),
        ("ThreatConnect web url", tc.web_url),
        ("api_key", tc.api_key),
        ("secret_key", f"{mask(tc.secret_key)}, from {tc.secret_source}"),
        ("sources", ", ".join(f"{s.name} ({s.kind}: {s.value})" for s in tc.sources)),
    ]


def _feed_rows(feed: FeedOptions) -> list[tuple[str, str]]:
    left_out = [
        what
        for what, on in (
            ("reserved values", feed.exclude_reserved),
            ("private and documentation addresses", feed.exclude_private),
        )
        if on
    ]
    rows = [
        ("indicator types", ", ".join(t for t in KNOWN_TYPES if t in feed.types)),
        ("score from", _SCORE_TEXT[feed.score_source]),
        ("minimum rating", "none" if feed.min_rating is None else f"{feed.min_rating:g}"),
        ("minimum score", str(feed.min_score)),
        ("left out", ", ".join(left_out) or "nothing by rule"),
        (
            "max_age_days",
            "no age limit"
            if feed.max_age_days is None
            else f"{feed.max_age_days} (indicators last modified longer ago are left out)",
        ),
        ("grouping", feed.grouping),
        ("max_reports", "no limit" if feed.max_reports is None else str(feed.max_reports)),
    ]
    for excluded in feed.exclusions:
        rows.append((excluded.option, f"{excluded.path} ({len(excluded.lines)} lines)"))
    return rows


def _network_rows(tc: ThreatConnectSettings, sync: SyncSettings | None) -> list[tuple[str, str]]:
    rows = [
        ("API version", tc.api_version),
        ("https_proxy", mask_url(tc.https_proxy) if tc.https_proxy else "(none)"),
        ("ca_file", tc.ca_file or "(the system's trust store)"),
        (
            "TLS verification",
            "on"
            if tc.verify_tls
            else "OFF: ThreatConnect's certificate is not checked "
            "(ssl_verify_api_requests = false)",
        ),
        ("attempts per request", str(tc.max_attempts)),
    ]
    if sync is None:
        return rows
    return [
        *rows,
        ("sync deadline (minutes)", f"{sync.deadline_minutes:g}"),
        ("max_shrink_percent", f"{sync.max_shrink_percent:g}"),
        ("stale after (intervals)", f"{sync.stale_after_intervals:g}"),
    ]


def _listener_rows(listener: ListenerSettings) -> list[tuple[str, str]]:
    scheme = "https" if listener.tls_cert else "http"
    methods = [
        f"basic ({listener.username}, password hidden)" if listener.username else "",
        "bearer token (hidden)" if listener.token else "",
    ]
    return [
        ("listener", f"{scheme}://{listener.address}:{listener.port}"),
        ("listener authentication", ", ".join(m for m in methods if m) or "none"),
        ("listener_allow", ", ".join(listener.allow) or "any client"),
    ]


def _service_rows(config: Config) -> list[tuple[str, str]]:
    cb, log = config.carbonblack, config.logging
    return [
        (
            "Carbon Black server sync",
            f"{cb.server_url} (token hidden; TLS verification {'on' if cb.verify_tls else 'OFF'})"
            if cb.server_url
            else "off",
        ),
        (
            "log file",
            f"{log.file} ({log.format}, rotated at {log.max_bytes} bytes, {log.backups} kept)"
            if log.file
            else "(twistd's log only)",
        ),
        ("feed_retrieval_minutes", f"{config.sync.feed_retrieval_minutes:g}"),
        (
            "incremental sync",
            f"on: full sync every {config.sync.full_sync_hours:g} h, deltas reach back "
            f"{config.sync.delta_overlap_minutes:g} min"
            if config.sync.incremental
            else "off (every sync pulls everything)",
        ),
        (
            "cache_folder",
            config.sync.cache_folder or "(none: the feed is kept in memory only)",
        ),
        ("log_level", log.level),
        ("request timeout (s)", f"{config.threatconnect.request_timeout:g}"),
    ]
