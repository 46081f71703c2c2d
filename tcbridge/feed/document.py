# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
The fixed parts of the feed document: the C{feedinfo} object (with the
ThreatConnect icons embedded as base64) and the empty document served before
the first successful sync.
"""

from __future__ import annotations

import base64
import functools
from importlib import resources
from typing import Any, Final

from attrs import frozen

#: The images shipped in C{tcbridge/feed/icons}: C{threatconnect.png} (370x97,
#: the feed's C{icon}), C{threatconnect-small.png} (100x100, C{icon_small}) and
#: C{carbonblack.png} (370x97, shown on the web page).
ICON_NAMES: Final[frozenset[str]] = frozenset(
    {"threatconnect.png", "carbonblack.png", "threatconnect-small.png"}
)


@frozen
class FeedInfo:
    """
    What Carbon Black shows about the feed.  The defaults are those of the
    original ThreatConnect connector, so an existing feed keeps its identity
    (Carbon Black finds the feed by C{name}).
    """

    name: str = "threatconnectintegration"
    display_name: str = "ThreatConnect"
    summary: str = (
        "Threat intelligence from ThreatConnect: file hashes, IP addresses and "
        "host names that ThreatConnect rates as indicators of compromise."
    )
    tech_data: str = (
        "There are no requirements to share any data with Carbon Black to use this "
        "feed. No data leaves your network except the API requests this bridge "
        "makes to ThreatConnect."
    )
    provider_url: str = "https://www.threatconnect.com/"
    category: str = "Partner"


@functools.cache
def get_icon_bytes(name: str) -> bytes:
    """
    Return the bytes of one of the shipped PNG images (see L{ICON_NAMES}),
    read once from the package and cached.

    @raise KeyError: for any other name (so a URL path can never read an
        arbitrary package file).
    """
    if name not in ICON_NAMES:
        raise KeyError(name)
    return resources.files("tcbridge.feed").joinpath("icons", name).read_bytes()


@functools.cache
def _icon_base64(name: str) -> str:
    return base64.b64encode(get_icon_bytes(name)).decode("ascii")


def feedinfo_dict(info: FeedInfo) -> dict[str, Any]:
    """
    Return the C{feedinfo} object of the feed document for C{info}, keys in a
    fixed order, with C{icon} and C{icon_small} as base64 PNG data.  Each call
    returns a new dict.
    """
    return {
        "name": info.name,
        "display_name": info.display_name,
        "provider_url": info.provider_url,
        "summary": info.summary,
        "tech_data": info.tech_data,
        "category": info.category,
        "icon": _icon_base64("threatconnect.png"),
        "icon_small": _icon_base64("threatconnect-small.png"),
    }


def empty_document(info: FeedInfo) -> dict[str, Any]:
    """
    Return a valid feed document with no reports: what is served before the
    first sync has produced a feed.
    """
    return {"feedinfo": feedinfo_dict(info), "reports": []}
