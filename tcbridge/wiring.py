# -*- test-case-name: tests.unit.test_tap -*-
"""
Builds the bridge's objects from a L{Config} and a reactor: the one place
that chooses real collaborators (a pooled treq client, a thread pool for heavy
steps).  Both the twistd plugin and the console command use it.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from attrs import frozen
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from tcbridge.cbserver import CbServerSync, feed_url_for
from tcbridge.childbuild import ChildBuild
from tcbridge.config import Config, ThreatConnectSettings
from tcbridge.explain import Explanation, explain
from tcbridge.feed.builder import FeedBuilder
from tcbridge.feed.document import FeedInfo, empty_document, feedinfo_dict, get_icon_bytes
from tcbridge.feed.history import AnyHistory, ReportHistory, history_from_reports
from tcbridge.feed.serialize import dumps
from tcbridge.feed.validator import validate_document
from tcbridge.indicatordb import ThreadedIndicatorDB
from tcbridge.logs import bridge_observer
from tcbridge.net.agent import make_agent
from tcbridge.seen import FILE_NAME as SEEN_FILE_NAME
from tcbridge.seen import last_written
from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore
from tcbridge.storechild import ChildStore
from tcbridge.sync.cycle import ShareFactory, SyncCycle
from tcbridge.sync.delta import FULL_SYNC_FILE, Incremental
from tcbridge.sync.shared import SharedPull
from tcbridge.sync.work import BuildFeed, RunHeavy, as_of, build_here, feed_settings, run_inline
from tcbridge.synclog import SyncLog
from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.pull import ShareListings
from tcbridge.threatconnect.retry import RetryPolicy

_log = Logger(namespace="tcbridge.wiring", observer=bridge_observer)


@frozen
class Bridge:
    """
    The parts of a running bridge, wired together.  The configuration and
    the ThreatConnect client are the cycle's (a reload gives the cycle new
    ones), so none of these parts is left holding old ones.
    """

    cycle: SyncCycle
    store: FeedStore
    status: SyncStatus
    run_heavy: RunHeavy
    feedinfo: dict[str, Any]
    pool: HTTPConnectionPool
    sync_log: SyncLog | None = None

    @property
    def config(self) -> Config:
        """
        The configuration in use (the latest one read).
        """
        return self.cycle.config

    @property
    def client(self) -> ThreatConnectClient:
        """
        The ThreatConnect client in use.
        """
        return self.cycle.client


def thread_runner(reactor: Any) -> RunHeavy:
    """
    A L{RunHeavy} that runs blocking work in the reactor's thread pool.
    """

    def run(f: Any, *args: Any) -> Any:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return run


def reactor_pause(reactor: Any) -> Callable[[], Awaitable[None]]:
    """
    A pause that lets the reactor run (serve requests, fire timers) before
    the caller goes on.
    """

    async def pause() -> None:
        await deferLater(reactor, 0, lambda: None)

    return pause


def check_cached_feed(
    store: FeedStore, status: SyncStatus, run_heavy: RunHeavy
) -> defer.Deferred[None]:
    """
    Finish checking the cached feed the service began serving at start
    (L{FeedStore.check_loaded}, in a thread); a damaged one is withdrawn
    and the page says so.
    """

    def settle(problem: str | None) -> None:
        if problem is not None:
            warning = store.drop_loaded(problem)
            if warning is not None:
                status.notices = (*status.notices, warning)

    d: defer.Deferred[None] = run_heavy(store.check_loaded).addCallback(settle)
    d.addErrback(lambda failure: _log.failure("Checking the cached feed failed", failure))
    return d


def read_cached_feed(body: bytes) -> list[dict[str, Any]]:
    """
    Parse and validate a cached feed file; return its reports.

    :raises ValueError: naming the first problem, if it is not a valid feed.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from None
    problems = validate_document(doc)
    if problems:
        raise ValueError(f"{len(problems)} problems; first: {problems[0]}")
    reports: list[dict[str, Any]] = doc["reports"]
    return reports


def make_client(
    config: Config,
    reactor: Any,
    pool: HTTPConnectionPool,
    serving: bool = True,
    instance: ThreatConnectSettings | None = None,
) -> ThreatConnectClient:
    """
    The signed ThreatConnect client for C{config}'s main instance (or for
    C{instance}): proxy, TLS trust, timeout and retries as configured,
    connections kept in C{pool}.

    :param serving: the reactor also serves HTTP, so big pages are parsed a
        slice at a time; write mode, which serves nothing, parses each whole.
    """
    tc = config.threatconnect if instance is None else instance
    agent = make_agent(
        reactor,
        pool=pool,
        connect_timeout=tc.request_timeout,
        proxy=tc.https_proxy,
        ca_file=tc.ca_file,
        verify=tc.verify_tls,
    )
    return ThreatConnectClient(
        HTTPClient(agent),
        reactor,
        tc.api_url,
        tc.api_key,
        tc.secret_key,
        timeout=tc.request_timeout,
        retry=RetryPolicy(attempts=tc.max_attempts),
        slice_pause=reactor_pause(reactor) if serving else None,
    )


def shares_pull(config: Config, threads: bool) -> bool:
    """
    Whether a sync pulls its C{*} and owner sources on two cores (L{SharedPull}): in
    write mode (no threads: nothing else runs), for an Expanded feed, whose
    per-indicator work makes the pull twice as long as the wire takes.  A
    grouped feed's pull is already close to the wire; a copy would cost it
    a second page in flight (about 30 MiB at 10,000 indicators a page) for
    a few percent.
    """
    return not threads and config.feed.grouping == "Expanded"


def pull_sharing(config: Config, reactor: Any) -> ShareFactory:
    """
    Write mode's pull on two cores (L{SharedPull}): for a cycle's builder,
    a client, its instance's name and a progress counter, a share whose
    copy makes the same client on a reactor of its own.
    """
    by_name = {tc.instance: tc for tc in config.instances}

    def share(
        builder: FeedBuilder,
        client: ThreatConnectClient,
        instance: str,
        on_counts: Callable[[int, int], None],
    ) -> ShareListings:
        settings = by_name[instance]

        def client_on(other: Any) -> ThreatConnectClient:
            pool = HTTPConnectionPool(other, persistent=True)
            return make_client(config, other, pool, serving=False, instance=settings)

        return SharedPull(builder, client, client_on, reactor, on_counts=on_counts)

    return share


def make_other_clients(
    config: Config, reactor: Any, pool: HTTPConnectionPool, serving: bool = True
) -> tuple[ThreatConnectClient, ...]:
    """
    The clients of C{config}'s other ThreatConnect instances, in order.
    """
    return tuple(
        make_client(config, reactor, pool, serving, instance) for instance in config.other_instances
    )


def make_cb_sync(config: Config, reactor: Any, pool: HTTPConnectionPool) -> CbServerSync | None:
    """
    The Carbon Black server sync for C{config}, or C{None} when it is off.
    TLS to the Carbon Black server is verified unless the user turned it off.
    """
    if config.carbonblack.server_url is None or config.carbonblack.server_token is None:
        return None
    cb = config.carbonblack
    timeout = config.threatconnect.request_timeout
    agent = make_agent(
        reactor, pool=pool, connect_timeout=timeout, ca_file=cb.ca_file, verify=cb.verify_tls
    )
    feed_url = feed_url_for(
        config.listener.address,
        config.listener.port,
        config.carbonblack.host_address,
        tls=config.listener.tls_cert is not None,
    )
    return CbServerSync(
        HTTPClient(agent),
        reactor,
        config.carbonblack.server_url,
        config.carbonblack.server_token,
        feed_url,
        timeout=config.threatconnect.request_timeout,
        feed_username=config.listener.username,
        feed_password=config.listener.password,
    )


def build_bridge(
    config: Config, reactor: Any, use_cache: bool = True, threads: bool = True
) -> Bridge:
    """
    Wire a bridge for C{config} on C{reactor}.

    :param use_cache: load and keep the disk cache (the service); write mode
        leaves it alone.
    :param threads: run heavy steps (disk writes, and the build when
        there is no cache folder) in the reactor's thread pool, and builds
        in a child process (L{ChildBuild}) when there is one, so the
        reactor keeps serving; write mode, which serves nothing, runs them
        in line.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    client = make_client(config, reactor, pool, serving=threads)
    info = FeedInfo()
    store = FeedStore(
        empty_body=dumps(empty_document(info)),
        cache_dir=config.sync.cache_folder if use_cache else None,
    )
    status = SyncStatus(started_at=reactor.seconds(), notices=config.notices)
    run_heavy = thread_runner(reactor) if threads else run_inline
    history: AnyHistory = ReportHistory()
    if use_cache:

        def read(body: bytes) -> list[dict[str, Any]]:
            reports = read_cached_feed(body)
            # Report timestamps move only when content changes, across restarts too.
            nonlocal history
            history = history_from_reports(reports)
            return reports

        loaded = store.load_cache(read, check_later=threads)
        if loaded is not None and loaded.history is not None:
            history = loaded.history
        if threads:
            reactor.callWhenRunning(check_cached_feed, store, status, run_heavy)
    sync_log = SyncLog(config.sync.cache_folder) if use_cache else None
    if sync_log is not None:
        sync_log.load()
    build = _builder(reactor, run_heavy, threads, store.cache_dir)
    cycle = SyncCycle(
        config,
        client,
        store,
        status,
        reactor,
        run_heavy,
        cb_sync=make_cb_sync(config, reactor, pool) if use_cache else None,
        history=history,
        pause=reactor_pause(reactor),
        build=build,
        warm_build=build.warm if isinstance(build, ChildBuild) else None,
        sync_log=sync_log,
        seen_folder=store.cache_dir if threads else None,
        incremental=make_incremental(config, reactor) if use_cache and threads else None,
        other_clients=make_other_clients(config, reactor, pool, serving=threads),
        share=pull_sharing(config, reactor) if shares_pull(config, threads) else None,
    )
    if store.cache_warning is not None:
        status.notices = (*status.notices, store.cache_warning)
    return Bridge(
        cycle=cycle,
        store=store,
        status=status,
        run_heavy=run_heavy,
        feedinfo=feedinfo_dict(info),
        pool=pool,
        sync_log=sync_log,
    )


def _builder(
    reactor: Any, run_heavy: RunHeavy, threads: bool, cache_dir: str | None
) -> BuildFeed | None:
    """
    Where feeds are built: a service with a cache folder builds in a child
    process; write mode in its own process (on both cores); a service
    without a cache folder with C{run_heavy}.
    """
    if not threads:
        return build_here
    return ChildBuild(reactor, run_heavy) if cache_dir else None


def make_incremental(config: Config, reactor: Any) -> Incremental | None:
    """
    Incremental syncs over an indicator store in the cache folder (its
    calls in a thread of their own, reads of what is committed in a
    second one; a full sync's transaction in a child
    process where the reactor can start one), if C{incremental_sync} is on.
    """
    folder = config.sync.cache_folder
    if not config.sync.incremental or folder is None:
        return None
    db = ThreadedIndicatorDB(reactor, folder)
    fill = partial(ChildStore, reactor, folder) if IReactorProcess.providedBy(reactor) else None
    return Incremental(
        db.run,
        read=db.read,
        full_every=config.sync.full_sync_hours * 3600,
        overlap=int(config.sync.delta_overlap_minutes * 60),
        marker=os.path.join(folder, FULL_SYNC_FILE),
        fill=fill,
    )


def images() -> dict[str, bytes]:
    """
    The logos the pages show, by file name.
    """
    return {name: get_icon_bytes(name) for name in ("threatconnect.png", "carbonblack.png")}


def explainer(bridge: Bridge) -> Callable[[str], Explanation] | None:
    """
    What answers C{/explain} for a service: the published feed and what the
    last sync saw in the cache folder, judged with the current settings
    (C{None} without a cache folder).  Blocking: run it in a thread.
    """
    folder = bridge.store.cache_dir
    if folder is None:
        return None
    seen_path = os.path.join(folder, SEEN_FILE_NAME)

    def run(value: str) -> Explanation:
        config = bridge.cycle.config
        settings, _ = feed_settings(config)
        if os.path.exists(seen_path):
            # Judged as of the sync that kept what it saw (not a later one).
            settings = as_of(settings, config, last_written(seen_path))
        return explain(
            value,
            feed=bridge.store.body(),
            seen_path=seen_path,
            settings=settings,
            exclusions=config.feed.exclusions,
            held_back=bridge.status.held_back,
        )

    return run
