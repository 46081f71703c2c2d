"""
The diagnostics page in a real browser: headless Chromium loads it from the
bridge's web app on 127.0.0.1 and renders the sync history charts (server-
drawn SVG, no JavaScript) and tables.  CI installs Debian's chromium; on a
machine without it these tests are skipped.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread
from twisted.web.server import Site

from tcbridge.status import SyncStatus
from tcbridge.store import FeedStore
from tcbridge.synclog import SyncLog, SyncRecord
from tcbridge.web.app import FeedApp
from tests.helpers import real_reactor

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: The charts' colours: a failed sync's point, and the line (and other
#: points); nothing else on the page is drawn in them.
FAILED_RED = (0xC0, 0x39, 0x2B)
LINE_BLUE = (0x1F, 0x5F, 0xA8)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (CI installs it)")


def _records() -> list[SyncRecord]:
    return [
        SyncRecord(
            started=1_800_000_000.0 + 3600 * n,
            seconds=12.5 + n % 7,
            result="failed" if n in (9, 21) else "published",
            requests=10,
            iocs=1000 + 40 * n,
            iocs_by_type={"md5": 1000 + 40 * n},
            change=None if n == 0 else 40,
            error=None if n not in (9, 21) else "ThreatConnect said no",
        )
        for n in range(30)
    ]


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """
    Run headless Chromium as this machine allows (no sandbox as root, no
    background traffic), with a fresh profile.
    """
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(  # noqa: S603 (our own arguments)
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


async def _serve(tmp_path: Path) -> tuple[str, Any]:
    """
    The web app with 30 syncs of history (two failed), on 127.0.0.1.
    """
    log = SyncLog(str(tmp_path))
    for record in _records():
        log.add(record)
    reactor = real_reactor()
    app = FeedApp(
        FeedStore(empty_body=b'{"feedinfo":{},"reports":[]}'),
        SyncStatus(started_at=1_800_000_000.0),
        reactor,
        sync_log=log,
    )
    port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1")
    return f"http://127.0.0.1:{port.getHost().port}/", port


@pytest_twisted.ensureDeferred
async def test_page_renders_history_in_chromium(tmp_path: Path) -> None:
    """
    Chromium's DOM of the page has both charts with a point per sync (the
    two failures marked) and the table of the last 20 syncs.
    """
    url, port = await _serve(tmp_path)
    try:
        done = await deferToThread(_chromium, "--dump-dom", url)
    finally:
        await port.stopListening()
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert dom.count("<svg") == 2
    assert dom.count("<circle") == 60
    assert dom.count('fill="#c0392b"') == 4
    history = dom.split("Sync history")[1].split("</table>")[0]
    assert history.count("<tr>") == 21


@pytest_twisted.ensureDeferred
async def test_page_screenshot_shows_the_charts(tmp_path: Path) -> None:
    """
    A screenshot of the page is not blank and shows the charts' lines and
    their red failure markers: the SVG is drawn by the browser, not only
    present in the HTML.
    """
    from PIL import Image

    url, port = await _serve(tmp_path)
    shot = tmp_path / "page.png"
    try:
        done = await deferToThread(
            _chromium, f"--screenshot={shot}", "--window-size=1280,1600", url
        )
    finally:
        await port.stopListening()
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = list(image.convert("RGB").getdata())
    assert len(set(pixels)) > 20  # text, tables and charts, not an empty page
    red = sum(
        1 for p in pixels if all(abs(a - b) <= 12 for a, b in zip(p, FAILED_RED, strict=True))
    )
    assert red >= 10  # both charts' failure markers are painted
