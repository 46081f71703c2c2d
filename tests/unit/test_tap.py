"""
Tests for the twistd plugin and L{tcbridge.tap}: option parsing and the
service tree, on a memory reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage

from tcbridge.sync.service import SyncService, WriteOnceService
from tcbridge.tap import Options, build_service

WriteFile = Callable[[str, str], str]

CONFIG = """\
[threatconnect]
url=https://tc.example/api
api_key=1234
secret_key=s3cr3t-value
sources=Common Community
[bridge]
listener_address=127.0.0.1
listener_port=6200
cache_folder=
https_proxy=http://user:pw@proxy.example:3128
"""


def _options(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_plugin_is_discoverable() -> None:
    """
    twistd finds the tcbridge plugin, and it points at tcbridge.tap.
    """
    makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "tcbridge" in makers
    assert makers["tcbridge"].module == "tcbridge.tap"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "give --config FILE, or --demo"),
        (("--demo", "--config", "x.conf"), "exclude each other"),
        (("--demo", "--port", "http"), "is not a port number"),
        (("--demo", "--port", "70000"), "out of range"),
        (("--demo", "--port", "0"), "out of range 1-65535"),
        (("--demo", "write"), "Wrong number of arguments"),
    ],
)
def test_usage_errors(argv: tuple[str, ...], message: str) -> None:
    """
    Bad command lines are usage errors that say what is wrong.
    """
    with pytest.raises(usage.UsageError, match=message):
        _options(*argv)


def test_bad_config_is_one_line_and_exit_2(
    write_file: WriteFile, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    A bad config file stops twistd with exit status 2 and one line on
    stderr naming the file, section and key, with no traceback.
    """
    path = write_file("bad.conf", CONFIG.replace("listener_port=6200", "listener_port=x"))
    with pytest.raises(SystemExit) as e:
        _options("--config", path)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == f"tcbridge: {path}: [bridge] listener_port: 'x' is not a whole number\n"


def test_unusable_cache_folder_refused_at_start(
    write_file: WriteFile, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    A cache folder that cannot be made or written (here: under /proc, where
    nobody can create folders) stops the service at start with one line
    and exit status 2, instead of failing every sync; write mode, which
    does not use the cache, still runs.
    """
    text = CONFIG.replace("cache_folder=", "cache_folder=/proc/tcbridge-cache")
    path = write_file("ok.conf", text)
    with pytest.raises(SystemExit) as e:
        build_service(_options("--config", path), MemoryReactorClock())
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tcbridge: {path}: [bridge] cache_folder: '/proc/tcbridge-cache' ")
    assert err.count("\n") == 1
    build_service(_options("--config", path, "write", "/tmp/feed.json"), MemoryReactorClock())


def test_service_tree_listens_and_syncs(write_file: WriteFile) -> None:
    """
    The service tree listens on the configured address and port and starts
    a sync timer with the configured interval.
    """
    reactor = MemoryReactorClock()
    options = _options("--config", write_file("ok.conf", CONFIG))
    service = build_service(options, reactor)
    timers = [s for s in service if isinstance(s, SyncService)]
    assert len(timers) == 1 and timers[0].interval == 3600
    service.startService()
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [
        (6200, "127.0.0.1")
    ]
    assert reactor.tcpClients, "the first sync starts at once"
    service.stopService()


def test_port_option_overrides_config(write_file: WriteFile) -> None:
    """
    --port overrides listener_port.
    """
    reactor = MemoryReactorClock()
    options = _options("--config", write_file("ok.conf", CONFIG), "--port", "7000")
    service = build_service(options, reactor)
    service.startService()
    assert reactor.tcpServers[0][0] == 7000
    service.stopService()


def test_write_subcommand_builds_one_shot_service(write_file: WriteFile) -> None:
    """
    'write FILE' builds the one-shot writer instead of the listener.
    """
    reactor = MemoryReactorClock()
    options = _options("--config", write_file("ok.conf", CONFIG), "write", "/tmp/out.json")
    service = build_service(options, reactor)
    writers = [s for s in service if isinstance(s, WriteOnceService)]
    assert len(writers) == 1
    assert not any(isinstance(s, SyncService) for s in service)


def test_demo_starts_simulator_on_loopback() -> None:
    """
    --demo starts the built-in simulator on a loopback port and serves the
    feed on 127.0.0.1:6100.
    """
    reactor = MemoryReactorClock()
    service = build_service(_options("--demo"), reactor)
    service.startService()
    listening = [(port, interface) for port, _, _, interface in reactor.tcpServers]
    assert listening == [(0, "127.0.0.1"), (6100, "127.0.0.1")]
    service.stopService()


def test_listener_guard_is_applied(write_file: WriteFile) -> None:
    """
    With listener credentials configured, every route answers 401 without
    them and serves with them.
    """
    from treq.testing import StubTreq

    from tests.helpers import result_of

    reactor = MemoryReactorClock()
    text = CONFIG + "listener_username=cb\nlistener_password=pw\n"
    service = build_service(_options("--config", write_file("ok.conf", text)), reactor)
    service.startService()
    site = reactor.tcpServers[0][1]
    stub = StubTreq(site.resource)
    for path in ("/", "/threatconnect/json", "/feed.html"):
        d = stub.get("http://127.0.0.1:6200" + path)
        stub.flush()
        assert result_of(d).code == 401
    d = stub.get("http://127.0.0.1:6200/threatconnect/json", auth=("cb", "pw"))
    stub.flush()
    assert result_of(d).code == 200
    service.stopService()


def test_log_file_written_while_running(write_file: WriteFile, tmp_path: Path) -> None:
    """
    With log_file set, tcbridge's events also go to that file (JSON lines
    here) while the service runs, and stop when it stops.
    """
    from twisted.logger import Logger

    from tcbridge.logs import bridge_observer

    log_path = tmp_path / "tcbridge.log"
    text = CONFIG + f"log_file={log_path}\nlog_format=json\n"
    reactor = MemoryReactorClock()
    service = build_service(_options("--config", write_file("ok.conf", text)), reactor)
    service.startService()
    Logger(namespace="tcbridge.test", observer=bridge_observer).warn("hello {who}", who="file")
    service.stopService()
    Logger(namespace="tcbridge.test", observer=bridge_observer).warn("after stop")
    lines = [orjson.loads(line) for line in log_path.read_text().splitlines()]
    assert any(entry["message"] == "hello file" and entry["who"] == "file" for entry in lines)
    assert not any(entry["message"] == "after stop" for entry in lines)
