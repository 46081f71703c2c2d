# -*- test-case-name: tests.unit.test_tc_tql -*-
"""
Building ThreatConnect Query Language (TQL) for C{/v3/indicators} from the
settings, and the request targets that carry it.

Strings are double-quoted with C{"} and C{\\} escaped by a backslash; the
whole query is then percent-encoded with C{quote(safe="")}, so the target
the client signs is exactly the target that goes on the wire (nothing is
left for an HTTP library to re-encode).  For example
C{build_tql(owner="Common Community", types={"Host"}, min_rating=1)} is::

    ownerName EQ "Common Community" AND typeName IN ("Host") AND rating >= 1
    AND indicatorActive EQ true

(on one line).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

#: the order types are listed in, before any others (sorted)
_TYPE_ORDER = ("File", "Address", "Host")


def tql_string(value: str) -> str:
    """
    A TQL string literal: C{value} in double quotes, with C{\\} and C{"}
    escaped by a backslash: C{a"b\\c} becomes C{"a\\"b\\\\c"}.
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def tql_number(value: float) -> str:
    """
    A TQL number: C{1} for C{1.0}, C{2.5} for C{2.5}.

    :raise ValueError: for NaN or an infinity.
    """
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def ordered_types(types: Iterable[str]) -> tuple[str, ...]:
    """
    C{types} without repeats: File, Address, Host first (in that order),
    then any others sorted.
    """
    wanted = set(types)
    known = [t for t in _TYPE_ORDER if t in wanted]
    return tuple(known + sorted(wanted.difference(_TYPE_ORDER)))


def build_tql(
    *,
    owner: str | None = None,
    owners: Sequence[str] | None = None,
    types: Iterable[str] = _TYPE_ORDER,
    min_rating: float | None = None,
    active_only: bool = True,
) -> str:
    """
    The TQL selecting what one source wants, clauses joined by C{AND}:

    C{ownerName EQ "<owner>"} (if C{owner} is given), C{ownerName IN
    ("<a>","<b>")} (if C{owners} are),
    C{typeName IN ("File","Address","Host")} (the types, in L{ordered_types}
    order), C{rating >= <min_rating>} (if given) and
    C{indicatorActive EQ true} (if C{active_only}).

    :raise ValueError: if C{types} is empty (nothing could match) or
        C{min_rating} is not a finite number.
    """
    names = ordered_types(types)
    if not names:
        raise ValueError("no indicator types to ask for")
    clauses = []
    if owner is not None:
        clauses.append(f"ownerName EQ {tql_string(owner)}")
    if owners is not None:
        clauses.append(f"ownerName IN ({','.join(tql_string(o) for o in owners)})")
    clauses.append(f"typeName IN ({','.join(tql_string(t) for t in names)})")
    if min_rating is not None:
        clauses.append(f"rating >= {tql_number(min_rating)}")
    if active_only:
        clauses.append("indicatorActive EQ true")
    return " AND ".join(clauses)


def encode_param(value: str) -> str:
    """
    C{value} percent-encoded for a query string, every reserved character
    included (C{quote(value, safe="")}): spaces become C{%20}, quotes
    C{%22}, commas C{%2C}, C{=} C{%3D}.
    """
    return quote(value, safe="")


def indicators_target(
    tql: str,
    *,
    start: int = 0,
    limit: int = 10000,
    fields: Iterable[str] = ("tags",),
    sorting: str | None = None,
) -> str:
    """
    The request target (relative to the API base URL) for one page of
    C{/v3/indicators}:
    C{/v3/indicators?tql=<tql>&fields=tags&resultStart=0&resultLimit=N[&sorting=...]},
    every value percent-encoded by L{encode_param}.

    :param tql: the query, unencoded; C{""} for none.
    :param fields: repeated C{fields=} parameters, in order.
    :param sorting: e.g. C{"dateAdded ASC"}, or C{None} for none.
    """
    params = []
    if tql:
        params.append(f"tql={encode_param(tql)}")
    params.extend(f"fields={encode_param(f)}" for f in fields)
    params.append(f"resultStart={start}")
    params.append(f"resultLimit={limit}")
    if sorting:
        params.append(f"sorting={encode_param(sorting)}")
    return "/v3/indicators?" + "&".join(params)


def owners_target(*, start: int = 0, limit: int = 10000) -> str:
    """
    The request target for one page of C{/v3/security/owners}.
    """
    return f"/v3/security/owners?resultStart={start}&resultLimit={limit}"


def iso_time(seconds: int) -> str:
    """
    Epoch seconds in ThreatConnect's ISO 8601 form, UTC:
    C{2026-12-02T03:40:00Z}.
    """
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: The clause that asks for active and inactive indicators alike (both are
#: named: without C{indicatorActive}, inactive ones stay hidden).
ANY_ACTIVE = "(indicatorActive EQ true OR indicatorActive EQ false)"


def with_since(tql: str, modified_since: int | None) -> str:
    """
    C{tql}, with C{lastModified >= <time>} added for a delta (the query in
    parentheses, so that the term narrows whatever it says).
    """
    if modified_since is None:
        return tql
    term = f"lastModified >= {tql_string(iso_time(modified_since))}"
    return f"({tql}) AND {term}" if tql.strip() else term
