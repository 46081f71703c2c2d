# -*- test-case-name: tests.unit.test_web_http -*-
"""
Conditional requests and content negotiation for the feed, on werkzeug's
HTTP header parsers: C{If-None-Match} (weak comparison), C{If-Modified-Since}
and C{Accept-Encoding}.
"""

from __future__ import annotations

from werkzeug.http import parse_accept_header, parse_date, parse_etags, unquote_etag


def accepts_gzip(accept_encoding: bytes | None) -> bool:
    """
    Whether a response may be gzip-compressed for this C{Accept-Encoding}
    (RFC 9110 section 12.5.3, parsed by werkzeug): C{gzip} (or C{x-gzip},
    or C{*} when gzip is not named) with a q-value above 0, unless
    C{identity} is named with a higher q-value.
    """
    if not accept_encoding:
        return False
    qualities: dict[str, float] = {}
    for value, quality in parse_accept_header(accept_encoding.decode("latin-1")):
        # werkzeug keeps parameters other than q in the value: gzip;level=1
        coding = value.split(";")[0].strip().lower()
        qualities[coding] = max(quality, qualities.get(coding, 0.0))
    if "gzip" in qualities or "x-gzip" in qualities:
        q_gzip = max(qualities.get("gzip", 0.0), qualities.get("x-gzip", 0.0))
    else:
        q_gzip = qualities.get("*", 0.0)
    return q_gzip > 0.0 and qualities.get("identity", 0.0) <= q_gzip


def none_match(if_none_match: bytes, etag: bytes) -> bool:
    """
    Whether C{If-None-Match} matches C{etag} (the weak comparison of RFC
    9110 section 13.1.2, parsed by werkzeug): C{*}, or any listed tag,
    C{W/} or not.
    """
    tags = parse_etags(if_none_match.decode("latin-1"))
    opaque, _ = unquote_etag(etag.decode("ascii"))
    return bool(tags.star_tag or tags.contains_weak(opaque))


def not_modified_since(if_modified_since: bytes, modified_at: int | None) -> bool:
    """
    Whether C{If-Modified-Since} is at or after C{modified_at}; an
    unparsable date, or no modification time, means "modified".
    """
    if modified_at is None:
        return False
    since = parse_date(if_modified_since.decode("latin-1"))
    return since is not None and modified_at <= since.timestamp()
