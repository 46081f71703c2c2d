# -*- test-case-name: tests.unit.test_simulator -*-
"""
The simulator's request parameters (paging, TQL, what to include) and the
envelopes its answers are wrapped in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import orjson
from twisted.web.iweb import IRequest

#: The C{/v2/types/indicatorTypes} answer for the generated types.
INDICATOR_TYPES: Final = (
    ("Address", "addresses", "address", "ip"),
    ("EmailAddress", "emailAddresses", "emailAddress", "address"),
    ("File", "files", "file", "md5"),
    ("Host", "hosts", "host", "hostName"),
    ("URL", "urls", "url", "text"),
)

MAX_RESULT_LIMIT: Final = 10000
DEFAULT_RESULT_LIMIT: Final = 100

MSG_INVALID_TIMESTAMP: Final = "Invalid timestamp"
MSG_TIME_RANGE: Final = "Timestamp out of acceptable time range"
MSG_ACCESS_DENIED: Final = "Access Denied"
MSG_SIGNATURE: Final = "Signature data did not match expected result"
MSG_NOT_FOUND: Final = "The requested resource was not found"
MSG_PAGING: Final = (
    "The resultStart and resultLimit query parameters must be integers and the "
    "maximum value for resultLimit is 10000"
)


class FailureError(Exception):
    """
    Answer the current request with an error envelope (v2, or v3 for
    C{/v3/} paths).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def paging(params: dict[str, list[str]]) -> tuple[int, int]:
    """
    Return C{(resultStart, resultLimit)} from the query.

    :raises FailureError: 400 for non-integers, negative values or a limit over
        L{MAX_RESULT_LIMIT}.
    """
    try:
        start = int(params["resultstart"][0]) if "resultstart" in params else 0
        limit = int(params["resultlimit"][0]) if "resultlimit" in params else DEFAULT_RESULT_LIMIT
    except ValueError:
        raise FailureError(400, MSG_PAGING) from None
    if start < 0 or limit < 0 or limit > MAX_RESULT_LIMIT:
        raise FailureError(400, MSG_PAGING)
    return start, limit


def tql_text(params: dict[str, list[str]]) -> str:
    """
    Return the query's TQL; several C{tql=} parameters are AND-ed.
    """
    return " AND ".join(t for t in params.get("tql", ()) if t.strip())


def wants_count(params: dict[str, list[str]]) -> bool:
    """
    Say whether the query asks for C{count=true}.
    """
    return any(v.lower() == "true" for v in params.get("count", ()))


def v2_active(params: dict[str, list[str]]) -> frozenset[bool]:
    """
    Return the C{active} values a v2 query selects: only C{True} unless
    C{filters=} has C{active=...} terms (AND-ed, or OR-ed with
    C{orParams=true}).
    """
    wanted = []
    for value in params.get("filters", ()):
        for term in value.split(","):
            name, sep, rest = term.strip().partition("=")
            if sep and name.strip().lower() == "active":
                wanted.append(rest.strip().lower() == "true")
    if not wanted:
        return frozenset((True,))
    values = frozenset(wanted)
    if any(v.lower() == "true" for v in params.get("orparams", ())) or len(values) == 1:
        return values
    return frozenset()


def wants_tags(params: dict[str, list[str]]) -> bool:
    """
    Say whether the query asks for tags (C{includes=tags} or C{includeTags=true}).
    """
    return "tags" in params.get("includes", ()) or "true" in params.get("includetags", ())


def indicator_types() -> list[dict[str, Any]]:
    """
    Return the C{indicatorType} list for the generated types.
    """
    return [
        {
            "name": name,
            "custom": "false",
            "parsable": "true",
            "apiBranch": branch,
            "apiEntity": entity,
            "value1Label": label,
        }
        for name, branch, entity, label in INDICATOR_TYPES
    ]


def envelope(key: str, items: list[dict[str, Any]], count: int, with_count: bool) -> bytes:
    """
    Serialise a v2 success envelope; C{resultCount} only when C{with_count}.
    """
    data: dict[str, Any] = {"resultCount": count, key: items} if with_count else {key: items}
    return orjson.dumps({"status": "Success", "data": data})


def raw_envelope(key: str, items: bytes, count: int, with_count: bool) -> bytes:
    """
    Like L{envelope}, for C{items} already serialised as a JSON array.
    """
    head = f'"resultCount":{count},' if with_count else ""
    return b"".join([f'{{"status":"Success","data":{{{head}"{key}":'.encode(), items, b"}}"])


def error_body(v3: bool, message: str) -> bytes:
    """
    Return the v2 or v3 error envelope for C{message}.
    """
    if v3:
        return orjson.dumps({"status": "Error", "errCode": "0x1001", "message": message})
    return orjson.dumps({"status": "Failure", "message": message})


def header(request: IRequest, name: bytes) -> str | None:
    """
    Return the first value of request header C{name} as text, or C{None}.
    """
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def parse_time(text: str) -> int | None:
    """
    Epoch seconds of an ISO 8601 time (C{2026-12-02T03:40:00Z},
    C{+00:00} or no zone: UTC), or C{None} for an empty text.

    :raises FailureError: (400) for a text that is not such a time.
    """
    if not text.strip():
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FailureError(400, f"Invalid date: {text}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def modified_since(params: dict[str, list[str]]) -> int | None:
    """
    The v2 C{modifiedSince=} time, if given.
    """
    return parse_time((params.get("modifiedsince") or [""])[0])
