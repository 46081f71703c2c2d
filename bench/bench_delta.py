"""
Incremental sync, measured: the simulator runs in its own process on
127.0.0.1 with C{--count} indicators; a bridge with C{incremental_sync} on
(the real service objects: store thread, child build) syncs once (a full
sync), then C{--churn} of the indicators change (a signed POST to the
simulator: ratings, tags, deactivations, deletions) and it syncs again (a
delta).  A second bridge without incremental sync syncs beside it each
time.  Prints, for each sync, the wall time, the requests to ThreatConnect
and the indicators transferred, the ratios delta / full, and whether the
delta's feed is the full sync's.  Prints figures; asserts nothing.
.venv/bin/python bench/bench_delta.py [--count 200000] [--churn 0.005]
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from twisted.internet import defer, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tcbridge.config import load_config
from tcbridge.simulator.process import simulator_process
from tcbridge.threatconnect.signing import authorization
from tcbridge.wiring import build_bridge


def churn(facts: dict[str, str], fraction: float) -> int:
    """
    Ask the simulator to change C{fraction} of its indicators; how many.
    """
    url = urlsplit(facts["base_url"])
    target = f"{url.path}/_simulator/churn"
    headers = authorization(facts["api_key"], facts["secret_key"], target, "POST", int(time.time()))
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=600)
    connection.request("POST", target, orjson.dumps({"fraction": fraction, "seed": 7}), headers)
    answer = orjson.loads(connection.getresponse().read())
    return int(answer["changed"])


def config_file(facts: dict[str, str], folder: Path, incremental: bool) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.conf"
    path.write_text(
        "[threatconnect]\n"
        f"url={facts['base_url']}\napi_key={facts['api_key']}\n"
        f"secret_key={facts['secret_key']}\nsources=*\nioc_grouping=Condensed\n"
        f"[bridge]\ncache_folder={folder / 'cache'}\nlog_level=ERROR\n"
        f"incremental_sync={'true' if incremental else 'false'}\n"
    )
    return str(path)


async def timed_sync(bridge: Any) -> tuple[float, int, int, bytes]:
    """
    One sync: seconds, requests, indicators transferred, the feed.
    """
    requests = bridge.client.requests
    started = time.perf_counter()
    snapshot = await bridge.cycle.run()
    seconds = time.perf_counter() - started
    pulled = sum(p.indicators + p.inactive for p in bridge.status.pulls)
    return seconds, bridge.client.requests - requests, pulled, snapshot.body


async def run(reactor: Any, args: argparse.Namespace) -> None:
    with simulator_process(args.count) as facts, tempfile.TemporaryDirectory() as tmp:
        incremental = build_bridge(
            load_config(config_file(facts, Path(tmp) / "a", True)),
            reactor,
            use_cache=True,
            threads=True,
        )
        full_bridge = build_bridge(
            load_config(config_file(facts, Path(tmp) / "b", False)),
            reactor,
            use_cache=True,
            threads=True,
        )
        full = await timed_sync(incremental)
        await timed_sync(full_bridge)  # so that both keep the same report history
        changed = churn(facts, args.churn)
        delta = await timed_sync(incremental)
        reference = await timed_sync(full_bridge)
        inc = incremental.status.incremental
        print(f"{args.count:,} indicators; {changed:,} changed between the syncs ({args.churn:%})")
        print("                 wall time   requests   indicators transferred")
        print(f"  full sync      {full[0]:8.2f} s  {full[1]:9,}  {full[2]:12,}")
        print(f"  delta sync     {delta[0]:8.2f} s  {delta[1]:9,}  {delta[2]:12,}")
        print(
            f"  delta / full   {delta[0] / full[0]:9.1%}  {delta[1] / max(full[1], 1):9.1%}"
            f"  {delta[2] / max(full[2], 1):12.1%}"
        )
        if inc is not None:
            print(
                f"  the second sync was a {inc.kind}: {inc.added:,} rows added or updated, "
                f"{inc.removed:,} removed"
            )
        same = "byte-identical to" if delta[3] == reference[3] else "different from"
        print(
            f"  the delta's feed is {same} a full sync's of the same data (churn includes "
            "tag changes that do not move lastModified, which only a full sync sees)"
        )
        for bridge in (incremental, full_bridge):
            await bridge.pool.closeCachedConnections()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--churn", type=float, default=0.005)
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
