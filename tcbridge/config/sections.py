# -*- test-case-name: tests.unit.test_config -*-
"""
Reading the ThreatConnect and feed parts of a config file, each into its
typed record: the account and secret key, the network, sources, scoring and
filters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from attrs import field, frozen

from tcbridge.config.reader import ConfigError, Reader
from tcbridge.config.record import (
    ExclusionFile,
    ExclusionKind,
    ThreatConnectSettings,
)
from tcbridge.model import (
    DEFAULT_API_URL,
    DEFAULT_WEB_URL,
    KNOWN_TYPES,
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


def threatconnect_settings(
    account: Account,
    sources: Iterable[Source],
    network: Network,
    *,
    request_timeout: float,
    page_size: int,
    instance: str = "",
) -> ThreatConnectSettings:
    """
    One ThreatConnect instance's settings from the parts its section gave.
    """
    return ThreatConnectSettings(
        api_url=account.api_url,
        web_url=account.web_url,
        api_key=account.api_key,
        secret_key=account.secret_key,
        secret_source=account.secret_source,
        sources=tuple(sources),
        api_version=network.api_version,
        https_proxy=network.https_proxy,
        ca_file=network.ca_file,
        verify_tls=network.verify_tls,
        max_attempts=network.max_attempts,
        request_timeout=request_timeout,
        page_size=page_size,
        instance=instance,
    )


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
    max_age_days: int | None


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
        score_source, ioc_min_rating, ioc_min_score, the reserved, private
        and age rules; each may sit in the layout's main section or in
        [bridge].
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
        max_age = self.integer(where("max_age_days"), "max_age_days", 0, 0, 36500)
        return Scoring(
            score_source=source,
            min_rating=min_rating or None,
            min_score=min_score,
            exclude_reserved=reserved,
            exclude_private=private,
            max_age_days=max_age or None,
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
