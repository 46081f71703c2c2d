"""
Making a L{Config} in tests from the option names users know (the flat
names of the old records: C{grouping}, C{listener_port}, C{cache_folder}),
each put in its place in the nested record.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from attrs import evolve

from tcbridge.config import Config, ThreatConnectSettings

#: flat name -> (part of the Config, field in it)
FLAT: dict[str, tuple[str, str]] = {
    **{
        name: ("threatconnect", name)
        for name in (
            "api_url",
            "web_url",
            "api_key",
            "secret_key",
            "secret_source",
            "sources",
            "api_version",
            "https_proxy",
            "ca_file",
            "verify_tls",
            "max_attempts",
            "request_timeout",
            "page_size",
        )
    },
    **{
        name: ("feed", name)
        for name in (
            "types",
            "score_source",
            "min_rating",
            "min_score",
            "exclude_reserved",
            "exclude_private",
            "max_age_days",
            "grouping",
            "max_reports",
            "exclusions",
            "pretty_print_json",
        )
    },
    "feed_retrieval_minutes": ("sync", "feed_retrieval_minutes"),
    "sync_deadline_minutes": ("sync", "deadline_minutes"),
    "cache_folder": ("sync", "cache_folder"),
    "max_shrink_percent": ("sync", "max_shrink_percent"),
    "stale_after_intervals": ("sync", "stale_after_intervals"),
    **{f"listener_{name}": ("listener", name) for name in ("address", "port", "token", "allow")},
    "log_level": ("logging", "level"),
}


def with_settings(config: Config, **flat: Any) -> Config:
    """
    C{config} with the given options changed, by their flat names.
    """
    changes: dict[str, dict[str, Any]] = defaultdict(dict)
    for name, value in flat.items():
        part, field = FLAT[name]
        changes[part][field] = value
    return evolve(
        config,
        **{part: evolve(getattr(config, part), **fields) for part, fields in changes.items()},
    )


def make_config(path: str = "test.conf", layout: Any = "v2", **flat: Any) -> Config:
    """
    A configuration with the given options (flat names); the
    ThreatConnect url, credentials and sources must be among them.
    """
    tc_names = {name for name, (part, _) in FLAT.items() if part == "threatconnect"}
    tc = {name: flat.pop(name) for name in list(flat) if name in tc_names}
    config = Config(path=path, layout=layout, threatconnect=ThreatConnectSettings(**tc))
    return with_settings(config, **flat)
