"""
The monitoring kit in C{etc/monitoring/}: Prometheus alert rules and a
Grafana dashboard.  Every metric they name is one tcbridge exports, and
the rules cover what an operator must hear about.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.exposition import generate_latest

from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore, Snapshot
from tcbridge.web.metrics import BridgeCollector, make_registry

KIT = Path(__file__).resolve().parents[2] / "etc" / "monitoring"
_NAME = re.compile(r"\btcbridge_[a-z_]+")


def _exported() -> set[str]:
    """
    The metric names a bridge exposes on /metrics (with a request counted,
    a Carbon Black sync failed and a feed held back, so that every family
    has samples).
    """
    status = SyncStatus(started_at=0.0)
    status.cb_last_error_at = 10.0
    status.skipped = {"invalid md5": 1}
    store = FeedStore(empty_body=b"{}")
    store.swap(Snapshot.of(b"{}", 0, 0, 50.0))
    collector = BridgeCollector(store, status, lambda: 100.0, lambda: {429: 1, 200: 5})
    text = generate_latest(make_registry(collector)).decode()
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"
    }


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((KIT / "tcbridge-alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_rules_name_only_exported_metrics() -> None:
    """
    Each rule has an expression, a severity and a summary, and uses only
    metrics tcbridge exports.
    """
    exported = _exported()
    for rule in _rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]
        used = set(_NAME.findall(rule["expr"]))
        assert used and used <= exported, (rule["alert"], used - exported)


def test_rules_cover_what_operators_must_hear() -> None:
    """
    Feed stale, syncs failing, a result held back by the shrink guard,
    Carbon Black sync failing and ThreatConnect throttling each have a rule.
    """
    by_name = {rule["alert"]: rule["expr"] for rule in _rules()}
    assert "tcbridge_feed_age_seconds" in by_name["TcbridgeFeedStale"]
    assert 'result="failure"' in by_name["TcbridgeSyncsFailing"]
    assert "tcbridge_feed_held_back" in by_name["TcbridgeFeedHeldBack"]
    assert "tcbridge_cb_sync_failing" in by_name["TcbridgeCarbonBlackSyncFailing"]
    assert 'status="429"' in by_name["TcbridgeThreatConnectThrottling"]


def test_dashboard_names_only_exported_metrics() -> None:
    """
    The Grafana dashboard is valid JSON whose panels query only exported
    metrics, and it shows every metric family tcbridge exports.
    """
    dashboard = json.loads((KIT / "tcbridge-dashboard.json").read_text())
    exported = _exported()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = set(_NAME.findall(target["expr"]))
            assert names <= exported, (panel["title"], names - exported)
            used |= names
    families = {re.sub(r"_(total|sum|count)$", "", name) for name in exported}
    shown = {re.sub(r"_(total|sum|count)$", "", name) for name in used}
    assert families - shown == {"tcbridge_up"}


def test_metrics_for_the_rules() -> None:
    """
    The metrics the rules need behave: the Carbon Black sync is failing
    while its last error is newer than its last success, and the interval
    is the configured one.
    """
    status = SyncStatus(started_at=0.0)
    collector = BridgeCollector(
        FeedStore(empty_body=b"{}"), status, lambda: 0.0, interval_seconds=900
    )
    text = generate_latest(make_registry(collector)).decode()
    assert "tcbridge_cb_sync_failing 0.0" in text and "tcbridge_sync_interval_seconds 900.0" in text
    status.cb_last_error_at, status.cb_last_sync = 20.0, 10.0
    assert "tcbridge_cb_sync_failing 1.0" in generate_latest(make_registry(collector)).decode()
    status.cb_last_sync = 30.0
    text = generate_latest(make_registry(collector)).decode()
    assert "tcbridge_cb_sync_failing 0.0" in text
    assert "tcbridge_cb_sync_last_success_timestamp_seconds 30.0" in text
