"""
Tests for the C{tcbridge} console command's in-process parts: C{validate}
and the command line checks.  (Write mode runs as a real process in
tests/test_integration.py.)
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tcbridge.cli import main, run_accept_shrink, run_validate
from tcbridge.config import load_config
from tcbridge.feed.document import FeedInfo, empty_document

WriteFile = Callable[[str, str], str]

GOOD_REPORT = {
    "id": "common_community-1a2b3c4d-md5-80",
    "timestamp": 1700000000,
    "link": "https://app.threatconnect.com/auth",
    "title": "ThreatConnect Common Community: File md5 IOCs, score 80",
    "score": 80,
    "iocs": {"md5": ["d41d8cd98f00b204e9800998ecf8427e"]},
}


def _feed(*reports: dict[str, object]) -> str:
    doc = empty_document(FeedInfo())
    doc["reports"] = list(reports)
    return orjson.dumps(doc).decode()


def test_validate_good_feed(write_file: WriteFile) -> None:
    """
    A valid feed file is reported valid with its counts; exit status 0.
    """
    path = write_file("feed.json", _feed(GOOD_REPORT))
    out = io.StringIO()
    assert run_validate([path], out) == 0
    assert out.getvalue() == f"{path}: valid Carbon Black feed: 1 reports, 1 IOCs\n"


def test_validate_prints_each_problem_with_report_id(write_file: WriteFile) -> None:
    """
    Every problem is printed on its own line naming the report; exit status
    1.
    """
    bad = dict(GOOD_REPORT, id="bad id", score=101, iocs={"ipv4": ["999.1.1.1"]})
    path = write_file("feed.json", _feed(GOOD_REPORT, bad))
    out = io.StringIO()
    assert run_validate([path], out) == 1
    lines = out.getvalue().splitlines()
    assert f"{path}: report 'bad id': score 101 is outside 0..100" in lines
    assert any("report 'bad id'" in line and "999.1.1.1" in line for line in lines)
    assert lines[-1] == f"{path}: NOT a valid Carbon Black feed: {len(lines) - 1} problems"


def test_validate_unreadable_and_not_json(write_file: WriteFile) -> None:
    """
    A missing file and a file that is not JSON are reported, not raised.
    """
    path = write_file("feed.json", "<html>")
    out = io.StringIO()
    assert run_validate(["/nonexistent/feed.json", path], out) == 1
    text = out.getvalue()
    assert "/nonexistent/feed.json: cannot be read: No such file or directory" in text
    assert f"{path}: document: is not valid JSON" in text


def test_main_validate_exit_status(
    write_file: WriteFile, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    'tcbridge validate FILE' exits with the validation's status.
    """
    path = write_file("feed.json", _feed(GOOD_REPORT))
    with pytest.raises(SystemExit) as e:
        main(["validate", path])
    assert e.value.code == 0
    assert "valid Carbon Black feed" in capsys.readouterr().out


def test_write_needs_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    """
    'tcbridge write FILE' without --config or --demo is a usage error.
    """
    with pytest.raises(SystemExit) as e:
        main(["write", "out.json"])
    assert e.value.code == 2
    assert "write needs --config FILE, or --demo" in capsys.readouterr().err


def test_accept_shrink_leaves_marker(write_file: WriteFile, tmp_path: Path) -> None:
    """
    'tcbridge --config C accept-shrink' leaves the marker the bridge's next
    sync looks for, in the cache folder.
    """
    cache = tmp_path / "cache"
    config = write_file(
        "tc.conf",
        f"[threatconnect]\napi_key=1\nsecret_key=2\nsources=*\n[bridge]\ncache_folder={cache}\n",
    )
    with pytest.raises(SystemExit) as e:
        main(["--config", config, "accept-shrink"])
    assert e.value.code == 0
    assert (cache / "accept-shrink").exists()


def test_accept_shrink_without_cache_folder(write_file: WriteFile) -> None:
    """
    Without a cache folder accept-shrink says what to do instead.
    """
    config = write_file(
        "tc.conf", "[threatconnect]\napi_key=1\nsecret_key=2\nsources=*\n[bridge]\ncache_folder=\n"
    )
    out = io.StringIO()
    assert run_accept_shrink(load_config(config), out) == 2
    assert "raise max_shrink_percent" in out.getvalue()


def test_encrypt_secret_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    'tcbridge encrypt-secret --key-file F' reads the secret from standard
    input and prints the two config lines; the config then decrypts it.
    """
    key = tmp_path / "secret.key"
    monkeypatch.setattr("sys.stdin", io.StringIO("the-real-secret\n"))
    with pytest.raises(SystemExit) as e:
        main(["encrypt-secret", "--key-file", str(key)])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "the-real-secret" not in out
    lines = dict(line.split(" = ", 1) for line in out.splitlines())
    assert lines["secret_key_encryption_key_file"] == str(key)
    from tcbridge.secrets import decrypt_secret

    assert decrypt_secret(lines["secret_key_encrypted"], str(key)) == "the-real-secret"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "tcbridge: give a command: write, check-config, explain"),
        (["--demo", "--config", "x.conf", "write", "f"], "--demo and --config exclude each other"),
        (["--demo", "check-config"], "tcbridge: check-config needs --config FILE\n"),
        (["explain", "8.8.8.8"], "tcbridge: explain needs --config FILE\n"),
        (["--config", "x.conf", "explain"], "tcbridge: give at least one VALUE"),
        (["--bogus", "write", "f"], "tcbridge: option --bogus not recognized"),
        (["write"], "tcbridge: Wrong number of arguments."),
        (["validate"], "tcbridge: give at least one FILE"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """
    A bad command line (parsed by the same option tree as twistd's) is one
    message and a pointer to --help on stderr, exit status 2, no traceback.
    """
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Run 'tcbridge --help'" in err and "Traceback" not in err


def test_twistd_and_console_share_the_source_options() -> None:
    """
    --config and --demo are declared once, for twistd and the console
    command alike.
    """
    from tcbridge.options import CommandOptions, ServiceOptions

    for options in (ServiceOptions(), CommandOptions()):
        assert {"config", "demo"} <= set(options.keys())
        assert options.longOpt.count("config=") == 1
