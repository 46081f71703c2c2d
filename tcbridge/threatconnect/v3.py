# -*- test-case-name: tests.unit.test_tc_v3 -*-
"""
The v3 side of paging: checking and turning ThreatConnect's absolute C{next}
links into targets relative to the client's base URL, moving their
C{resultStart}, and reading the C{data} list of a v3 answer.

A C{next} link is followed only when it points back at the same API: the
same scheme, host and port as the base URL, and a path under the base URL's
path prefix.  Anything else is refused with L{NextLinkRefused}, so a
misconfigured proxy or a hostile server cannot send the signed requests (and
the Access ID) somewhere else.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, urlsplit

from .errors import ResponseError

_DEFAULT_PORTS = {"http": 80, "https": 443}


class NextLinkRefused(ResponseError):  # noqa: N818 (reads as what happened)
    """
    ThreatConnect's C{next} link does not point back at the configured API
    (another scheme, host or port, or a path outside the base path), so it
    is not followed.
    """


def _port(parts: SplitResult) -> int | None:
    port = parts.port  # may raise ValueError for junk
    if port is None:
        return _DEFAULT_PORTS.get(parts.scheme.lower())
    return port


def _has_dot_segment(path: str) -> bool:
    for segment in path.split("/"):
        if segment.lower().replace("%2e", ".") in (".", ".."):
            return True
    return False


def relative_target(base_url: str, next_url: str) -> str:
    """
    The target (path and raw query, relative to C{base_url}) of an absolute
    C{next} link, e.g. C{/v3/indicators?tql=...&resultStart=15} for
    C{https://app.threatconnect.com/api/v3/indicators?tql=...&resultStart=15}
    with base C{https://app.threatconnect.com/api}.  The query is kept
    byte for byte.

    :raise NextLinkRefused: if the scheme, host or port differ from
        C{base_url}'s (default ports count as given), if the link carries
        user info, if its path is not under the base path prefix or has
        C{.}/C{..} segments, or if it is not an absolute http(s) URL.
    """

    def refuse(why: str) -> NextLinkRefused:
        return NextLinkRefused(
            f"refusing to follow the 'next' link {next_url!r}: {why}", target=next_url
        )

    base = urlsplit(base_url.rstrip("/"))
    try:
        link = urlsplit(next_url)
        link_port = _port(link)
    except ValueError as e:
        raise refuse(f"it is not a valid URL ({e})") from None
    if link.scheme.lower() not in _DEFAULT_PORTS or not link.netloc:
        raise refuse("it is not an absolute http(s) URL")
    if link.scheme.lower() != base.scheme.lower():
        raise refuse(f"its scheme is not {base.scheme!r}")
    if link.username is not None or link.password is not None:
        raise refuse("it carries user info")
    if (link.hostname or "").lower() != (base.hostname or "").lower():
        raise refuse(f"its host is not {base.hostname!r}")
    if link_port != _port(base):
        raise refuse(f"its port is not {_port(base)}")
    prefix = base.path.rstrip("/")
    path = link.path
    if not path.startswith(prefix + "/"):
        raise refuse(f"its path is not under {prefix + '/'!r}")
    if _has_dot_segment(path):
        raise refuse("its path has '.' or '..' segments")
    relative = path[len(prefix) :]
    return f"{relative}?{link.query}" if link.query else relative


def result_start_of(target: str) -> int | None:
    """
    The value of the C{resultStart} parameter (any case of the key) in a
    raw target, or C{None} if absent or not a non-negative integer.
    """
    for part in target.partition("?")[2].split("&"):
        key, _, value = part.partition("=")
        if key.lower() == "resultstart":
            return int(value) if value.isdigit() else None
    return None


def with_result_start(target: str, start: int) -> str:
    """
    C{target} with its C{resultStart} value replaced by C{start} (in place,
    any case of the key; appended if absent), every other byte unchanged.
    """
    path, sep, query = target.partition("?")
    parts = query.split("&") if sep else []
    for i, part in enumerate(parts):
        key, _, _ = part.partition("=")
        if key.lower() == "resultstart":
            parts[i] = f"{key}={start}"
            return f"{path}?{'&'.join(parts)}"
    kept = [p for p in parts if p]
    kept.append(f"resultStart={start}")
    return f"{path}?{'&'.join(kept)}"


def page_data(body: Any, wire_target: str) -> list[Any]:
    """
    The item list of a v3 answer (C{data}, a list): C{null} or absent is an
    empty page.

    :param wire_target: the request target as sent, for the error.
    :raise ResponseError: if C{body} is not an object or C{data} is not a list.
    """
    data = body.get("data") if isinstance(body, dict) else None
    if data is None:
        return []
    if not isinstance(data, list):
        raise ResponseError(
            f"'data' is a {type(data).__name__}, expected a list", target=wire_target
        )
    return data


def next_link(body: Any, wire_target: str) -> str | None:
    """
    The C{next} URL of a v3 answer, or C{None} when there is none (absent,
    C{null} or empty).

    :raise ResponseError: if C{next} is there but not a string.
    """
    value = body.get("next") if isinstance(body, dict) else None
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ResponseError(
            f"'next' is a {type(value).__name__}, expected a URL", target=wire_target
        )
    return value.strip() or None
