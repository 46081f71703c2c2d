"""
Incremental sync, measured: the simulator runs in its own process on
127.0.0.1 with C{--count} indicators; a bridge with C{incremental_sync} on
(the real service objects: store thread, child build) syncs once (a full
sync), then C{--churn} of the indicators change (a signed POST to the
simulator: ratings, tags, deactivations, deletions) and it syncs again (a
delta).  A second bridge without incremental sync syncs beside it each
time.  With C{--runs N} the full sync and the churn-then-delta step
repeat N times (each delta after a full sync), and medians are printed.
Prints, for each sync, the wall time, the requests to ThreatConnect, the
bytes of their answers and the indicators transferred, the ratios delta /
full, and whether the delta's feed is the full sync's.  With C{--latency},
the simulator answers each request that many seconds late, as a remote
ThreatConnect does.  Prints figures; asserts nothing.
.venv/bin/python bench/bench_delta.py [--count 200000] [--churn 0.005]
    [--api-version v2|v3] [--runs 1] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
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


def config_file(facts: dict[str, str], folder: Path, incremental: bool, version: str = "v2") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.conf"
    path.write_text(
        "[threatconnect]\n"
        f"url={facts['base_url']}\napi_key={facts['api_key']}\n"
        f"secret_key={facts['secret_key']}\nsources=*\nioc_grouping=Condensed\n"
        f"api_version={version}\n"
        f"[bridge]\ncache_folder={folder / 'cache'}\nlog_level=ERROR\n"
        f"incremental_sync={'true' if incremental else 'false'}\n"
    )
    return str(path)


def bench_bridge(
    reactor: Any, facts: dict[str, str], folder: Path, incremental: bool, version: str
) -> Any:
    """
    The service's objects (store thread, child build) for a bridge of the
    simulator C{facts} keeping its files in C{folder}.
    """
    config = load_config(config_file(facts, folder, incremental, version))
    return build_bridge(config, reactor, use_cache=True, threads=True)


async def timed_sync(bridge: Any) -> tuple[float, int, int, int, bytes]:
    """
    One sync: seconds, requests, bytes received, indicators transferred,
    the feed.
    """
    client = bridge.client
    requests, received = client.requests, client.received
    started = time.perf_counter()
    snapshot = await bridge.cycle.run()
    seconds = time.perf_counter() - started
    pulled = sum(p.indicators + p.inactive for p in bridge.status.pulls)
    return seconds, client.requests - requests, client.received - received, pulled, snapshot.body


async def run(reactor: Any, args: argparse.Namespace) -> None:
    with (
        simulator_process(args.count, latency=args.latency) as facts,
        tempfile.TemporaryDirectory() as tmp,
    ):
        incremental = bench_bridge(reactor, facts, Path(tmp) / "a", True, args.api_version)
        full_bridge = bench_bridge(reactor, facts, Path(tmp) / "b", False, args.api_version)
        fulls, deltas, same = [], [], []
        changed = 0
        for run in range(args.runs):
            if run:
                incremental.cycle.request_full_sync()
            fulls.append(await timed_sync(incremental))
            await timed_sync(full_bridge)  # so that both keep the same report history
            changed = churn(facts, args.churn)
            deltas.append(await timed_sync(incremental))
            reference = await timed_sync(full_bridge)
            same.append(deltas[-1][4] == reference[4])
            print(
                f"  round {run + 1}: full {fulls[-1][0]:.2f} s, delta {deltas[-1][0]:.2f} s",
                flush=True,
            )
        inc = incremental.status.incremental
        full = [statistics.median(f[i] for f in fulls) for i in range(4)]
        delta = [statistics.median(d[i] for d in deltas) for i in range(4)]
        print(
            f"{args.count:,} indicators, {args.api_version}; {changed:,} changed between the "
            f"syncs ({args.churn:%}); medians of {args.runs}"
        )
        print("                 wall time   requests   bytes received   indicators transferred")
        for name, row in (("full sync ", full), ("delta sync", delta)):
            print(f"  {name}     {row[0]:8.2f} s  {row[1]:9,.0f}  {row[2]:15,.0f}  {row[3]:12,.0f}")
        ratios = [d / max(f, 1e-9) for d, f in zip(delta, full, strict=True)]
        print(
            f"  delta / full   {ratios[0]:9.1%}  {ratios[1]:9.1%}  {ratios[2]:15.1%}"
            f"  {ratios[3]:12.1%}"
        )
        if inc is not None:
            print(f"  the last delta: {inc.added:,} rows added or updated, {inc.removed:,} removed")
        print(
            f"  delta feeds byte-identical to a full sync's of the same data: {sum(same)} of "
            f"{len(same)} (churn includes tag changes that do not move lastModified, which "
            "only a full sync sees)"
        )
        for bridge in (incremental, full_bridge):
            await bridge.pool.closeCachedConnections()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--churn", type=float, default=0.005)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds the simulator answers each request late (a remote ThreatConnect's)",
    )
    parser.add_argument("--api-version", choices=["v2", "v3"], default="v2")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
