"""
Tests for L{tcbridge.config.instances}: C{[threatconnect:<name>]} sections
add ThreatConnect instances to one feed; each mistake in one is one line
naming the section and key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tcbridge.config import Config, ConfigError, load_config
from tcbridge.model import Source

MAIN = """\
[threatconnect]
url = https://tc.example/api
api_key = 12345678901234567890
secret_key = main-secret-key
sources = *
ioc_grouping = Expanded
"""

PARTNER = """\
[threatconnect:partner]
url = https://partner.example/api
web_url = https://partner.example/auth
api_key = 09876543210987654321
secret_key = partner-secret-key
sources = Shared Org, Partner Org
api_version = v3
max_attempts = 2
"""


def _load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    path = tmp_path / "tcbridge.conf"
    path.write_text(text)
    return load_config(str(path), environ=environ or {})


def _error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text, environ)
    return str(caught.value)


def test_a_named_section_adds_an_instance(tmp_path: Path) -> None:
    """
    The named instance has its own url, keys, sources (named after it),
    API version and attempts; the main instance is unchanged; both secrets
    are hidden and the page lists the partner's settings.
    """
    config = _load(tmp_path, MAIN + PARTNER)
    main, partner = config.instances
    assert main.instance == "" and main.api_url == "https://tc.example/api"
    assert main.sources == (Source("*", "all", "*"),)
    assert partner.instance == "partner"
    assert partner.api_url == "https://partner.example/api"
    assert partner.web_url == "https://partner.example/auth"
    assert (partner.api_key, partner.secret_key) == ("09876543210987654321", "partner-secret-key")
    assert partner.api_version == "v3" and partner.max_attempts == 2
    assert partner.sources == (
        Source("partner/Shared Org", "owner", "Shared Org", instance="partner"),
        Source("partner/Partner Org", "owner", "Partner Org", instance="partner"),
    )
    assert partner.label_prefix == "partner/"
    assert {"main-secret-key", "partner-secret-key"} <= set(config.secrets())
    rows = dict(config.display())
    assert rows["[threatconnect:partner] ThreatConnect API url"] == "https://partner.example/api"
    assert "partner-secret-key" not in repr(rows)
    assert not config.notices


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            PARTNER.replace("[threatconnect:partner]", "[threatconnect:part ner]"),
            "[threatconnect:part ner]: 'part ner' is not an instance name",
        ),
        (
            PARTNER.replace("[threatconnect:partner]", "[threatconnect:]"),
            "'' is not an instance name",
        ),
        (
            PARTNER.replace("sources = Shared Org, Partner Org\n", ""),
            "[threatconnect:partner] sources: no sources; expected * or owner names",
        ),
        (
            PARTNER.replace("api_key = 09876543210987654321\n", ""),
            "[threatconnect:partner] api_key",
        ),
        (
            PARTNER.replace("api_version = v3", "api_version = v4"),
            "[threatconnect:partner] api_version: 'v4' is not an API version",
        ),
        (
            PARTNER + PARTNER.replace("[threatconnect:partner]", "[threatconnect:Partner]"),
            "[threatconnect:Partner]",
        ),
        (
            PARTNER + PARTNER.replace("[threatconnect:partner]", "[threatconnect: partner]"),
            "names instance 'partner' again",
        ),
        (
            PARTNER.replace("secret_key = partner-secret-key\n", ""),
            "[threatconnect:partner] secret_key: no secret; set secret_key, secret_key_file",
        ),
        (
            PARTNER + "sync_deadline_minutes = 5\n",
            "[threatconnect:partner] sync_deadline_minutes: applies to the whole sync",
        ),
    ],
)
def test_mistakes_in_a_named_section_are_one_line(
    tmp_path: Path, section: str, problem: str
) -> None:
    """
    A bad instance name, a missing key or secret, a bad value, a whole-sync
    option, or an instance named twice: one line naming the file and
    section.  (The environment's secret is the main instance's: it does
    not stand in for a named one's.)
    """
    message = _error(tmp_path, MAIN + section, environ={"TCBRIDGE_SECRET_KEY": "env-secret"})
    assert problem in message
    assert str(tmp_path / "tcbridge.conf") in message
    assert "\n" not in message


def test_a_feed_option_in_a_named_section_is_a_notice(tmp_path: Path) -> None:
    """
    A feed option written in a named section is not silently used for the
    whole feed: a notice says where it belongs.
    """
    config = _load(tmp_path, MAIN + PARTNER + "ioc_min_rating = 4\n")
    assert config.feed.min_rating != 4
    (notice,) = config.notices
    assert notice.startswith(
        "[threatconnect:partner] ioc_min_rating: not an option of one instance"
    )
    assert "belong in [threatconnect]" in notice


@pytest.mark.parametrize(
    ("main", "where"),
    [
        (MAIN.replace("sources = *", "sources = Acme, partner/X"), "[threatconnect] sources"),
        (MAIN + "[sources]\npartner/tagged = tql:rating > 3\n", "[sources] partner/tagged"),
    ],
)
def test_a_main_source_named_like_an_instance_is_refused(
    tmp_path: Path, main: str, where: str
) -> None:
    """
    A main source whose name starts with a named instance's C{<name>/}
    would mix with that instance's reports: refused, naming the key.
    """
    message = _error(tmp_path, main + PARTNER)
    assert where in message and "[threatconnect:partner]" in message
