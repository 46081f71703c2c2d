# -*- test-case-name: tests.unit.test_config -*-
"""
Configuration: an INI file (2015 bridge layout or v2 connector layout) read into
a frozen L{Config}.  Every bad value is reported as one L{ConfigError} line
naming the file, section, key and what is expected.
"""

from __future__ import annotations

import configparser
import ipaddress
import math
import os
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Literal
from urllib.parse import urlsplit

from attrs import field, frozen

from tcbridge.model import (
    DEFAULT_API_URL,
    DEFAULT_LISTENER_ADDRESS,
    DEFAULT_LISTENER_PORT,
    DEFAULT_RETRIEVAL_MINUTES,
    DEFAULT_WEB_URL,
    KNOWN_TYPES,
    LOG_LEVELS,
    ApiVersion,
    Grouping,
    ScoreSource,
    Source,
)
from tcbridge.secrets import KEY_FILE_OPTION, SecretError, mask, mask_url, resolve_secret

# Options a later version implements: accepted, and reported as not yet active.
_NOT_YET_ACTIVE = {
    "default_org": "default_org is not used: name owners in sources",
}

# Options of the old connectors that tcbridge does not need: accepted, explained.
_NOT_NEEDED = {
    "multi_core": "not needed: tcbridge pulls pages one at a time in one process",
    "feed_save_mode": "not needed: tcbridge always builds the whole feed, then publishes "
    "it atomically",
}


class ConfigError(Exception):
    """
    A configuration problem, as one line: file, section, key and what is
    expected.  Never includes a secret value.
    """

    def __init__(self, path: str, section: str | None, key: str | None, problem: str) -> None:
        self.path = path
        self.section = section
        self.key = key
        self.problem = problem
        where = path
        if section is not None:
            where += f": [{section}]"
            if key is not None:
                where += f" {key}"
        super().__init__(f"{where}: {problem}")


@frozen
class ExclusionFile:
    """
    One configured exclusion file, read but not interpreted.

    :ivar kind: C{"hashes"}, C{"ips"} or C{"hosts"}.
    :ivar option: how the user named it, e.g. C{filtered_hosts} or
        C{[exclusions] host}.
    :ivar path: the file.
    :ivar lines: its lines, as written.
    """

    kind: Literal["hashes", "ips", "hosts"]
    option: str
    path: str
    lines: tuple[str, ...] = field(repr=False)


_SCORE_SOURCES: dict[str, ScoreSource] = {
    "rating": "rating",
    "confidence": "confidence",
    "threatassessscore": "threatAssessScore",
    "max": "max",
}
_SCORE_TEXT = {
    "rating": "rating x 20",
    "confidence": "confidence",
    "threatAssessScore": "ThreatAssess score / 10",
    "max": "the highest of rating x 20, confidence, ThreatAssess score / 10",
}


@frozen
class Config:
    """
    Everything tcbridge needs to run, validated.

    :ivar path: the file it came from (for messages).
    :ivar layout: C{"2015"} for the 2015 bridge layout ([auth], [sources]),
        C{"v2"} for the v2 connector layout ([threatconnect]).
    :ivar api_url: ThreatConnect API base URL, no trailing slash; it keeps an
        C{/api} prefix if the user wrote one.
    :ivar secret_key: never shown anywhere.
    :ivar score_source: where a report's score comes from: C{rating} (x 20),
        C{confidence}, C{threatAssessScore} (/ 10) or C{max} of those.
    :ivar min_rating: indicators rated below this (0-5) are left out;
        C{None} for no rating filter.
    :ivar min_score: IOCs scored below this are left out (0-100).
    :ivar exclusions: the configured exclusion files as L{ExclusionFile}s,
        with their raw lines (the feed side interprets them).
    :ivar api_version: C{"v2"} (per-type endpoints; the default, served by
        every ThreatConnect in use) or C{"v3"} (C{/v3/indicators} with TQL).
    :ivar https_proxy: proxy URL, possibly with a password; shown only
        through L{mask_url}.
    :ivar ca_file: PEM bundle to verify ThreatConnect's certificate against
        instead of the system's trust store.
    :ivar verify_tls: C{False} only when the user turned verification off.
    :ivar max_attempts: tries per request, including the first.
    :ivar sync_deadline_minutes: a whole sync cycle fails after this long.
    :ivar listener_tls_cert: serve over HTTPS with this PEM certificate
        chain (and C{listener_tls_key}).
    :ivar listener_username: with C{listener_password}, HTTP basic auth on
        every route (Carbon Black can send them when it fetches the feed).
    :ivar listener_token: a bearer token accepted on every route.
    :ivar listener_allow: client networks allowed (empty: any).
    :ivar cb_server_url: the Carbon Black EDR server to register and
        synchronize the feed on after each publish (with C{cb_server_token});
        C{None} when that is off (also with C{skip_cb_sync}).
    :ivar host_address: how the Carbon Black server reaches this bridge.
    :ivar log_file: also log to this file, rotated at C{log_max_bytes},
        keeping C{log_backups} old files, as C{log_format} lines.
    :ivar max_shrink_percent: a new feed with more than this many percent
        fewer IOCs than the published one is held back.
    :ivar stale_after_intervals: /healthz says failing when the feed is
        older than this many sync intervals.
    :ivar notices: human sentences about options that are accepted but not
        active, not needed, or unknown; shown at start and on the page.
    """

    path: str
    layout: Literal["2015", "v2", "demo"]
    api_url: str
    web_url: str
    api_key: str
    secret_key: str = field(repr=False)
    sources: tuple[Source, ...]
    types: frozenset[str] = frozenset(KNOWN_TYPES)
    score_source: ScoreSource = "rating"
    min_rating: float | None = None
    min_score: int = 20
    exclude_reserved: bool = True
    exclude_private: bool = False
    grouping: Grouping = "Condensed"
    max_reports: int | None = None
    exclusions: tuple[ExclusionFile, ...] = ()
    listener_address: str = DEFAULT_LISTENER_ADDRESS
    listener_port: int = DEFAULT_LISTENER_PORT
    feed_retrieval_minutes: float = DEFAULT_RETRIEVAL_MINUTES
    cache_folder: str | None = None
    log_level: str = "INFO"
    pretty_print_json: bool = False
    request_timeout: float = 30.0
    page_size: int = 10000
    api_version: ApiVersion = "v2"
    https_proxy: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    verify_tls: bool = True
    max_attempts: int = 5
    sync_deadline_minutes: float = 30.0
    secret_source: str = "secret_key in the config file"  # noqa: S105 (a description)
    listener_tls_cert: str | None = None
    listener_tls_key: str | None = None
    listener_username: str | None = None
    listener_password: str | None = field(default=None, repr=False)
    listener_token: str | None = field(default=None, repr=False)
    listener_allow: tuple[str, ...] = ()
    cb_server_url: str | None = None
    cb_server_token: str | None = field(default=None, repr=False)
    cb_verify_tls: bool = True
    cb_ca_file: str | None = None
    host_address: str | None = None
    log_file: str | None = None
    log_max_bytes: int = 10_000_000
    log_backups: int = 5
    log_format: Literal["text", "json"] = "text"
    max_shrink_percent: float = 50.0
    stale_after_intervals: float = 3.0
    notices: tuple[str, ...] = ()

    def secrets(self) -> list[str]:
        """
        Every secret in this configuration, to strip from any text that
        leaves the process (a last line of defence: messages are built
        without them; see L{tcbridge.secrets.redact}).
        """
        found = [self.secret_key, self.cb_server_token or "", self.listener_password or ""]
        found.append(self.listener_token or "")
        if self.https_proxy:
            password = urlsplit(self.https_proxy).password
            if password:
                found.append(password)
        return [s for s in found if len(s) >= 4]

    def display(self) -> list[tuple[str, str]]:
        """
        The settings as (name, value) rows for the diagnostics page, with the
        secret masked.
        """
        rows = [
            ("config file", self.path),
            ("layout", self.layout),
            ("ThreatConnect API url", self.api_url),
            ("ThreatConnect web url", self.web_url),
            ("api_key", self.api_key),
            ("secret_key", f"{mask(self.secret_key)}, from {self.secret_source}"),
            ("sources", ", ".join(f"{s.name} ({s.kind}: {s.value})" for s in self.sources)),
            ("indicator types", ", ".join(t for t in KNOWN_TYPES if t in self.types)),
            ("score from", _SCORE_TEXT[self.score_source]),
            ("minimum rating", "none" if self.min_rating is None else f"{self.min_rating:g}"),
            ("minimum score", str(self.min_score)),
            (
                "left out",
                ", ".join(
                    what
                    for what, on in (
                        ("reserved values", self.exclude_reserved),
                        ("private and documentation addresses", self.exclude_private),
                    )
                    if on
                )
                or "nothing by rule",
            ),
            ("grouping", self.grouping),
            ("max_reports", "no limit" if self.max_reports is None else str(self.max_reports)),
        ]
        for excluded in self.exclusions:
            rows.append((excluded.option, f"{excluded.path} ({len(excluded.lines)} lines)"))
        rows += [
            ("API version", self.api_version),
            ("https_proxy", mask_url(self.https_proxy) if self.https_proxy else "(none)"),
            ("ca_file", self.ca_file or "(the system's trust store)"),
            (
                "TLS verification",
                "on"
                if self.verify_tls
                else "OFF: ThreatConnect's certificate is not checked "
                "(ssl_verify_api_requests = false)",
            ),
            ("attempts per request", str(self.max_attempts)),
            ("sync deadline (minutes)", f"{self.sync_deadline_minutes:g}"),
            ("max_shrink_percent", f"{self.max_shrink_percent:g}"),
            ("stale after (intervals)", f"{self.stale_after_intervals:g}"),
            (
                "listener",
                f"{'https' if self.listener_tls_cert else 'http'}://"
                f"{self.listener_address}:{self.listener_port}",
            ),
            (
                "listener authentication",
                ", ".join(
                    part
                    for part in (
                        f"basic ({self.listener_username}, password hidden)"
                        if self.listener_username
                        else "",
                        "bearer token (hidden)" if self.listener_token else "",
                    )
                    if part
                )
                or "none",
            ),
            ("listener_allow", ", ".join(self.listener_allow) or "any client"),
            (
                "Carbon Black server sync",
                f"{self.cb_server_url} (token hidden; TLS verification "
                f"{'on' if self.cb_verify_tls else 'OFF'})"
                if self.cb_server_url
                else "off",
            ),
            (
                "log file",
                f"{self.log_file} ({self.log_format}, rotated at {self.log_max_bytes} bytes, "
                f"{self.log_backups} kept)"
                if self.log_file
                else "(twistd's log only)",
            ),
            ("feed_retrieval_minutes", f"{self.feed_retrieval_minutes:g}"),
            ("cache_folder", self.cache_folder or "(none: the feed is kept in memory only)"),
            ("log_level", self.log_level),
            ("request timeout (s)", f"{self.request_timeout:g}"),
        ]
        return rows


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """
    Read and validate a configuration file in either supported layout.

    :param environ: where C{TCBRIDGE_SECRET_KEY} and systemd's
        C{CREDENTIALS_DIRECTORY} are looked up; the process environment by
        default.

    :raises ConfigError: for the first problem found, as one line.
    """
    parser = configparser.RawConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
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
    return _Reader(path, parser, os.environ if environ is None else environ).read()


def _refuse_case_twins(path: str, parser: configparser.RawConfigParser) -> None:
    """
    Keys are matched without regard to case, so C{Url} and C{url} in one
    section are the same key set twice; so are C{[Bridge]} and C{[bridge]}.
    """
    sections: dict[str, str] = {}
    for section in parser.sections():
        earlier = sections.setdefault(section.lower(), section)
        if earlier != section:
            raise ConfigError(
                path,
                section,
                None,
                f"is [{earlier}] again (names ignore case); merge the two sections into one",
            )
        keys: dict[str, str] = {}
        for option in parser.options(section):
            first = keys.setdefault(option.lower(), option)
            if first != option:
                raise ConfigError(
                    path,
                    section,
                    option,
                    f"sets {first} again (keys ignore case); keep one of the two lines",
                )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class _Reader:
    """
    Reads one parsed file into a L{Config}, remembering which keys it used so
    that unknown keys can be reported.
    """

    def __init__(
        self, path: str, parser: configparser.RawConfigParser, environ: Mapping[str, str]
    ) -> None:
        self.path = path
        self.environ = environ
        self.parser = parser
        self.used: set[tuple[str, str]] = set()
        self.notices: list[str] = []

    def error(self, section: str, key: str | None, problem: str) -> ConfigError:
        return ConfigError(self.path, section, key, problem)

    def get(self, section: str, key: str) -> str | None:
        """
        The stripped value of C{key} (matched without regard to case), or
        C{None} when the section or key is absent.
        """
        if not self.parser.has_section(section):
            return None
        for option in self.parser.options(section):
            if option.lower() == key:
                self.used.add((section, option))
                return self.parser.get(section, option).strip()
        return None

    def text(self, section: str, key: str, default: str) -> str:
        value = self.get(section, key)
        return default if value is None or value == "" else value

    def required(self, section: str, key: str, expected: str) -> str:
        value = self.get(section, key)
        if value is None:
            raise self.error(section, key, f"missing; expected {expected}")
        if value == "":
            raise self.error(section, key, f"is empty; expected {expected}")
        return value

    def boolean(self, section: str, key: str, default: bool) -> bool:
        value = self.get(section, key)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise self.error(section, key, f"{value!r} is not a yes/no value; expected true or false")

    def number(
        self,
        section: str,
        key: str,
        default: float,
        low: float,
        high: float | None,
        convert: Callable[[str], float] = float,
        expected: str = "a number",
    ) -> float:
        value = self.get(section, key)
        if value is None or value == "":
            return default
        try:
            result = convert(value)
        except ValueError:
            raise self.error(section, key, f"{value!r} is not {expected}") from None
        if not math.isfinite(result):
            raise self.error(section, key, f"{value!r} is not {expected}")
        if result < low or (high is not None and result > high):
            bound = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
            raise self.error(section, key, f"{value!r} is out of range; expected {bound}")
        return result

    def integer(self, section: str, key: str, default: int, low: int, high: int | None) -> int:
        return int(self.number(section, key, default, low, high, int, "a whole number"))

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

    # --- the two layouts -------------------------------------------------

    def read_v2(self) -> Config:
        s = "threatconnect"
        api_url = self.url(s, "url", DEFAULT_API_URL)
        web_url = self.url(s, "web_url", DEFAULT_WEB_URL)
        api_key = self.required(s, "api_key", "your ThreatConnect API access ID")
        secret_key, secret_source = self.secret(s)
        sources = list(self.owner_sources(s))
        sources += self.path_sources()
        if not sources:
            raise self.error(s, "sources", "no sources; expected * or owner names")
        types = self.ioc_types(s)
        scoring = self.scoring(s, "rating", default_min_rating=1, default_min_score=0)
        grouping = self.grouping(s)
        max_reports = self.max_reports(s)
        exclusions = self.exclusion_files(
            s,
            {"hashes": "filtered_hashes", "ips": "filtered_ips", "hosts": "filtered_hosts"},
            named=lambda key: key,
        )
        return self.finish(
            **self.network(s),
            layout="v2",
            api_url=api_url,
            web_url=web_url,
            api_key=api_key,
            secret_key=secret_key,
            secret_source=secret_source,
            sources=tuple(sources),
            types=types,
            **scoring,
            grouping=grouping,
            max_reports=max_reports,
            exclusions=exclusions,
        )

    def read_2015(self) -> Config:
        api_url = self.url("auth", "url", DEFAULT_API_URL)
        api_key = self.required("auth", "api_key", "your ThreatConnect API access ID")
        secret_key, secret_source = self.secret("auth")
        sources = self.path_sources()
        if not sources:
            raise self.error(
                "sources",
                None,
                "no sources; expected lines like "
                "CommonCommunity = /v1/indicators/?owner=Common%20Community",
            )
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
        scoring = self.scoring("bridge", "confidence", default_min_rating=0, default_min_score=1)
        exclusions = self.exclusion_files(
            "exclusions",
            {"hashes": "md5", "ips": "ip", "hosts": "host"},
            named=lambda key: f"[exclusions] {key}",
        )
        return self.finish(
            **self.network("auth"),
            layout="2015",
            api_url=api_url,
            web_url=self.url("bridge", "web_url", DEFAULT_WEB_URL),
            api_key=api_key,
            secret_key=secret_key,
            secret_source=secret_source,
            sources=tuple(sources),
            types=frozenset(types),
            **scoring,
            grouping=self.grouping("bridge") if self.get("bridge", "ioc_grouping") else "Expanded",
            max_reports=self.max_reports("bridge"),
            exclusions=exclusions,
        )

    def cbserver(self) -> dict[str, object]:
        """
        Carbon Black server sync, as the 2015 bridge did it: on when
        carbonblack_server_url and carbonblack_server_token are set and
        skip_cb_sync is not true.
        """
        b = "bridge"
        url = self.get(b, "carbonblack_server_url") or None
        token = self.get(b, "carbonblack_server_token") or None
        skip = self.boolean(b, "skip_cb_sync", False)
        verify = self.boolean(b, "carbonblack_server_sslverify", True)
        ca_file = self.get(b, "carbonblack_server_ca_file") or None
        host = self.get(b, "host_address") or None
        if url is not None:
            self.web_address(b, "carbonblack_server_url", url, "https://<Carbon Black server>")
        if ca_file is not None and not os.access(ca_file, os.R_OK):
            raise self.error(
                b,
                "carbonblack_server_ca_file",
                f"{ca_file!r} cannot be read; expected a PEM file of CA certificates",
            )
        if skip:
            url = None
        elif token is not None and url is None:
            self.notices.append(
                "carbonblack_server_token is set but carbonblack_server_url is not, so the feed "
                "is not registered on a Carbon Black server; set carbonblack_server_url "
                "(https://127.0.0.1 when it runs on this host) or skip_cb_sync = true."
            )
        elif url is not None and token is None:
            raise self.error(
                b,
                "carbonblack_server_token",
                "missing; expected the API token of "
                "a Carbon Black global administrator (or set skip_cb_sync = true)",
            )
        if url is not None and not verify:
            self.notices.append(
                "TLS verification of the Carbon Black server is OFF "
                "(carbonblack_server_sslverify = false); use carbonblack_server_ca_file instead."
            )
        return {
            "cb_server_url": url.rstrip("/") if url else None,
            "cb_server_token": token if url else None,
            "cb_verify_tls": verify,
            "cb_ca_file": ca_file,
            "host_address": host,
        }

    def logging(self) -> dict[str, object]:
        """
        An optional log file of tcbridge's own, with size rotation.
        """
        b = "bridge"
        path = self.get(b, "log_file") or None
        size = self.integer(b, "log_file_size", 10_000_000, 10_000, None)
        backups = self.integer(b, "log_backups", 5, 0, 1000)
        fmt = self.text(b, "log_format", "text").lower()
        if fmt not in ("text", "json"):
            raise self.error(b, "log_format", f"{fmt!r} is not a log format; expected text or json")
        if path is not None:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                raise self.error(
                    b,
                    "log_file",
                    f"{folder!r} is not a writable folder; create it or choose another log_file",
                )
        return {"log_file": path, "log_max_bytes": size, "log_backups": backups, "log_format": fmt}

    def listener(self, address: str) -> dict[str, object]:
        """
        The listener's TLS files, credentials and allow-list, all in [bridge].
        """
        b = "bridge"
        cert = self.get(b, "listener_tls_cert") or None
        key = self.get(b, "listener_tls_key") or None
        if (cert is None) != (key is None):
            missing = "listener_tls_key" if key is None else "listener_tls_cert"
            raise self.error(
                b,
                missing,
                "missing; set listener_tls_cert and listener_tls_key together, or neither",
            )
        for name, path in (("listener_tls_cert", cert), ("listener_tls_key", key)):
            if path is not None and not os.access(path, os.R_OK):
                raise self.error(b, name, f"{path!r} cannot be read; expected a PEM file")
        if cert is not None and key is not None:
            self.tls_pair(cert, key)
        username = self.get(b, "listener_username") or None
        password = self.get(b, "listener_password") or None
        if (username is None) != (password is None):
            missing = "listener_password" if password is None else "listener_username"
            raise self.error(
                b,
                missing,
                "missing; set listener_username and listener_password together, or neither",
            )
        if username is not None and ":" in username:
            raise self.error(b, "listener_username", "must not contain ':'")
        token = self.get(b, "listener_token") or self.get(b, "listener_api_token") or None
        if token is not None and re.search(r"\s", token):
            raise self.error(b, "listener_token", "must not contain white space")
        allow = []
        for part in (self.get(b, "listener_allow") or "").split(","):
            if not part.strip():
                continue
            try:
                allow.append(str(ipaddress.ip_network(part.strip(), strict=False)))
            except ValueError:
                raise self.error(
                    b,
                    "listener_allow",
                    f"{part.strip()!r} is not an address or "
                    "network; expected e.g. 10.1.2.3, 10.0.0.0/8, 2001:db8::/32",
                ) from None
        if not ipaddress.ip_address(address).is_loopback:
            if cert is None:
                self.notices.append(
                    f"The listener on {address} is not loopback and serves plain HTTP: the feed "
                    "and any credentials cross the network unencrypted (set listener_tls_cert)."
                )
            if username is None and token is None and not allow:
                self.notices.append(
                    f"The listener on {address} accepts every client: set listener_allow to the "
                    "Carbon Black server's address, or listener_username/listener_password."
                )
        return {
            "listener_tls_cert": cert,
            "listener_tls_key": key,
            "listener_username": username,
            "listener_password": password,
            "listener_token": token,
            "listener_allow": tuple(allow),
        }

    def folder_problem(self, section: str, key: str, folder: str) -> None:
        """
        Refuse a folder that cannot be used: a file, or one (or, if it does
        not exist yet, its nearest existing parent) this user cannot write.
        """
        path = os.path.abspath(folder)
        probe = path
        while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            what = "is a file" if probe == path else f"is under {probe!r}, which is a file"
            raise self.error(section, key, f"{folder!r} {what}; expected a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            where = "" if probe == path else f" (it would be created in {probe!r})"
            raise self.error(
                section,
                key,
                f"{folder!r} is not writable by this user{where}; "
                "fix its permissions or choose another folder",
            )

    def tls_pair(self, cert: str, key: str) -> None:
        """
        Refuse TLS files the listener could not use: a certificate file
        with no PEM certificate, a key file with no PEM private key, or a
        key that does not belong to the certificate.
        """
        b = "bridge"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_verify_locations(cafile=cert)
        except (ssl.SSLError, OSError, ValueError):
            raise self.error(
                b,
                "listener_tls_cert",
                f"{cert!r} holds no PEM certificate; expected -----BEGIN CERTIFICATE-----",
            ) from None
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError, ValueError) as e:
            why = (
                "does not belong to the certificate"
                if "mismatch" in str(e).lower()
                else ("holds no PEM private key (or one protected by a passphrase)")
            )
            raise self.error(
                b,
                "listener_tls_key",
                f"{key!r} {why}; expected the unencrypted PEM key of {cert!r}",
            ) from None

    def secret(self, section: str) -> tuple[str, str]:
        """
        The ThreatConnect secret key from the first place that has it:
        secret_key_file, secret_key_encrypted, secret_key (all in
        C{section}), TCBRIDGE_SECRET_KEY, the systemd credential; and where
        it came from, for the page.
        """
        try:
            secret, source, warnings = resolve_secret(
                plain=self.get(section, "secret_key"),
                file=self.get(section, "secret_key_file"),
                encrypted=self.get(section, "secret_key_encrypted"),
                key_file=self.get(section, KEY_FILE_OPTION),
                environ=self.environ,
            )
        except SecretError as e:
            if not e.key.startswith("secret_key"):  # the systemd credential
                raise ConfigError(self.path, section, None, f"{e.key}: {e.problem}") from None
            raise self.error(section, e.key, e.problem) from None
        self.notices.extend(warnings)
        return secret, source.describe()

    def section_with(self, section: str, key: str) -> str:
        """
        C{section} if it has C{key}, else C{"bridge"}: options that may sit in
        the layout's main section or in [bridge].
        """
        return section if self.get(section, key) is not None else "bridge"

    def network(self, api: str) -> dict[str, object]:
        """
        How to reach ThreatConnect: API version, proxy, TLS, retries and
        deadline.  Each key may sit in the API section (C{api}) or [bridge].
        """

        def where(key: str) -> str:
            return self.section_with(api, key)

        section = where("api_version")
        version = self.text(section, "api_version", "v2").lower()
        if version not in ("v2", "v3"):
            raise self.error(
                section, "api_version", f"{version!r} is not an API version; expected v2 or v3"
            )
        section = where("https_proxy")
        proxy = self.get(section, "https_proxy") or None
        if proxy is not None:
            self.web_address(section, "https_proxy", proxy, "http://[user:password@]host:port")
        section = where("ca_file")
        ca_file = self.get(section, "ca_file") or None
        if ca_file is not None:
            try:
                with open(ca_file, encoding="ascii", errors="replace") as f:
                    pem = f.read()
            except OSError as e:
                raise self.error(
                    section,
                    "ca_file",
                    f"{ca_file!r} cannot be read "
                    f"({e.strerror}); expected a PEM file of CA certificates",
                ) from None
            if "-----BEGIN CERTIFICATE-----" not in pem:
                raise self.error(
                    section,
                    "ca_file",
                    f"{ca_file!r} holds no PEM certificate; "
                    "expected -----BEGIN CERTIFICATE----- blocks",
                )
        verify = self.boolean(where("ssl_verify_api_requests"), "ssl_verify_api_requests", True)
        if not verify:
            self.notices.append(
                "TLS verification of ThreatConnect is OFF (ssl_verify_api_requests = false): "
                "anyone between this host and ThreatConnect can read the API traffic and "
                "forge indicators. Use ca_file for a private CA instead."
            )
        attempts = self.integer(where("max_attempts"), "max_attempts", 5, 1, 20)
        deadline = self.number(where("sync_deadline_minutes"), "sync_deadline_minutes", 30, 1, 1440)
        return {
            "api_version": version,
            "https_proxy": proxy,
            "ca_file": ca_file,
            "verify_tls": verify,
            "max_attempts": attempts,
            "sync_deadline_minutes": deadline,
        }

    def finish(self, **kwargs: object) -> Config:
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
        debug = self.boolean(b, "debug", False)
        log_level = self.text(b, "log_level", "DEBUG" if debug else "INFO").upper()
        if log_level not in LOG_LEVELS:
            raise self.error(
                b,
                "log_level",
                f"{log_level!r} is not a log level; expected one of " + ", ".join(LOG_LEVELS),
            )
        cache_folder = self.get(b, "cache_folder")
        if cache_folder is None:
            cache_folder = os.path.join(os.path.dirname(os.path.abspath(self.path)), "cache")
        elif cache_folder == "" or cache_folder.lower() == "none":
            cache_folder = None
        if cache_folder is not None:
            self.folder_problem(b, "cache_folder", cache_folder)
        pretty = self.boolean(b, "pretty_print_json", False)
        listener = self.listener(address)
        extras = {**self.cbserver(), **self.logging()}
        shrink = self.number(b, "max_shrink_percent", 50, 0, 100)
        stale = self.number(b, "stale_after_intervals", 3, 1, 1000)
        timeout = self.number(b, "request_timeout_seconds", 30, 1, 3600)
        page_size = self.integer(b, "page_size", 10000, 1, 10000)
        self.report_leftovers()
        return Config(
            path=self.path,
            listener_address=address,
            listener_port=port,
            feed_retrieval_minutes=minutes,
            cache_folder=cache_folder,
            log_level=log_level,
            pretty_print_json=pretty,
            max_shrink_percent=shrink,
            stale_after_intervals=stale,
            request_timeout=timeout,
            page_size=page_size,
            notices=tuple(self.notices),
            **listener,  # type: ignore[arg-type]
            **extras,  # type: ignore[arg-type]
            **kwargs,  # type: ignore[arg-type]
        )

    def report_leftovers(self) -> None:
        for section in self.parser.sections():
            if section == "sources":
                continue
            for key in self.parser.options(section):
                if (section, key) in self.used:
                    continue
                value = self.parser.get(section, key).strip()
                key = key.lower()
                if key in _NOT_YET_ACTIVE:
                    if value and not (key == "skip_cb_sync" and value.lower() in _FALSE):
                        self.notices.append(f"[{section}] {key}: {_NOT_YET_ACTIVE[key]}")
                elif key in _NOT_NEEDED:
                    self.notices.append(f"[{section}] {key}: {_NOT_NEEDED[key]}")
                else:
                    self.notices.append(
                        f"[{section}] {key}: not a tcbridge option; ignored (check the "
                        "spelling against etc/tcbridge.conf.example)"
                    )

    # --- single values ---------------------------------------------------

    def url(self, section: str, key: str, default: str) -> str:
        value = self.text(section, key, default)
        self.web_address(section, key, value, "https://host or https://host/api")
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise self.error(
                section,
                key,
                f"{value!r} has a query or fragment; expected just scheme, host and path",
            )
        return value.rstrip("/")

    def web_address(self, section: str, key: str, value: str, expected: str) -> None:
        """
        Refuse what cannot be sent as an http(s) URL: another scheme, no
        host, white space or control characters, a host name that is not
        one, a bad port.
        """
        shown = mask_url(value)
        if re.search(r"[\s\x00-\x1f\x7f]", value):
            raise self.error(
                section,
                key,
                f"{shown!r} contains white space; expected {expected} (write a space in a "
                "path as %20)",
            )
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(section, key, f"{shown!r} is not a URL; expected {expected}")
        try:
            parts.port  # noqa: B018 (raises ValueError for a bad port)
            host = parts.hostname
            if ":" not in host:
                host.encode("idna")
        except (ValueError, UnicodeError):
            raise self.error(
                section, key, f"{shown!r} has a bad host name or port; expected {expected}"
            ) from None

    def owner_sources(self, section: str) -> Iterable[Source]:
        raw = self.get(section, "sources")
        if raw is None or raw == "":
            return []
        names = [name.strip() for name in raw.split(",")]
        if any(not name for name in names):
            raise self.error(
                section,
                "sources",
                f"{raw!r} has an empty name; expected * or owner names separated by commas",
            )
        if "*" in names:
            if len(names) > 1:
                raise self.error(
                    section,
                    "sources",
                    "* already means every owner; expected * alone or a list of owner names",
                )
            return [Source(name="*", kind="all", value="*")]
        seen: set[str] = set()
        result = []
        for name in names:
            if name in seen:
                raise self.error(section, "sources", f"owner {name!r} is listed twice")
            seen.add(name)
            result.append(Source(name=name, kind="owner", value=name))
        return result

    def path_sources(self) -> list[Source]:
        if not self.parser.has_section("sources"):
            return []
        result = []
        for tag in self.parser.options("sources"):
            path = self.parser.get("sources", tag).strip()
            self.used.add(("sources", tag))
            if not path:
                raise self.error(
                    "sources",
                    tag,
                    "is empty; expected an API path such as "
                    "/v1/indicators/?owner=Common%20Community",
                )
            if path.lower().startswith("tql:"):
                query = path[4:].strip()
                if not query:
                    raise self.error(
                        "sources",
                        tag,
                        "has an empty TQL query; expected e.g. "
                        'tql:ownerName EQ "Common Community" AND rating >= 3',
                    )
                result.append(Source(name=tag, kind="tql", value=query))
                continue
            if "%%" in path:
                raise self.error(
                    "sources",
                    tag,
                    f"{path!r} contains '%%', which breaks the request signature "
                    "(ThreatConnect answers 'Signature data did not match expected result'); "
                    f"write a single %, e.g. {path.replace('%%', '%')!r}",
                )
            if not path.startswith("/"):
                raise self.error(
                    "sources",
                    tag,
                    f"{path!r} is not an API path; expected it to "
                    "start with /, e.g. /v2/indicators?owner=Common%20Community",
                )
            if re.search(r"\s", path):
                raise self.error(
                    "sources",
                    tag,
                    f"{path!r} contains white space; write a space in an owner name as %20",
                )
            if _PERCENT_ESCAPE.search(path):
                raise self.error(
                    "sources",
                    tag,
                    f"{path!r} has a % not followed by two hex "
                    "digits; expected escapes such as %20",
                )
            result.append(Source(name=tag, kind="path", value=path))
        return result

    def ioc_types(self, section: str) -> frozenset[str]:
        raw = self.get(section, "ioc_types")
        if raw is None or raw == "":
            return frozenset(KNOWN_TYPES)
        by_lower = {t.lower(): t for t in KNOWN_TYPES}
        types = set()
        for part in raw.split(","):
            name = part.strip().lower()
            if name not in by_lower:
                raise self.error(
                    section,
                    "ioc_types",
                    f"{part.strip()!r} is not a supported type;"
                    " expected a comma-separated list of File, Address, Host",
                )
            types.add(by_lower[name])
        return frozenset(types)

    def grouping(self, section: str) -> Grouping:
        raw = self.text(section, "ioc_grouping", "Condensed")
        known: dict[str, Grouping] = {
            "expanded": "Expanded",
            "condensed": "Condensed",
            "maxcondensed": "MaxCondensed",
            "maxconsensed": "MaxCondensed",  # the v2 example file's spelling
        }
        try:
            return known[raw.lower()]
        except KeyError:
            raise self.error(
                section,
                "ioc_grouping",
                f"{raw!r} is not a grouping; expected Expanded, Condensed or MaxCondensed",
            ) from None

    def max_reports(self, section: str) -> int | None:
        value = self.get(section, "max_reports")
        if value is None or value == "" or value == "0":
            return None
        return self.integer(section, "max_reports", 0, 1, None)

    def exclusion_files(
        self, section: str, keys: Mapping[str, str], named: Callable[[str], str]
    ) -> tuple[ExclusionFile, ...]:
        """
        Read each configured exclusion file; what its lines mean is the feed
        side's business (it reports bad lines with their line numbers).
        """
        result = []
        for kind, key in keys.items():
            filename = self.get(section, key)
            if not filename:
                continue
            lines = self.read_lines(section, key, filename)
            result.append(ExclusionFile(kind, named(key), filename, lines))  # type: ignore[arg-type]
        return tuple(result)

    def read_lines(self, section: str, key: str, filename: str) -> tuple[str, ...]:
        try:
            with open(filename, encoding="utf-8") as f:
                return tuple(f.read().splitlines())
        except FileNotFoundError:
            raise self.error(
                section,
                key,
                f"{filename!r} does not exist; expected a text file with one value per line",
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise self.error(
                section,
                key,
                f"{filename!r} cannot be read ({e.__class__.__name__})"
                "; expected a readable UTF-8 text file",
            ) from None

    def scoring(
        self,
        section: str,
        default_source: ScoreSource,
        default_min_rating: float,
        default_min_score: int,
    ) -> dict[str, object]:
        """
        score_source, ioc_min_rating and ioc_min_score; each may sit in the
        layout's main section or in [bridge].
        """

        def where(key: str) -> str:
            return self.section_with(section, key)

        place = where("score_source")
        raw = self.text(place, "score_source", default_source)
        try:
            source = _SCORE_SOURCES[raw.lower()]
        except KeyError:
            raise self.error(
                place,
                "score_source",
                f"{raw!r} is not a score source; expected rating, confidence, "
                "threatAssessScore or max",
            ) from None
        min_rating = self.number(
            where("ioc_min_rating"),
            "ioc_min_rating",
            default_min_rating,
            0,
            5,
            expected="a rating from 0 to 5",
        )
        min_score = self.integer(where("ioc_min_score"), "ioc_min_score", default_min_score, 0, 100)
        reserved = self.boolean(where("exclude_reserved"), "exclude_reserved", True)
        private = self.boolean(where("exclude_private"), "exclude_private", False)
        return {
            "score_source": source,
            "min_rating": min_rating or None,
            "min_score": min_score,
            "exclude_reserved": reserved,
            "exclude_private": private,
        }
