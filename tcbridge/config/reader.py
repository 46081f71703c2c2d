# -*- test-case-name: tests.unit.test_config_malformed -*-
"""
Reading single values from a parsed config file: text, yes/no, numbers in
a range, URLs, folders, files of lines, each refused with one
L{ConfigError} line naming the file, section and key; and the keys nobody
used, reported as notices.
"""

from __future__ import annotations

import configparser
import math
import os
import re
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from tcbridge.secrets import mask_url

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


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Reader:
    """
    Reads values from one parsed file, remembering which keys it used so
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

    def section_with(self, section: str, key: str) -> str:
        """
        C{section} if it has C{key}, else C{"bridge"}: options that may sit in
        the layout's main section or in [bridge].
        """
        return section if self.get(section, key) is not None else "bridge"

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
                elif section.lower().startswith("threatconnect:"):
                    self.notices.append(
                        f"[{section}] {key}: not an option of one instance; ignored (the "
                        "feed's options belong in [threatconnect] and apply to every instance)"
                    )
                else:
                    self.notices.append(
                        f"[{section}] {key}: not a tcbridge option; ignored (check the "
                        "spelling against etc/tcbridge.conf.example)"
                    )
