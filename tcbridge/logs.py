# -*- test-case-name: tests.unit.test_logfile -*-
"""
The bridge's log level.  Every tcbridge logger publishes through
L{bridge_observer}, which drops events below the configured C{log_level}
before they reach twistd's (or the console command's) log observers.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

from tcbridge.model import parse_level

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)

#: Give this as C{observer=} to every tcbridge L{twisted.logger.Logger}.
bridge_observer = FilteringLogObserver(globalLogPublisher, [_predicate])


def set_log_level(name: str) -> None:
    """
    Show tcbridge events of level C{name} (C{DEBUG}, C{INFO}, C{WARNING},
    C{ERROR}, C{CRITICAL}) and above.
    """
    level = parse_level(name)
    _predicate.setLogLevelForNamespace("", level)
