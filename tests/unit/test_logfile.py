# -*- test-case-name: tests.unit.test_logfile -*-
"""
Tests for L{tcbridge.logfile}: the bridge's own rotating log file, in text
or JSON lines.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import Logger, LogLevel, LogPublisher, globalLogPublisher
from twisted.python.failure import Failure

from tcbridge.logfile import (
    FileLogging,
    file_log_observer,
    format_json,
    install_file_logging,
    iso_utc,
)
from tcbridge.logs import bridge_observer
from tcbridge.model import parse_level

#: 2024-05-01T12:00:00.250Z
WHEN = 1714564800.25


def _event(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "log_time": WHEN,
        "log_level": LogLevel.info,
        "log_namespace": "tcbridge.sync.SyncCycle",
        "log_format": "Sync published {reports} reports with {iocs} IOCs",
        "reports": 135,
        "iocs": 84325,
    }
    event.update(fields)
    return event


def _failure() -> Failure:
    try:
        raise RuntimeError("the disk is on fire")
    except RuntimeError:
        return Failure()


def test_iso_utc() -> None:
    """
    Times are ISO-8601 in UTC with milliseconds and a Z.
    """
    assert iso_utc(WHEN) == "2024-05-01T12:00:00.250Z"
    assert iso_utc(None) == "-"


def test_text_lines(tmp_path: Path) -> None:
    """
    Text lines are twistd's classic lines with an ISO-8601 UTC time, and a
    failure's traceback follows its line, indented.
    """
    path = tmp_path / "tcbridge.log"
    observer = file_log_observer(str(path))
    observer(_event())
    observer(_event(log_level=LogLevel.error, log_format="Sync failed", log_failure=_failure()))
    observer.close()
    lines = path.read_text().splitlines()
    assert lines[0] == (
        "2024-05-01T12:00:00.250Z [tcbridge.sync.SyncCycle#info] "
        "Sync published 135 reports with 84325 IOCs"
    )
    assert lines[1] == "2024-05-01T12:00:00.250Z [tcbridge.sync.SyncCycle#error] Sync failed"
    assert "RuntimeError: the disk is on fire" in path.read_text()
    assert all(line.startswith(("2024-", "\t")) for line in lines)


def test_json_lines(tmp_path: Path) -> None:
    """
    JSON lines are one object per line with time, level, namespace, message
    and the event's own JSON-serialisable fields; others are left out, and
    fields named like the standard keys are renamed.
    """
    path = tmp_path / "tcbridge.json.log"
    observer = file_log_observer(str(path), fmt="json")
    observer(_event(source="Common\nCommunity", obj=object(), message="mine", nan=float("nan")))
    observer(_event(log_level=LogLevel.error, log_format="Sync failed", log_failure=_failure()))
    observer.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first == {
        "time": "2024-05-01T12:00:00.250Z",
        "level": "info",
        "namespace": "tcbridge.sync.SyncCycle",
        "message": "Sync published 135 reports with 84325 IOCs",
        "reports": 135,
        "iocs": 84325,
        "source": "Common\nCommunity",
        "field_message": "mine",
    }
    assert second["level"] == "error"
    assert second["message"] == "Sync failed"
    assert "RuntimeError: the disk is on fire" in second["traceback"]


def test_json_without_time_or_format() -> None:
    """
    An event missing the usual keys still gives a line of JSON.
    """
    record = json.loads(format_json({"count": 3}))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    assert record["level"] == "-"
    assert record["count"] == 3


def test_rotation(tmp_path: Path) -> None:
    """
    The file is rotated when it reaches max_bytes; at most `backups` old
    files are kept, newest as .1, and no line is split or lost across the
    kept files.
    """
    path = tmp_path / "tcbridge.log"
    observer = file_log_observer(str(path), max_bytes=1000, backups=3)
    for n in range(200):
        observer(_event(log_format="event number {n:05d}", n=n))
    observer.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["tcbridge.log", "tcbridge.log.1", "tcbridge.log.2", "tcbridge.log.3"]
    numbers = []
    for name in reversed(names[1:]):
        text = (tmp_path / name).read_text()
        assert len(text.encode()) < 1000 + 100
        numbers += [int(line.rsplit(" ", 1)[1]) for line in text.splitlines()]
    numbers += [int(line.rsplit(" ", 1)[1]) for line in path.read_text().splitlines()]
    assert numbers == list(range(numbers[0], 200))


def test_appends_to_existing(tmp_path: Path) -> None:
    """
    A restarted bridge appends to the file it finds.
    """
    path = tmp_path / "tcbridge.log"
    path.write_text("older line\n")
    observer = file_log_observer(str(path))
    observer(_event())
    observer.close()
    assert path.read_text().splitlines()[0] == "older line"
    assert len(path.read_text().splitlines()) == 2


def test_missing_directory(tmp_path: Path) -> None:
    """
    A file that cannot be opened is an OSError naming it.
    """
    path = tmp_path / "no-such-dir" / "tcbridge.log"
    with pytest.raises(OSError, match=r"cannot open the log file .*no-such-dir/tcbridge\.log"):
        file_log_observer(str(path))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fmt": "xml"}, "log format 'xml' is not one of text, json"),
        ({"max_bytes": 0}, "max_bytes must be positive"),
        ({"backups": 0}, "backups must be at least 1"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    """
    Bad settings are a ValueError saying what is wrong.
    """
    with pytest.raises(ValueError, match=message):
        file_log_observer(str(tmp_path / "x.log"), **kwargs)


def test_closed_drops_events(tmp_path: Path) -> None:
    """
    Events after close are dropped, not raised.
    """
    path = tmp_path / "tcbridge.log"
    observer = file_log_observer(str(path))
    observer.close()
    observer(_event())
    observer.close()
    assert path.read_text() == ""


def test_reopen(tmp_path: Path) -> None:
    """
    After an outside tool moved the file, reopen starts a new one.
    """
    path = tmp_path / "tcbridge.log"
    observer = file_log_observer(str(path))
    observer(_event())
    path.rename(tmp_path / "moved.log")
    observer.reopen()
    observer(_event())
    observer.close()
    assert len(path.read_text().splitlines()) == 1
    assert len((tmp_path / "moved.log").read_text().splitlines()) == 1


def test_threads(tmp_path: Path) -> None:
    """
    Several threads logging at once, with rotation, give whole lines only.
    """
    path = tmp_path / "tcbridge.log"
    observer = file_log_observer(str(path), max_bytes=20_000, backups=50, fmt="json")

    def work(t: int) -> None:
        for n in range(300):
            observer(_event(log_format="thread {t} event {n}", t=t, n=n))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    observer.close()
    seen = set()
    for file in tmp_path.iterdir():
        for line in file.read_text().splitlines():
            record = json.loads(line)
            seen.add((record["t"], record["n"]))
    assert seen == {(t, n) for t in range(4) for n in range(300)}


def test_install_filters_by_level(tmp_path: Path) -> None:
    """
    install_file_logging adds a level-filtered file observer to the
    publisher; close removes it and closes the file; set_level changes the
    level.
    """
    publisher = LogPublisher()
    path = tmp_path / "tcbridge.log"
    installed = install_file_logging(str(path), level="warning", publisher=publisher)
    assert isinstance(installed, FileLogging)
    log = Logger(namespace="tcbridge.test", observer=publisher)
    log.info("hidden {n}", n=1)
    log.warn("shown {n}", n=2)
    installed.set_level("DEBUG")
    log.debug("shown {n}", n=3)
    installed.close()
    log.error("after close")
    lines = path.read_text().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["shown 2", "shown 3"]
    assert "[tcbridge.test#warn]" in lines[0]


def test_install_bad_level(tmp_path: Path) -> None:
    """
    An unknown level is a ValueError listing the known ones, and no file is
    opened.
    """
    with pytest.raises(ValueError, match="'LOUD' is not one of DEBUG, INFO"):
        install_file_logging(str(tmp_path / "x.log"), level="LOUD", publisher=LogPublisher())
    assert not (tmp_path / "x.log").exists()
    assert parse_level("warn") is LogLevel.warn


def test_bridge_loggers_reach_the_file(tmp_path: Path) -> None:
    """
    tcbridge's loggers (through bridge_observer) reach a file installed on
    the global publisher, in JSON with their fields.
    """
    path = tmp_path / "tcbridge.log"
    installed = install_file_logging(str(path), level="INFO", fmt="json")
    try:
        Logger(namespace="tcbridge.sync", observer=bridge_observer).info(
            "Pulled {source}: {indicators} indicators", source="*", indicators=7
        )
    finally:
        installed.close()
    assert installed not in globalLogPublisher._observers
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {
        "namespace": "tcbridge.sync",
        "message": "Pulled *: 7 indicators",
        "source": "*",
        "indicators": 7,
    }.items() <= records[-1].items()
