# -*- test-case-name: tests.unit.test_web_metrics -*-
"""
Prometheus metrics for C{/metrics}, read from the sync status, the store and
the ThreatConnect client at scrape time.

Each L{FeedApp <tcbridge.web.app.FeedApp>} has its own C{CollectorRegistry}
holding one L{BridgeCollector}; nothing is registered globally, so two
bridges (or two tests) in one process never share numbers.

Metrics::

    tcbridge_up                                  1 while the process answers
    tcbridge_health_status{status}               1 for the current /healthz state, 0 for the others
    tcbridge_sync_cycles_total{result}           finished syncs, result="success"|"failure"
    tcbridge_sync_running                        1 while a sync runs
    tcbridge_sync_duration_seconds               how long the last successful sync took
    tcbridge_sync_cycle_seconds_sum / _count     time spent in all finished syncs, and their number
    tcbridge_last_success_timestamp_seconds      end of the last successful sync (0: never)
    tcbridge_last_attempt_timestamp_seconds      start of the last sync attempt (0: never)
    tcbridge_feed_reports                        reports in the published feed
    tcbridge_feed_iocs{type}                     IOCs of each type in the feed of the last success
    tcbridge_feed_bytes                          size of the feed served (uncompressed)
    tcbridge_feed_gzip_bytes                     size of its gzip form
    tcbridge_feed_age_seconds                    age of the published feed (no sample before one)
    tcbridge_feed_held_back                      1 while the shrink guard holds a new feed back
    tcbridge_threatconnect_requests_total{status} ThreatConnect requests by outcome: HTTP status,
                                                 "timeout", "connection" or "cancelled"
    tcbridge_skipped_iocs{reason}                IOCs left out of the feed of the last success
    tcbridge_sync_interval_seconds               the configured time between syncs
    tcbridge_cb_sync_last_success_timestamp_seconds  when the Carbon Black server last synchronized
                                                 the feed on our request (0: never)
    tcbridge_cb_sync_failing                     1 while the last Carbon Black server sync failed
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore, Snapshot
from tcbridge.web.health import STATES, Health, assess, held_back

#: The classic Prometheus text format that C{generate_latest} writes.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

IOC_TYPES = ("md5", "sha256", "ipv4", "ipv6", "dns")

RequestCounts = Callable[[], Mapping[int | str, int]]


def no_requests() -> Mapping[int | str, int]:
    """
    The default request counts: none.
    """
    return {}


class BridgeCollector(Collector):
    """
    Reads the bridge's state each time Prometheus scrapes.

    :param clock: a callable returning seconds since the epoch (the injected
        reactor's C{seconds}).
    :param request_counts: the ThreatConnect client's C{status_counts}.
    """

    def __init__(
        self,
        store: FeedStore,
        status: SyncStatus,
        clock: Callable[[], float],
        request_counts: RequestCounts = no_requests,
        interval_seconds: float = 3600.0,
        stale_after_intervals: float = 3.0,
    ) -> None:
        self._store = store
        self._status = status
        self._clock = clock
        self._request_counts = request_counts
        self._interval = interval_seconds
        self._stale_after_intervals = stale_after_intervals

    def collect(self) -> Iterable[Metric]:
        """
        The metrics, as of now.
        """
        status = self._status
        snapshot = self._store.current
        health = assess(
            status, snapshot, self._clock(), self._interval, self._stale_after_intervals
        )
        yield GaugeMetricFamily("tcbridge_up", "1 while the bridge answers.", value=1)
        yield from self._health(health)
        yield from self._syncs(status)
        yield from self._feed(status, snapshot, health)
        yield from self._requests_and_skips(status)
        yield from self._schedule_and_cb(status)
        yield from self._incremental(status)

    def _health(self, health: Health) -> Iterable[Metric]:
        states = GaugeMetricFamily(
            "tcbridge_health_status",
            "1 for the bridge's current /healthz state, 0 for the others.",
            labels=["status"],
        )
        for state in STATES:
            states.add_metric([state], 1 if health.state == state else 0)
        yield states

    def _syncs(self, status: SyncStatus) -> Iterable[Metric]:
        cycles = CounterMetricFamily(
            "tcbridge_sync_cycles", "Finished sync cycles by result.", labels=["result"]
        )
        cycles.add_metric(["success"], status.cycles_ok)
        cycles.add_metric(["failure"], status.cycles_failed)
        yield cycles

        yield GaugeMetricFamily(
            "tcbridge_sync_running", "1 while a sync runs.", value=1 if status.running else 0
        )
        yield GaugeMetricFamily(
            "tcbridge_sync_duration_seconds",
            "How long the last successful sync took (0 before the first).",
            value=status.last_duration or 0.0,
        )
        yield SummaryMetricFamily(
            "tcbridge_sync_cycle_seconds",
            "Time spent in finished syncs, successful or not.",
            count_value=status.cycles_ok + status.cycles_failed,
            sum_value=status.cycle_seconds_total,
        )
        yield GaugeMetricFamily(
            "tcbridge_last_success_timestamp_seconds",
            "When the last successful sync ended, seconds since the epoch (0: never).",
            value=status.last_success or 0.0,
        )
        yield GaugeMetricFamily(
            "tcbridge_last_attempt_timestamp_seconds",
            "When the last sync attempt started, seconds since the epoch (0: never).",
            value=status.last_attempt or 0.0,
        )

    def _feed(
        self, status: SyncStatus, snapshot: Snapshot | None, health: Health
    ) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "tcbridge_feed_reports",
            "Reports in the published feed.",
            value=0 if snapshot is None else snapshot.reports,
        )
        iocs = GaugeMetricFamily(
            "tcbridge_feed_iocs",
            "IOC values of each type in the feed of the last successful sync.",
            labels=["type"],
        )
        kinds = dict(status.iocs_by_kind)
        for kind in IOC_TYPES:
            kinds.setdefault(kind, 0)
        for kind, count in sorted(kinds.items()):
            iocs.add_metric([kind], count)
        yield iocs
        yield GaugeMetricFamily(
            "tcbridge_feed_bytes",
            "Size of the feed document served, uncompressed.",
            value=len(self._store.body()),
        )
        yield GaugeMetricFamily(
            "tcbridge_feed_gzip_bytes",
            "Size of the gzip form of the published feed (0 before the first).",
            value=0 if snapshot is None else len(snapshot.gzip_body),
        )
        age = GaugeMetricFamily(
            "tcbridge_feed_age_seconds",
            "Seconds since the published feed was published; no sample before the first.",
        )
        if health.feed_age is not None:
            age.add_metric([], health.feed_age)
        yield age
        yield GaugeMetricFamily(
            "tcbridge_feed_held_back",
            "1 while the shrink guard holds a new feed back.",
            value=0 if held_back(status) is None else 1,
        )

    def _requests_and_skips(self, status: SyncStatus) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "tcbridge_threatconnect_requests",
            "ThreatConnect requests by outcome: the HTTP status, or timeout, connection, "
            "cancelled.",
            labels=["status"],
        )
        for outcome, count in sorted(self._request_counts().items(), key=lambda item: str(item[0])):
            requests.add_metric([str(outcome)], count)
        yield requests

        skipped = GaugeMetricFamily(
            "tcbridge_skipped_iocs",
            "IOC values left out of the feed of the last successful sync, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(status.skipped.items()):
            skipped.add_metric([reason], count)
        yield skipped

    def _incremental(self, status: SyncStatus) -> Iterable[Metric]:
        inc = status.incremental
        yield GaugeMetricFamily(
            "tcbridge_incremental_last_full_timestamp_seconds",
            "When the last full sync was committed (0: never, or incremental sync off).",
            value=(inc.last_full if inc is not None else None) or 0.0,
        )
        yield GaugeMetricFamily(
            "tcbridge_incremental_last_delta_timestamp_seconds",
            "When the last delta sync was committed (0: never, or incremental sync off).",
            value=(inc.last_delta if inc is not None else None) or 0.0,
        )
        changes = GaugeMetricFamily(
            "tcbridge_incremental_changes",
            "Indicators the last committed cycle added or updated, and removed.",
            labels=["change"],
        )
        changes.add_metric(["added"], 0 if inc is None else inc.added)
        changes.add_metric(["removed"], 0 if inc is None else inc.removed)
        yield changes

    def _schedule_and_cb(self, status: SyncStatus) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "tcbridge_sync_interval_seconds",
            "The configured time between syncs (feed_retrieval_minutes).",
            value=self._interval,
        )
        yield GaugeMetricFamily(
            "tcbridge_cb_sync_last_success_timestamp_seconds",
            "When the Carbon Black server last synchronized the feed on our request (0: never).",
            value=status.cb_last_sync or 0.0,
        )
        failing = status.cb_last_error_at is not None and (
            status.cb_last_sync is None or status.cb_last_error_at > status.cb_last_sync
        )
        yield GaugeMetricFamily(
            "tcbridge_cb_sync_failing",
            "1 while the last Carbon Black server sync failed.",
            value=1 if failing else 0,
        )


def make_registry(collector: BridgeCollector) -> CollectorRegistry:
    """
    A registry of its own holding only C{collector}.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """
    The registry's metrics in the Prometheus text format (version 0.0.4).
    """
    return generate_latest(registry)
