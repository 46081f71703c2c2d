# -*- test-case-name: tests.unit.test_tc_v3 -*-
"""
Test helpers for v3 paging: a tiny in-memory ThreatConnect v3
(C{/v3/indicators} keyed by the decoded TQL, C{/v3/security/owners}) whose
absolute C{next} links keep every parameter of the request, and a wrapper
that changes the data between requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field

from tests.helpers_tc import Reply, json_reply, query_of


def _with_start(query: str, start: int) -> str:
    parts = query.split("&")
    for i, part in enumerate(parts):
        if part.partition("=")[0] == "resultStart":
            parts[i] = f"resultStart={start}"
    return "&".join(parts)


@define
class V3TC:
    """
    A ThreatConnect v3 over in-memory data.

    :ivar by_tql: decoded TQL -> the items it selects (a live list: tests
        may change it between requests).
    :ivar owners: the names C{/v3/security/owners} lists.
    :ivar link_base: scheme, host, port and prefix of the C{next} links.
    :ivar forbidden: status to answer C{/v3/indicators} with, if not 200.
    """

    by_tql: dict[str, list[Any]] = field(factory=dict)
    owners: list[str] = field(factory=list)
    link_base: str = "https://app.threatconnect.com/api"
    prefix: str = "/api"
    forbidden: int | None = None

    def _page(self, uri: str, items: list[Any]) -> Reply:
        path, _, query = uri.partition("?")
        params = query_of(uri)
        start = int(params.get("resultStart", "0"))
        limit = int(params.get("resultLimit", "100"))
        doc: dict[str, Any] = {"data": items[start : start + limit], "status": "Success"}
        if start + limit < len(items):
            doc["next"] = f"{self.link_base}{path[len(self.prefix) :]}?" + _with_start(
                query, start + limit
            )
        return json_reply(doc)

    def __call__(self, uri: str) -> Reply:
        path = uri.partition("?")[0]
        assert path.startswith(self.prefix), uri
        path = path[len(self.prefix) :]
        if path == "/v3/security/owners":
            return self._page(uri, [{"id": i, "name": n} for i, n in enumerate(self.owners, 1)])
        assert path == "/v3/indicators", uri
        if self.forbidden is not None:
            return json_reply(
                {"status": "Error", "errCode": "0x1001", "message": "Access Denied"},
                self.forbidden,
            )
        tql = query_of(uri).get("tql", "")
        return self._page(uri, self.by_tql.get(tql, []))


def changing(
    handler: Callable[[str], Reply], change: Callable[[int], None]
) -> Callable[[str], Reply]:
    """
    C{handler}, calling C{change(n)} right after answering the C{n}-th
    request (1-based), so the data differs between pages.
    """
    count = [0]

    def wrapped(uri: str) -> Reply:
        reply = handler(uri)
        count[0] += 1
        change(count[0])
        return reply

    return wrapped


def v3_item(n: int, owner: str = "Common Community", **extra: Any) -> dict[str, Any]:
    """
    A v3 Host item C{h<n>.example} with id C{n}.
    """
    item: dict[str, Any] = {
        "id": n,
        "ownerName": owner,
        "type": "Host",
        "summary": f"h{n}.example",
        "hostName": f"h{n}.example",
        "active": True,
    }
    item.update(extra)
    return item
