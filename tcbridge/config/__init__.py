"""
Configuration: an INI file (2015 bridge layout or v2 connector layout) read
into a frozen, nested L{Config}.  Every bad value is reported as one
L{ConfigError} line naming the file, section, key and what is expected.

  - L{record}: the records (L{Config} and one per concern);
  - L{reader}: single values, and L{ConfigError};
  - L{sections}: the ThreatConnect and feed parts;
  - L{bridge}: the listener, the Carbon Black server and logging;
  - L{layouts}: the two layouts, and L{load_config}.
"""

from tcbridge.config.layouts import load_config
from tcbridge.config.reader import ConfigError
from tcbridge.config.record import (
    CarbonBlackSettings,
    Config,
    ExclusionFile,
    FeedOptions,
    ListenerSettings,
    LoggingSettings,
    SyncSettings,
    ThreatConnectSettings,
)

__all__ = [
    "CarbonBlackSettings",
    "Config",
    "ConfigError",
    "ExclusionFile",
    "FeedOptions",
    "ListenerSettings",
    "LoggingSettings",
    "SyncSettings",
    "ThreatConnectSettings",
    "load_config",
]
