"""
Malformed config files, as users write them, in both layouts: each one is
refused with exactly one line on stderr that names the file, the section
and the key and says what to write instead; exit status 2; never a
traceback.  The console command and twistd refuse them alike (both read
the file with L{tcbridge.config.load_config}), so C{check-config} agrees
with what C{twistd} would do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tcbridge import cli
from tcbridge.config import ConfigError, load_config
from tcbridge.tap import Options
from tests.helpers_tls import write_listener_pair
from tests.unit.test_config import V2_MINIMAL

V2 = V2_MINIMAL.replace("cache_folder=\n", "cache_folder={tmp}/cache\nlistener_port=6100\n")

LEGACY = """\
[auth]
url=https://api.threatconnect.com
api_key=1234
secret_key=s3cr3t-value
[sources]
CommonCommunity=/v1/indicators/?owner=Common%20Community
[bridge]
cache_folder={tmp}/cache
listener_port=6100
"""

#: The section of the API settings in each layout ("S" in the table).
API = {"v2": "threatconnect", "2015": "auth"}


def _set(text: str, section: str, lines: str) -> str:
    """
    C{text} with each C{key=value} of C{lines} set in C{[section]}: in
    place of the key's line if there is one, else first in the section
    (made at the end if absent).
    """
    for line in lines.split("\n"):
        key = line.split("=", 1)[0]
        found = re.search(rf"^{re.escape(key)}=.*$", text, re.M)
        header = f"[{section}]\n"
        if found is not None:
            text = text[: found.start()] + line + text[found.end() :]
        elif header not in text:
            text = text + header + line + "\n"
        else:
            text = text.replace(header, header + line + "\n", 1)
    return text


def _twice(section: str, line: str) -> Callable[[str], str]:
    """
    An edit that adds C{line} first in C{[section]} even if its key is set.
    """
    return lambda text: text.replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)


# (name, layouts, edit, where, words): edit is (section, line) to add, with
# "S" for the API section, or a function of the layout's text; where is
# what follows the file name ("[S] url"), words what the message says.
Edit = tuple[str, str] | Callable[[str], str]
CASES: list[tuple[str, str, Edit, str, str]] = [
    # URLs
    (
        "url-space-host",
        "both",
        ("S", "url=https://api.threat connect.com"),
        "[S] url",
        "white space",
    ),
    ("url-space-path", "both", ("S", "url=https://tc.example/my api"), "[S] url", "%20"),
    ("url-tab", "both", ("S", "url=https://tc.example/\tapi"), "[S] url", "white space"),
    ("url-ftp", "both", ("S", "url=ftp://tc.example"), "[S] url", "not a URL"),
    ("url-no-host", "both", ("S", "url=https://"), "[S] url", "not a URL"),
    ("url-bad-port", "both", ("S", "url=https://tc.example:99999/api"), "[S] url", "bad host"),
    ("url-empty-label", "both", ("S", "url=https://tc..example/api"), "[S] url", "bad host"),
    ("url-query", "both", ("S", "url=https://tc.example/api?x=1"), "[S] url", "query"),
    ("web-url-space", "v2", ("S", "web_url=https://app tc/auth"), "[S] web_url", "white space"),
    # the same key or section twice
    ("key-twice-v2", "v2", _twice("threatconnect", "url=https://x"), "[S] url", "set twice"),
    ("key-twice-2015", "2015", _twice("auth", "url=https://x"), "[S] url", "set twice"),
    ("key-case-v2", "v2", _twice("threatconnect", "URL=https://x"), "[S] url", "sets URL again"),
    ("key-case-2015", "2015", _twice("auth", "URL=https://x"), "[S] url", "sets URL again"),
    ("section-twice", "both", lambda t: t + "[bridge]\nlog_level=INFO\n", "[bridge]", "twice"),
    ("section-case", "both", lambda t: t + "[Bridge]\nlog_level=INFO\n", "[Bridge]", "again"),
    (
        "bridge-key-twice",
        "both",
        _twice("bridge", "listener_port=6200"),
        "[bridge] listener_port",
        "twice",
    ),
    # numbers
    ("port-zero", "both", ("bridge", "listener_port=0"), "[bridge] listener_port", "1 to 65535"),
    ("port-big", "both", ("bridge", "listener_port=70000"), "[bridge] listener_port", "1 to 65535"),
    ("port-negative", "both", ("bridge", "listener_port=-1"), "[bridge] listener_port", "1 to"),
    ("port-word", "both", ("bridge", "listener_port=http"), "[bridge] listener_port", "whole"),
    ("port-nan", "both", ("bridge", "listener_port=nan"), "[bridge] listener_port", "whole"),
    ("minutes-nan", "both", ("bridge", "feed_retrieval_minutes=nan"), "[bridge] feed_", "number"),
    ("minutes-inf", "both", ("bridge", "feed_retrieval_minutes=inf"), "[bridge] feed_", "number"),
    ("minutes-zero", "both", ("bridge", "feed_retrieval_minutes=0"), "[bridge] feed_", "1 to"),
    (
        "timeout-nan",
        "both",
        ("bridge", "request_timeout_seconds=nan"),
        "[bridge] request_",
        "number",
    ),
    (
        "timeout-minf",
        "both",
        ("bridge", "request_timeout_seconds=-inf"),
        "[bridge] request_",
        "num",
    ),
    ("shrink-nan", "both", ("bridge", "max_shrink_percent=NaN"), "[bridge] max_shrink", "number"),
    ("stale-nan", "v2", ("bridge", "stale_after_intervals=nan"), "[bridge] stale_after", "number"),
    (
        "deadline-nan",
        "v2",
        ("bridge", "sync_deadline_minutes=nan"),
        "[bridge] sync_deadline",
        "num",
    ),
    ("attempts-nan", "v2", ("bridge", "max_attempts=nan"), "[bridge] max_attempts", "whole"),
    ("rating-nan", "v2", ("S", "ioc_min_rating=nan"), "[S] ioc_min_rating", "rating from 0 to 5"),
    ("rating-high", "v2", ("S", "ioc_min_rating=6"), "[S] ioc_min_rating", "from 0 to 5"),
    ("score-nan", "2015", ("bridge", "ioc_min_score=nan"), "[bridge] ioc_min_score", "whole"),
    ("page-zero", "v2", ("bridge", "page_size=0"), "[bridge] page_size", "from 1 to 10000"),
    ("backups-nan", "v2", ("bridge", "log_backups=nan"), "[bridge] log_backups", "whole"),
    ("reports-word", "v2", ("S", "max_reports=ten"), "[S] max_reports", "whole number"),
    # words
    ("address-name", "both", ("bridge", "listener_address=localhost"), "[bridge] listener_", "IP"),
    ("log-level", "both", ("bridge", "log_level=LOUD"), "[bridge] log_level", "not a log level"),
    ("pretty", "both", ("bridge", "pretty_print_json=maybe"), "[bridge] pretty_", "yes/no"),
    ("grouping", "v2", ("S", "ioc_grouping=Grouped"), "[S] ioc_grouping", "expected Expanded"),
    ("types", "v2", ("S", "ioc_types=File,Url"), "[S] ioc_types", "'Url' is not a supported"),
    ("api-version", "v2", ("S", "api_version=v4"), "[S] api_version", "v2 or v3"),
    ("score-source", "v2", ("S", "score_source=votes"), "[S] score_source", "not a score source"),
    # sources
    ("sources-star-and", "v2", ("S", "sources=*,Acme"), "[S] sources", "every owner"),
    ("sources-empty-name", "v2", lambda t: t.replace("sources=*", "sources=A,,B"), "[S]", "empty"),
    ("sources-repeat", "v2", lambda t: t.replace("sources=*", "sources=A,A"), "[S]", "twice"),
    ("sources-none", "v2", lambda t: t.replace("sources=*\n", ""), "[S] sources", "no sources"),
    ("tag-twice", "2015", _twice("sources", "CommonCommunity=/v1/x"), "[sources] Common", "twice"),
    ("path-relative", "2015", ("sources", "a=v1/indicators"), "[sources] a", "start with /"),
    ("path-space", "2015", ("sources", "a=/v1/x?owner=A B"), "[sources] a", "white space"),
    (
        "all-disabled",
        "2015",
        ("bridge", "disable_ioc_md5=1\ndisable_ioc_ip=1\ndisable_ioc_host=1"),
        "[bridge]",
        "every IOC type is disabled",
    ),
    # keys
    (
        "secret-empty",
        "both",
        lambda t: t.replace("secret_key=s3cr3t-value", "secret_key="),
        "[S]",
        "secret",
    ),
    (
        "api-key-missing",
        "both",
        lambda t: t.replace("api_key=1234\n", ""),
        "[S] api_key",
        "missing",
    ),
    # files and folders
    (
        "cache-is-file",
        "both",
        ("bridge", "cache_folder={tmp}/plain.txt"),
        "[bridge] cache_",
        "is a file",
    ),
    (
        "cache-under-file",
        "both",
        ("bridge", "cache_folder={tmp}/plain.txt/c"),
        "[bridge] cache_",
        "under",
    ),
    (
        "exclusions-missing",
        "v2",
        ("S", "filtered_ips=/nonexistent/ips.txt"),
        "[S] filtered_ips",
        "exist",
    ),
    (
        "log-file-folder",
        "both",
        ("bridge", "log_file=/nonexistent/dir/x.log"),
        "[bridge] log_file",
        "folder",
    ),
    ("ca-missing", "v2", ("S", "ca_file=/nonexistent/ca.pem"), "[S] ca_file", "cannot be read"),
    ("ca-not-pem", "v2", ("S", "ca_file={tmp}/plain.txt"), "[S] ca_file", "no PEM certificate"),
    # listener
    (
        "tls-cert-alone",
        "both",
        ("bridge", "listener_tls_cert={tmp}/listener.crt"),
        "[bridge] listener_tls_key",
        "together",
    ),
    (
        "tls-cert-not-pem",
        "both",
        ("bridge", "listener_tls_cert={tmp}/plain.txt\nlistener_tls_key={tmp}/listener.key"),
        "[bridge] listener_tls_cert",
        "no PEM certificate",
    ),
    (
        "tls-key-not-pem",
        "both",
        ("bridge", "listener_tls_cert={tmp}/listener.crt\nlistener_tls_key={tmp}/plain.txt"),
        "[bridge] listener_tls_key",
        "no PEM private key",
    ),
    (
        "tls-key-other",
        "both",
        (
            "bridge",
            "listener_tls_cert={tmp}/listener.crt\nlistener_tls_key={tmp}/other/listener.key",
        ),
        "[bridge] listener_tls_key",
        "does not belong",
    ),
    (
        "tls-cert-missing",
        "v2",
        ("bridge", "listener_tls_cert=/nonexistent.crt\nlistener_tls_key={tmp}/listener.key"),
        "[bridge] listener_tls_cert",
        "cannot be read",
    ),
    (
        "allow-bogus",
        "v2",
        ("bridge", "listener_allow=10.0.0.0/8, everyone"),
        "[bridge] listener_allow",
        "not an",
    ),
    (
        "username-colon",
        "v2",
        ("bridge", "listener_username=a:b\nlistener_password=x"),
        "[bridge] listener_user",
        "':'",
    ),
    (
        "token-space",
        "v2",
        ("bridge", "listener_token=a b"),
        "[bridge] listener_token",
        "white space",
    ),
    (
        "proxy-socks",
        "v2",
        ("bridge", "https_proxy=socks5://h:1080"),
        "[bridge] https_proxy",
        "not a URL",
    ),
    (
        "proxy-space",
        "v2",
        ("bridge", "https_proxy=http://prox y:3128"),
        "[bridge] https_proxy",
        "white",
    ),
    # Carbon Black
    (
        "cb-url-space",
        "both",
        ("bridge", "carbonblack_server_url=https://cb host"),
        "[bridge] carbon",
        "white",
    ),
    (
        "cb-no-token",
        "both",
        ("bridge", "carbonblack_server_url=https://cb.example"),
        "[bridge] carbon",
        "token",
    ),
]

WHOLE_FILES: list[tuple[str, str, str]] = [
    ("empty", "", "no [threatconnect] section"),
    ("no-header", "url=https://tc.example\n", "expected a [section] header first"),
    ("not-utf8", "[threatconnect]\nurl=\xff\n", "not UTF-8"),
]


def _params() -> list[object]:
    params: list[object] = []
    for name, layouts, edit, where, words in CASES:
        for layout in ("v2", "2015") if layouts == "both" else (layouts,):
            params.append(pytest.param(layout, edit, where, words, id=f"{layout}-{name}"))
    return params


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """
    A folder with what the cases point at: a plain text file, a TLS
    certificate and key, and another key.
    """
    (tmp_path / "plain.txt").write_text("not a certificate, a key or a folder\n")
    write_listener_pair(tmp_path)
    (tmp_path / "other").mkdir()
    write_listener_pair(tmp_path / "other")
    return tmp_path


def _refused(path: str, capsys: pytest.CaptureFixture[str]) -> str:
    """
    Run C{tcbridge --config PATH check-config} and C{twistd tcbridge
    --config PATH}; both must exit 2 with the same single line on stderr.
    Return that line.
    """
    lines = []
    for run in (
        lambda: cli.main(["--config", path, "check-config"]),
        lambda: Options().parseOptions(["--config", path]),
    ):
        with pytest.raises(SystemExit) as exited:
            run()
        assert exited.value.code == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "Traceback" not in captured.err
        assert captured.err.count("\n") == 1, captured.err
        lines.append(captured.err.rstrip("\n"))
    assert lines[0] == lines[1]
    return lines[0]


def test_enough_cases() -> None:
    """
    The table covers at least 60 malformed files.
    """
    assert len(_params()) + len(WHOLE_FILES) + 2 >= 60


@pytest.mark.parametrize(("layout", "edit", "where", "words"), _params())
def test_malformed_file(
    folder: Path,
    capsys: pytest.CaptureFixture[str],
    layout: str,
    edit: Edit,
    where: str,
    words: str,
) -> None:
    """
    One malformed file: one line, naming file, section and key, saying
    what is wrong; exit status 2; no traceback.
    """
    text = V2 if layout == "v2" else LEGACY
    if callable(edit):
        text = edit(text)
    else:
        section, line = edit
        text = _set(text, API[layout] if section == "S" else section, line)
    path = folder / f"{layout}.conf"
    path.write_text(text.replace("{tmp}", str(folder)), encoding="utf-8")
    line = _refused(str(path), capsys)
    where = where.replace("[S]", f"[{API[layout]}]")
    assert line.startswith(f"tcbridge: {path}: {where}"), line
    assert words in line, line
    assert "s3cr3t-value" not in line


@pytest.mark.parametrize(("name", "text", "words"), WHOLE_FILES)
def test_malformed_whole_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, words: str
) -> None:
    """
    A file that is not a config file at all: one line, naming the file.
    """
    path = tmp_path / f"{name}.conf"
    path.write_bytes(text.encode("latin-1"))
    line = _refused(str(path), capsys)
    assert line.startswith(f"tcbridge: {path}: ") and words in line, line


def test_config_path_is_a_folder_or_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    C{--config} naming a folder, or nothing, is one line too.
    """
    line = _refused(str(tmp_path), capsys)
    assert line == f"tcbridge: {tmp_path}: is a folder; expected a config file"
    missing = tmp_path / "nope.conf"
    assert _refused(str(missing), capsys) == f"tcbridge: {missing}: file not found"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_cache_folder(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    A cache folder this user cannot write is refused at once.
    """
    locked = folder / "locked"
    locked.mkdir(mode=0o500)
    path = folder / "v2.conf"
    path.write_text(V2.replace("{tmp}/cache", str(locked / "cache")).replace("{tmp}", str(folder)))
    with pytest.raises(ConfigError, match="not writable by this user"):
        load_config(str(path))
