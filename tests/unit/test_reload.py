"""
Tests for L{tcbridge.reload}: a re-read config file takes effect without
dropping the served feed; a bad one changes nothing and says why.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock

from tcbridge.reload import ReloadService
from tcbridge.sync.cycle import SyncCycle
from tcbridge.sync.service import SyncService
from tcbridge.tap import Options, build_service

WriteFile = Callable[[str, str], str]

CONFIG = """\
[threatconnect]
url=https://tc.example/api
api_key=1234
secret_key=s3cr3t-value
sources=Common Community
[bridge]
listener_port=6200
cache_folder=
feed_retrieval_minutes=60
"""


def _service(path: str) -> tuple[MultiService, ReloadService, MemoryReactorClock]:
    options = Options()
    options.parseOptions(["--config", path])
    reactor = MemoryReactorClock()
    service = build_service(options, reactor)
    reloaders = [s for s in service if isinstance(s, ReloadService)]
    assert len(reloaders) == 1
    return service, reloaders[0], reactor


def test_reload_applies_new_settings(write_file: WriteFile) -> None:
    """
    After the file changes, a reload makes the next sync use the new
    sources and interval, and the page shows the new configuration.
    """
    path = write_file("tc.conf", CONFIG)
    service, reload_service, _ = _service(path)
    write_file(
        "tc.conf",
        CONFIG.replace("sources=Common Community", "sources=Acme Corp").replace(
            "feed_retrieval_minutes=60", "feed_retrieval_minutes=15"
        ),
    )
    assert reload_service.reloader.reload() is True
    bridge_cycle = reload_service.reloader._bridge.cycle
    assert [s.value for s in bridge_cycle.config.threatconnect.sources] == ["Acme Corp"]
    timer = next(s for s in service if isinstance(s, SyncService))
    assert timer.interval == 15 * 60
    web = reload_service.reloader._web
    assert web is not None and web._interval_seconds == 15 * 60
    rows = dict(reload_service.reloader._config_rows)
    assert rows["feed_retrieval_minutes"] == "15"
    assert "Acme Corp" in rows["sources"]


def test_bad_file_keeps_everything(write_file: WriteFile) -> None:
    """
    A reload of a file with a mistake keeps the running configuration and
    puts the one-line error among the page's notices.
    """
    path = write_file("tc.conf", CONFIG)
    _, reload_service, _ = _service(path)
    write_file("tc.conf", CONFIG.replace("listener_port=6200", "listener_port=x"))
    assert reload_service.reloader.reload() is False
    reloader = reload_service.reloader
    assert [s.value for s in reloader._bridge.cycle.config.threatconnect.sources] == [
        "Common Community"
    ]
    notices = reloader._bridge.status.notices
    assert any(
        "Reload failed" in n and "listener_port: 'x' is not a whole number" in n for n in notices
    )


def test_listener_change_needs_restart(write_file: WriteFile) -> None:
    """
    A changed listener port is reported as needing a restart.
    """
    path = write_file("tc.conf", CONFIG)
    _, reload_service, _ = _service(path)
    write_file("tc.conf", CONFIG.replace("listener_port=6200", "listener_port=6300"))
    assert reload_service.reloader.reload() is True
    notices = reload_service.reloader._bridge.status.notices
    assert any("listener_port changed; restart tcbridge to apply" in n for n in notices)


def test_sighup_triggers_reload(write_file: WriteFile) -> None:
    """
    The service answers SIGHUP by reloading in the reactor thread, and puts
    the previous handler back when it stops.
    """
    path = write_file("tc.conf", CONFIG)
    _, reload_service, _ = _service(path)
    calls: list[object] = []
    reload_service._call = calls.append  # type: ignore[method-assign]
    before = signal.getsignal(signal.SIGHUP)
    reload_service.startService()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
    finally:
        reload_service.stopService()
    assert calls == [reload_service.reloader.reload]
    assert signal.getsignal(signal.SIGHUP) == before


def test_reload_leaves_no_stale_object(write_file: WriteFile) -> None:
    """
    After a reload everything that serves or syncs sees the new file: the
    bridge's configuration and client are the cycle's new ones (request
    counts go on from where they stood), the next cycle signs with the new
    key and asks the new URL, the timer waits the new interval once it is
    running, and the page shows the new settings; nothing keeps the old
    configuration.
    """
    path = write_file("tc.conf", CONFIG)
    service, reload_service, reactor = _service(path)
    reloader = reload_service.reloader
    bridge = reloader._bridge
    old_config, old_client = bridge.config, bridge.client
    timer = next(s for s in service if isinstance(s, SyncService))
    timer.startService()
    old_client.requests = 7
    write_file(
        "tc.conf",
        CONFIG.replace("https://tc.example/api", "https://tc2.example/api")
        .replace("api_key=1234", "api_key=5678")
        .replace("feed_retrieval_minutes=60", "feed_retrieval_minutes=5"),
    )
    assert reloader.reload() is True
    assert bridge.config is bridge.cycle.config is not old_config
    assert bridge.config.threatconnect.api_url == "https://tc2.example/api"
    assert bridge.client is bridge.cycle.client is not old_client
    assert (bridge.client.base_url, bridge.client.api_key) == ("https://tc2.example/api", "5678")
    assert bridge.cycle.requests == 7  # counting goes on where it stood
    assert timer.interval == 5 * 60
    assert dict(reloader._config_rows)["ThreatConnect API url"] == "https://tc2.example/api"
    # The wait already under way keeps its length; the ones after it are new.
    started = [bridge.status.last_attempt]
    for wait in (60 * 60, 5 * 60):
        bridge.cycle.cancel()
        reactor.advance(wait)
        started.append(bridge.status.last_attempt)
    assert started[0] is not None
    assert [t - started[0] for t in started if t is not None] == [0, 3600, 3900]
    bridge.cycle.cancel()
    timer.stopService()


def test_reload_adds_an_instance_with_its_own_client(write_file: WriteFile) -> None:
    """
    A [threatconnect:<name>] section added to the file takes effect on
    reload: the next cycle has a client for it, signing with its key
    against its URL, and the page lists it; request counts go on from
    where they were.
    """
    path = write_file("tc.conf", CONFIG)
    _, reload_service, _ = _service(path)
    reloader = reload_service.reloader
    cycle = reloader._bridge.cycle
    assert cycle.other_clients == ()
    cycle.client.requests = 3
    write_file(
        "tc.conf",
        CONFIG + "[threatconnect:partner]\nurl=https://partner.example/api\napi_key=9999\n"
        "secret_key=partner-secret\nsources=*\n",
    )
    assert reloader.reload() is True
    (partner,) = cycle.other_clients
    assert (partner.base_url, partner.api_key) == ("https://partner.example/api", "9999")
    assert cycle.requests == 3
    assert [s.name for s in cycle.config.sources] == ["Common Community", "partner/*"]
    rows = dict(reloader._config_rows)
    assert rows["[threatconnect:partner] ThreatConnect API url"] == "https://partner.example/api"


def test_only_changes_to_what_is_pulled_ask_for_a_full_sync(
    write_file: WriteFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A new secret or retry count reloads without a full sync; another URL,
    API version or source asks for one (the store's content would be of
    other data).
    """
    path = write_file("tc.conf", CONFIG)
    _, reload_service, _ = _service(path)
    reloader = reload_service.reloader
    asked: list[bool] = []
    monkeypatch.setattr(SyncCycle, "request_full_sync", lambda self: asked.append(True))
    for change, full in (
        (("secret_key=s3cr3t-value", "secret_key=an0ther-value"), False),
        (("feed_retrieval_minutes=60", "feed_retrieval_minutes=60\nmax_attempts=2"), False),
        (("https://tc.example/api", "https://tc2.example/api"), True),
        (("sources=Common Community", "sources=Acme Corp"), True),
    ):
        write_file("tc.conf", CONFIG.replace(*change))
        assert reloader.reload() is True
        assert asked == ([True] if full else []), change
        asked.clear()
        write_file("tc.conf", CONFIG)
        assert reloader.reload() is True
        asked.clear()
