# -*- test-case-name: tests.integration.test_service_files -*-
"""
Tests for the service files in C{etc/}: the systemd unit (checked with
C{systemd-analyze verify} where the machine has it, and read as INI for its
key settings) and the SysV init script (syntax, and a real start, status,
stop of C{twistd tcbridge --demo} on a loopback port).
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tcbridge.feed.validator import validate_bytes
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "etc" / "tcbridge.service"
SCRIPT = ROOT / "etc" / "init.d" / "tcbridge"
TWISTD = Path(sys.executable).parent / "twistd"
SH = shutil.which("sh") or "/bin/sh"


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """
    Run a fixed local command (absolute path), capturing its output, with a
    time limit.
    """
    return subprocess.run(  # noqa: S603 (our own files and tools, no outside input)
        argv, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_key_settings() -> None:
    """
    The unit runs twistd in the foreground as the tcbridge user, reloads
    with SIGHUP, restarts on failure, owns its state and log folders and is
    hardened.
    """
    unit = _unit()
    service = unit["Service"]
    assert shlex.split(service["ExecStart"]) == [
        "/opt/tcbridge/bin/twistd",
        "--nodaemon",
        "--pidfile=",
        "tcbridge",
        "--config",
        "/etc/tcbridge/tcbridge.conf",
    ]
    expected = {
        "Type": "simple",
        "User": "tcbridge",
        "Group": "tcbridge",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "RestartSec": "5",
        "StateDirectory": "tcbridge",
        "LogsDirectory": "tcbridge",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert set(service["ReadWritePaths"].split()) == {"/var/lib/tcbridge", "/var/log/tcbridge"}
    # pyOpenSSL's cffi callbacks need W+X memory: with this on, no HTTPS works.
    assert service["MemoryDenyWriteExecute"] == "no"
    assert "LoadCredential" not in service
    assert "#LoadCredential=tcbridge_secret_key:/etc/tcbridge/secret_key" in UNIT.read_text()
    assert "CREDENTIALS_DIRECTORY" in UNIT.read_text()
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert unit["Unit"]["After"] == "network-online.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_unit_verifies(tmp_path: Path) -> None:
    """
    systemd-analyze verify accepts the unit (with ExecStart pointing at this
    environment's twistd, since /opt/tcbridge is not installed here).
    """
    text = UNIT.read_text().replace("/opt/tcbridge/bin/twistd", str(TWISTD))
    unit = tmp_path / "tcbridge.service"
    unit.write_text(text)
    result = _run([shutil.which("systemd-analyze") or "systemd-analyze", "verify", str(unit)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tcbridge.service" not in result.stdout + result.stderr


def test_script_syntax() -> None:
    """
    The init script is valid POSIX sh, with an LSB header.
    """
    result = _run([SH, "-n", str(SCRIPT)])
    assert (result.returncode, result.stderr) == (0, "")
    text = SCRIPT.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "### BEGIN INIT INFO" in text and "### END INIT INFO" in text
    assert "# Provides:          tcbridge" in text
    assert os.access(SCRIPT, os.X_OK)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="no shellcheck here")
def test_script_shellcheck() -> None:
    """
    shellcheck finds nothing in the init script.
    """
    result = _run([shutil.which("shellcheck") or "shellcheck", "--shell=sh", str(SCRIPT)])
    assert result.returncode == 0, result.stdout


class _Script:
    """
    Runs the init script with its settings pointing under a temporary
    folder.
    """

    def __init__(self, tmp_path: Path, port: int) -> None:
        self.port = port
        self.pidfile = tmp_path / "run" / "tcbridge.pid"
        self.logfile = tmp_path / "log" / "tcbridge.log"
        self.env = dict(os.environ)
        self.env.update(
            TCBRIDGE_DEFAULTS="",
            TCBRIDGE_PIDFILE=str(self.pidfile),
            TCBRIDGE_LOGFILE=str(self.logfile),
            TCBRIDGE_TWISTD=str(TWISTD),
            TCBRIDGE_USER="",
            TCBRIDGE_CONFIG=str(tmp_path / "unused.conf"),
            TCBRIDGE_ARGS=f"--demo --port {port}",
            TCBRIDGE_STOP_TIMEOUT="20",
        )

    def __call__(self, command: str, **env: str) -> subprocess.CompletedProcess[str]:
        return _run([SH, str(SCRIPT), command], env={**self.env, **env})

    def kill(self) -> None:
        """
        Kill whatever daemon the pid file names (test cleanup).
        """
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"tcbridge" in cmdline:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def script(tmp_path: Path) -> Iterator[_Script]:
    """
    The init script set up to run the demo on a free port; any daemon left
    running is killed afterwards.
    """
    runner = _Script(tmp_path, free_port())
    try:
        yield runner
    finally:
        runner.kill()


def _fetch_feed(port: int, seconds: float = 30.0) -> bytes:
    deadline = time.monotonic() + seconds
    url = f"http://127.0.0.1:{port}/threatconnect/json"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body: bytes = response.read()
            if orjson.loads(body)["reports"]:
                return body
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no feed with reports at {url} after {seconds} s")


def test_script_start_status_stop(script: _Script) -> None:
    """
    start runs twistd in the background with the pid and log files asked
    for; status says 0 while it runs; the feed answers; stop ends it and
    status then says 3; a second start or stop is harmless.
    """
    port = script.port
    began = time.monotonic()
    started = script("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "tcbridge: started (pid " in started.stdout
    pid = int(script.pidfile.read_text().strip())
    status = script("status")
    assert status.returncode == 0, status.stdout
    assert status.stdout == f"tcbridge: running (pid {pid})\n"
    again = script("start")
    assert (again.returncode, again.stdout) == (0, f"tcbridge: already running (pid {pid})\n")

    body = _fetch_feed(port)
    assert validate_bytes(body) == []
    assert b"Serving the Carbon Black feed at" in script.logfile.read_bytes()

    stopped = script("stop")
    assert (stopped.returncode, stopped.stdout) == (0, "tcbridge: stopped\n")
    assert not script.pidfile.exists()
    assert not Path(f"/proc/{pid}").exists() or b"tcbridge" not in _cmdline(pid)
    status = script("status")
    assert (status.returncode, status.stdout) == (3, "tcbridge: not running\n")
    again = script("stop")
    assert (again.returncode, again.stdout) == (0, "tcbridge: not running\n")
    assert time.monotonic() - began < 60


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_script_stale_pid_file(script: _Script) -> None:
    """
    A pid file naming a dead process is status 1 (LSB), and start replaces
    it.
    """
    script.pidfile.parent.mkdir(parents=True)
    dead = _run([SH, "-c", "echo $$"])
    script.pidfile.write_text(dead.stdout)
    status = script("status")
    assert status.returncode == 1, status.stdout
    assert "pid file" in status.stdout
    started = script("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "removing the stale pid file" in started.stdout
    assert script("status").returncode == 0
    assert script("stop").returncode == 0


def test_script_failures(script: _Script, tmp_path: Path) -> None:
    """
    A missing twistd is exit 5 (LSB "not installed"); a start twistd
    refuses (a missing config file) is non-zero and leaves nothing running;
    an unknown command prints the usage and exits 2.
    """
    missing = script("start", TCBRIDGE_TWISTD=str(tmp_path / "no-twistd"))
    assert missing.returncode == 5
    assert "cannot run" in missing.stdout
    refused = script("start", TCBRIDGE_ARGS=f"--config {tmp_path / 'missing.conf'}")
    assert refused.returncode != 0
    assert "failed to start" in refused.stdout
    assert script("status").returncode == 3
    usage = script("dance")
    assert usage.returncode == 2
    assert usage.stderr.startswith("Usage: ")
