# -*- test-case-name: tests.unit.test_cli -*-
"""
The C{tcbridge} console command, with honest exit statuses:

    tcbridge --config FILE write OUT    sync once, write the feed to OUT
    tcbridge --demo write OUT           the same against the built-in simulator
    tcbridge validate FILE...           check feed files against Carbon Black's rules
    tcbridge --config FILE accept-shrink  let the next sync publish a much smaller feed
    tcbridge --config FILE check-config   check config, credentials, clock, folders, port
    tcbridge encrypt-secret [--key-file F] encrypt the secret key (read from stdin)

Exit status 0 on success, 1 if the sync or the write failed (OUT is then
untouched and the reason, in ThreatConnect's words where it gave some, is
printed) or a feed file is not valid, 2 for a bad command line or
configuration.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import orjson
from twisted.internet import defer, task
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python import usage

from tcbridge.config import Config, ConfigError, load_config
from tcbridge.files import write_atomic
from tcbridge.logs import set_log_level
from tcbridge.memory import freeze_startup_objects, return_freed_memory
from tcbridge.options import CommandOptions, EncryptSecretOptions
from tcbridge.progress import ProgressLine
from tcbridge.secrets import (
    KEY_FILE_OPTION,
    SecretError,
    create_key_file,
    decrypt_secret,
    encrypt_secret,
)
from tcbridge.store import count_iocs
from tcbridge.sync.publish import accept_marker
from tcbridge.sync.service import cancel_and_wait, why_not_written, write_feed
from tcbridge.wiring import build_bridge

# Each command imports what only it needs when it runs, so that write mode
# (the one that handles millions of indicators) carries nothing else.

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_ENCRYPT = "tcbridge encrypt-secret"


def run_explain(config: Config, values: Sequence[str], out: TextIO) -> int:
    """
    Explain each value from the service's cache folder (the published feed
    and what the last sync saw); 1 if there is no cache folder or no feed.
    """
    from tcbridge.explain import explain
    from tcbridge.seen import FILE_NAME, last_written
    from tcbridge.store import CACHE_FILE_NAME
    from tcbridge.sync.work import as_of, feed_settings
    from tcbridge.synclog import SyncLog

    folder = config.sync.cache_folder
    if folder is None:
        out.write(f"tcbridge: {config.path} has no cache_folder, so nothing is kept to explain\n")
        return EXIT_FAILED
    try:
        with open(os.path.join(folder, CACHE_FILE_NAME), "rb") as f:
            feed = f.read()
    except FileNotFoundError:
        feed = b""
    history = SyncLog(folder)
    history.load()
    last = history.records[-1] if history.records else None
    held = last.error if last is not None and last.result == "held back" else None
    seen = os.path.join(folder, FILE_NAME)
    if not feed and not os.path.exists(seen):
        out.write(f"tcbridge: no sync has kept anything in {folder} yet\n")
        return EXIT_FAILED
    settings, _ = feed_settings(config)
    if os.path.exists(seen):
        # Judged as of the sync that kept what it saw (not a later failed one).
        settings = as_of(settings, config, last_written(seen))
    for value in values:
        answer = explain(
            value,
            feed=feed,
            seen_path=seen,
            settings=settings,
            exclusions=config.feed.exclusions,
            held_back=held,
        )
        out.write("\n".join(answer.lines()) + "\n")
    return EXIT_OK


def run_accept_shrink(config: Config, out: TextIO) -> int:
    """
    Leave the marker that lets the running bridge's next sync publish a
    feed the shrink guard would hold back.
    """
    marker = accept_marker(config)
    if marker is None:
        out.write(
            f"tcbridge: {config.path} has no cache_folder, so there is nowhere to leave the "
            "acceptance; raise max_shrink_percent instead\n"
        )
        return EXIT_USAGE
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    write_atomic(marker, b"accepted\n")
    out.write(
        f"tcbridge: the next sync will publish its feed however much smaller it is ({marker})\n"
    )
    return EXIT_OK


def run_full_sync(config: Config, out: TextIO) -> int:
    """
    Leave the marker that makes the running bridge's next sync a full sync
    (with C{incremental_sync} on; every sync is one otherwise).
    """
    from tcbridge.sync.delta import FULL_SYNC_FILE

    folder = config.sync.cache_folder
    if folder is None or not config.sync.incremental:
        out.write(
            f"tcbridge: {config.path} does not turn incremental_sync on, so every sync "
            "already pulls everything\n"
        )
        return EXIT_OK
    marker = os.path.join(folder, FULL_SYNC_FILE)
    os.makedirs(folder, exist_ok=True)
    write_atomic(marker, b"requested\n")
    out.write(f"tcbridge: the next sync will pull everything ({marker})\n")
    return EXIT_OK


def run_validate(paths: Sequence[str], out: TextIO) -> int:
    """
    Check each feed file against every Carbon Black feed rule; print each
    problem (with the report id) and a summary line per file.  Exit status
    0 if all are valid, 1 otherwise.
    """
    from tcbridge.feed.validator import validate_bytes

    status = EXIT_OK
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            out.write(f"{path}: cannot be read: {e.strerror}\n")
            status = EXIT_FAILED
            continue
        problems = validate_bytes(data)
        for problem in problems:
            out.write(f"{path}: {problem}\n")
        if problems:
            out.write(f"{path}: NOT a valid Carbon Black feed: {len(problems)} problems\n")
            status = EXIT_FAILED
            continue
        reports = orjson.loads(data)["reports"]
        out.write(
            f"{path}: valid Carbon Black feed: {len(reports)} reports, {count_iocs(reports)} IOCs\n"
        )
    return status


def _start_logging(stream: TextIO, verbose: bool) -> None:
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info if verbose else LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(stream), [predicate])],
        redirectStandardIO=False,
    )


async def run_write(reactor: Any, config: Config | None, path: str, out: TextIO) -> int:
    """
    Sync once against C{config} (or the demo simulator when C{None}) and
    write the feed to C{path}; return the exit status.
    """
    listening = None
    if config is None:
        from tcbridge.simulator.demo import start_demo

        demo = start_demo(reactor)
        config, listening = demo.config, demo.server.port
    set_log_level(config.logging.level)
    bridge = build_bridge(config, reactor, use_cache=False, threads=False)
    line = ProgressLine(bridge.status, reactor, out)
    line.start()
    try:
        written = await write_feed(bridge.cycle, path)
    except Exception as e:
        line.stop()
        reason = why_not_written(e, "tcbridge")
        out.write(f"tcbridge: sync failed, {path} was not written: {reason}\n")
        return EXIT_FAILED
    finally:
        line.stop()
        await bridge.pool.closeCachedConnections()
        if listening is not None:
            await defer.maybeDeferred(listening.stopListening)
    out.write(
        f"tcbridge: wrote {written.reports} reports with {written.iocs} IOCs to {path} "
        f"({bridge.status.requests} requests to ThreatConnect)\n"
    )
    return EXIT_OK


def _read_secret_input(stdin: TextIO, stderr: TextIO) -> str:
    if stdin.isatty():
        return getpass.getpass("ThreatConnect secret key: ", stream=stderr).strip()
    return stdin.readline().strip()


def encrypt_secret_command(
    argv: Sequence[str], stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> int:
    """
    C{tcbridge encrypt-secret [--key-file PATH]}: read the secret key from
    standard input (one line; prompted for without echo on a terminal),
    create the key file if it is missing, and print the two config lines::

        secret_key_encrypted = tcb1:...
        secret_key_encryption_key_file = PATH

    :param argv: the arguments after C{encrypt-secret}.
    :return: 0 on success, 1 on failure (one line on C{stderr}), 2 for a bad
        command line.
    """
    options = EncryptSecretOptions()
    if "--help" in argv or "-h" in argv:
        stdout.write(f"Usage: {_ENCRYPT} [--key-file PATH]\n{options}")
        return 0
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        stderr.write(f"{_ENCRYPT}: {e}\n")
        return EXIT_USAGE
    return run_encrypt_secret(options["key-file"], stdin, stdout, stderr)


def run_encrypt_secret(key_file: str, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """
    Encrypt the secret key read from C{stdin} with C{key_file} (created if
    missing) and print the two config lines; 1 (one line on C{stderr}) if
    that fails.
    """
    try:
        secret = _read_secret_input(stdin, stderr)
    except (OSError, EOFError):
        secret = ""
    if not secret:
        stderr.write(f"{_ENCRYPT}: no secret key on standard input\n")
        return 1
    try:
        created = False
        if not os.path.lexists(key_file):
            create_key_file(key_file)
            created = True
        token = encrypt_secret(secret, key_file)
        if decrypt_secret(token, key_file) != secret:  # pragma: no cover - Fernet guarantees it
            raise SecretError("secret_key_encrypted", "the value did not decrypt back")
    except SecretError as e:
        stderr.write(f"{_ENCRYPT}: {e.problem}\n")
        return 1
    if created:
        stderr.write(
            f"{_ENCRYPT}: created {key_file} (mode 0600); tcbridge must run as the "
            "user that owns it\n"
        )
    stdout.write(f"secret_key_encrypted = {token}\n")
    stdout.write(f"{KEY_FILE_OPTION} = {key_file}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """
    Entry point of the console script; exits with the command's status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    return_freed_memory()
    if argv[:1] == ["encrypt-secret"]:
        # Its own options and messages (it reads a secret, nothing else).
        raise SystemExit(encrypt_secret_command(argv[1:], sys.stdin, sys.stdout, sys.stderr))
    options = CommandOptions()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(f"tcbridge: {e}\nRun 'tcbridge --help' for the commands.\n")
        raise SystemExit(EXIT_USAGE) from None
    command, sub = options.subCommand, options.subOptions
    if command == "validate":
        raise SystemExit(run_validate(sub["values"], sys.stdout))
    config = None
    if options["config"]:
        try:
            config = load_config(options["config"])
        except ConfigError as e:
            sys.stderr.write(f"tcbridge: {e}\n")
            raise SystemExit(EXIT_USAGE) from None
    if command == "accept-shrink":
        assert config is not None
        raise SystemExit(run_accept_shrink(config, sys.stdout))
    if command == "full-sync":
        assert config is not None
        raise SystemExit(run_full_sync(config, sys.stdout))
    if command == "explain":
        assert config is not None
        raise SystemExit(run_explain(config, sub["values"], sys.stdout))
    _start_logging(sys.stderr, options["verbose"])
    freeze_startup_objects()

    def run(reactor: Any) -> defer.Deferred[None]:
        if command == "check-config":
            from tcbridge.check import run_check

            assert config is not None
            d = defer.ensureDeferred(run_check(reactor, config, sys.stdout, sys.stderr))
        else:
            d = defer.ensureDeferred(run_write(reactor, config, sub["path"], sys.stderr))
        # Stopped (SIGTERM, SIGINT) before it finished: it says so and fails.
        reactor.addSystemEventTrigger("before", "shutdown", cancel_and_wait, d)

        def exit_with(code: int) -> None:
            if code:
                raise SystemExit(code)

        return d.addCallback(exit_with)

    task.react(run)
