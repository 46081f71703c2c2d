# -*- test-case-name: tests.unit.test_reload -*-
"""
Reloading the configuration on SIGHUP without dropping the served feed: the
next sync uses the new settings, the page shows them, and a file with a
mistake leaves everything as it was (and says why).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from attrs import define, field
from twisted.application.service import Service
from twisted.logger import Logger

from tcbridge.config import Config, ConfigError, load_config
from tcbridge.logs import bridge_observer, set_log_level
from tcbridge.sync.service import SyncService
from tcbridge.web.app import FeedApp
from tcbridge.wiring import Bridge, make_cb_sync, make_client, make_other_clients

log = Logger(observer=bridge_observer)

#: Settings that only take effect when tcbridge starts again, by the name
#: users write in the file.
_RESTART_KEYS: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("listener_address", lambda c: c.listener.address),
    ("listener_port", lambda c: c.listener.port),
    ("listener_tls_cert", lambda c: c.listener.tls_cert),
    ("listener_tls_key", lambda c: c.listener.tls_key),
    ("listener_username", lambda c: c.listener.username),
    ("listener_password", lambda c: c.listener.password),
    ("listener_token", lambda c: c.listener.token),
    ("listener_allow", lambda c: c.listener.allow),
    ("log_file", lambda c: c.logging.file),
    ("log_format", lambda c: c.logging.format),
)


@define
class Reloader:
    """
    Applies a re-read configuration file to a running bridge.

    :param config_rows: the list the diagnostics page shows; replaced in
        place.
    :param web: the pages, told the new sync interval for their health
        rules.
    """

    _path: str
    _bridge: Bridge
    _reactor: Any
    _timer: SyncService
    _config_rows: list[tuple[str, str]]
    _web: FeedApp | None = None
    _listening: Config = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._listening = self._bridge.cycle.config

    def reload(self) -> bool:
        """
        Re-read the file and apply it; return C{False} (and keep the current
        settings) if it has a problem.
        """
        status = self._bridge.status
        try:
            config = load_config(self._path)
        except ConfigError as e:
            message = f"Reload failed, still running with the previous configuration: {e}"
            log.error("{message}", message=message)
            status.notices = (*[n for n in status.notices if not n.startswith("Reload")], message)
            return False
        changed = [k for k, value in _RESTART_KEYS if value(config) != value(self._listening)]
        notices: tuple[str, ...] = ()
        if changed:
            notices = (
                f"Reload: {', '.join(changed)} changed; restart tcbridge to apply "
                "(until then the old setting stays in use)",
            )
        cycle = self._bridge.cycle
        client = make_client(config, self._reactor, self._bridge.pool)
        old = cycle.config
        cycle.reconfigure(
            config,
            client,
            make_cb_sync(config, self._reactor, self._bridge.pool),
            notices,
            make_other_clients(config, self._reactor, self._bridge.pool),
        )
        if _pulled_data(config) != _pulled_data(old):
            # What the store holds was pulled for other sources or filters.
            self._bridge.cycle.request_full_sync()
        self._bridge.store.cache_dir = config.sync.cache_folder
        self._timer.set_interval(config.sync.feed_retrieval_minutes)
        seconds = self._timer.interval
        set_log_level(config.logging.level)
        if self._web is not None:
            self._web.set_schedule(seconds, config.sync.stale_after_intervals)
        self._config_rows[:] = config.display()
        log.info("Configuration reloaded from {path}", path=self._path)
        return True


class ReloadService(Service):
    """
    Calls L{Reloader.reload} on SIGHUP (C{systemctl reload}, C{kill -HUP}),
    in the reactor thread.
    """

    def __init__(self, reloader: Reloader, call_from_thread: Callable[..., Any]) -> None:
        self.reloader = reloader
        self._call = call_from_thread
        self._previous: Any = None

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._call(self.reloader.reload)

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._on_hup)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None


def _pulled_data(config: Config) -> tuple[object, ...]:
    """
    What decides the indicators a full sync stores: the sources, where
    each instance is and how it is asked, and the feed's filters (a new
    key or timeout does not change them).
    """
    where = tuple((tc.instance, tc.api_url, tc.api_version) for tc in config.instances)
    return (config.sources, where, config.feed)
