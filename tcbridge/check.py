# -*- test-case-name: tests.integration.test_check -*-
"""
C{tcbridge check-config}: everything that can be checked before running the
bridge, each as one line, with an honest exit status: the config file, the
credentials (by listing the owners the API user can see), the configured
owners, this host's clock against ThreatConnect's, the cache folder and the
listener port.
"""

from __future__ import annotations

from typing import Any, TextIO

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory

from tcbridge.config import Config, ThreatConnectSettings
from tcbridge.files import folder_problem
from tcbridge.model import CLOCK_LIMIT_SECONDS
from tcbridge.threatconnect.client import ThreatConnectClient
from tcbridge.threatconnect.errors import ThreatConnectError
from tcbridge.threatconnect.owners import list_owners
from tcbridge.threatconnect.retry import http_date
from tcbridge.wiring import build_bridge


def clock_line(sent: int | None, date: str | None) -> tuple[str, bool]:
    """
    Describe this host's clock against ThreatConnect's C{Date}; the flag is
    C{True} if the difference breaks signing (more than 5 minutes).
    """
    server = http_date(date) if date else None
    if sent is None or server is None:
        return "clock: ThreatConnect sent no Date header, so the clock was not compared", False
    skew = round(sent - server)
    if skew == 0:
        return "clock: OK, this host agrees with ThreatConnect to the second", False
    way = "ahead of" if skew > 0 else "behind"
    bad = abs(skew) > CLOCK_LIMIT_SECONDS
    verdict = "PROBLEM" if bad else "OK"
    advice = "; set the system clock (NTP)" if bad or abs(skew) > 60 else ""
    return (
        f"clock: {verdict}, this host is {abs(skew)} s {way} ThreatConnect "
        f"(the limit is {CLOCK_LIMIT_SECONDS} s){advice}",
        bad,
    )


def cache_line(folder: str | None) -> tuple[str, bool]:
    """
    Check that the cache folder exists (or can be made) and is writable.
    """
    if folder is None:
        return "cache_folder: none; a restart serves no feed until the first sync", False
    problem = folder_problem(folder)
    if problem is not None:
        return f"cache_folder: PROBLEM, {problem}", True
    return f"cache_folder: OK, {folder} is writable", False


def listener_line(reactor: Any, config: Config) -> tuple[str, bool]:
    """
    Try to listen where the bridge would; a port in use is only a note (the
    bridge itself may be running).
    """
    where = f"{config.listener.address}:{config.listener.port}"
    try:
        port = reactor.listenTCP(config.listener.port, Factory(), interface=config.listener.address)
    except CannotListenError as e:
        reason = e.socketError.strerror if getattr(e, "socketError", None) else str(e)
        return (
            f"listener: note, cannot listen on {where} now ({reason}); is tcbridge running?",
            False,
        )
    port.stopListening()
    return f"listener: OK, {where} is free", False


def _step(err: TextIO | None, what: str | None) -> None:
    """
    On a terminal, show what is being checked now as one line on C{err}
    (C{None}: clear it); elsewhere nothing.
    """
    if err is None or not err.isatty():
        return
    err.write("\r\x1b[K" + (f"tcbridge: checking {what}..." if what else ""))
    err.flush()


async def _check_instance(
    tc: ThreatConnectSettings, client: ThreatConnectClient, out: TextIO, err: TextIO | None
) -> int:
    """
    Check one ThreatConnect instance: its credentials, its owner sources,
    its clock; return the number of problems.
    """
    problems = 0
    named = f" of [threatconnect:{tc.instance}]" if tc.instance else ""
    owners: list[str] | None = None
    _step(err, f"the credentials with ThreatConnect at {tc.api_url}")
    try:
        owners = await list_owners(client, api_version=tc.api_version)
    except ThreatConnectError as e:
        _step(err, None)
        out.write(f"credentials{named}: PROBLEM, {e}\n")
        problems += 1
    else:
        _step(err, None)
        shown = ", ".join(owners[:20]) + (", ..." if len(owners) > 20 else "")
        out.write(
            f"credentials{named}: OK, API user {tc.api_key} can see {len(owners)} owners: {shown}\n"
        )
    if owners is not None:
        for source in tc.sources:
            if source.kind == "owner" and source.value not in owners:
                out.write(
                    f"sources{named}: PROBLEM, owner {source.value!r} is not visible "
                    "to this API user\n"
                )
                problems += 1
    exchange = client.last_exchange
    line, bad = clock_line(*(exchange if exchange else (None, None)))
    out.write(line.replace("clock:", f"clock{named}:", 1) + "\n")
    return problems + bad


async def run_check(reactor: Any, config: Config, out: TextIO, err: TextIO | None = None) -> int:
    """
    Run every check, print one line each; return 0 if nothing is wrong, 1
    otherwise.

    :param err: where a terminal shows what is being checked now.
    """
    problems = 0
    out.write(f"config: OK, {config.path} ({config.layout} layout)\n")
    for notice in config.notices:
        out.write(f"config: note, {notice}\n")
    bridge = build_bridge(config, reactor, use_cache=False)
    clients = (bridge.client, *bridge.cycle.other_clients)
    for instance, client in zip(config.instances, clients, strict=True):
        problems += await _check_instance(instance, client, out, err)
    for line, bad in (cache_line(config.sync.cache_folder), listener_line(reactor, config)):
        out.write(line + "\n")
        problems += bad
    await bridge.pool.closeCachedConnections()
    out.write("check-config: " + ("no problems\n" if not problems else f"{problems} problem(s)\n"))
    return 0 if not problems else 1
