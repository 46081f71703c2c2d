# -*- test-case-name: tests.unit.test_config -*-
"""
Reading the [bridge] parts about the service itself, each into its typed
record: the listener (address, TLS files, credentials, allow-list), the
Carbon Black server, and logging.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from typing import Literal

from tcbridge.config.reader import Reader
from tcbridge.config.record import (
    CarbonBlackSettings,
    ListenerSettings,
    LoggingSettings,
)
from tcbridge.model import (
    LOG_LEVELS,
)


class BridgeReader(Reader):
    """
    L{Reader} with the readers of the listener, the Carbon Black server and
    logging.
    """

    def listener(self, address: str, port: int) -> ListenerSettings:
        """
        The listener's TLS files, credentials and allow-list, all in [bridge].
        """
        b = "bridge"
        cert = self.get(b, "listener_tls_cert") or None
        key = self.get(b, "listener_tls_key") or None
        if (cert is None) != (key is None):
            missing = "listener_tls_key" if key is None else "listener_tls_cert"
            raise self.error(
                b,
                missing,
                "missing; set listener_tls_cert and listener_tls_key together, or neither",
            )
        for name, path in (("listener_tls_cert", cert), ("listener_tls_key", key)):
            if path is not None and not os.access(path, os.R_OK):
                raise self.error(b, name, f"{path!r} cannot be read; expected a PEM file")
        if cert is not None and key is not None:
            self.tls_pair(cert, key)
        username = self.get(b, "listener_username") or None
        password = self.get(b, "listener_password") or None
        if (username is None) != (password is None):
            missing = "listener_password" if password is None else "listener_username"
            raise self.error(
                b,
                missing,
                "missing; set listener_username and listener_password together, or neither",
            )
        if username is not None and ":" in username:
            raise self.error(b, "listener_username", "must not contain ':'")
        token = self.get(b, "listener_token") or self.get(b, "listener_api_token") or None
        if token is not None and re.search(r"\s", token):
            raise self.error(b, "listener_token", "must not contain white space")
        allow = []
        for part in (self.get(b, "listener_allow") or "").split(","):
            if not part.strip():
                continue
            try:
                allow.append(str(ipaddress.ip_network(part.strip(), strict=False)))
            except ValueError:
                raise self.error(
                    b,
                    "listener_allow",
                    f"{part.strip()!r} is not an address or "
                    "network; expected e.g. 10.1.2.3, 10.0.0.0/8, 2001:db8::/32",
                ) from None
        if not ipaddress.ip_address(address).is_loopback:
            if cert is None:
                self.notices.append(
                    f"The listener on {address} is not loopback and serves plain HTTP: the feed "
                    "and any credentials cross the network unencrypted (set listener_tls_cert)."
                )
            if username is None and token is None and not allow:
                self.notices.append(
                    f"The listener on {address} accepts every client: set listener_allow to the "
                    "Carbon Black server's address, or listener_username/listener_password."
                )
        # In the order of ListenerSettings' fields.
        return ListenerSettings(address, port, cert, key, username, password, token, tuple(allow))

    def tls_pair(self, cert: str, key: str) -> None:
        """
        Refuse TLS files the listener could not use: a certificate file
        with no PEM certificate, a key file with no PEM private key, or a
        key that does not belong to the certificate.
        """
        b = "bridge"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_verify_locations(cafile=cert)
        except (ssl.SSLError, OSError, ValueError):
            raise self.error(
                b,
                "listener_tls_cert",
                f"{cert!r} holds no PEM certificate; expected -----BEGIN CERTIFICATE-----",
            ) from None
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError, ValueError) as e:
            why = (
                "does not belong to the certificate"
                if "mismatch" in str(e).lower()
                else ("holds no PEM private key (or one protected by a passphrase)")
            )
            raise self.error(
                b,
                "listener_tls_key",
                f"{key!r} {why}; expected the unencrypted PEM key of {cert!r}",
            ) from None

    def cbserver(self) -> CarbonBlackSettings:
        """
        Carbon Black server sync, as the 2015 bridge did it: on when
        carbonblack_server_url and carbonblack_server_token are set and
        skip_cb_sync is not true.
        """
        b = "bridge"
        url = self.get(b, "carbonblack_server_url") or None
        token = self.get(b, "carbonblack_server_token") or None
        skip = self.boolean(b, "skip_cb_sync", False)
        verify = self.boolean(b, "carbonblack_server_sslverify", True)
        ca_file = self.get(b, "carbonblack_server_ca_file") or None
        host = self.get(b, "host_address") or None
        if url is not None:
            self.web_address(b, "carbonblack_server_url", url, "https://<Carbon Black server>")
        if ca_file is not None and not os.access(ca_file, os.R_OK):
            raise self.error(
                b,
                "carbonblack_server_ca_file",
                f"{ca_file!r} cannot be read; expected a PEM file of CA certificates",
            )
        if skip:
            url = None
        elif token is not None and url is None:
            self.notices.append(
                "carbonblack_server_token is set but carbonblack_server_url is not, so the feed "
                "is not registered on a Carbon Black server; set carbonblack_server_url "
                "(https://127.0.0.1 when it runs on this host) or skip_cb_sync = true."
            )
        elif url is not None and token is None:
            raise self.error(
                b,
                "carbonblack_server_token",
                "missing; expected the API token of "
                "a Carbon Black global administrator (or set skip_cb_sync = true)",
            )
        if url is not None and not verify:
            self.notices.append(
                "TLS verification of the Carbon Black server is OFF "
                "(carbonblack_server_sslverify = false); use carbonblack_server_ca_file instead."
            )
        return CarbonBlackSettings(
            server_url=url.rstrip("/") if url else None,
            server_token=token if url else None,
            verify_tls=verify,
            ca_file=ca_file,
            host_address=host,
        )

    def logging(self) -> LoggingSettings:
        """
        The log level, and an optional log file of tcbridge's own, with size
        rotation.
        """
        b = "bridge"
        debug = self.boolean(b, "debug", False)
        level = self.text(b, "log_level", "DEBUG" if debug else "INFO").upper()
        if level not in LOG_LEVELS:
            raise self.error(
                b,
                "log_level",
                f"{level!r} is not a log level; expected one of " + ", ".join(LOG_LEVELS),
            )
        path = self.get(b, "log_file") or None
        size = self.integer(b, "log_file_size", 10_000_000, 10_000, None)
        backups = self.integer(b, "log_backups", 5, 0, 1000)
        raw = self.text(b, "log_format", "text").lower()
        formats: dict[str, Literal["text", "json"]] = {"text": "text", "json": "json"}
        if raw not in formats:
            raise self.error(b, "log_format", f"{raw!r} is not a log format; expected text or json")
        if path is not None:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                raise self.error(
                    b,
                    "log_file",
                    f"{folder!r} is not a writable folder; create it or choose another log_file",
                )
        return LoggingSettings(
            level=level, file=path, max_bytes=size, backups=backups, format=formats[raw]
        )
