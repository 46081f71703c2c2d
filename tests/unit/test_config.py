"""
Tests for L{tcbridge.config}: both legacy layouts load unchanged, and every
bad value gets one line naming the file, section, key and what is expected.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tcbridge.config import ConfigError, ExclusionFile, load_config
from tcbridge.model import Source
from tests.conftest import DATA
from tests.helpers_tls import write_listener_pair

WriteFile = Callable[[str, str], str]


def _filled(name: str) -> str:
    """
    A reference config with its empty api_key and secret_key filled in, as a
    user would.
    """
    text = (DATA / name).read_text()
    return text.replace("api_key=\n", "api_key=12345678901234567890\n").replace(
        "secret_key=\n", "secret_key=s3cr3t-value\n"
    )


V2_MINIMAL = """\
[threatconnect]
url=https://api.threatconnect.com
api_key=1234
secret_key=s3cr3t-value
sources=*
[bridge]
cache_folder=
"""


def _v2(extra_tc: str = "", extra_bridge: str = "") -> str:
    return V2_MINIMAL.replace("sources=*\n", "sources=*\n" + extra_tc).replace(
        "[bridge]\n", "[bridge]\n" + extra_bridge
    )


def test_2015_reference_file_loads(write_file: WriteFile) -> None:
    """
    The 2015 bridge's config file loads unchanged once the keys are filled in:
    its [sources] path is pulled as written, disable_ioc_ip drops addresses,
    ioc_min_score scores by confidence, and the defaults are 127.0.0.1:6100
    every 60 minutes.
    """
    config = load_config(write_file("cb.conf", _filled("bridge-2015.conf")))
    assert config.layout == "2015"
    assert config.threatconnect.api_url == "https://api.threatconnect.com"
    assert config.threatconnect.sources == (
        Source("CommonCommunity", "path", "/v1/indicators/?owner=Common%20Community"),
    )
    assert config.feed.types == frozenset({"File", "Host"})
    assert (config.feed.score_source, config.feed.min_rating, config.feed.min_score) == (
        "confidence",
        None,
        1,
    )
    assert (config.listener.address, config.listener.port) == ("127.0.0.1", 6100)
    assert config.sync.feed_retrieval_minutes == 60
    assert config.threatconnect.secret_key == "s3cr3t-value"


def test_v2_reference_file_loads(write_file: WriteFile) -> None:
    """
    The v2 connector's example file loads unchanged once the keys are filled
    in: all owners, every type, rating x 20 scoring with minimum rating 1,
    Condensed grouping and max_reports 10000.
    """
    config = load_config(write_file("connector.conf", _filled("connector-v2.conf")))
    assert config.layout == "v2"
    assert config.threatconnect.sources == (Source(name="*", kind="all", value="*"),)
    assert config.feed.types == frozenset({"File", "Address", "Host"})
    assert (config.feed.score_source, config.feed.min_rating, config.feed.min_score) == (
        "rating",
        1,
        0,
    )
    assert config.feed.grouping == "Condensed"
    assert config.feed.max_reports == 10000
    assert config.threatconnect.web_url == "https://app.threatconnect.com/auth"
    assert config.sync.cache_folder == "/usr/share/cb/integrations/cb-threatconnect-connector/cache"


@pytest.mark.parametrize("name", ["bridge-2015.conf", "connector-v2.conf"])
def test_reference_files_need_keys(write_file: WriteFile, name: str) -> None:
    """
    The shipped example files have empty keys; loading one says which key is
    missing and in which section.
    """
    path = write_file(name, (DATA / name).read_text())
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(path + ": [")
    assert "api_key: is empty; expected your ThreatConnect API access ID" in str(e.value)


def test_interpolation_is_off(write_file: WriteFile) -> None:
    """
    A single % in a source path is literal (no ConfigParser interpolation),
    so %20 reaches ThreatConnect as written.
    """
    text = _filled("bridge-2015.conf").replace(
        "#Subscribers=/v1/indicators/?owner=Subscriber%20Community",
        "Subscribers=/v2/indicators?owner=Subscriber%20Community&filters=rating%3E3",
    )
    config = load_config(write_file("cb.conf", text))
    assert config.threatconnect.sources[1] == Source(
        name="Subscribers",
        kind="path",
        value="/v2/indicators?owner=Subscriber%20Community&filters=rating%3E3",
    )


def test_double_percent_rejected_with_hint(write_file: WriteFile) -> None:
    """
    A source path containing %% (the seed's 'Common Issues' example) is
    rejected up front with the corrected path, instead of failing later with
    'Signature data did not match expected result'.
    """
    text = _filled("bridge-2015.conf").replace("Common%20Community", "Common%%20Community")
    path = write_file("cb.conf", text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert message.startswith(f"{path}: [sources] CommonCommunity: ")
    assert "Signature data did not match expected result" in message
    assert "'/v1/indicators/?owner=Common%20Community'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("extra_tc", "extra_bridge", "where", "expected"),
    [
        ("ioc_min_rating=6\n", "", "[threatconnect] ioc_min_rating", "expected from 0 to 5"),
        ("ioc_min_rating=high\n", "", "[threatconnect] ioc_min_rating", "is not a rating"),
        ("ioc_types=File,Url\n", "", "[threatconnect] ioc_types", "'Url' is not a supported"),
        ("ioc_grouping=Grouped\n", "", "[threatconnect] ioc_grouping", "expected Expanded, "),
        ("max_reports=-3\n", "", "[threatconnect] max_reports", "out of range"),
        ("max_reports=ten\n", "", "[threatconnect] max_reports", "not a whole number"),
        ("", "listener_port=70000\n", "[bridge] listener_port", "expected from 1 to 65535"),
        ("", "listener_port=http\n", "[bridge] listener_port", "not a whole number"),
        ("", "listener_address=localhost\n", "[bridge] listener_address", "not an IP address"),
        ("", "feed_retrieval_minutes=0\n", "[bridge] feed_retrieval_minutes", "from 1 to"),
        ("", "feed_retrieval_minutes=soon\n", "[bridge] feed_retrieval_minutes", "not a number"),
        ("", "log_level=LOUD\n", "[bridge] log_level", "not a log level"),
        ("", "pretty_print_json=maybe\n", "[bridge] pretty_print_json", "not a yes/no"),
        ("filtered_ips=/nonexistent/ips.txt\n", "", "[threatconnect] filtered_ips", "exist"),
    ],
)
def test_bad_values(
    write_file: WriteFile, extra_tc: str, extra_bridge: str, where: str, expected: str
) -> None:
    """
    Each bad value is one line naming the file, section and key and what is
    expected.
    """
    path = write_file("bad.conf", _v2(extra_tc, extra_bridge))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert message.startswith(f"{path}: {where}")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no [threatconnect] section (v2 layout) or [auth] section (2015 layout)"),
        ("url=x\n", "expected a [section] header first"),
        ("[threatconnect]\napi_key=1\nsecret_key=2\nsources=*\nurl=ftp://x\n", "not a URL"),
        ("[threatconnect]\napi_key=1\nsecret_key=2\n", "[threatconnect] sources: no sources"),
        ("[threatconnect]\napi_key=1\nsecret_key=\nsources=*\n", "secret_key: no secret key: set"),
        ("[threatconnect]\napi_key=1\nsecret_key=2\nsources=*,Acme\n", "* already means every"),
        ("[threatconnect]\napi_key=1\nsecret_key=2\nsources=A,,B\n", "has an empty name"),
        ("[threatconnect]\napi_key=1\nsecret_key=2\nsources=A,A\n", "listed twice"),
        ("[auth]\napi_key=1\nsecret_key=2\n", "[sources]: no sources"),
        ("[auth]\napi_key=1\n[sources]\na=/v1/x\n", "[auth] secret_key: no secret key"),
        ("[auth]\napi_key=1\nsecret_key=2\n[sources]\na=v1/indicators\n", "start with /"),
        ("[auth]\napi_key=1\nsecret_key=2\n[sources]\na=/v1/x?owner=A B\n", "white space"),
        ("[auth]\napi_key=1\nsecret_key=2\n[sources]\na=/v1/x?owner=A%2\n", "two hex digits"),
        (
            "[auth]\napi_key=1\nsecret_key=2\n[sources]\na=/v1/x\n[bridge]\n"
            "disable_ioc_md5=1\ndisable_ioc_ip=1\ndisable_ioc_host=1\n",
            "every IOC type is disabled",
        ),
        (
            "[auth]\napi_key=1\nsecret_key_encrypted=abc\n[sources]\na=/v1/x\n",
            "[auth] secret_key_encrypted: not a tcbridge encrypted value",
        ),
    ],
)
def test_bad_files(write_file: WriteFile, text: str, expected: str) -> None:
    """
    Structural problems are reported as one line with the file name.
    """
    path = write_file("bad.conf", text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(path + ":")
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    """
    A config path that does not exist says so.
    """
    path = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigError, match=r"nope\.conf: file not found"):
        load_config(path)


def test_secret_never_in_errors_or_repr(write_file: WriteFile) -> None:
    """
    The secret key appears neither in the config's repr nor on the page rows.
    """
    config = load_config(write_file("ok.conf", V2_MINIMAL))
    assert "s3cr3t-value" not in repr(config)
    assert "s3cr3t-value" not in str(config.display())
    assert ("secret_key", "(set, hidden), from secret_key in the config file") in config.display()


def test_not_yet_active_options_are_reported(write_file: WriteFile) -> None:
    """
    Options a later version implements are accepted and reported as not yet
    active; unknown keys are reported, never silently ignored.
    """
    text = _v2(
        "default_org=Acme\n",
        "https_proxy=http://u:p@proxy:3128\ncarbonblack_server_token=abc\nmulti_core=True\n"
        "listner_port=6200\n",
    )
    config = load_config(write_file("ok.conf", text))
    notices = "\n".join(config.notices)
    assert "carbonblack_server_token is set but carbonblack_server_url is not" in notices
    assert "[bridge] multi_core: not needed" in notices
    assert "[threatconnect] default_org: default_org is not used" in notices
    assert "[bridge] listner_port: not a tcbridge option" in notices
    assert "u:p" not in notices
    assert "https_proxy" not in notices  # implemented: no notice


def test_owner_list_and_options(write_file: WriteFile, tmp_path: Path) -> None:
    """
    sources may name owners; the v2 file's 'MaxConsensed' spelling is
    accepted; exclusion files are read as written (the feed side interprets
    them and reports bad lines).
    """
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# safe hosts\nexample.com\n\n  intranet.local  # ours\n")
    text = _v2(
        f"ioc_grouping=MaxConsensed\nioc_types=host, file\nfiltered_hosts={hosts}\n"
        "ioc_min_rating=2.5\n",
        "listener_port=6200\nfeed_retrieval_minutes=15\nlog_level=debug\n",
    ).replace("sources=*", "sources=Common Community, Acme Corp")
    config = load_config(write_file("ok.conf", text))
    assert config.threatconnect.sources == (
        Source("Common Community", "owner", "Common Community"),
        Source("Acme Corp", "owner", "Acme Corp"),
    )
    assert config.feed.grouping == "MaxCondensed"
    assert config.feed.types == frozenset({"Host", "File"})
    assert (config.feed.min_rating, config.feed.min_score) == (2.5, 0)
    assert config.feed.exclusions == (
        ExclusionFile(
            "hosts",
            "filtered_hosts",
            str(hosts),
            ("# safe hosts", "example.com", "", "  intranet.local  # ours"),
        ),
    )
    assert (config.listener.port, config.sync.feed_retrieval_minutes) == (6200, 15)
    assert config.logging.level == "DEBUG"
    assert config.sync.cache_folder is None


def test_default_cache_folder_beside_config(write_file: WriteFile, tmp_path: Path) -> None:
    """
    Without cache_folder the feed is cached in a 'cache' folder beside the
    config file, so a restart serves the last good feed.
    """
    config = load_config(write_file("etc/ok.conf", V2_MINIMAL.replace("cache_folder=\n", "")))
    assert config.sync.cache_folder == str(tmp_path / "etc" / "cache")


EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "tcbridge.conf.example"


def _uncommented(lines: list[str]) -> str:
    """
    The example's lines with every commented-out option (and section)
    switched on.
    """
    out = []
    for line in lines:
        stripped = line.lstrip("# ")
        if line.startswith("#") and "=" in stripped and stripped.split("=")[0].isidentifier():
            line = stripped
        elif line.startswith("#[") and line.endswith("]"):
            line = line[1:]
        out.append(line)
    return "\n".join(out) + "\n"


def test_example_documents_every_option(write_file: WriteFile, tmp_path: Path) -> None:
    """
    etc/tcbridge.conf.example loads with every option switched on, and none
    of its keys is unknown to tcbridge, in both of the layouts it documents.
    """
    for name in ("hashes", "ips", "hosts"):
        (tmp_path / f"{name}.txt").write_text("# none\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    text = EXAMPLE.read_text().replace("/etc/tcbridge/exclude-", str(tmp_path) + "/")
    text = text.replace("/etc/tcbridge/threatconnect-ca.pem", str(tmp_path / "ca.pem"))
    write_listener_pair(tmp_path)
    (tmp_path / "cb-ca.pem").write_text("x")
    for name in ("listener.crt", "listener.key", "cb-ca.pem"):
        text = text.replace(f"/etc/tcbridge/{name}", str(tmp_path / name))
    text = text.replace("/var/log/tcbridge/tcbridge.log", str(tmp_path / "tcbridge.log"))
    v2_part, _, legacy_part = text.partition("# The 2015 bridge layout")
    v2_text = _uncommented(v2_part.splitlines()).replace("api_key=\n", "api_key=1\n")
    v2_text = v2_text.replace("secret_key=\n", "secret_key=2\n")
    config = load_config(write_file("v2.conf", v2_text))
    assert not [n for n in config.notices if "not a tcbridge option" in n], config.notices
    assert config.threatconnect.sources == (Source("*", "all", "*"),)
    (partner,) = config.other_instances
    assert partner.instance == "partner" and partner.api_version == "v3"

    legacy = _uncommented(
        [line[2:] if line.startswith("# ") else line for line in legacy_part.splitlines()[2:]]
    )
    legacy = legacy.replace("api_key=...", "api_key=1").replace("secret_key=...", "secret_key=2")
    legacy = legacy.replace("/home/username/ipv4.txt", str(tmp_path / "ips.txt"))
    legacy = legacy.replace("/home/username/md5.txt", str(tmp_path / "hashes.txt"))
    legacy = legacy.replace("/home/username/host.txt", str(tmp_path / "hosts.txt"))
    legacy = legacy.replace("disable_ioc_host=1", "disable_ioc_host=0")
    config = load_config(write_file("legacy.conf", legacy))
    assert config.layout == "2015"
    assert not [n for n in config.notices if "not a tcbridge option" in n], config.notices
    assert config.feed.types == frozenset({"Host"})
    assert config.threatconnect.sources[-1].kind == "tql"


def test_network_options(write_file: WriteFile, tmp_path: Path) -> None:
    """
    api_version, a proxy with a password, a CA file, retries and the sync
    deadline load; the proxy password is masked wherever the config is
    shown.
    """
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    text = _v2(
        f"api_version=V3\nca_file={ca}\n",
        "https_proxy=http://proxyuser:pr0xy-pass@proxy.example:3128\nmax_attempts=3\n"
        "sync_deadline_minutes=12\n",
    )
    config = load_config(write_file("ok.conf", text))
    assert config.threatconnect.api_version == "v3"
    assert config.threatconnect.https_proxy == "http://proxyuser:pr0xy-pass@proxy.example:3128"
    assert (config.threatconnect.ca_file, config.threatconnect.verify_tls) == (str(ca), True)
    assert (config.threatconnect.max_attempts, config.sync.deadline_minutes) == (3, 12)
    shown = str(config.display()) + repr(config)
    assert "pr0xy-pass" not in shown
    assert "http://proxyuser:***@proxy.example:3128" in shown


def test_tls_verification_off_is_warned(write_file: WriteFile) -> None:
    """
    ssl_verify_api_requests = false is honoured and produces a warning
    notice for the page and the log.
    """
    config = load_config(write_file("ok.conf", _v2("", "ssl_verify_api_requests=false\n")))
    assert config.threatconnect.verify_tls is False
    assert any("TLS verification of ThreatConnect is OFF" in n for n in config.notices)


@pytest.mark.parametrize(
    ("extra_tc", "extra_bridge", "where", "expected"),
    [
        ("api_version=v4\n", "", "[threatconnect] api_version", "expected v2 or v3"),
        ("", "https_proxy=socks5://u:secretpw@h:1\n", "[bridge] https_proxy", "not a URL"),
        (
            "",
            "https_proxy=http://u:secretpw@h:port\n",
            "[bridge] https_proxy",
            "bad host name or port",
        ),
        ("ca_file=/nonexistent/ca.pem\n", "", "[threatconnect] ca_file", "cannot be read"),
        ("", "max_attempts=0\n", "[bridge] max_attempts", "from 1 to 20"),
        ("", "sync_deadline_minutes=x\n", "[bridge] sync_deadline_minutes", "not a number"),
    ],
)
def test_bad_network_values(
    write_file: WriteFile, extra_tc: str, extra_bridge: str, where: str, expected: str
) -> None:
    """
    Bad network options are one line each, and never show a proxy password.
    """
    path = write_file("bad.conf", _v2(extra_tc, extra_bridge))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: {where}")
    assert expected in str(e.value)
    assert "secretpw" not in str(e.value)


def test_ca_file_without_certificates(write_file: WriteFile) -> None:
    """
    A ca_file that holds no PEM certificate is refused up front.
    """
    ca = write_file("ca.pem", "not a certificate\n")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        load_config(write_file("bad.conf", _v2(f"ca_file={ca}\n")))


def test_tql_source(write_file: WriteFile) -> None:
    """
    A [sources] entry 'tag = tql:<query>' is a TQL source pulled as written;
    an empty query is refused.
    """
    text = V2_MINIMAL + '[sources]\nHot=tql:typeName in ("Host") AND rating >= 4\n'
    config = load_config(write_file("ok.conf", text))
    assert config.threatconnect.sources[-1] == Source(
        "Hot", "tql", 'typeName in ("Host") AND rating >= 4'
    )
    with pytest.raises(ConfigError, match="empty TQL query"):
        load_config(write_file("bad.conf", V2_MINIMAL + "[sources]\nHot=tql:  \n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (V2_MINIMAL, ("rating", 1, 0)),
        (_v2("score_source=max\nioc_min_score=40\n"), ("max", 1, 40)),
        (_v2("score_source=ThreatAssessScore\nioc_min_rating=0\n"), ("threatAssessScore", None, 0)),
        (_v2("", "score_source=confidence\n"), ("confidence", 1, 0)),
    ],
)
def test_scoring_options(
    write_file: WriteFile, text: str, expected: tuple[str, float | None, int]
) -> None:
    """
    score_source chooses the score; ioc_min_rating and ioc_min_score are
    both honoured, in the main section or in [bridge].
    """
    config = load_config(write_file("ok.conf", text))
    assert (config.feed.score_source, config.feed.min_rating, config.feed.min_score) == expected


def test_bad_score_source(write_file: WriteFile) -> None:
    """
    An unknown score_source is one line naming what is allowed.
    """
    path = write_file("bad.conf", _v2("score_source=severity\n"))
    with pytest.raises(ConfigError, match="expected rating, confidence, threatAssessScore or max"):
        load_config(path)


def test_secret_from_environment_and_file(write_file: WriteFile, tmp_path: Path) -> None:
    """
    The secret key may come from TCBRIDGE_SECRET_KEY or from
    secret_key_file; the page says where it came from, never what it is.
    """
    text = V2_MINIMAL.replace("secret_key=s3cr3t-value\n", "")
    config = load_config(write_file("env.conf", text), environ={"TCBRIDGE_SECRET_KEY": "from-env"})
    assert config.threatconnect.secret_key == "from-env"
    assert "TCBRIDGE_SECRET_KEY" in dict(config.display())["secret_key"]
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    secret_file.chmod(0o600)
    config = load_config(
        write_file(
            "file.conf", text.replace("sources=*", f"sources=*\nsecret_key_file={secret_file}")
        ),
        environ={},
    )
    assert config.threatconnect.secret_key == "from-file"
    assert "from-file" not in str(config.display())


def test_encrypted_secret(write_file: WriteFile, tmp_path: Path) -> None:
    """
    secret_key_encrypted made by 'tcbridge encrypt-secret' is decrypted with
    its key file.
    """
    from tcbridge.secrets import create_key_file, encrypt_secret

    key = tmp_path / "secret.key"
    create_key_file(str(key))
    token = encrypt_secret("decrypted-secret", str(key))
    text = V2_MINIMAL.replace(
        "secret_key=s3cr3t-value\n",
        f"secret_key_encrypted={token}\nsecret_key_encryption_key_file={key}\n",
    )
    config = load_config(write_file("enc.conf", text), environ={})
    assert config.threatconnect.secret_key == "decrypted-secret"


def test_listener_security_options(write_file: WriteFile, tmp_path: Path) -> None:
    """
    TLS files, basic-auth credentials, a token (also under the 2015 name
    listener_api_token) and an allow-list load; secrets are hidden on the
    page.
    """
    cert, key = write_listener_pair(tmp_path)
    text = _v2(
        "",
        f"listener_tls_cert={cert}\nlistener_tls_key={key}\nlistener_username=cb\n"
        "listener_password=pw-value\nlistener_api_token=tok-value\n"
        "listener_allow=10.1.2.3, 192.168.0.0/16,2001:db8::/32\n",
    )
    config = load_config(write_file("ok.conf", text))
    assert (config.listener.tls_cert, config.listener.tls_key) == (str(cert), str(key))
    assert (config.listener.username, config.listener.password) == ("cb", "pw-value")
    assert config.listener.token == "tok-value"
    assert config.listener.allow == ("10.1.2.3/32", "192.168.0.0/16", "2001:db8::/32")
    shown = str(config.display()) + repr(config)
    assert "pw-value" not in shown and "tok-value" not in shown
    assert "https://127.0.0.1:6100" in shown


@pytest.mark.parametrize(
    ("extra", "where", "expected"),
    [
        ("listener_tls_cert=/etc/hosts\n", "listener_tls_key", "set listener_tls_cert and"),
        ("listener_tls_cert=/nope\nlistener_tls_key=/nope\n", "listener_tls_cert", "cannot be"),
        ("listener_username=cb\n", "listener_password", "together, or neither"),
        ("listener_password=pw\n", "listener_username", "together, or neither"),
        ("listener_allow=10.0.0.0/8, cb-server\n", "listener_allow", "'cb-server' is not"),
        ("listener_token=a b\n", "listener_token", "white space"),
    ],
)
def test_bad_listener_options(write_file: WriteFile, extra: str, where: str, expected: str) -> None:
    """
    Listener security mistakes are one line each.
    """
    path = write_file("bad.conf", _v2("", extra))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: [bridge] {where}")
    assert expected in str(e.value)


def test_exposed_listener_is_warned(write_file: WriteFile) -> None:
    """
    Listening beyond loopback with plain HTTP and no auth or allow-list is
    allowed but warned about on the page and in the log.
    """
    config = load_config(write_file("ok.conf", _v2("", "listener_address=0.0.0.0\n")))
    notices = " ".join(config.notices)
    assert "serves plain HTTP" in notices and "accepts every client" in notices


def test_carbon_black_sync_options(write_file: WriteFile) -> None:
    """
    Carbon Black server sync is on with a URL and a token, off with
    skip_cb_sync = true; a URL without a token is an error.
    """
    on = load_config(
        write_file(
            "on.conf",
            _v2(
                "",
                "carbonblack_server_url=https://cb.example/\ncarbonblack_server_token=tk\n"
                "carbonblack_server_sslverify=false\nhost_address=10.0.0.5\n",
            ),
        )
    )
    assert (on.carbonblack.server_url, on.carbonblack.server_token, on.carbonblack.verify_tls) == (
        "https://cb.example",
        "tk",
        False,
    )
    assert on.carbonblack.host_address == "10.0.0.5"
    assert any("Carbon Black server is OFF" in n for n in on.notices)
    assert "tk" not in repr(on)
    off = load_config(
        write_file(
            "off.conf",
            _v2(
                "",
                "carbonblack_server_url=https://cb.example\ncarbonblack_server_token=tk\n"
                "skip_cb_sync=True\n",
            ),
        )
    )
    assert off.carbonblack.server_url is None
    with pytest.raises(ConfigError, match="carbonblack_server_token: missing"):
        load_config(write_file("bad.conf", _v2("", "carbonblack_server_url=https://cb.example\n")))


def test_log_file_options(write_file: WriteFile, tmp_path: Path) -> None:
    """
    log_file, log_file_size (the v2 key), log_backups and log_format load;
    a folder that does not exist is refused.
    """
    config = load_config(
        write_file(
            "ok.conf",
            _v2(
                "",
                f"log_file={tmp_path}/tc.log\nlog_file_size=200000\nlog_backups=2\n"
                "log_format=JSON\n",
            ),
        )
    )
    assert (
        config.logging.file,
        config.logging.max_bytes,
        config.logging.backups,
        config.logging.format,
    ) == (
        f"{tmp_path}/tc.log",
        200000,
        2,
        "json",
    )
    with pytest.raises(ConfigError, match="is not a writable folder"):
        load_config(write_file("bad.conf", _v2("", "log_file=/nonexistent/dir/tc.log\n")))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (V2_MINIMAL, None),
        (_v2("max_age_days=0\n"), None),
        (_v2("max_age_days=90\n"), 90),
        (_v2("", "max_age_days=365\n"), 365),
    ],
)
def test_max_age_days(write_file: WriteFile, text: str, expected: int | None) -> None:
    """
    max_age_days (off by default; 0 is off) is read in the main section or
    in [bridge] and shown on the page.
    """
    config = load_config(write_file("ok.conf", text))
    assert config.feed.max_age_days == expected
    shown = dict(config.display())["max_age_days"]
    assert shown == "no age limit" if expected is None else shown.startswith(f"{expected} ")


@pytest.mark.parametrize("value", ["-1", "ninety", "36501", "1.5"])
def test_bad_max_age_days(write_file: WriteFile, value: str) -> None:
    """
    A max_age_days that is not a whole number of days up to 36500 is one line.
    """
    with pytest.raises(ConfigError, match=r"\[threatconnect\] max_age_days: "):
        load_config(write_file("bad.conf", _v2(f"max_age_days={value}\n")))
