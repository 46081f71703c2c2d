"""
Integration tests for several ThreatConnect instances: the real console
command against two simulators on 127.0.0.1, one of them configured as
C{[threatconnect:partner]}.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest_twisted

from tcbridge.feed.validator import validate_bytes
from tcbridge.simulator import DemoServer, start_simulator
from tests.helpers import free_port, real_reactor
from tests.integration.test_integration import BIN, _run

WriteFile = Callable[[str, str], str]


def _config(main: DemoServer, partner: DemoServer, partner_secret: str | None = None) -> str:
    return (
        "[threatconnect]\n"
        f"url={main.base_url}\napi_key={main.api_key}\nsecret_key={main.secret_key}\n"
        "sources=*\nioc_grouping=Condensed\n"
        "[threatconnect:partner]\n"
        f"url={partner.base_url}\napi_key={partner.api_key}\n"
        f"secret_key={partner_secret or partner.secret_key}\n"
        "web_url=https://partner.example/auth\nsources=Common Community\napi_version=v3\n"
        "max_attempts=1\n"
        f"[bridge]\nlistener_address=127.0.0.1\nlistener_port={free_port()}\ncache_folder=\n"
    )


@pytest_twisted.ensureDeferred
async def test_write_merges_two_instances(write_file: WriteFile, tmp_path: Path) -> None:
    """
    'tcbridge write' pulls both instances (the partner through v3) into one
    valid feed with the partner's reports named after it and linked to its
    web UI; check-config checks each instance's credentials.
    """
    reactor = real_reactor()
    main, partner = start_simulator(reactor, count=300), start_simulator(reactor, 200, seed=2)
    try:
        config = write_file("tc.conf", _config(main, partner))
        out_file = tmp_path / "feed.json"
        _out, err, code = await _run(
            str(BIN / "tcbridge"), "--config", config, "write", str(out_file)
        )
        checked, _, check_code = await _run(
            str(BIN / "tcbridge"), "--config", config, "check-config"
        )
    finally:
        await main.stop()
        await partner.stop()
    assert code == 0, err
    body = out_file.read_bytes()
    assert validate_bytes(body) == []
    reports = orjson.loads(body)["reports"]
    partner_only = [r for r in reports if r["id"].startswith("partner_common_community-")]
    assert partner_only
    assert all(r["link"].startswith("https://partner.example/auth/") for r in partner_only)
    assert any(not r["id"].startswith("partner") for r in reports)
    assert b"credentials: OK" in checked
    assert b"credentials of [threatconnect:partner]: OK" in checked, checked
    assert check_code == 0, checked


@pytest_twisted.ensureDeferred
async def test_a_refusing_instance_fails_the_write(write_file: WriteFile, tmp_path: Path) -> None:
    """
    When the partner refuses the bridge, write exits 1, names the section,
    and leaves the output file untouched.
    """
    reactor = real_reactor()
    main, partner = start_simulator(reactor, count=100), start_simulator(reactor, 100, seed=2)
    try:
        config = write_file("tc.conf", _config(main, partner, partner_secret="wrong-secret"))
        out_file = tmp_path / "feed.json"
        out_file.write_text("previous")
        _out, err, code = await _run(
            str(BIN / "tcbridge"), "--config", config, "write", str(out_file)
        )
    finally:
        await main.stop()
        await partner.stop()
    assert code == 1, err
    assert b"[threatconnect:partner] ThreatConnect refused" in err
    assert b"Traceback" not in err
    assert out_file.read_text() == "previous"
