"""
The names every layer shares: where indicators come from (L{Source}), the
choices a configuration makes (the C{Literal} types), the indicator types
tcbridge knows, log levels, and the defaults.  Defined here once; this module
imports nothing else of tcbridge's, so any module may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from attrs import frozen
from twisted.logger import LogLevel

#: How a source is pulled; see L{Source}.
SourceKind = Literal["owner", "all", "path", "tql"]

#: How indicators are grouped into Carbon Black reports.
Grouping = Literal["Expanded", "Condensed", "MaxCondensed"]

#: Which ThreatConnect figure becomes a report's score.
ScoreSource = Literal["rating", "confidence", "threatAssessScore", "max"]

#: The ThreatConnect API generation pulled.
ApiVersion = Literal["v2", "v3"]

#: ThreatConnect indicator types tcbridge turns into Carbon Black IOCs, in
#: the order the v2 per-type endpoints are pulled and shown.
KNOWN_TYPES: Final = ("File", "Address", "Host")

#: C{log_level} names (any case) and the levels they stand for.
LOG_LEVELS: Final[Mapping[str, LogLevel]] = {
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error,
    "CRITICAL": LogLevel.critical,
}


def parse_level(name: str) -> LogLevel:
    """
    The L{LogLevel} for a C{log_level} name (C{DEBUG}, C{INFO}, C{WARNING},
    C{ERROR}, C{CRITICAL}, and C{WARN} for C{WARNING}; any case).

    :raises ValueError: for another name.
    """
    try:
        upper = name.upper()
        return LOG_LEVELS["WARNING" if upper == "WARN" else upper]
    except KeyError:
        raise ValueError(
            f"log level {name!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
        ) from None


DEFAULT_LISTENER_ADDRESS: Final = "127.0.0.1"
DEFAULT_LISTENER_PORT: Final = 6100
DEFAULT_RETRIEVAL_MINUTES: Final = 60.0
DEFAULT_API_URL: Final = "https://api.threatconnect.com"
#: Where C{web_url} points by default: indicator links are made under it.
DEFAULT_WEB_URL: Final = "https://app.threatconnect.com/auth"
#: The link a report carries when no indicator gives it one (and
#: C{web_url} is not an http(s) address).
THREATCONNECT_HOME: Final = "https://app.threatconnect.com/"
#: ThreatConnect refuses a request whose Timestamp is further off than this.
CLOCK_LIMIT_SECONDS: Final = 300


@frozen
class Source:
    """
    One configured place to pull indicators from.

    :ivar name: the label used in reports and diagnostics: the owner name for
        C{kind="owner"}, C{"*"} for C{kind="all"}, the [sources] tag for
        C{kind="path"}.
    :ivar kind: C{"owner"}: one owner, pulled through the per-type v2
        endpoints; C{"all"}: every owner listed by C{/v2/owners}; C{"path"}: a
        2015-style API path (C{/v1/indicators/?owner=Common%20Community}),
        pulled as written with paging parameters appended.
        C{"tql"}: a v3 TQL query (a [sources] entry C{tag = tql:<query>}),
        pulled through C{/v3/indicators} as written.
    :ivar value: the owner name, C{"*"}, the API path exactly as written, or
        the TQL query.
    :ivar instance: the named ThreatConnect instance it belongs to
        (C{[threatconnect:<name>]}; its C{name} is then C{<instance>/...});
        C{""} for the main one.
    """

    name: str
    kind: SourceKind
    value: str
    instance: str = ""
