# -*- test-case-name: tests.unit.test_feed_builder -*-
"""
Text that goes into reports: tags, titles, slugs and links, made safe
(valid UTF-8, one line, only what Carbon Black accepts).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Final

MAX_TAGS: Final = 20
MAX_TAG: Final = 32

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_URL_JUNK: Final = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")
_SLUG_JUNK: Final = re.compile(r"[^a-z0-9]+")
_TAG_JUNK: Final = re.compile(r"[^A-Za-z0-9]+")
_MAX_SLUG: Final = 32


def valid_text(text: str) -> str:
    """
    C{text} with lone surrogates replaced, so that it is valid UTF-8.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def one_line(text: str) -> str:
    """
    C{text} as valid UTF-8 on one line, control characters made spaces.
    """
    return _CONTROL.sub(" ", valid_text(text)).strip()


def slug(label: str) -> str:
    """
    The lower-case letters-and-digits form of a label for report ids.
    """
    return _SLUG_JUNK.sub("_", label.lower()).strip("_")[:_MAX_SLUG].strip("_") or "source"


def http_link(link: object) -> str:
    """
    C{link} if it is a plausible http(s) URL (no spaces or control
    characters), else C{""}.
    """
    if not isinstance(link, str) or not link.startswith(("https://", "http://")):
        return ""
    if len(link) <= 8 or _URL_JUNK.search(link):
        return ""
    return valid_text(link)


def origin(web_link: str) -> str | None:
    """
    C{https://host} from a ThreatConnect web link, or C{None}.
    """
    if not web_link.startswith(("https://", "http://")):
        return None
    end = web_link.find("/", 8)
    found = web_link if end < 0 else web_link[:end]
    if "?" in found or "#" in found or _URL_JUNK.search(found):
        return None
    return valid_text(found)


def cb_tags(names: Iterable[object]) -> tuple[str, ...]:
    """
    Carbon Black tags from ThreatConnect tag names: only ASCII letters and
    digits kept, at most 32 characters, empty ones skipped, duplicates
    dropped (first occurrence kept).
    """
    seen: dict[str, None] = {}
    for name in names:
        if isinstance(name, str):
            tag = _TAG_JUNK.sub("", name)[:MAX_TAG]
            if tag:
                seen.setdefault(tag, None)
    return tuple(seen)


def source_prefixes(labels: Iterable[str]) -> dict[str, str]:
    """
    Map each label to its report id prefix, C{<slug>-<8 hex of sha1>},
    lengthening the hash part to all 40 digits for labels whose short
    prefixes would collide.
    """
    full = {
        # sha1 names the source; nothing secret depends on it.
        label: (slug(label), hashlib.sha1(label.encode("utf-8", "surrogatepass")).hexdigest())  # noqa: S324
        for label in labels
    }
    short: dict[str, list[str]] = {}
    for label, (name, digest) in full.items():
        short.setdefault(f"{name}-{digest[:8]}", []).append(label)
    prefixes: dict[str, str] = {}
    for prefix, members in short.items():
        for label in members:
            name, digest = full[label]
            prefixes[label] = prefix if len(members) == 1 else f"{name}-{digest}"
    return prefixes
