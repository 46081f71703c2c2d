"""
The yardstick for sync speed: fetch and parse every page a sync of all
owners would fetch (signed GETs and orjson parsing only, no feed building).
Run by bench_sync.py; prints the number of items fetched.

    .venv/bin/python bench/bare_pull.py BASE_URL API_KEY SECRET_KEY
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet import defer, task
from twisted.web.client import Agent, HTTPConnectionPool

from tcbridge.threatconnect.client import ThreatConnectClient

PAGE = 10_000
#: the pages a sync asks for overlap by this many indicators
OVERLAP = 100
BRANCHES = (("files", "file"), ("addresses", "address"), ("hosts", "host"))


async def pull_all(reactor: Any, base: str, key: str, secret: str) -> int:
    """
    Fetch and parse every page of every owner; return the item count.
    """
    pool = HTTPConnectionPool(reactor)
    client = ThreatConnectClient(HTTPClient(Agent(reactor, pool=pool)), reactor, base, key, secret)
    owners_page = await client.get_json(f"/v2/owners?resultStart=0&resultLimit={PAGE}")
    items = 0
    for owner in (o["name"] for o in owners_page["data"]["owner"]):
        for branch, entity in BRANCHES:
            start = 0
            while True:
                page = await client.get_json(
                    f"/v2/indicators/{branch}?owner={quote(owner, safe='')}&includes=tags"
                    f"&resultStart={start}&resultLimit={PAGE}"
                )
                got = len(page["data"].get(entity, []))
                items += got
                start += PAGE - OVERLAP
                if got < PAGE:
                    break
    await pool.closeCachedConnections()
    return items


def main() -> None:
    def run(reactor: Any) -> defer.Deferred[None]:
        d = defer.ensureDeferred(pull_all(reactor, *sys.argv[1:4]))
        return d.addCallback(print)

    task.react(run)


if __name__ == "__main__":
    main()
