# -*- test-case-name: tests.unit.test_simulator_faults -*-
"""
Injected faults for the ThreatConnect simulator (see
L{tcbridge.simulator.app.Simulator.fault_next}).

A fault is queued with a kind, a number of requests it applies to and
options; it is used up by authenticated requests only (requests refused by
authentication never consume one).  Kinds and options (every kind also takes
C{match}: apply only to requests whose raw target contains that text):

  - C{"500"}, C{"502"}, C{"503"}, C{"504"}: that status with a proxy's HTML
    error page; C{body=b""} for an empty body, C{content_type}, and
    C{retry_after} (int seconds or an HTTP-date string) to add a
    C{Retry-After} header.
  - C{"429"}: Too Many Requests with C{Retry-After: retry_after} (default
    1; int seconds or an HTTP-date string); C{body}, C{content_type}.
  - C{"html"}: 200 with a captive proxy's HTML login page (C{body}).
  - C{"slow"}: the real answer, after C{delay} seconds (default 60) on the
    simulator's clock.
  - C{"truncated"}: the real answer's status and headers with a
    C{Content-Length} of the whole body, then only C{keep} bytes of it
    (default half), then the connection is closed.
  - C{"reset"}: the connection is aborted without any response.
  - C{"changing"}: the request is served, then C{shift} items (default 1)
    appear at (positive) or disappear from (negative) the front of the
    listing it read (C{owner} and C{type} options name another).
"""

from __future__ import annotations

from typing import Any, Final

from attrs import define, field

__all__ = ["FAULT_KINDS", "Fault", "make_fault"]

#: The kinds L{make_fault} accepts (C{"status"} is L{Simulator.fail_next}'s).
FAULT_KINDS: Final = (
    "500",
    "502",
    "503",
    "504",
    "429",
    "html",
    "slow",
    "truncated",
    "reset",
    "changing",
)

#: Kinds answered without serving the request.
STATUS_KINDS: Final = frozenset(("status", "500", "502", "503", "504", "429", "html"))

_REASONS: Final = {
    200: "OK",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}

_ERROR_OPTIONS: Final = frozenset(("body", "content_type", "retry_after", "match"))
_OPTIONS: Final = {
    "status": frozenset(("status", "body", "content_type", "match")),
    "500": _ERROR_OPTIONS,
    "502": _ERROR_OPTIONS,
    "503": _ERROR_OPTIONS,
    "504": _ERROR_OPTIONS,
    "429": _ERROR_OPTIONS,
    "html": frozenset(("body", "match")),
    "slow": frozenset(("delay", "match")),
    "truncated": frozenset(("keep", "match")),
    "reset": frozenset(("match",)),
    "changing": frozenset(("shift", "owner", "type", "match")),
}

LOGIN_PAGE: Final = (
    b"<!DOCTYPE html>\n<html><head><title>Network Login</title></head>\n"
    b"<body><h1>Sign in to continue</h1>\n"
    b'<form method="post" action="/login">'
    b'<input name="username"><input name="password" type="password">'
    b'<button type="submit">Sign in</button></form>\n'
    b"<p>Access to this network requires authentication.</p></body></html>\n"
)


def proxy_page(status: int) -> bytes:
    """
    Return an nginx-style HTML error page for C{status}.
    """
    title = f"{status} {_REASONS.get(status, 'Error')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


@define
class Fault:
    """
    A pending fault.

    :ivar kind: one of L{FAULT_KINDS}, or C{"status"}.
    :ivar remaining: how many more requests it applies to.
    :ivar options: the kind's options, defaults filled in.
    """

    kind: str
    remaining: int
    options: dict[str, Any] = field(factory=dict)

    def matches(self, target: str) -> bool:
        """
        Say whether the fault applies to a request for raw C{target}.
        """
        match: str | None = self.options.get("match")
        return match is None or match in target

    def response(self) -> tuple[int, bytes, str, dict[str, str]]:
        """
        Return C{(status, body, content type, extra headers)} for a kind in
        L{STATUS_KINDS}.
        """
        o = self.options
        headers = {}
        if o.get("retry_after") is not None:
            headers["Retry-After"] = str(o["retry_after"])
        return o["status"], o["body"], o["content_type"], headers


def make_fault(kind: str, times: int, options: dict[str, Any]) -> Fault:
    """
    Validate C{options} for C{kind} and fill in the defaults.

    :raises ValueError: for an unknown kind or a bad option value.
    :raises TypeError: for an option C{kind} does not take.
    """
    if kind not in _OPTIONS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    unknown = set(options) - _OPTIONS[kind]
    if unknown:
        raise TypeError(f"fault {kind!r} takes no option {', '.join(sorted(unknown))}")
    o = dict(options)
    if kind.isdigit():
        status = int(kind)
        o["status"] = status
        o.setdefault("body", proxy_page(status))
        o.setdefault("content_type", "text/html")
        if status == 429:
            o.setdefault("retry_after", 1)
        retry = o.get("retry_after")
        if retry is not None and not isinstance(retry, int | str):
            raise ValueError("retry_after must be int seconds or an HTTP-date string")
    elif kind == "html":
        o.update(status=200, content_type="text/html; charset=utf-8")
        o.setdefault("body", LOGIN_PAGE)
    elif kind == "slow":
        o["delay"] = float(o.get("delay", 60.0))
        if o["delay"] < 0:
            raise ValueError("delay must not be negative")
    elif kind == "truncated":
        keep = o.get("keep")
        if keep is not None and (not isinstance(keep, int) or keep < 0):
            raise ValueError("keep must be a non-negative int")
    elif kind == "changing":
        o["shift"] = int(o.get("shift", 1))
    return Fault(kind, times, o)
