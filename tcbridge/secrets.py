# -*- test-case-name: tests.unit.test_secrets -*-
"""
Where the ThreatConnect secret key comes from, and keeping it out of sight.

The secret key may be given, in this order of precedence:

  1. in the config file, as exactly one of
     - C{secret_key_file}: a file holding only the key;
     - C{secret_key_encrypted}: a value made by C{tcbridge encrypt-secret}
       (C{tcb1:...}), decrypted with the key in
       C{secret_key_encryption_key_file} (default L{DEFAULT_KEY_FILE});
     - C{secret_key}: the key itself, in plain text;
  2. the environment variable C{TCBRIDGE_SECRET_KEY};
  3. a systemd credential: the file C{$CREDENTIALS_DIRECTORY/tcbridge_secret_key}
     (C{LoadCredential=tcbridge_secret_key:/path} in the unit).

Everything here is a pure function of its arguments and the files they name:
the environment is passed in, nothing is cached.  Problems are raised as
L{SecretError}, one line naming the config key it belongs to; neither it nor
L{SecretSource} ever holds the secret or any key material.

How a secret looks when it has to be shown is decided here too, and only
here: L{mask} (a secret as set or not), L{mask_url} (a URL's password as
C{***}) and L{redact} (every secret taken out of a text, the last line of
defence for error messages).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

from attrs import frozen
from cryptography.fernet import Fernet, InvalidToken

#: The environment variable that may hold the secret key.
ENV_VAR = "TCBRIDGE_SECRET_KEY"
#: The systemd credential name: C{$CREDENTIALS_DIRECTORY/<this>}.
CREDENTIAL_NAME = "tcbridge_secret_key"
#: Where C{tcbridge encrypt-secret} keeps its key unless told otherwise, and
#: where C{secret_key_encrypted} is decrypted from when no key file is named.
DEFAULT_KEY_FILE = "/etc/tcbridge/secret.key"
#: The prefix of every encrypted value, so the format can change later.
TOKEN_PREFIX = "tcb1:"  # noqa: S105 - a format marker, not a password

KEY_FILE_OPTION = "secret_key_encryption_key_file"

# Config entries, highest precedence first.
_CONFIG_KEYS = ("secret_key_file", "secret_key_encrypted", "secret_key")

# Neither a key file nor a secret file is ever this big; refuse to read more.
_MAX_FILE_BYTES = 64 * 1024


class SecretError(Exception):
    """
    A problem getting the secret key, as one line.  Never includes the secret
    or any key material.

    :ivar key: the config key the problem belongs to: C{secret_key},
        C{secret_key_file}, C{secret_key_encrypted},
        C{secret_key_encryption_key_file}; or C{TCBRIDGE_SECRET_KEY} /
        C{CREDENTIALS_DIRECTORY} for the environment sources.
    :ivar problem: what is wrong and how to fix it.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


@frozen
class SecretSource:
    """
    Where the secret key came from, for the diagnostics page.  Never the value.

    :ivar kind: C{"config"} (C{secret_key} in the file), C{"file"}
        (C{secret_key_file}), C{"encrypted"} (C{secret_key_encrypted}),
        C{"environment"} (C{TCBRIDGE_SECRET_KEY}) or C{"systemd-credential"}.
    :ivar where: the config key, file path or variable name.
    """

    kind: str
    where: str

    def describe(self) -> str:
        """
        One human line, e.g. C{"secret_key_file /etc/tcbridge/tc.secret"}.
        """
        return {
            "config": "secret_key in the config file",
            "file": f"secret_key_file {self.where}",
            "encrypted": f"secret_key_encrypted, decrypted with {self.where}",
            "environment": f"environment variable {self.where}",
            "systemd-credential": f"systemd credential {self.where}",
        }.get(self.kind, f"{self.kind} {self.where}")


def _mode_text(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"


def _read_small_file(path: str, key: str, what: str) -> tuple[bytes, os.stat_result]:
    """
    Read a small regular file, checking it through the open descriptor.

    :param key: the config key to blame in a L{SecretError}.
    :param what: what the file should hold, for messages.
    :return: its bytes and its C{fstat}.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise SecretError(key, f"{path} cannot be read ({e.strerror}); expected {what}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(key, f"{path} is not a regular file; expected {what}")
        if st.st_size > _MAX_FILE_BYTES:
            raise SecretError(key, f"{path} is too big to hold {what}")
        chunks = []
        while chunk := os.read(fd, _MAX_FILE_BYTES + 1):
            chunks.append(chunk)
        return b"".join(chunks), st
    except OSError as e:
        raise SecretError(key, f"{path} cannot be read ({e.strerror}); expected {what}") from None
    finally:
        os.close(fd)


def _text_of(data: bytes, path: str, key: str, what: str) -> str:
    """
    The one line of text a secret file holds, surrounding whitespace stripped.
    """
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretError(key, f"{path} is not UTF-8 text; expected {what}") from None
    if not text:
        raise SecretError(key, f"{path} is empty; expected {what}")
    if "\n" in text or "\r" in text:
        raise SecretError(key, f"{path} holds more than one line; expected {what}")
    return text


def _open_to_others(path: str, mode: int) -> str | None:
    """
    The complaint about a file others may use, or C{None} if it is private.
    """
    if mode & 0o044:
        return f"{path} is readable by other users (mode {_mode_text(mode)}); run chmod 600 {path}"
    if mode & 0o077:
        return f"{path} is open to other users (mode {_mode_text(mode)}); run chmod 600 {path}"
    return None


def read_secret_file(path: str) -> tuple[str, list[str]]:
    """
    Read C{secret_key_file}: a file holding only the secret key.

    :return: the key (surrounding whitespace stripped) and warnings (the file
        is readable by group or other users).
    :raise SecretError: the file cannot be read, is not a regular file, is
        empty or holds more than one line.
    """
    what = "only the ThreatConnect secret key"
    data, st = _read_small_file(path, "secret_key_file", what)
    secret = _text_of(data, path, "secret_key_file", what)
    complaint = _open_to_others(path, st.st_mode)
    return secret, [f"secret_key_file {complaint}"] if complaint else []


def _load_fernet(key_file: str) -> Fernet:
    """
    The Fernet key in C{key_file}, after checking the file is private.

    :raise SecretError: (for C{secret_key_encryption_key_file}) the file is
        missing or unreadable, not a regular file, not owned by this user, has
        any group or other permission bit, or does not hold a Fernet key.
    """
    what = "a key made by tcbridge encrypt-secret"
    data, st = _read_small_file(key_file, KEY_FILE_OPTION, what)
    uid = os.geteuid()
    if st.st_uid != uid:
        raise SecretError(
            KEY_FILE_OPTION,
            f"{key_file} is owned by uid {st.st_uid}, not by the user tcbridge runs as "
            f"(uid {uid}); chown it to that user",
        )
    complaint = _open_to_others(key_file, st.st_mode)
    if complaint:
        raise SecretError(KEY_FILE_OPTION, complaint)
    try:
        return Fernet(data.strip())
    except (ValueError, TypeError):
        raise SecretError(
            KEY_FILE_OPTION,
            f"{key_file} does not hold a Fernet key (44 characters of URL-safe base64); "
            "make one with tcbridge encrypt-secret",
        ) from None


def create_key_file(path: str) -> None:
    """
    Create a new key file holding a fresh Fernet key, mode 0600, owned by the
    current user.  Never overwrites anything.

    :raise SecretError: (for C{secret_key_encryption_key_file}) the path
        exists already or cannot be created.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SecretError(KEY_FILE_OPTION, f"{path} already exists; not overwriting it") from None
    except OSError as e:
        raise SecretError(KEY_FILE_OPTION, f"{path} cannot be created ({e.strerror})") from None
    try:
        try:
            os.fchmod(fd, 0o600)
            data = Fernet.generate_key() + b"\n"
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        os.unlink(path)
        raise SecretError(KEY_FILE_OPTION, f"{path} cannot be written ({e.strerror})") from None
    try:
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def encrypt_secret(secret: str, key_file: str) -> str:
    """
    Encrypt the secret key with the Fernet key in C{key_file}.

    :return: C{"tcb1:"} followed by a Fernet token, for C{secret_key_encrypted}.
    :raise SecretError: the secret is empty, or the key file is unusable (see
        L{decrypt_secret}).
    """
    if not secret:
        raise SecretError("secret_key", "the secret key is empty")
    token = _load_fernet(key_file).encrypt(secret.encode("utf-8"))
    return TOKEN_PREFIX + token.decode("ascii")


def decrypt_secret(token: str, key_file: str) -> str:
    """
    Decrypt a C{secret_key_encrypted} value made by L{encrypt_secret}.

    :raise SecretError: for C{secret_key_encryption_key_file} if the key file
        is missing, unreadable, not a regular file, not owned by the current
        user, has any group/other permission bit or holds no Fernet key; for
        C{secret_key_encrypted} if the value is not a C{tcb1:} value (a 2015
        C{cbpasswd} value, say) or does not decrypt with this key (wrong key
        file, or the value was changed).
    """
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX):
        raise SecretError(
            "secret_key_encrypted",
            f"not a tcbridge encrypted value (expected {TOKEN_PREFIX}...; values from the "
            "2015 cbpasswd utility cannot be read); make one with tcbridge encrypt-secret",
        )
    fernet = _load_fernet(key_file)
    try:
        plain = fernet.decrypt(token[len(TOKEN_PREFIX) :].encode("ascii"))
    except (InvalidToken, UnicodeEncodeError):
        raise SecretError(
            "secret_key_encrypted",
            f"cannot be decrypted with the key in {key_file} (wrong key file, or the value "
            "was changed); make it again with tcbridge encrypt-secret",
        ) from None
    try:
        secret = plain.decode("utf-8")
    except UnicodeDecodeError:
        secret = ""
    if not secret:
        raise SecretError(
            "secret_key_encrypted",
            "decrypts to an empty or invalid secret key; make it again with "
            "tcbridge encrypt-secret",
        )
    return secret


def _set(value: str | None) -> bool:
    return value is not None and value.strip() != ""


def resolve_secret(
    *,
    plain: str | None,
    file: str | None,
    encrypted: str | None,
    key_file: str | None,
    environ: Mapping[str, str],
) -> tuple[str, SecretSource, list[str]]:
    """
    Find the ThreatConnect secret key.

    Config entries come first (C{secret_key_file}, C{secret_key_encrypted},
    C{secret_key}; at most one may be set), then C{TCBRIDGE_SECRET_KEY}, then
    the systemd credential C{$CREDENTIALS_DIRECTORY/tcbridge_secret_key}.
    An entry that is C{None} or blank counts as not set.

    :param plain: C{secret_key}.
    :param file: C{secret_key_file}.
    :param encrypted: C{secret_key_encrypted}.
    :param key_file: C{secret_key_encryption_key_file}; L{DEFAULT_KEY_FILE}
        when C{None} or blank.
    :param environ: the process environment (C{os.environ}).
    :return: the secret, where it came from, and warnings to log (a secret
        file others can read, sources that were set but not used).
    :raise SecretError: two config entries are set; the chosen source is
        unusable (see L{read_secret_file}, L{decrypt_secret}); nothing is
        configured anywhere.
    """
    values = {"secret_key_file": file, "secret_key_encrypted": encrypted, "secret_key": plain}
    given = [k for k in _CONFIG_KEYS if _set(values[k])]
    if len(given) > 1:
        raise SecretError(
            given[1],
            f"set together with {given[0]}; set only one of "
            "secret_key_file, secret_key_encrypted and secret_key",
        )
    warnings: list[str] = []
    env_secret = environ.get(ENV_VAR, "").strip()
    cred_dir = environ.get("CREDENTIALS_DIRECTORY", "")
    cred_path = os.path.join(cred_dir, CREDENTIAL_NAME) if cred_dir else None
    cred_present = cred_path is not None and os.path.lexists(cred_path)

    def not_used(winner: str) -> None:
        if env_secret and winner != ENV_VAR:
            warnings.append(f"{ENV_VAR} is set but not used: {winner} takes precedence")
        if cred_present:
            warnings.append(
                f"systemd credential {cred_path} is present but not used: {winner} takes precedence"
            )

    if _set(key_file) and not _set(encrypted):
        warnings.append(f"{KEY_FILE_OPTION} is set but not used: secret_key_encrypted is not set")

    if given:
        chosen = given[0]
        not_used(chosen)
        if chosen == "secret_key_file":
            assert file is not None
            path = file.strip()
            secret, file_warnings = read_secret_file(path)
            return secret, SecretSource("file", path), file_warnings + warnings
        if chosen == "secret_key_encrypted":
            assert encrypted is not None
            kf = key_file.strip() if key_file is not None and key_file.strip() else DEFAULT_KEY_FILE
            return decrypt_secret(encrypted, kf), SecretSource("encrypted", kf), warnings
        assert plain is not None
        return plain.strip(), SecretSource("config", "secret_key"), warnings

    if env_secret:
        not_used(ENV_VAR)
        return env_secret, SecretSource("environment", ENV_VAR), warnings

    if cred_present and cred_path is not None:
        what = "only the ThreatConnect secret key"
        data, _ = _read_small_file(cred_path, "CREDENTIALS_DIRECTORY", what)
        secret = _text_of(data, cred_path, "CREDENTIALS_DIRECTORY", what)
        return secret, SecretSource("systemd-credential", cred_path), warnings

    raise SecretError(
        "secret_key",
        f"no secret key: set secret_key, secret_key_file or secret_key_encrypted, or {ENV_VAR}",
    )


# Hiding secrets: the one place that decides how a secret looks when shown.


def mask(secret: str) -> str:
    """
    Show that a secret is set without showing any of it.
    """
    return "(set, hidden)" if secret else "(not set)"


def _split_userinfo(rest: str) -> tuple[str, str] | None:
    """
    Split the part of a URL after C{scheme://} into user information and the
    rest, erring on the side of treating text as a secret.

    A password with an unencoded C{/}, C{?} or C{#} ends the authority early
    in a strict parse (C{http://u:pa/ss@host}); when the authority then looks
    like C{name:not-a-port} and an C{@} follows, everything up to the last
    C{@} is taken as user information.
    """
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if 0 <= i < end:
            end = i
    at = rest.rfind("@", 0, end)
    if at >= 0:
        return rest[:at], rest[at + 1 :]
    authority = rest[:end]
    _, colon, after = authority.partition(":")
    if colon and not after.isdigit() and "@" in rest[end:]:
        at = rest.rfind("@")
        return rest[:at], rest[at + 1 :]
    return None


def mask_url(url: str) -> str:
    """
    C{url} with any password replaced by C{***}, for pages and logs:
    C{http://user:***@proxy.example:3128}.  A URL without a password is
    returned unchanged.

    :param url: a URL, possibly malformed.
    """
    sep = url.find("://")
    start = sep + 3 if sep >= 0 else 0
    split = _split_userinfo(url[start:])
    if split is None:
        return url
    userinfo, rest = split
    user, colon, _ = userinfo.partition(":")
    if not colon:
        return url
    return f"{url[:start]}{user}:***@{rest}"


_LOWER_HEX = re.compile(r"%[0-9A-F]{2}")


def redact(text: str, secrets: Iterable[str], hidden: str = "***") -> str:
    """
    Replace every occurrence of every non-empty secret in C{text}, as written
    or URL-encoded, with C{hidden}.  A last line of defence for error text.
    """
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        for form in (secret, quote(secret, safe=""), quote(secret), quote_plus(secret)):
            forms.add(form)
            forms.add(_LOWER_HEX.sub(lambda m: m.group(0).lower(), form))
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, hidden)
    return text
