# -*- test-case-name: tests.unit.test_tap -*-
"""
The twistd plugin's options and service tree: C{twistd -n tcbridge --config
FILE} serves the feed; C{... write FILE} syncs once, writes the feed and stops;
C{--demo} runs against the built-in ThreatConnect simulator.
"""

from __future__ import annotations

import sys
from ipaddress import ip_network
from typing import Any

from attrs import evolve
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.server import Site

from tcbridge.config import Config, ConfigError, load_config
from tcbridge.files import folder_problem
from tcbridge.logfile import FileLogging, install_file_logging
from tcbridge.logs import bridge_observer, set_log_level
from tcbridge.memory import freeze_startup_objects, return_freed_memory
from tcbridge.options import ServiceOptions
from tcbridge.reload import Reloader, ReloadService
from tcbridge.sync.service import WriteOnceService, sync_timer
from tcbridge.web.app import FeedApp
from tcbridge.web.guard import guard
from tcbridge.web.listen import listener_endpoint
from tcbridge.wiring import Bridge, build_bridge, explainer, images

log = Logger(observer=bridge_observer)


class Options(ServiceOptions):
    """
    Command line of C{twistd tcbridge} (see L{ServiceOptions}); the
    configuration file is loaded here, so that a bad one is one line on
    stderr and exit status 2 before twistd starts anything.
    """

    def postOptions(self) -> None:
        """
        Check the command line, then load the config file.
        """
        super().postOptions()
        self["loaded"] = None
        if self["config"]:
            try:
                self["loaded"] = load_config(self["config"])
            except ConfigError as e:
                sys.stderr.write(f"tcbridge: {e}\n")
                raise SystemExit(2) from None


class _FileLog(Service):
    """
    tcbridge's own log file (C{log_file}), rotated by size, beside twistd's
    log, for as long as the service runs.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._logging: FileLogging | None = None

    def startService(self) -> None:
        super().startService()
        config = self._config
        self._logging = install_file_logging(
            config.logging.file or "",
            level=config.logging.level,
            max_bytes=config.logging.max_bytes,
            backups=config.logging.backups,
            fmt=config.logging.format,
        )

    def stopService(self) -> None:
        super().stopService()
        if self._logging is not None:
            self._logging.close()
            self._logging = None


class _Cleanup(Service):
    """
    Closes what the bridge opened (the HTTP connection pool, the demo
    simulator's port) when the service tree stops.
    """

    def __init__(self, bridge: Bridge, listening: IListeningPort | None) -> None:
        self._bridge = bridge
        self._listening = listening

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        waits = [defer.ensureDeferred(_closed(self._bridge))]
        if self._listening is not None:
            stopped = self._listening.stopListening()
            if stopped is not None:
                waits.append(stopped)
        return defer.gatherResults(waits)


async def _closed(bridge: Bridge) -> None:
    await bridge.pool.closeCachedConnections()


def makeService(options: Options) -> IService:
    """
    Build the service tree on the global reactor (twistd's entry point).
    """
    from twisted.internet import reactor

    return_freed_memory()
    service = build_service(options, reactor)
    freeze_startup_objects()
    return service


def build_service(options: Options, reactor: Any) -> MultiService:
    """
    Build the service tree: the sync timer and the web listener, or the
    one-shot writer in write mode.
    """
    write = options.subCommand == "write"
    listening = None
    config: Config
    if options["demo"]:
        from tcbridge.simulator.demo import start_demo

        demo = start_demo(reactor, listener_port=6100)
        config, listening = demo.config, demo.server.port
    else:
        config = options["loaded"]
    if options["port"] is not None:
        config = evolve(config, listener=evolve(config.listener, port=options["port"]))
    set_log_level(config.logging.level)
    if not write and config.sync.cache_folder is not None:
        problem = folder_problem(config.sync.cache_folder)
        if problem is not None:
            sys.stderr.write(f"tcbridge: {config.path}: [bridge] cache_folder: {problem}\n")
            raise SystemExit(2)
    bridge = build_bridge(config, reactor, use_cache=not write, threads=not write)
    top = MultiService()
    if config.logging.file:
        _FileLog(config).setServiceParent(top)
    _Cleanup(bridge, listening).setServiceParent(top)
    for notice in config.notices:
        log.warn("Configuration: {notice}", notice=notice)
    if write:
        path = options.subOptions["path"]
        WriteOnceService(bridge.cycle, path, reactor.stop).setServiceParent(top)
        return top
    timer = sync_timer(bridge.cycle, config.sync.feed_retrieval_minutes, reactor)
    timer.setServiceParent(top)
    config_rows = config.display()
    web = FeedApp(
        bridge.store,
        bridge.status,
        reactor,
        config_rows,
        bridge.feedinfo,
        images(),
        bridge.run_heavy,
        interval_seconds=config.sync.feed_retrieval_minutes * 60.0,
        stale_after_intervals=config.sync.stale_after_intervals,
        request_counts=lambda: bridge.cycle.status_counts,
        sync_log=bridge.sync_log,
        explain=explainer(bridge),
    )
    if options["config"]:
        reloader = Reloader(options["config"], bridge, reactor, timer, config_rows, web)
        ReloadService(reloader, lambda f: reactor.callFromThread(f)).setServiceParent(top)
    try:
        endpoint = listener_endpoint(
            reactor,
            address=config.listener.address,
            port=config.listener.port,
            tls_cert=config.listener.tls_cert,
            tls_key=config.listener.tls_key,
        )
    except ValueError as e:
        sys.stderr.write(f"tcbridge: {config.path}: [bridge] {e}\n")
        raise SystemExit(2) from None
    resource = guard(
        web.resource(),
        username=config.listener.username,
        password=config.listener.password,
        token=config.listener.token,
        allow=[ip_network(net) for net in config.listener.allow],
        clock=reactor,
    )
    _Listener(endpoint, Site(resource), config).setServiceParent(top)
    return top


class _Listener(StreamServerEndpointService):
    """
    The web listener; it logs the feed's URL once the port is open (the
    configured port may be 0) and fails twistd at once if it cannot listen.
    """

    _raiseSynchronously = True

    def __init__(self, endpoint: Any, factory: Site, config: Config) -> None:
        super().__init__(endpoint, factory)
        self._config = config

    def startService(self) -> None:
        super().startService()
        if self._waitingForPort is not None:
            self._waitingForPort.addCallback(_log_port, self._config)


def _log_port(port: IListeningPort, config: Config) -> IListeningPort:
    scheme = "https" if config.listener.tls_cert else "http"
    host = config.listener.address
    if ":" in host:
        host = f"[{host}]"
    number = port.getHost().port  # type: ignore[attr-defined]
    log.info(
        "Serving the Carbon Black feed at {scheme}://{host}:{port}/threatconnect/json "
        "and diagnostics at {scheme}://{host}:{port}/",
        scheme=scheme,
        host=host,
        port=number,
    )
    return port
