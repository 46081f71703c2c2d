"""
Benchmark a whole write-mode sync, as a user runs it: the simulator in its
own process on 127.0.0.1, then C{tcbridge --config C write FILE} as a child
process, several times.  Prints the wall time and the child's peak RSS per
run and their medians, plus the feed's size and report count; with
C{--bare} also the time of a bare loop that only fetches and parses the same
signed pages (the DESIGN's yardstick).  Asserts nothing.

    .venv/bin/python bench/bench_write.py [--count 100000] [--runs 3]
        [--grouping Condensed] [--bare]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

BIN = Path(sys.executable).parent


def start_simulator(count: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """
    Start the simulator on a free loopback port; return it and its
    C{base_url}, C{api_key}, C{secret_key}.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "tcbridge.simulator", "--port", "0", "--count", str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    facts: dict[str, str] = {}
    assert process.stdout is not None
    while len(facts) < 3:
        line = process.stdout.readline()
        if not line:
            raise SystemExit("the simulator did not start")
        key, _, value = line.strip().partition("=")
        if key in ("base_url", "api_key", "secret_key"):
            facts[key] = value
    return process, facts


def timed(argv: list[str]) -> tuple[float, float, int, str]:
    """
    Run C{argv}; return wall seconds, the child's peak RSS in MB, exit code
    and what it wrote to stderr.
    """
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    err = child.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        print(err, file=sys.stderr)
    return elapsed, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--grouping", default="Condensed")
    parser.add_argument("--api-version", default="v2", choices=["v2", "v3"])
    parser.add_argument("--bare", action="store_true", help="also time the bare fetch loop")
    args = parser.parse_args()

    simulator, facts = start_simulator(args.count)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "bench.conf"
            config.write_text(
                "[threatconnect]\n"
                f"url={facts['base_url']}\napi_key={facts['api_key']}\n"
                f"secret_key={facts['secret_key']}\nsources=*\n"
                f"ioc_grouping={args.grouping}\nmax_reports=0\n"
                f"api_version={args.api_version}\n"
                "[bridge]\ncache_folder=\n"
            )
            out = Path(tmp) / "feed.json"
            times, peaks = [], []
            print(
                f"write mode, {args.count} indicators, {args.grouping}, "
                f"{args.api_version}, {args.runs} runs"
            )
            for run in range(args.runs):
                elapsed, peak, code, err = timed(
                    [str(BIN / "tcbridge"), "--config", str(config), "write", str(out)]
                )
                if code != 0:
                    raise SystemExit(f"run {run + 1} failed with exit status {code}")
                times.append(elapsed)
                peaks.append(peak)
                requests = err.rsplit("(", 1)[-1].split(" ")[0]
                print(
                    f"  run {run + 1}: {elapsed:.2f} s, peak RSS {peak:.0f} MB, {requests} requests"
                )
            doc = orjson.loads(out.read_bytes())
            iocs = sum(len(v) for r in doc["reports"] for v in r["iocs"].values())
            print(
                f"median: {statistics.median(times):.2f} s, peak RSS "
                f"{statistics.median(peaks):.0f} MB; feed {out.stat().st_size} bytes, "
                f"{len(doc['reports'])} reports, {iocs} IOCs"
            )
            if args.bare:
                script = Path(__file__).with_name("bare_pull.py")
                bare = []
                for _ in range(args.runs):
                    elapsed, _, code, _ = timed(
                        [
                            sys.executable,
                            str(script),
                            facts["base_url"],
                            facts["api_key"],
                            facts["secret_key"],
                        ]
                    )
                    bare.append(elapsed)
                print(
                    f"bare fetch+parse loop: median {statistics.median(bare):.2f} s; "
                    f"sync/bare = {statistics.median(times) / statistics.median(bare):.2f}"
                )
    finally:
        simulator.terminate()
        simulator.wait()


if __name__ == "__main__":
    main()
