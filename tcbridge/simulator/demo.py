"""
The built-in demo: the ThreatConnect simulator on a loopback port and a
configuration that points the bridge at it (C{--demo}, and the README's
first command).  Only the demo branches of C{tcbridge.tap} and
C{tcbridge.cli} import this, when asked for the demo.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from tcbridge.config import Config, ListenerSettings, SyncSettings, ThreatConnectSettings
from tcbridge.model import DEFAULT_WEB_URL, Source
from tcbridge.simulator.server import DemoServer, start_simulator

#: How many indicators the demo's simulator generates.
DEMO_INDICATORS = 2000


@frozen
class Demo:
    """
    The running simulator and a configuration for the bridge that uses it.
    """

    config: Config
    server: DemoServer


def start_demo(
    reactor: Any,
    listener_port: int = 6100,
    count: int = DEMO_INDICATORS,
    cache_folder: str | None = None,
) -> Demo:
    """
    Start the simulator on 127.0.0.1 (a free port) with fresh credentials and
    generated data, and make a configuration for it: every owner, Condensed
    grouping, the default filters.
    """
    server = start_simulator(reactor, count=count)
    config = Config(
        path="(built-in demo: the ThreatConnect simulator)",
        layout="demo",
        threatconnect=ThreatConnectSettings(
            api_url=server.base_url,
            web_url=DEFAULT_WEB_URL,
            api_key=server.api_key,
            secret_key=server.secret_key,
            sources=(Source(name="*", kind="all", value="*"),),
        ),
        listener=ListenerSettings(port=listener_port),
        sync=SyncSettings(cache_folder=cache_folder),
        notices=(
            "Demo mode: indicators come from the built-in ThreatConnect simulator at "
            f"{server.base_url} ({count} generated indicators in {len(server.owners)} "
            "owners), not from ThreatConnect. Run with --config FILE for real use.",
        ),
    )
    return Demo(config=config, server=server)
