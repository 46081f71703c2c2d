"""
Golden feeds: recipes that produce a 100,000-indicator feed from the
simulator through the real programs only (C{python -m tcbridge.simulator},
C{tcbridge write}, C{twistd -n tcbridge}), so that the recipe does not depend
on any internal API and the recorded digests pin the feed bytes across
rewrites of the pipeline.

The digests in C{tests/data/golden-feeds.json} were recorded with the code
as it stood before the performance work (issue 8); the test
C{tests/integration/test_golden.py} runs every recipe again and compares.

    .venv/bin/python -m tests.golden --record     # rewrite the digests
    .venv/bin/python -m tests.golden [--keep DIR]  # compare (and keep the feeds)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path

import attrs

from tcbridge.simulator.process import simulator_process
from tests.helpers import free_port

BIN = Path(sys.executable).parent
GOLDEN = Path(__file__).resolve().parent / "data" / "golden-feeds.json"
COUNT = 100_000
#: the data set whose feed seeds the report history of the "history" recipes
HISTORY_COUNT = 90_000

GROUPINGS = ("Expanded", "Condensed", "MaxCondensed")


@attrs.frozen
class Recipe:
    """
    One golden feed.

    :ivar name: its key in the golden file.
    :ivar grouping: C{ioc_grouping}.
    :ivar extra: more C{[threatconnect]} lines.
    :ivar history: seed the cache folder with the feed of a
        L{HISTORY_COUNT} data set made with another seed and take the feed a
        service publishes over it (report timestamps then come from that
        history).
    :ivar bridge: more C{[bridge]} lines.
    :ivar layout: C{"v2"}, or C{"2015"} for a 2015 bridge file whose
        sources are API paths (read through the generic listing).
    """

    name: str
    grouping: str
    extra: str = ""
    history: bool = False
    bridge: str = ""
    layout: str = "v2"


_OPTIONS = (
    "api_version=v3\nscore_source=max\nioc_min_score=30\nmax_reports=60\n"
    "web_url=https://tc.example.com/auth/\n"
    "filtered_hashes={dir}/hashes.txt\nfiltered_ips={dir}/ips.txt\n"
    "filtered_hosts={dir}/hosts.txt\n"
)

RECIPES: tuple[Recipe, ...] = (
    *(Recipe(f"{g}-plain", g) for g in GROUPINGS),
    *(Recipe(f"{g}-history", g, history=True) for g in GROUPINGS),
    *(Recipe(f"{g}-options", g, extra=_OPTIONS) for g in GROUPINGS),
    Recipe("Condensed-pretty", "Condensed", bridge="pretty_print_json=True\n"),
    Recipe(
        "Expanded-scored",
        "Expanded",
        extra="api_version=v3\nscore_source=confidence\nioc_min_rating=2\n"
        "web_url=https://tc.example.com/auth\n",
    ),
    Recipe("Expanded-2015", "Expanded", layout="2015"),
    Recipe("Condensed-2015", "Condensed", layout="2015"),
)

_EXCLUSIONS = {
    "hashes.txt": "# hashes\n{md5}\n{sha256}\n",
    "ips.txt": "# addresses\n1.0.0.0/8\n2.0.0.0/9\n{ipv4}\n",
    "hosts.txt": "# hosts\n*.net\n{dns}\n",
}


def simulator(count: int, seed: int = 1) -> AbstractContextManager[dict[str, str]]:
    """
    The simulator with C{count} indicators on a free loopback port.
    """
    return simulator_process(count, seed)


def _config(facts: dict[str, str], recipe: Recipe, folder: Path, cache: str) -> Path:
    path = folder / f"{recipe.name}-{cache and 'cache'}.conf"
    extra = recipe.extra.format(dir=folder)
    if recipe.layout == "2015":
        path.write_text(
            "[sources]\nCommonCommunity=/v1/indicators/?owner=Common%20Community\n"
            "Subscribers=/v2/indicators?owner=Subscriber+Community\n"
            f"[auth]\nurl={facts['base_url']}\napi_key={facts['api_key']}\n"
            f"secret_key={facts['secret_key']}\n"
            f"[bridge]\nlistener_port={free_port()}\ncache_folder={cache}\n"
            f"ioc_grouping={recipe.grouping}\nioc_min_score=1\n"
        )
        return path
    path.write_text(
        "[threatconnect]\n"
        f"url={facts['base_url']}\napi_key={facts['api_key']}\n"
        f"secret_key={facts['secret_key']}\nsources=*\n"
        f"ioc_grouping={recipe.grouping}\n{extra}"
        f"[bridge]\ncache_folder={cache}\nlistener_port={free_port()}\n{recipe.bridge}"
        "feed_retrieval_minutes=600\nmax_shrink_percent=100\n"
    )
    return path


def _write(config: Path, out: Path) -> bytes:
    subprocess.run(
        [str(BIN / "tcbridge"), "--config", str(config), "write", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return out.read_bytes()


def _serve_once(config: Path, cache: Path, timeout: float = 300.0) -> bytes:
    """
    Run the service until it has published a new feed over the cached one;
    return the cache file's new bytes.
    """
    feed = cache / "threatconnect-feed.json"
    before = feed.read_bytes()
    service = subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "tcbridge", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cache,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                now = feed.read_bytes()
            except FileNotFoundError:
                continue
            if now != before:
                return now
            if service.poll() is not None:
                raise RuntimeError("the service stopped before publishing")
        raise RuntimeError("the service did not publish in time")
    finally:
        service.terminate()
        service.wait()


def _exclusion_files(folder: Path, plain: bytes) -> None:
    """
    Exclusion files naming a few values of a plain Condensed feed, plus
    ranges and a suffix.
    """
    first: dict[str, str] = {}
    for report in json.loads(plain)["reports"]:
        for kind, values in report["iocs"].items():
            first.setdefault(kind, values[len(values) // 2])
    for name, text in _EXCLUSIONS.items():
        (folder / name).write_text(text.format(**first))


def produce(recipe: Recipe, folder: Path) -> bytes:
    """
    The feed bytes of one recipe, made in C{folder}.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if "{dir}" in recipe.extra:
        with simulator(COUNT) as facts:
            base = Recipe("base", "Condensed")
            _exclusion_files(folder, _write(_config(facts, base, folder, ""), folder / "base.json"))
    if not recipe.history:
        with simulator(COUNT) as facts:
            return _write(_config(facts, recipe, folder, ""), folder / "feed.json")
    cache = folder / "cache"
    cache.mkdir(exist_ok=True)
    with simulator(HISTORY_COUNT, seed=2) as facts:
        old = _write(_config(facts, recipe, folder, ""), folder / "old.json")
    (cache / "threatconnect-feed.json").write_bytes(old)
    with simulator(COUNT) as facts:
        return _serve_once(_config(facts, recipe, folder, str(cache)), cache)


def digest(body: bytes) -> dict[str, object]:
    """
    What the golden file records of a feed.
    """
    return {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}


def main() -> None:
    """
    With C{--record}: run every recipe and rewrite the golden file; without:
    run them and compare, printing each result.
    """
    record = "--record" in sys.argv[1:]
    keep = Path(sys.argv[sys.argv.index("--keep") + 1]) if "--keep" in sys.argv else None
    golden = {} if record else json.loads(GOLDEN.read_text())
    results = {}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in RECIPES:
            started = time.perf_counter()
            body = produce(recipe, Path(tmp) / recipe.name)
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{recipe.name}.json").write_bytes(body)
            found = digest(body)
            results[recipe.name] = found
            same = record or golden.get(recipe.name) == found
            failed |= not same
            print(
                f"{recipe.name}: {found['bytes']} bytes {found['sha256'][:16]} "
                f"{'ok' if same else 'DIFFERENT'} ({time.perf_counter() - started:.1f} s)"
            )
    if record:
        GOLDEN.write_text(json.dumps(results, indent=2) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
