"""
Tests for L{tcbridge.secrets}: every place the ThreatConnect secret key
can come from, their precedence, the encrypted form and its key file, the
C{encrypt-secret} command, and that no secret ever shows in an error.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tcbridge.cli import encrypt_secret_command
from tcbridge.secrets import (
    DEFAULT_KEY_FILE,
    SecretError,
    SecretSource,
    create_key_file,
    decrypt_secret,
    encrypt_secret,
    redact,
    resolve_secret,
)

SECRET = "Sup3r/Secret+Key=="


def _secret_file(tmp_path: Path, content: str, mode: int = 0o600, name: str = "tc.secret") -> str:
    path = tmp_path / name
    path.write_text(content)
    path.chmod(mode)
    return str(path)


def _key_file(tmp_path: Path, name: str = "secret.key") -> str:
    path = str(tmp_path / name)
    create_key_file(path)
    return path


def _resolve(
    *,
    plain: str | None = None,
    file: str | None = None,
    encrypted: str | None = None,
    key_file: str | None = None,
    environ: dict[str, str] | None = None,
) -> tuple[str, SecretSource, list[str]]:
    return resolve_secret(
        plain=plain, file=file, encrypted=encrypted, key_file=key_file, environ=environ or {}
    )


def _error(**kwargs: object) -> SecretError:
    with pytest.raises(SecretError) as info:
        _resolve(**kwargs)  # type: ignore[arg-type]
    return info.value


# --- each source ---------------------------------------------------------------


def test_plain_secret_key() -> None:
    """
    C{secret_key} in the config file is used as written.
    """
    assert _resolve(plain=SECRET) == (SECRET, SecretSource("config", "secret_key"), [])


def test_secret_key_file(tmp_path: Path) -> None:
    """
    C{secret_key_file} gives the file's content with surrounding whitespace
    stripped, and no warning when only its owner can read it.
    """
    path = _secret_file(tmp_path, f"\n  {SECRET}  \n\n")
    assert _resolve(file=path) == (SECRET, SecretSource("file", path), [])


def test_secret_key_file_readable_by_others_warns(tmp_path: Path) -> None:
    """
    A C{secret_key_file} other users can read still works, with one warning
    that names the file and the fix but not the secret.
    """
    path = _secret_file(tmp_path, SECRET, mode=0o644)
    secret, source, warnings = _resolve(file=path)
    assert (secret, source) == (SECRET, SecretSource("file", path))
    assert warnings == [
        f"secret_key_file {path} is readable by other users (mode 0644); run chmod 600 {path}"
    ]


def test_secret_key_file_empty(tmp_path: Path) -> None:
    """
    An empty (or whitespace-only) C{secret_key_file} is refused.
    """
    path = _secret_file(tmp_path, " \n\t\n")
    error = _error(file=path)
    assert error.key == "secret_key_file"
    assert error.problem == f"{path} is empty; expected only the ThreatConnect secret key"


def test_secret_key_file_missing(tmp_path: Path) -> None:
    """
    A C{secret_key_file} that cannot be read is refused, naming the file and
    the reason.
    """
    path = str(tmp_path / "nope")
    error = _error(file=path)
    assert error.key == "secret_key_file"
    assert error.problem == (
        f"{path} cannot be read (No such file or directory); "
        "expected only the ThreatConnect secret key"
    )


def test_secret_key_file_directory(tmp_path: Path) -> None:
    """
    A C{secret_key_file} that is a directory is refused.
    """
    error = _error(file=str(tmp_path))
    assert error.key == "secret_key_file"
    assert "is not a regular file" in error.problem


def test_secret_key_file_two_lines(tmp_path: Path) -> None:
    """
    A C{secret_key_file} with more than one line is refused without quoting
    any of it.
    """
    path = _secret_file(tmp_path, f"{SECRET}\nsecond-line-here\n")
    error = _error(file=path)
    assert error.problem == (
        f"{path} holds more than one line; expected only the ThreatConnect secret key"
    )
    assert "second-line-here" not in str(error)


def test_encrypted_secret(tmp_path: Path) -> None:
    """
    C{secret_key_encrypted} is decrypted with the named key file.
    """
    key = _key_file(tmp_path)
    token = encrypt_secret(SECRET, key)
    assert _resolve(encrypted=token, key_file=key) == (
        SECRET,
        SecretSource("encrypted", key),
        [],
    )


def test_encrypted_secret_default_key_file() -> None:
    """
    With no key file named, C{secret_key_encrypted} is decrypted with
    L{DEFAULT_KEY_FILE}, and a problem with it is blamed on the key-file
    option.
    """
    if os.path.lexists(DEFAULT_KEY_FILE):
        pytest.skip(f"{DEFAULT_KEY_FILE} exists on this machine")
    error = _error(encrypted="tcb1:gAAAA")
    assert error.key == "secret_key_encryption_key_file"
    assert error.problem.startswith(f"{DEFAULT_KEY_FILE} cannot be read")


def test_environment_variable() -> None:
    """
    With nothing in the config file, C{TCBRIDGE_SECRET_KEY} is used.
    """
    assert _resolve(environ={"TCBRIDGE_SECRET_KEY": SECRET}) == (
        SECRET,
        SecretSource("environment", "TCBRIDGE_SECRET_KEY"),
        [],
    )


def test_systemd_credential(tmp_path: Path) -> None:
    """
    With nothing in the config file or the environment variable, the systemd
    credential C{$CREDENTIALS_DIRECTORY/tcbridge_secret_key} is used.
    """
    path = _secret_file(tmp_path, SECRET + "\n", mode=0o400, name="tcbridge_secret_key")
    assert _resolve(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == (
        SECRET,
        SecretSource("systemd-credential", path),
        [],
    )


def test_systemd_credential_empty(tmp_path: Path) -> None:
    """
    An empty systemd credential is refused.
    """
    _secret_file(tmp_path, "", name="tcbridge_secret_key")
    error = _error(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert error.key == "CREDENTIALS_DIRECTORY"
    assert "is empty" in error.problem


def test_credentials_directory_without_ours(tmp_path: Path) -> None:
    """
    A credentials directory without C{tcbridge_secret_key} counts as nothing
    configured.
    """
    error = _error(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert error.key == "secret_key"


def test_nothing_configured() -> None:
    """
    With no source anywhere, the error says every way to give the key.
    """
    error = _error(plain="", file="  ", environ={"TCBRIDGE_SECRET_KEY": ""})
    assert error.key == "secret_key"
    assert error.problem == (
        "no secret key: set secret_key, secret_key_file or secret_key_encrypted, "
        "or TCBRIDGE_SECRET_KEY"
    )
    assert str(error) == f"secret_key: {error.problem}"


# --- precedence ----------------------------------------------------------------


def test_config_beats_environment_and_credential(tmp_path: Path) -> None:
    """
    A config entry wins over C{TCBRIDGE_SECRET_KEY} and the systemd
    credential; each unused source is named in a warning.
    """
    cred = _secret_file(tmp_path, "from-credential", name="tcbridge_secret_key")
    environ = {"TCBRIDGE_SECRET_KEY": "from-env", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    secret, source, warnings = _resolve(plain=SECRET, environ=environ)
    assert (secret, source) == (SECRET, SecretSource("config", "secret_key"))
    assert warnings == [
        "TCBRIDGE_SECRET_KEY is set but not used: secret_key takes precedence",
        f"systemd credential {cred} is present but not used: secret_key takes precedence",
    ]


def test_environment_beats_credential(tmp_path: Path) -> None:
    """
    C{TCBRIDGE_SECRET_KEY} wins over the systemd credential.
    """
    cred = _secret_file(tmp_path, "from-credential", name="tcbridge_secret_key")
    environ = {"TCBRIDGE_SECRET_KEY": SECRET, "CREDENTIALS_DIRECTORY": str(tmp_path)}
    secret, source, warnings = _resolve(environ=environ)
    assert (secret, source) == (SECRET, SecretSource("environment", "TCBRIDGE_SECRET_KEY"))
    assert warnings == [
        f"systemd credential {cred} is present but not used: TCBRIDGE_SECRET_KEY takes precedence"
    ]


@pytest.mark.parametrize(
    ("given", "first", "second"),
    [
        (("file", "plain"), "secret_key_file", "secret_key"),
        (("file", "encrypted"), "secret_key_file", "secret_key_encrypted"),
        (("encrypted", "plain"), "secret_key_encrypted", "secret_key"),
        (("file", "encrypted", "plain"), "secret_key_file", "secret_key_encrypted"),
    ],
)
def test_two_config_entries_refused(
    tmp_path: Path, given: tuple[str, ...], first: str, second: str
) -> None:
    """
    Setting more than one of C{secret_key_file}, C{secret_key_encrypted} and
    C{secret_key} is an error blamed on the lower-precedence one, before any
    file is read.
    """
    values = {"file": str(tmp_path / "missing"), "encrypted": "tcb1:x", "plain": SECRET}
    error = _error(**{name: values[name] for name in given})
    assert error.key == second
    assert error.problem == (
        f"set together with {first}; set only one of "
        "secret_key_file, secret_key_encrypted and secret_key"
    )
    assert SECRET not in str(error)


def test_key_file_without_encrypted_warns() -> None:
    """
    A key file named without C{secret_key_encrypted} is reported as unused.
    """
    _, _, warnings = _resolve(plain=SECRET, key_file="/etc/tcbridge/secret.key")
    assert warnings == [
        "secret_key_encryption_key_file is set but not used: secret_key_encrypted is not set"
    ]


# --- encryption and the key file -----------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    """
    L{encrypt_secret} gives a C{tcb1:} value that L{decrypt_secret} turns back
    into the secret, and that does not contain it.
    """
    key = _key_file(tmp_path)
    token = encrypt_secret(SECRET, key)
    assert token.startswith("tcb1:")
    assert SECRET not in token
    assert decrypt_secret(token, key) == SECRET
    assert decrypt_secret(f"  {token}\n", key) == SECRET


def test_unicode_round_trip(tmp_path: Path) -> None:
    """
    A secret with non-ASCII characters survives the round trip.
    """
    key = _key_file(tmp_path)
    assert decrypt_secret(encrypt_secret("clé-ü-密", key), key) == "clé-ü-密"


def test_wrong_key_file(tmp_path: Path) -> None:
    """
    A value encrypted with another key file is refused, naming the key file.
    """
    token = encrypt_secret(SECRET, _key_file(tmp_path, "one.key"))
    other = _key_file(tmp_path, "two.key")
    with pytest.raises(SecretError) as info:
        decrypt_secret(token, other)
    assert info.value.key == "secret_key_encrypted"
    assert info.value.problem == (
        f"cannot be decrypted with the key in {other} (wrong key file, or the value was "
        "changed); make it again with tcbridge encrypt-secret"
    )


def test_tampered_token(tmp_path: Path) -> None:
    """
    A value changed by even one character is refused.
    """
    key = _key_file(tmp_path)
    token = encrypt_secret(SECRET, key)
    i = len(token) // 2
    tampered = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    with pytest.raises(SecretError) as info:
        decrypt_secret(tampered, key)
    assert info.value.key == "secret_key_encrypted"
    assert "cannot be decrypted" in info.value.problem


@pytest.mark.parametrize("token", ["tcb1:", "tcb1:not base64 at all!", "tcb1:é"])
def test_garbage_token(tmp_path: Path, token: str) -> None:
    """
    A C{tcb1:} value that is not a Fernet token is refused the same way.
    """
    with pytest.raises(SecretError) as info:
        decrypt_secret(token, _key_file(tmp_path))
    assert info.value.key == "secret_key_encrypted"
    assert "cannot be decrypted" in info.value.problem


def test_2015_cbpasswd_value(tmp_path: Path) -> None:
    """
    A value without the C{tcb1:} prefix (such as one from the 2015 cbpasswd
    utility) is refused with a pointer to C{tcbridge encrypt-secret}.
    """
    with pytest.raises(SecretError) as info:
        _resolve(encrypted="c2VjcmV0LWZyb20tY2JwYXNzd2Q=", key_file=_key_file(tmp_path))
    assert info.value.key == "secret_key_encrypted"
    assert info.value.problem == (
        "not a tcbridge encrypted value (expected tcb1:...; values from the 2015 cbpasswd "
        "utility cannot be read); make one with tcbridge encrypt-secret"
    )


def test_create_key_file_mode(tmp_path: Path) -> None:
    """
    L{create_key_file} makes a regular file of mode 0600, owned by the
    current user, holding one Fernet key.
    """
    path = tmp_path / "secret.key"
    create_key_file(str(path))
    st = path.lstat()
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    Fernet(path.read_bytes().strip())


def test_create_key_file_ignores_umask(tmp_path: Path) -> None:
    """
    A permissive umask does not widen the key file's mode.
    """
    old = os.umask(0)
    try:
        path = _key_file(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_create_key_file_no_overwrite(tmp_path: Path) -> None:
    """
    L{create_key_file} never overwrites an existing file (or follows a
    symlink), and leaves it untouched.
    """
    path = _key_file(tmp_path)
    before = Path(path).read_bytes()
    with pytest.raises(SecretError) as info:
        create_key_file(path)
    assert info.value.key == "secret_key_encryption_key_file"
    assert info.value.problem == f"{path} already exists; not overwriting it"
    assert Path(path).read_bytes() == before
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "target")
    with pytest.raises(SecretError):
        create_key_file(str(link))
    assert not (tmp_path / "target").exists()


def test_create_key_file_missing_directory(tmp_path: Path) -> None:
    """
    A key file in a directory that does not exist cannot be created.
    """
    path = str(tmp_path / "no" / "secret.key")
    with pytest.raises(SecretError) as info:
        create_key_file(path)
    assert info.value.problem == f"{path} cannot be created (No such file or directory)"


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_private_key_file_accepted(tmp_path: Path, mode: int) -> None:
    """
    A key file with no group or other permission bits is used.
    """
    key = _key_file(tmp_path)
    token = encrypt_secret(SECRET, key)
    os.chmod(key, mode)
    assert decrypt_secret(token, key) == SECRET


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        (0o644, "is readable by other users (mode 0644)"),
        (0o640, "is readable by other users (mode 0640)"),
        (0o604, "is readable by other users (mode 0604)"),
        (0o620, "is open to other users (mode 0620)"),
        (0o601, "is open to other users (mode 0601)"),
    ],
)
def test_open_key_file_refused(tmp_path: Path, mode: int, problem: str) -> None:
    """
    A key file with any group or other permission bit is refused, even for
    root (who could read it anyway), with the chmod that fixes it.
    """
    key = _key_file(tmp_path)
    token = encrypt_secret(SECRET, key)
    os.chmod(key, mode)
    for attempt in (lambda: decrypt_secret(token, key), lambda: encrypt_secret(SECRET, key)):
        with pytest.raises(SecretError) as info:
            attempt()
        assert info.value.key == "secret_key_encryption_key_file"
        assert info.value.problem == f"{key} {problem}; run chmod 600 {key}"


def test_key_file_not_regular(tmp_path: Path) -> None:
    """
    A key file that is a directory is refused.
    """
    with pytest.raises(SecretError) as info:
        decrypt_secret("tcb1:x", str(tmp_path))
    assert info.value.key == "secret_key_encryption_key_file"
    assert "is not a regular file" in info.value.problem


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file away")
def test_key_file_owned_by_someone_else(tmp_path: Path) -> None:
    """
    A key file owned by another user is refused, naming both users.
    """
    key = _key_file(tmp_path)
    token = encrypt_secret(SECRET, key)
    os.chown(key, 65534, -1)
    with pytest.raises(SecretError) as info:
        decrypt_secret(token, key)
    assert info.value.key == "secret_key_encryption_key_file"
    assert info.value.problem == (
        f"{key} is owned by uid 65534, not by the user tcbridge runs as (uid 0); "
        "chown it to that user"
    )


def test_key_file_without_key(tmp_path: Path) -> None:
    """
    A key file that does not hold a Fernet key is refused without quoting it.
    """
    key = _secret_file(tmp_path, "this-is-not-a-fernet-key\n", name="bad.key")
    with pytest.raises(SecretError) as info:
        decrypt_secret("tcb1:x", key)
    assert info.value.key == "secret_key_encryption_key_file"
    assert info.value.problem == (
        f"{key} does not hold a Fernet key (44 characters of URL-safe base64); "
        "make one with tcbridge encrypt-secret"
    )


# --- the encrypt-secret command ------------------------------------------------


def _run(argv: list[str], stdin_text: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = encrypt_secret_command(argv, io.StringIO(stdin_text), stdout, stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def test_command_end_to_end(tmp_path: Path) -> None:
    """
    C{encrypt-secret} creates the key file (0600), prints the two config
    lines, and the value resolves back to the secret.
    """
    key = str(tmp_path / "secret.key")
    code, out, err = _run(["--key-file", key], SECRET + "\n")
    assert code == 0
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    first, second = out.splitlines()
    assert first.startswith("secret_key_encrypted = tcb1:")
    assert second == f"secret_key_encryption_key_file = {key}"
    assert SECRET not in out + err
    assert err == (
        f"tcbridge encrypt-secret: created {key} (mode 0600); "
        "tcbridge must run as the user that owns it\n"
    )
    token = first.split(" = ", 1)[1]
    assert _resolve(encrypted=token, key_file=key) == (
        SECRET,
        SecretSource("encrypted", key),
        [],
    )


def test_command_reuses_key_file(tmp_path: Path) -> None:
    """
    With an existing key file, C{encrypt-secret} uses it, leaves it as it
    was and says nothing on stderr.
    """
    key = _key_file(tmp_path)
    before = Path(key).read_bytes()
    code, out, err = _run(["--key-file", key], SECRET)
    assert (code, err) == (0, "")
    assert Path(key).read_bytes() == before
    token = out.splitlines()[0].split(" = ", 1)[1]
    assert decrypt_secret(token, key) == SECRET


def test_command_empty_input(tmp_path: Path) -> None:
    """
    No secret on standard input: one line on stderr, exit 1, no key file.
    """
    key = tmp_path / "secret.key"
    assert _run(["--key-file", str(key)], "\n") == (
        1,
        "",
        "tcbridge encrypt-secret: no secret key on standard input\n",
    )
    assert not key.exists()


def test_command_open_key_file(tmp_path: Path) -> None:
    """
    An existing key file others can read: one line on stderr, exit 1.
    """
    key = _key_file(tmp_path)
    os.chmod(key, 0o644)
    assert _run(["--key-file", key], SECRET) == (
        1,
        "",
        f"tcbridge encrypt-secret: {key} is readable by other users (mode 0644); "
        f"run chmod 600 {key}\n",
    )


def test_command_bad_arguments() -> None:
    """
    An unknown argument: one line on stderr, exit 2.
    """
    code, out, err = _run(["--bogus"], SECRET)
    assert (code, out) == (2, "")
    assert err == "tcbridge encrypt-secret: option --bogus not recognized\n"


def test_command_help() -> None:
    """
    C{--help} prints usage on stdout and exits 0.
    """
    code, out, err = _run(["--help"], "")
    assert (code, err) == (0, "")
    assert "--key-file PATH" in out
    assert DEFAULT_KEY_FILE in out


# --- nothing leaks -------------------------------------------------------------


def test_source_repr_has_no_secret(tmp_path: Path) -> None:
    """
    The L{SecretSource} of every kind shows where, never what.
    """
    key = _key_file(tmp_path)
    path = _secret_file(tmp_path, SECRET)
    cred_dir = tmp_path / "creds"
    cred_dir.mkdir()
    _secret_file(cred_dir, SECRET, name="tcbridge_secret_key")
    sources = [
        _resolve(plain=SECRET)[1],
        _resolve(file=path)[1],
        _resolve(encrypted=encrypt_secret(SECRET, key), key_file=key)[1],
        _resolve(environ={"TCBRIDGE_SECRET_KEY": SECRET})[1],
        _resolve(environ={"CREDENTIALS_DIRECTORY": str(cred_dir)})[1],
    ]
    assert [s.kind for s in sources] == [
        "config",
        "file",
        "encrypted",
        "environment",
        "systemd-credential",
    ]
    for source in sources:
        assert SECRET not in repr(source)
        assert SECRET not in source.describe()


def test_errors_have_no_secret_or_key_material(tmp_path: Path) -> None:
    """
    No L{SecretError} carries the secret, a file's content or the key.
    """
    key = _key_file(tmp_path)
    key_material = Path(key).read_text().strip()
    token = encrypt_secret(SECRET, key)
    other = _key_file(tmp_path, "other.key")
    errors: list[SecretError] = []
    for attempt in [
        lambda: _resolve(plain=SECRET, encrypted=token),
        lambda: _resolve(file=_secret_file(tmp_path, f"{SECRET}\n{SECRET}", name="two")),
        lambda: decrypt_secret(token, other),
        lambda: decrypt_secret(token[:-4], key),
        lambda: decrypt_secret(SECRET, key),
        lambda: decrypt_secret(token, _secret_file(tmp_path, SECRET, name="notakey")),
    ]:
        with pytest.raises(SecretError) as info:
            attempt()
        errors.append(info.value)
    os.chmod(key, 0o644)
    with pytest.raises(SecretError) as info:
        decrypt_secret(token, key)
    errors.append(info.value)
    for error in errors:
        for text in (str(error), repr(error), error.problem):
            assert SECRET not in text
            assert key_material not in text
            assert token[5:] not in text
        # Tracebacks do not show the exception that led to it, either.
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


# --- redact --------------------------------------------------------------------


def test_redact() -> None:
    """
    L{redact} hides every secret as written and URL-encoded (either hex case,
    C{+} or C{%20} for spaces), and ignores empty secrets.
    """
    secret = "a b/c+d"
    text = (
        f"plain {secret}; quoted a%20b%2Fc%2Bd; lower a%20b%2fc%2bd; "
        "plus a+b%2Fc%2Bd; path a%20b/c%2Bd; other tok"
    )
    assert redact(text, [secret, "", "tok"]) == (
        "plain ***; quoted ***; lower ***; plus ***; path ***; other ***"
    )
    assert redact("nothing here", []) == "nothing here"
    assert redact("nothing here", [""]) == "nothing here"
