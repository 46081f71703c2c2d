"""
Measure what the DESIGN's "the reactor never stalls" invariant is about: the
bridge (its real service tree, in this process) syncs a large feed from the
simulator (in its own process on 127.0.0.1) while a 10 ms timer in the same
reactor records how late it fires, and GET /healthz is timed over real HTTP
every 100 ms.  Prints the sync time, the longest stalls, /healthz latency and
peak RSS; asserts nothing.

    .venv/bin/python bench/bench_stall.py [--count 1000000] [--grouping Condensed]
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import treq
from twisted.internet import defer, task

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_write import start_simulator

from tcbridge.tap import Options, build_service

TICK = 0.01


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def measure(reactor: Any, config: str, port: int) -> None:
    options = Options()
    options.parseOptions(["--config", config])
    service = build_service(options, reactor)
    lags: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        lags.append(now - last[0] - TICK)
        last[0] = now

    ticker = task.LoopingCall(tick)
    ticker.clock = reactor
    start = time.perf_counter()
    service.startService()
    ticker.start(TICK, now=False)
    latencies: list[float] = []
    url = f"http://127.0.0.1:{port}/healthz"
    while True:
        sent = time.perf_counter()
        response = await treq.get(url, reactor=reactor)
        health = orjson.loads(await response.content())
        latencies.append(time.perf_counter() - sent)
        if health["cycles_ok"] or health["cycles_failed"]:
            break
        await task.deferLater(reactor, 0.1, lambda: None)
    elapsed = time.perf_counter() - start
    ticker.stop()
    await defer.maybeDeferred(service.stopService)
    lags.sort()
    print(
        f"sync: {'published' if health['cycles_ok'] else 'FAILED'} in {elapsed:.1f} s, "
        f"{health['reports']} reports, {health['iocs']} IOCs"
    )
    print(
        f"reactor stalls (10 ms timer lateness): max {lags[-1] * 1000:.0f} ms, "
        f"p99 {lags[int(len(lags) * 0.99)] * 1000:.0f} ms, "
        f"over 100 ms: {sum(1 for lag in lags if lag > 0.1)} of {len(lags)} ticks"
    )
    print(
        f"/healthz during the sync: {len(latencies)} requests, median "
        f"{statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the bridge process: {peak:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--grouping", default="Condensed")
    args = parser.parse_args()
    simulator, facts = start_simulator(args.count)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            config = Path(tmp) / "bench.conf"
            config.write_text(
                "[threatconnect]\n"
                f"url={facts['base_url']}\napi_key={facts['api_key']}\n"
                f"secret_key={facts['secret_key']}\nsources=*\n"
                f"ioc_grouping={args.grouping}\nmax_reports=0\n"
                f"[bridge]\ncache_folder={tmp}/cache\nlistener_port={port}\n"
                "log_level=WARNING\n"
            )
            task.react(lambda reactor: defer.ensureDeferred(measure(reactor, str(config), port)))
    finally:
        simulator.terminate()
        simulator.wait()


if __name__ == "__main__":
    main()
