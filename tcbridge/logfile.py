# -*- test-case-name: tests.unit.test_logfile -*-
"""
The bridge's own log file, next to (not instead of) twistd's log: size-based
rotation and one event per line, as text or as JSON, so a log kept for
years stays bounded and greppable.

L{install_file_logging} is what C{makeService} calls; L{file_log_observer}
is the observer on its own.  Text lines look like twistd's, with an
ISO-8601 UTC time::

    2024-05-01T12:00:00.123Z [tcbridge.sync.cycle.SyncCycle#info] Sync published 135 reports ...

JSON lines are one object each, with C{time}, C{level}, C{namespace},
C{message} (the formatted text) and the event's own JSON-serialisable
fields; a failure adds C{traceback}::

    {"time":"2024-05-01T12:00:00.123Z","level":"info","namespace":"tcbridge.sync.cycle.SyncCycle",
     "message":"Sync published 135 reports ...","reports":135,"iocs":84325,"seconds":2.0}
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any, Literal

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevelFilterPredicate,
    LogPublisher,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogPublisher,
)
from twisted.python.logfile import LogFile
from zope.interface import implementer

from tcbridge.model import parse_level

Format = Literal["text", "json"]

#: Keys a JSON line always has; an event field of the same name is written
#: as C{field_<name>} instead.
RESERVED = frozenset(("time", "level", "namespace", "message", "system", "traceback"))


def iso_utc(when: float | None) -> str:
    """
    Format a POSIX time as ISO-8601 UTC with milliseconds,
    C{2024-05-01T12:00:00.123Z}; C{"-"} if there is no time.
    """
    if when is None:
        return "-"
    stamp = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def format_text(event: LogEvent) -> str | None:
    """
    One event as a classic twistd line (C{time [namespace#level] text}, a
    traceback indented below it), with an ISO-8601 UTC time; C{None} for an
    event with nothing to say.
    """
    return formatEventAsClassicLogText(event, formatTime=iso_utc)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def format_json(event: LogEvent) -> str:
    """
    One event as one line of JSON: C{time} (ISO-8601 UTC), C{level},
    C{namespace}, C{message} (the formatted text), C{system} if the event
    has one, C{traceback} if it carries a failure, then the event's own
    fields (not Twisted's C{log_*} keys) whose values are JSON-serialisable;
    the others are left out.
    """
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": iso_utc(event.get("log_time", time.time())),
        "level": getattr(level, "name", "-"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    system = event.get("log_system")
    if isinstance(system, str):
        record["system"] = system
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = repr(failure)
    for key, value in event.items():
        if not isinstance(key, str) or key.startswith("log_"):
            continue
        if _jsonable(value):
            record[f"field_{key}" if key in RESERVED else key] = value
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


@implementer(ILogObserver)
class RotatingFileLogObserver:
    """
    Writes each event as one line (text or JSON) to a file that is rotated
    when it reaches C{max_bytes}: C{tcbridge.log} becomes C{tcbridge.log.1},
    older files shift up, and at most C{backups} of them are kept.  Safe to
    call from several threads.

    :ivar path: the log file.
    :ivar logfile: the underlying L{LogFile}.
    """

    def __init__(self, path: str, max_bytes: int, backups: int, fmt: Format) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"log format {fmt!r} is not one of text, json")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        if backups < 1:
            raise ValueError(f"backups must be at least 1, not {backups}")
        self.path = os.path.abspath(path)
        self._format = format_json if fmt == "json" else format_text
        self._lock = threading.Lock()
        try:
            self.logfile = LogFile(
                os.path.basename(self.path),
                os.path.dirname(self.path),
                rotateLength=max_bytes,
                maxRotatedFiles=backups,
            )
        except OSError as e:
            raise OSError(
                e.errno,
                f"cannot open the log file {self.path}: {e.strerror} "
                "(its directory must exist and be writable)",
            ) from None

    def __call__(self, event: LogEvent) -> None:
        """
        Write C{event}, rotating first if the file is full.  A failing write
        (disk full) drops the event rather than raise into the logger.
        """
        try:
            text = self._format(event)
        except Exception:
            text = f"{iso_utc(time.time())} [tcbridge.logfile] unformattable event {event!r}\n"
        if not text:
            return
        data = text.encode("utf-8", "backslashreplace")
        with self._lock:
            if self.logfile.closed:
                return
            try:
                self.logfile.write(data)
                self.logfile.flush()
            except OSError:
                pass

    def reopen(self) -> None:
        """
        Close and reopen the file (after an outside tool moved it).
        """
        with self._lock:
            self.logfile.reopen()

    def close(self) -> None:
        """
        Close the file; later events are dropped.
        """
        with self._lock:
            if not self.logfile.closed:
                self.logfile.close()


def file_log_observer(
    path: str,
    *,
    max_bytes: int = 10_000_000,
    backups: int = 5,
    fmt: Format = "text",
) -> RotatingFileLogObserver:
    """
    An observer that writes every event it is given to C{path}, one line
    each, rotating at C{max_bytes} and keeping C{backups} old files
    (C{path.1} is the newest).

    :param fmt: C{"text"} (twistd's classic lines, ISO-8601 UTC time) or
        C{"json"} (one object per line; see L{format_json}).
    :raises OSError: naming C{path} if the file cannot be opened (creating
        its directory is the caller's job).
    :raises ValueError: for a bad C{fmt}, C{max_bytes} or C{backups}.
    """
    return RotatingFileLogObserver(path, max_bytes, backups, fmt)


class FileLogging(FilteringLogObserver):
    """
    The installed file log: a level filter in front of a
    L{RotatingFileLogObserver}, added to a publisher.

    :ivar file_observer: the observer writing the file.
    """

    def __init__(
        self,
        file_observer: RotatingFileLogObserver,
        predicate: LogLevelFilterPredicate,
        publisher: LogPublisher,
    ) -> None:
        super().__init__(file_observer, [predicate])
        self.file_observer = file_observer
        self._predicate = predicate
        self._publisher = publisher

    def set_level(self, level: str) -> None:
        """
        Write events of C{level} and above from now on (a reload).

        :raises ValueError: for an unknown level name.
        """
        self._predicate.setLogLevelForNamespace("", parse_level(level))

    def close(self) -> None:
        """
        Remove this observer from its publisher and close the file.
        """
        self._publisher.removeObserver(self)
        self.file_observer.close()


def install_file_logging(
    path: str,
    *,
    level: str,
    max_bytes: int = 10_000_000,
    backups: int = 5,
    fmt: Format = "text",
    publisher: LogPublisher = globalLogPublisher,
) -> FileLogging:
    """
    Also write the log to C{path}: add to C{publisher} an observer that
    keeps events of C{level} and above and writes them with
    L{file_log_observer}.  twistd's own log (standard output or its
    C{--logfile}) is unchanged.

    tcbridge's own events reach the publisher only if they pass
    C{log_level} (L{tcbridge.logs.bridge_observer}); C{level} filters every
    event, Twisted's included.

    :return: the installed observer; C{close()} removes it and closes the
        file, C{set_level(name)} changes its level.
    :raises OSError: naming C{path} if the file cannot be opened.
    :raises ValueError: for a bad level, C{fmt}, C{max_bytes} or C{backups}.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=parse_level(level))
    observer = file_log_observer(path, max_bytes=max_bytes, backups=backups, fmt=fmt)
    installed = FileLogging(observer, predicate, publisher)
    publisher.addObserver(installed)
    return installed
