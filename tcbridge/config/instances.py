# -*- test-case-name: tests.unit.test_config_instances -*-
"""
More ThreatConnect instances: each C{[threatconnect:<name>]} section names
one, with its own url, keys, sources (C{*} or owner names), proxy, TLS
trust, attempts and API version.  Their indicators merge into the one
feed the main instance's section describes.
"""

from __future__ import annotations

import re
from typing import Final

from tcbridge.config.record import ThreatConnectSettings
from tcbridge.config.sections import SectionReader, threatconnect_settings
from tcbridge.model import Source

#: What a section that names an instance starts with.
PREFIX: Final = "threatconnect:"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")

#: Where a named instance's secret may come from (the environment and the
#: systemd credential belong to the main instance).
_SECRET_KEYS: Final = ("secret_key", "secret_key_file", "secret_key_encrypted")

#: Network options read per instance that in fact govern the whole sync.
_WHOLE_SYNC_KEYS: Final = ("sync_deadline_minutes",)


class InstanceReader(SectionReader):
    """
    Reads the C{[threatconnect:<name>]} sections.
    """

    def other_instances(self, main: ThreatConnectSettings) -> tuple[ThreatConnectSettings, ...]:
        """
        Every named instance, in the order of the file.  Request timeout and
        page size are those of the main instance (they sit in [bridge]); a
        network option a named section leaves out is taken from [bridge],
        as for the main instance.  A main source named like one of a named
        instance (C{partner/...}) is refused: their reports would mix.
        """
        found: list[ThreatConnectSettings] = []
        names: set[str] = set()
        for section in self.parser.sections():
            if not section.lower().startswith(PREFIX):
                continue
            name = section[len(PREFIX) :].strip()
            if not _NAME.fullmatch(name):
                raise self.error(
                    section,
                    None,
                    f"{name!r} is not an instance name; expected up to 40 letters, digits, "
                    "'_', '.' or '-', e.g. [threatconnect:partner]",
                )
            if name.lower() in names:
                raise self.error(
                    section, None, f"names instance {name!r} again; give each instance one section"
                )
            names.add(name.lower())
            found.append(self._instance(section, name, main))
        for source in main.sources:
            prefix = source.name.split("/", 1)[0].lower()
            if "/" in source.name and prefix in names:
                raise self.error(
                    "sources" if source.kind in ("path", "tql") else "threatconnect",
                    source.name if source.kind in ("path", "tql") else "sources",
                    f"{source.name!r} would be taken for a source of [threatconnect:{prefix}]; "
                    "rename the instance",
                )
        return tuple(found)

    def _instance(
        self, section: str, name: str, main: ThreatConnectSettings
    ) -> ThreatConnectSettings:
        if not any(self.get(section, key) for key in _SECRET_KEYS):
            raise self.error(
                section,
                "secret_key",
                "no secret; set secret_key, secret_key_file or secret_key_encrypted here "
                "(TCBRIDGE_SECRET_KEY and the systemd credential are the main instance's)",
            )
        for key in _WHOLE_SYNC_KEYS:
            if self.get(section, key) is not None:
                raise self.error(
                    section,
                    key,
                    "applies to the whole sync, not one instance; set it in [threatconnect] "
                    "or [bridge]",
                )
        account = self.account(section, web_url_section=section)
        sources = [
            Source(f"{name}/{source.name}", source.kind, source.value, instance=name)
            for source in self.owner_sources(section)
        ]
        if not sources:
            raise self.error(section, "sources", "no sources; expected * or owner names")
        network = self.network(section)
        return threatconnect_settings(
            account,
            sources,
            network,
            request_timeout=main.request_timeout,
            page_size=main.page_size,
            instance=name,
        )
