# -*- test-case-name: tests.test_feed_builder -*-
"""
Benchmark the feed builder: 1,000,000 synthetic indicators in three sources,
fed in pages of 10,000, built into Condensed, MaxCondensed and Expanded
feeds.  10% of the indicators repeat the value of another indicator from a
different source (cross-owner duplicates, merged into shared reports), and
every indicator carries one or two tags.

Each measurement runs in its own process so that peak RSS
(C{resource.getrusage(RUSAGE_SELF).ru_maxrss}) belongs to it alone.  Times
cover C{add} for every page, building and serialising (page generation is
not counted); "validate" is C{validate_document} on the built document or,
for C{build_bytes}, the per-report checks it does itself.  Prints figures,
asserts nothing.

    .venv/bin/python bench/bench_feed_build.py [--count N] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from tcbridge.feed.builder import FeedBuilder, FeedSettings
from tcbridge.feed.serialize import dumps
from tcbridge.feed.validator import validate_document
from tcbridge.threatconnect.records import Indicator

PAGE = 10_000
SOURCES = ("Common Community", "Acme Corp", "Technical Blogs and Reports")


def _page(start: int, size: int) -> list[Indicator]:
    """
    Indicators C{start}..C{start+size-1}: 40% files (md5 and sha256), 30%
    addresses (1 in 10 IPv6), 30% hosts; ratings 1-5; tags; 10% of them
    (C{n % 100 < 10}) with the value of indicator C{n + 10}, which comes
    from another source.
    """
    page = []
    for n in range(start, start + size):
        source = SOURCES[n % 3]
        kind = n % 10
        v = n + 10 if n % 100 < 10 else n
        seed = v.to_bytes(8, "big")
        common = {
            "source": source,
            "owner": source,
            "id": str(1_000_000 + n),
            "rating": float(1 + n % 5),
            "confidence": n % 101,
            "last_modified": 1_700_000_000 + n,
            "web_link": f"https://app.threatconnect.com/auth/indicators/details/x.xhtml?id={n}",
            "tags": (f"tag {n % 7}", "APT-28") if n % 11 == 0 else (f"tag {n % 7}",),
        }
        if kind < 4:
            page.append(
                Indicator(
                    type="File",
                    md5=hashlib.md5(seed).hexdigest().upper(),  # noqa: S324
                    sha256=hashlib.sha256(seed).hexdigest(),
                    **common,  # type: ignore[arg-type]
                )
            )
        elif kind < 7:
            ip = (
                f"2001:db8:{v >> 16:x}::{v & 0xFFFF:x}"
                if kind == 4 and v % 3 == 0
                else f"{10 + (v >> 24) % 200}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"
            )
            page.append(Indicator(type="Address", ip=ip, **common))  # type: ignore[arg-type]
        else:
            page.append(
                Indicator(type="Host", host=f"h{v:x}.example{v % 97}.com", **common)  # type: ignore[arg-type]
            )
    return page


def _pages(count: int) -> Iterator[list[Indicator]]:
    for start in range(0, count, PAGE):
        yield _page(start, min(PAGE, count - start))


def run_one(grouping: str, path: str, count: int) -> dict[str, float]:
    """
    Build one feed in this process and return its figures.
    """
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    builder = FeedBuilder(FeedSettings(grouping=grouping))  # type: ignore[arg-type]
    adding = 0.0
    for page in _pages(count):
        began = time.perf_counter()
        builder.add(page)
        adding += time.perf_counter() - began
        del page
    began = time.perf_counter()
    validate = 0.0
    if path == "bytes":
        data = builder.build_bytes(validate=True)
        building = time.perf_counter() - began
    else:
        doc = builder.build()
        building = time.perf_counter() - began
        checked = time.perf_counter()
        problems = validate_document(doc)
        validate = time.perf_counter() - checked
        assert not problems, problems[:3]
        began = time.perf_counter()
        data = dumps(doc)
        building += time.perf_counter() - began
        del doc
    return {
        "add_s": adding,
        "build_s": building,
        "validate_s": validate,
        "total_s": adding + building + validate,
        "bytes_mb": len(data) / 1e6,
        "reports": builder.stats.reports,
        "iocs": sum(builder.stats.iocs_by_kind.values()),
        "shared": builder.stats.shared_iocs,
        "rss_start_mb": rss_start / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    """
    Run each configuration C{--runs} times in fresh processes and print the
    median of every figure.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("GROUPING", "PATH"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.count)))
        return
    configs = [
        ("Condensed", "dict"),
        ("Condensed", "bytes"),
        ("MaxCondensed", "bytes"),
        ("Expanded", "dict"),
        ("Expanded", "bytes"),
    ]
    print(f"{args.count:,} indicators, pages of {PAGE:,}, median of {args.runs} runs")
    for grouping, path in configs:
        runs = []
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, __file__, "--count", str(args.count), "--one", grouping, path],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs.append(json.loads(out))
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        label = "build()+validate+dumps" if path == "dict" else "build_bytes()"
        print(
            f"{grouping:13} {label:23} add {med['add_s']:5.2f}s  build {med['build_s']:5.2f}s  "
            f"validate {med['validate_s']:4.2f}s  total {med['total_s']:5.2f}s  "
            f"{med['bytes_mb']:6.1f} MB out  {int(med['reports']):>8,} reports  "
            f"{int(med['iocs']):>9,} IOCs ({int(med['shared']):,} shared)  "
            f"RSS start {med['rss_start_mb']:4.0f} MB  "
            f"peak {med['peak_rss_mb']:5.0f} MB"
        )


if __name__ == "__main__":
    main()
