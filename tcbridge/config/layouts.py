# -*- test-case-name: tests.unit.test_config -*-
"""
The two layouts users' files come in (the v2 connector's [threatconnect]
and the 2015 bridge's [auth], [sources], [bridge]) read into one
L{Config}, and L{load_config}, which parses the file and refuses what
configparser would let through (keys and sections set twice, in any case).
"""

from __future__ import annotations

import configparser
import ipaddress
import os
from collections.abc import Mapping
from typing import Literal

from attrs import asdict

from tcbridge.config.bridge import BridgeReader
from tcbridge.config.instances import InstanceReader
from tcbridge.config.reader import ConfigError
from tcbridge.config.record import (
    Config,
    ExclusionFile,
    FeedOptions,
    SyncSettings,
    ThreatConnectSettings,
)
from tcbridge.config.sections import Account, Network, Scoring, threatconnect_settings
from tcbridge.model import (
    DEFAULT_LISTENER_ADDRESS,
    DEFAULT_LISTENER_PORT,
    DEFAULT_RETRIEVAL_MINUTES,
    KNOWN_TYPES,
    Grouping,
    Source,
)


class _CaseKeepingParser(configparser.RawConfigParser):
    """
    A parser that keeps keys as written (configparser lowercases them), so
    that C{Url} and C{url} in one section can be refused as the same key
    set twice.
    """

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """
    Read and validate a configuration file in either supported layout.

    :param environ: where C{TCBRIDGE_SECRET_KEY} and systemd's
        C{CREDENTIALS_DIRECTORY} are looked up; the process environment by
        default.

    :raises ConfigError: for the first problem found, as one line.
    """
    parser = _CaseKeepingParser(interpolation=None, strict=True)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except FileNotFoundError:
        raise ConfigError(path, None, None, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, None, None, "is a folder; expected a config file") from None
    except PermissionError:
        raise ConfigError(path, None, None, "not readable (permission denied)") from None
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot be read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, None, "not UTF-8 text") from None
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(
            path, None, None, f"line {e.lineno}: expected a [section] header first"
        ) from None
    except configparser.DuplicateSectionError as e:
        raise ConfigError(
            path,
            e.section,
            None,
            f"appears twice (again on line {e.lineno}); merge the two sections into one",
        ) from None
    except configparser.DuplicateOptionError as e:
        raise ConfigError(
            path,
            e.section,
            e.option,
            f"is set twice (again on line {e.lineno}); keep one of the two lines",
        ) from None
    except configparser.Error as e:
        raise ConfigError(path, None, None, _first_line(str(e))) from None
    _refuse_case_twins(path, parser)
    return LayoutReader(path, parser, os.environ if environ is None else environ).read()


def _refuse_case_twins(path: str, parser: configparser.RawConfigParser) -> None:
    """
    Keys are matched without regard to case, so C{Url} and C{url} in one
    section are the same key set twice; so are C{[Bridge]} and C{[bridge]}.
    """
    earlier = _first_of_each_case(parser.sections())
    for section in parser.sections():
        if earlier[section] != section:
            problem = f"is [{earlier[section]}] again (names ignore case)"
            raise ConfigError(path, section, None, f"{problem}; merge the two sections into one")
        first = _first_of_each_case(parser.options(section))
        for option in parser.options(section):
            if first[option] != option:
                problem = f"sets {first[option]} again (keys ignore case)"
                raise ConfigError(path, section, option, f"{problem}; keep one of the two lines")


def _first_of_each_case(names: list[str]) -> dict[str, str]:
    """
    For each name, the first of C{names} that equals it without regard to
    case.
    """
    first: dict[str, str] = {}
    for name in names:
        first.setdefault(name.lower(), name)
    return {name: first[name.lower()] for name in names}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


class LayoutReader(InstanceReader, BridgeReader):
    """
    Reads a whole file, in the layout it is written in.
    """

    def read(self) -> Config:
        if self.parser.has_section("threatconnect"):
            config = self.read_v2()
        elif self.parser.has_section("auth"):
            config = self.read_2015()
        else:
            raise ConfigError(
                self.path,
                None,
                None,
                "no [threatconnect] section (v2 layout) or [auth] section (2015 layout)",
            )
        return config

    def read_v2(self) -> Config:
        s = "threatconnect"
        account = self.account(s, web_url_section=s)
        sources = [*self.owner_sources(s), *self.path_sources()]
        if not sources:
            raise self.error(s, "sources", "no sources; expected * or owner names")
        feed = self.feed_options(
            self.scoring(s, "rating", default_min_rating=1, default_min_score=0),
            types=self.ioc_types(s),
            grouping=self.grouping(s),
            max_reports=self.max_reports(s),
            exclusions=self.exclusion_files(
                s,
                {"hashes": "filtered_hashes", "ips": "filtered_ips", "hosts": "filtered_hosts"},
                named=lambda key: key,
            ),
        )
        return self.finish("v2", account, sources, feed, self.network(s))

    def read_2015(self) -> Config:
        account = self.account("auth", web_url_section="bridge")
        sources = self.path_sources()
        if not sources:
            raise self.error(
                "sources",
                None,
                "no sources; expected lines like "
                "CommonCommunity = /v1/indicators/?owner=Common%20Community",
            )
        feed = self.feed_options(
            self.scoring("bridge", "confidence", default_min_rating=0, default_min_score=1),
            types=self.enabled_types_2015(),
            grouping=self.grouping("bridge") if self.get("bridge", "ioc_grouping") else "Expanded",
            max_reports=self.max_reports("bridge"),
            exclusions=self.exclusion_files(
                "exclusions",
                {"hashes": "md5", "ips": "ip", "hosts": "host"},
                named=lambda key: f"[exclusions] {key}",
            ),
        )
        return self.finish("2015", account, sources, feed, self.network("auth"))

    def enabled_types_2015(self) -> frozenset[str]:
        """
        The indicator types the 2015 layout's C{disable_ioc_*} keys leave on.
        """
        types = set(KNOWN_TYPES)
        for key, type_name in (
            ("disable_ioc_md5", "File"),
            ("disable_ioc_ip", "Address"),
            ("disable_ioc_host", "Host"),
        ):
            if self.boolean("bridge", key, False):
                types.discard(type_name)
        if not types:
            raise self.error(
                "bridge",
                "disable_ioc_host",
                "every IOC type is disabled; the feed would always be empty",
            )
        return frozenset(types)

    def threatconnect(
        self, account: Account, sources: list[Source], network: Network
    ) -> ThreatConnectSettings:
        """
        The ThreatConnect settings: the account and sources as the layout
        gives them, the network, and the request limits in [bridge].
        """
        b = "bridge"
        return threatconnect_settings(
            account,
            sources,
            network,
            request_timeout=self.number(b, "request_timeout_seconds", 30, 1, 3600),
            page_size=self.integer(b, "page_size", 10000, 1, 10000),
        )

    def feed_options(
        self,
        scoring: Scoring,
        types: frozenset[str],
        grouping: Grouping,
        max_reports: int | None,
        exclusions: tuple[ExclusionFile, ...],
    ) -> FeedOptions:
        """
        The feed's options: those the layouts read differently, and
        C{pretty_print_json} from [bridge].
        """
        return FeedOptions(
            types=types,
            grouping=grouping,
            max_reports=max_reports,
            exclusions=exclusions,
            pretty_print_json=self.boolean("bridge", "pretty_print_json", False),
            **asdict(scoring, recurse=False),
        )

    def finish(
        self,
        layout: Literal["2015", "v2"],
        account: Account,
        sources: list[Source],
        feed: FeedOptions,
        network: Network,
    ) -> Config:
        """
        Read the [bridge] settings both layouts share, then report every key
        that was not used.
        """
        b = "bridge"
        address = self.text(b, "listener_address", DEFAULT_LISTENER_ADDRESS)
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise self.error(
                b,
                "listener_address",
                f"{address!r} is not an IP address; expected e.g. 127.0.0.1 or 0.0.0.0",
            ) from None
        port = self.integer(b, "listener_port", DEFAULT_LISTENER_PORT, 1, 65535)
        minutes = self.number(b, "feed_retrieval_minutes", DEFAULT_RETRIEVAL_MINUTES, 1, 10080)
        logging = self.logging()
        cache_folder = self.get(b, "cache_folder")
        if cache_folder is None:
            cache_folder = os.path.join(os.path.dirname(os.path.abspath(self.path)), "cache")
        elif cache_folder == "" or cache_folder.lower() == "none":
            cache_folder = None
        if cache_folder is not None:
            self.folder_problem(b, "cache_folder", cache_folder)
        listener = self.listener(address, port)
        carbonblack = self.cbserver()
        incremental = self.boolean(b, "incremental_sync", False)
        if incremental and cache_folder is None:
            raise self.error(
                b, "incremental_sync", "needs a cache_folder to keep the indicator store in"
            )
        sync = SyncSettings(
            feed_retrieval_minutes=minutes,
            deadline_minutes=network.deadline_minutes,
            cache_folder=cache_folder,
            max_shrink_percent=self.number(b, "max_shrink_percent", 50, 0, 100),
            stale_after_intervals=self.number(b, "stale_after_intervals", 3, 1, 1000),
            incremental=incremental,
            full_sync_hours=self.number(b, "full_sync_hours", 24, 1, 8760),
            delta_overlap_minutes=self.number(b, "delta_overlap_minutes", 10, 0, 1440),
        )
        threatconnect = self.threatconnect(account, sources, network)
        others = self.other_instances(threatconnect)
        self.report_leftovers()
        # In the order of Config's fields.
        parts = (threatconnect, feed, sync, listener, carbonblack, logging)
        return Config(self.path, layout, *parts, tuple(self.notices), others)
