# -*- test-case-name: tests.unit.test_cli -*-
"""
The command lines, as one tree of L{twisted.python.usage.Options}: the
choice of configuration (C{--config FILE} or C{--demo}) is declared once and
shared by C{twistd tcbridge} (L{ServiceOptions}) and the C{tcbridge} console
command (L{CommandOptions}), and so is C{write FILE}.

Parsing checks only the command line; loading the file is the caller's
job, so that each can report a bad file in its own way.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from tcbridge import __version__
from tcbridge.secrets import DEFAULT_KEY_FILE


class _Options(usage.Options):
    """
    tcbridge's options: C{-h} as well as C{--help}; C{--version} says
    tcbridge's version.
    """

    def opt_h(self) -> None:
        """
        Display this help and exit.
        """
        self.opt_help()

    def opt_version(self) -> None:
        """
        Display tcbridge's version and exit.
        """
        print(f"tcbridge {__version__}")
        sys.exit(0)


class WriteOptions(usage.Options):
    """
    C{write FILE}: sync once, write the feed to FILE (replaced atomically).
    """

    synopsis = "FILE"

    def parseArgs(self, path: str) -> None:  # type: ignore[override]
        """
        Take the one argument, the file to write.
        """
        self["path"] = path


class _Values(usage.Options):
    """
    A command that takes one or more arguments, kept in C{self["values"]}.
    """

    what = "VALUE"

    def parseArgs(self, *values: str) -> None:
        if not values:
            raise usage.UsageError(f"give at least one {self.what}")
        self["values"] = list(values)


class ExplainOptions(_Values):
    """
    C{explain VALUE...}: why each value is or is not in the feed.
    """

    synopsis = "VALUE..."


class ValidateOptions(_Values):
    """
    C{validate FILE...}: check feed files against the Carbon Black rules.
    """

    synopsis = "FILE..."
    what = "FILE"


class EncryptSecretOptions(_Options):
    """
    C{encrypt-secret [--key-file PATH]}: encrypt the secret key read from
    standard input for C{secret_key_encrypted}.
    """

    longdesc = (
        "Encrypt the ThreatConnect secret key (read from standard input) for "
        "secret_key_encrypted, creating the key file if it does not exist."
    )
    optParameters = [
        [
            "key-file",
            None,
            DEFAULT_KEY_FILE,
            "The key file; created with mode 0600 if missing.",
        ],
    ]


class _NoArguments(usage.Options):
    """
    A command without options or arguments.
    """


class _Source(_Options):
    """
    Where the indicators come from: a configuration file, or the built-in
    demo.
    """

    # usage.Options gathers these lists from every class in the tree, so the
    # subclasses list only what they add.
    optParameters: list[list[Any]] = [
        ["config", "c", None, "Configuration file (2015 bridge or v2 connector layout)."],
    ]
    optFlags: list[list[Any]] = [
        ["demo", None, "Run against the built-in ThreatConnect simulator (no account needed)."],
    ]

    def check_source(self, missing: str, demo_allowed: bool = True) -> None:
        """
        Refuse C{--demo} with C{--config}, C{--demo} where it cannot serve,
        and neither (with the message C{missing}).
        """
        if self["demo"] and self["config"]:
            raise usage.UsageError("--demo and --config exclude each other")
        if self["demo"] and not demo_allowed:
            raise usage.UsageError(f"{self.subCommand} needs --config FILE")
        if not self["demo"] and not self["config"]:
            raise usage.UsageError(missing)


class ServiceOptions(_Source):
    """
    Command line of C{twistd tcbridge}.
    """

    synopsis = "[--config FILE | --demo] [--port PORT] [write FILE]"
    longdesc = (
        "Pull indicators from ThreatConnect and serve them as a Carbon Black EDR feed "
        "at http://<listener_address>:<listener_port>/threatconnect/json, with a "
        "diagnostics page at /."
    )
    optParameters = [
        ["port", "p", None, "Listen on this port instead of the configured listener_port."],
    ]
    subCommands = [
        ["write", None, WriteOptions, "Sync once, write the feed to FILE and stop."],
    ]

    def postOptions(self) -> None:
        """
        Check the choice of config and demo and the port.
        """
        self.check_source(
            "give --config FILE, or --demo to try the built-in ThreatConnect simulator"
        )
        if self["port"] is not None:
            try:
                port = int(self["port"])
            except ValueError:
                raise usage.UsageError(f"--port {self['port']!r} is not a port number") from None
            if not 1 <= port <= 65535:
                raise usage.UsageError(f"--port {port} is out of range 1-65535")
            self["port"] = port


#: Console commands that work without --config or --demo, and those that
#: need a configuration file (not the demo).
_NO_SOURCE = ("validate", "encrypt-secret")
_CONFIG_ONLY = ("check-config", "explain", "accept-shrink", "full-sync")


class CommandOptions(_Source):
    """
    Command line of the C{tcbridge} console command: one-shot commands with
    an honest exit status.  Run the service with C{twistd -n tcbridge}.
    """

    synopsis = "Usage: tcbridge [--config FILE | --demo] [-v] COMMAND [ARGUMENTS]"
    longdesc = (
        "ThreatConnect to Carbon Black EDR bridge: one-shot commands. "
        "Run the service with: twistd -n tcbridge --config FILE"
    )
    optFlags = [
        ["verbose", "v", "Log progress to stderr, not only errors."],
    ]
    subCommands = [
        ["write", None, WriteOptions, "Sync once and write the feed to FILE."],
        [
            "check-config",
            None,
            _NoArguments,
            "Check the config, the credentials, the clock, the cache folder and the port.",
        ],
        [
            "explain",
            None,
            ExplainOptions,
            "Say why each VALUE (hash, address, host name) is or is not in the feed, "
            "from what the last sync saw.",
        ],
        [
            "accept-shrink",
            None,
            _NoArguments,
            "Let the next sync publish its feed even if it shrank more than max_shrink_percent.",
        ],
        [
            "full-sync",
            None,
            _NoArguments,
            "Make the running bridge's next sync pull everything (incremental_sync).",
        ],
        ["validate", None, ValidateOptions, "Check feed files against the Carbon Black rules."],
        [
            "encrypt-secret",
            None,
            EncryptSecretOptions,
            "Encrypt the ThreatConnect secret key for secret_key_encrypted.",
        ],
    ]

    def postOptions(self) -> None:
        """
        A command is required, and each gets the source it needs.
        """
        if self.subCommand is None:
            commands: list[Any] = self.subCommands
            names = ", ".join(str(command[0]) for command in commands)
            raise usage.UsageError(f"give a command: {names}")
        if self.subCommand in _NO_SOURCE:
            return
        demo_allowed = self.subCommand not in _CONFIG_ONLY
        self.check_source(
            f"{self.subCommand} needs --config FILE"
            + (", or --demo for the built-in simulator" if demo_allowed else ""),
            demo_allowed,
        )
