"""Where the client commands reach the daemon, and as whom: from flags, then
the environment (``OSD_ENDPOINT``, ``OSD_TOKEN`` ...), then a client config
file, then the defaults.

The config file is TOML, ``$OSD_CLIENT_CONFIG`` or else
``~/.config/osd/client.toml`` (under ``$XDG_CONFIG_HOME`` when set)::

    endpoint = "osd.example:9100"
    token_file = "/etc/osd/operator.token"
    tls_ca = "/etc/osd/ca.pem"
    output = "table"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from osd import config as cfg
from osd.client import Client

if TYPE_CHECKING:
    from gateway.upstream import ClientTls

# Setting -> (flag, environment variable, help).
SETTINGS: dict[str, tuple[str, str, str]] = {
    "endpoint": (
        "--endpoint",
        "OSD_ENDPOINT",
        f"the daemon's gRPC address (default {cfg.DEFAULT_GRPC_LISTEN})",
    ),
    "token": ("--token", "OSD_TOKEN", "bearer token sent with each call"),
    "token_file": ("--token-file", "OSD_TOKEN_FILE", "read the bearer token from this file"),
    "api_key": ("--api-key", "OSD_API_KEY", "API key sent with each call"),
    "tls_ca": (
        "--tls-ca",
        "OSD_TLS_CA",
        "dial over TLS, trusting the CAs in this PEM bundle for the daemon's certificate",
    ),
    "tls_client_cert": (
        "--tls-client-cert",
        "OSD_TLS_CLIENT_CERT",
        "mutual TLS: present this PEM certificate chain",
    ),
    "tls_client_key": ("--tls-client-key", "OSD_TLS_CLIENT_KEY", "its unencrypted PEM key"),
    "tls_server_name": (
        "--tls-server-name",
        "OSD_TLS_SERVER_NAME",
        "check the daemon's certificate against this name",
    ),
    "timeout": ("--timeout", "OSD_TIMEOUT", "seconds per call (default 30)"),
    "output": (
        "--output",
        "OSD_OUTPUT",
        "table, wide, json or yaml (default: table at a terminal, json otherwise)",
    ),
}
OUTPUTS = ("table", "wide", "json", "yaml")


def config_path() -> Path:
    named = os.environ.get("OSD_CLIENT_CONFIG")
    if named:
        return Path(named)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "osd" / "client.toml"


def _file_settings() -> dict[str, Any]:
    path = config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise cfg.SettingsError(f"client config {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise cfg.SettingsError(f"client config {path}: {exc}") from None
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise cfg.SettingsError(
            f"client config {path}: unknown setting {unknown[0]!r}; "
            f"known: {', '.join(sorted(SETTINGS))}"
        )
    return data


@dataclass(frozen=True)
class Connection:
    endpoint: str
    token: str
    api_key: str
    tls: ClientTls | None
    timeout: float
    output: str

    def client(self) -> Client:
        return Client(
            self.endpoint,
            token=self.token,
            api_key=self.api_key,
            tls=self.tls,
            timeout=self.timeout,
        )


def options(command: Any) -> Any:
    """Adds the connection flags to a command (every client command takes
    them, after its own arguments as before them)."""
    for name, (flag, env, text) in SETTINGS.items():
        flags = [flag, "-o"] if name == "output" else [flag]
        command = click.option(
            *flags,
            name,
            default=None,
            help=f"{text} [env {env}]",
            show_default=False,
            type=click.Choice(OUTPUTS, case_sensitive=False) if name == "output" else str,
        )(command)
    return command


def resolve(given: dict[str, Any], *, tty: bool) -> Connection:
    """The connection the flags (``given``), the environment and the config
    file name; SettingsError for a bad one."""
    from_file = _file_settings()

    def pick(name: str, default: str = "") -> str:
        value = given.get(name)
        if value is None:
            value = os.environ.get(SETTINGS[name][1])
        if value is None:
            value = from_file.get(name)
        return default if value is None else str(value)

    token, api_key = pick("token"), pick("api_key")
    token_file = pick("token_file")
    if token_file and not token:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise cfg.SettingsError(f"--token-file {token_file}: {exc.strerror}") from None
    if token and api_key:
        raise cfg.SettingsError("give --token or --api-key, not both")
    try:
        timeout = float(pick("timeout", "30"))
    except ValueError:
        raise cfg.SettingsError(f"--timeout {pick('timeout')!r}: not a number") from None
    if timeout <= 0:
        raise cfg.SettingsError("--timeout: must be positive")
    output = pick("output", "table" if tty else "json").lower()
    if output not in OUTPUTS:
        raise cfg.SettingsError(f"output {output!r}: not one of {', '.join(OUTPUTS)}")
    return Connection(
        endpoint=pick("endpoint", cfg.DEFAULT_GRPC_LISTEN),
        token=token,
        api_key=api_key,
        tls=_tls(
            pick("tls_ca"), pick("tls_client_cert"), pick("tls_client_key"), pick("tls_server_name")
        ),
        timeout=timeout,
        output=output,
    )


def _tls(ca: str, cert: str, key: str, server_name: str) -> ClientTls | None:
    from gateway.upstream import ClientTls, TlsError

    if not (ca or cert or key):
        if server_name:
            raise cfg.SettingsError(
                "--tls-server-name applies to TLS only: give --tls-ca (or a client certificate)"
            )
        return None
    try:
        return ClientTls.from_files(
            ca=ca, client_cert=cert, client_key=key, server_name=server_name
        )
    except TlsError as exc:
        raise cfg.SettingsError(str(exc)) from None
