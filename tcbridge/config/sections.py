# -*- test-case-name: tests.unit.test_config -*-
"""
Reading the parts of a config file both layouts share, each into its typed
record: the secret key, the network, scoring and filters, sources, the
listener, the Carbon Black server and logging.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from attrs import field, frozen

from tcbridge.config.reader import ConfigError, Reader
from tcbridge.config.record import (
    CarbonBlackSettings,
    ExclusionFile,
    ExclusionKind,
    ListenerSettings,
    LoggingSettings,
)
from tcbridge.model import (
    DEFAULT_API_URL,
    DEFAULT_WEB_URL,
    KNOWN_TYPES,
    LOG_LEVELS,
    ApiVersion,
    Grouping,
    ScoreSource,
    Source,
)
from tcbridge.secrets import KEY_FILE_OPTION, SecretError, resolve_secret

_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

_SCORE_SOURCES: dict[str, ScoreSource] = {
    "rating": "rating",
    "confidence": "confidence",
    "threatassessscore": "threatAssessScore",
    "max": "max",
}


@frozen
class Account:
    """
    Where the ThreatConnect API is and the credentials for it, as read by
    L{SectionReader.account}.
    """

    api_url: str
    web_url: str
    api_key: str
    secret_key: str = field(repr=False)
    secret_source: str


@frozen
class Network:
    """
    How to reach ThreatConnect, as read by L{SectionReader.network}; the
    deadline belongs to the sync.
    """

    api_version: ApiVersion
    https_proxy: str | None = field(repr=False)
    ca_file: str | None
    verify_tls: bool
    max_attempts: int
    deadline_minutes: float


@frozen
class Scoring:
    """
    The score and the rules that leave indicators out, as read by
    L{SectionReader.scoring}.
    """

    score_source: ScoreSource
    min_rating: float | None
    min_score: int
    exclude_reserved: bool
    exclude_private: bool


class SectionReader(Reader):
    """
    L{Reader} with the readers of whole parts of the configuration.
    """

    def account(self, section: str, web_url_section: str) -> Account:
        """
        The API url, key and secret from the layout's API section
        (C{section}); C{web_url} from C{web_url_section}.
        """
        api_url = self.url(section, "url", DEFAULT_API_URL)
        web_url = self.url(web_url_section, "web_url", DEFAULT_WEB_URL)
        api_key = self.required(section, "api_key", "your ThreatConnect API access ID")
        secret_key, secret_source = self.secret(section)
        return Account(api_url, web_url, api_key, secret_key, secret_source)

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

    def network(self, api: str) -> Network:
        """
        How to reach ThreatConnect: API version, proxy, TLS, retries and
        deadline.  Each key may sit in the API section (C{api}) or [bridge].
        """

        def where(key: str) -> str:
            return self.section_with(api, key)

        section = where("api_version")
        raw = self.text(section, "api_version", "v2").lower()
        versions: dict[str, ApiVersion] = {"v2": "v2", "v3": "v3"}
        if raw not in versions:
            raise self.error(
                section, "api_version", f"{raw!r} is not an API version; expected v2 or v3"
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
        return Network(
            api_version=versions[raw],
            https_proxy=proxy,
            ca_file=ca_file,
            verify_tls=verify,
            max_attempts=attempts,
            deadline_minutes=deadline,
        )

    def scoring(
        self,
        section: str,
        default_source: ScoreSource,
        default_min_rating: float,
        default_min_score: int,
    ) -> Scoring:
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
        return Scoring(
            score_source=source,
            min_rating=min_rating or None,
            min_score=min_score,
            exclude_reserved=reserved,
            exclude_private=private,
        )

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
        self,
        section: str,
        keys: Mapping[ExclusionKind, str],
        named: Callable[[str], str],
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
            result.append(ExclusionFile(kind, named(key), filename, lines))
        return tuple(result)

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

    def listener(self, address: str, port: int) -> ListenerSettings:
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
        return ListenerSettings(
            address=address,
            port=port,
            tls_cert=cert,
            tls_key=key,
            username=username,
            password=password,
            token=token,
            allow=tuple(allow),
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

    def cbserver(self) -> CarbonBlackSettings:
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
        return CarbonBlackSettings(
            server_url=url.rstrip("/") if url else None,
            server_token=token if url else None,
            verify_tls=verify,
            ca_file=ca_file,
            host_address=host,
        )

    def logging(self) -> LoggingSettings:
        """
        The log level, and an optional log file of tcbridge's own, with size
        rotation.
        """
        b = "bridge"
        debug = self.boolean(b, "debug", False)
        level = self.text(b, "log_level", "DEBUG" if debug else "INFO").upper()
        if level not in LOG_LEVELS:
            raise self.error(
                b,
                "log_level",
                f"{level!r} is not a log level; expected one of " + ", ".join(LOG_LEVELS),
            )
        path = self.get(b, "log_file") or None
        size = self.integer(b, "log_file_size", 10_000_000, 10_000, None)
        backups = self.integer(b, "log_backups", 5, 0, 1000)
        raw = self.text(b, "log_format", "text").lower()
        formats: dict[str, Literal["text", "json"]] = {"text": "text", "json": "json"}
        if raw not in formats:
            raise self.error(b, "log_format", f"{raw!r} is not a log format; expected text or json")
        if path is not None:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                raise self.error(
                    b,
                    "log_file",
                    f"{folder!r} is not a writable folder; create it or choose another log_file",
                )
        return LoggingSettings(
            level=level, file=path, max_bytes=size, backups=backups, format=formats[raw]
        )
