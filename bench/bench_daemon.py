"""
The daemon under load: what the DESIGN's "the reactor never stalls" and the
memory and restart promises are about, measured from outside.

 1. The simulator runs in its own process on 127.0.0.1 with C{--count}
    indicators.
 2. The bridge service (C{daemon_probe.py}: the real service tree plus a
    10 ms timer that records how late it fires) starts with an empty cache
    and syncs; meanwhile this process asks C{GET /healthz} every 20 ms over
    real HTTP and times the answers.
 3. Once the feed is published and the daemon idles, its RSS is read from
    C{/proc} and compared with the feed's bytes plus its gzip form.
 4. The daemon is stopped and C{twistd -n tcbridge} started on the same
    cache; the time from starting it to the first byte of the cached feed
    is measured.

Prints figures; asserts nothing.

    .venv/bin/python bench/bench_daemon.py [--count 1000000] [--grouping Condensed] [--incremental]
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sync import simulator

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(port: int, path: str, gzip: bool = False, timeout: float = 5.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Accept-Encoding": "gzip"} if gzip else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until_idle(port: int, limit: float = 300.0) -> float:
    """
    Wait until /healthz says no sync is running; when that was.
    """
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        _, body = get(port, "/healthz")
        if not orjson.loads(body)["running"]:
            break
        time.sleep(0.1)
    return time.perf_counter()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def watch_sync(port: int, probe: subprocess.Popen[str]) -> tuple[list[float], dict[str, float]]:
    """
    Time /healthz every 20 ms until the probe reports the first publish;
    return the latencies (seconds) and the probe's stall figures.
    """
    latencies: list[float] = []
    assert probe.stdout is not None
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(probe.stdout, selectors.EVENT_READ)
    while True:
        if selector.select(timeout=0.02):
            line = probe.stdout.readline()
            if not line:
                raise SystemExit("the daemon stopped")
            return latencies, orjson.loads(line)
        sent = time.perf_counter()
        try:
            get(port, "/healthz")
        except OSError:
            continue
        latencies.append(time.perf_counter() - sent)


def has_numpy(pid: int) -> bool:
    """
    Whether the process has numpy loaded (its extension mapped).
    """
    return "numpy" in Path(f"/proc/{pid}/maps").read_text()


def twistd(config: Path, folder: Path | str) -> subprocess.Popen[bytes]:
    """
    C{twistd -n tcbridge --config CONFIG} in C{folder}, quietly.
    """
    return subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "tcbridge", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder,
    )


def first_byte(config: Path, cache: Path, port: int) -> float:
    """
    Start twistd on the cache; return seconds until the cached feed's first
    byte arrives.
    """
    started = time.perf_counter()
    daemon = twistd(config, cache)
    try:
        while time.perf_counter() - started < 60:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/threatconnect/json")
                response = connection.getresponse()
                response.read(1)
                elapsed = time.perf_counter() - started
                length = int(response.getheader("Content-Length") or 0)
                connection.close()
                if length > 100_000:
                    return elapsed
            except OSError:
                pass
            time.sleep(0.01)
        raise SystemExit("the restarted daemon never served the cached feed")
    finally:
        daemon.terminate()
        daemon.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--grouping", default="Condensed")
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="with incremental_sync on: the sync measured is then the first, full sync, "
        "which also fills the indicator store",
    )
    parser.add_argument(
        "--restart-only",
        metavar="DIR",
        help="keep the run's files in DIR; if DIR already holds a synced cache, "
        "only measure the restart on it (for working on the start path)",
    )
    args = parser.parse_args()
    if args.restart_only and (Path(args.restart_only) / "bench.conf").exists():
        kept = Path(args.restart_only)
        port = int(kept.joinpath("port").read_text())
        for _ in range(3):
            restart = first_byte(kept / "bench.conf", kept / "cache", port)
            print(f"restart: first byte of the cached feed {restart:.2f} s after start")
        return
    with simulator(args.count) as facts, tempfile.TemporaryDirectory() as tmp:
        if args.restart_only:
            tmp = args.restart_only
            Path(tmp).mkdir(parents=True, exist_ok=True)
        port = free_port()
        Path(tmp, "port").write_text(str(port))
        cache = Path(tmp) / "cache"
        config = Path(tmp) / "bench.conf"
        config.write_text(
            "[threatconnect]\n"
            f"url={facts['base_url']}\napi_key={facts['api_key']}\n"
            f"secret_key={facts['secret_key']}\nsources=*\n"
            f"ioc_grouping={args.grouping}\nmax_reports=0\n"
            f"[bridge]\ncache_folder={cache}\nlistener_port={port}\n"
            "log_level=WARNING\nfeed_retrieval_minutes=600\n"
            f"incremental_sync={'true' if args.incremental else 'false'}\n"
        )
        probe = subprocess.Popen(
            [sys.executable, str(HERE / "daemon_probe.py"), str(config)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            started = time.perf_counter()
            latencies, stalls = watch_sync(port, probe)
            elapsed = time.perf_counter() - started
            # The cycle ends after publishing (the indicator store commits
            # then): idle is once it has ended.
            ended = wait_until_idle(port) - started
            time.sleep(3)
            _, body = get(port, "/threatconnect/json")
            _, gzipped = get(port, "/threatconnect/json", gzip=True)
            idle = rss_mib(probe.pid)
            numpy_loaded = has_numpy(probe.pid)
        finally:
            probe.terminate()
            probe.wait()
        latencies.sort()
        feed_mib = len(body) / 2**20
        gzip_mib = len(gzipped) / 2**20
        store = ", filling the indicator store" if args.incremental else ""
        print(
            f"{args.count:,} indicators, {args.grouping}{store}: published in {elapsed:.1f} s, "
            f"the cycle ended after {ended:.1f} s"
        )
        print(
            f"reactor stalls (10 ms timer lateness): max {stalls['max_ms']:.0f} ms, "
            f"p99 {stalls['p99_ms']:.0f} ms, {stalls['over_50_ms']:.0f} of "
            f"{stalls['ticks']:.0f} ticks late by over 50 ms"
        )
        if stalls.get("late"):
            print(f"  late ticks (since the service started): {', '.join(stalls['late'])}")
        print(
            f"/healthz from another process during the sync: {len(latencies)} requests, "
            f"median {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, "
            f"max {latencies[-1] * 1000:.1f} ms"
        )
        print(
            f"idle RSS after publishing: {idle:.0f} MiB; feed {feed_mib:.1f} MiB + gzip "
            f"{gzip_mib:.1f} MiB + 80 = {feed_mib + gzip_mib + 80:.0f} MiB allowed "
            f"(numpy {'loaded' if numpy_loaded else 'not loaded'} in the service)"
        )
        restart = first_byte(config, cache, port)
        print(f"restart: first byte of the cached feed {restart:.2f} s after start")


if __name__ == "__main__":
    main()
