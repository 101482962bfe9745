"""Daemon settings and where they come from.

Precedence, highest first: command-line flags, environment variables
(``OSD_<NAME>``), the config file (TOML, ``--config`` or ``OSD_CONFIG``), then
the defaults below. ``osd serve --help`` lists every setting.

Three settings live in the config file only, being tables: ``auth_issuers``
(an array of tables, one per trusted token issuer), ``auth_roles`` (custom
roles, by name, each with ``allow`` and ``deny`` lists of method globs) and
``auth_client_certs`` (under mutual TLS, client certificate subjects, by
common name, mapped to their roles).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_GRPC_LISTEN = "127.0.0.1:9100"
DEFAULT_REST_LISTEN = "127.0.0.1:9110"


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "osd")


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def _positive_int(value: str | int) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{value!r} must be at least 1")
    return number


def _non_negative_float(value: str | float) -> float:
    number = float(value)
    if number < 0:
        raise ValueError(f"{value!r} must not be negative")
    return number


def _non_negative_int(value: str | int) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"{value!r} must not be negative")
    return number


def _positive_float(value: str | float) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"{value!r} must be more than 0")
    return number


def _one_of(*words: str) -> Callable[[str], str]:
    """A parser of one of ``words``, in any case."""
    named = f"{', '.join(words[:-1])} or {words[-1]}"

    def parse(value: str) -> str:
        word = value.lower()
        if word not in words:
            raise ValueError(f"{value!r} is not {named}")
        return word

    return parse


_log_format = _one_of("text", "json")
_driver = _one_of("fake", "local")
_filesystem = _one_of("xfs", "btrfs")
_tracing = _one_of("off", "otlp", "console")


def _ratio(value: str | float) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError(f"{value!r} is not a ratio from 0 to 1")
    return number


def _paths(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Absolute paths, as a list (config file) or joined with ":" (flag,
    environment)."""
    items = value.split(":") if isinstance(value, str) else list(value)
    paths = tuple(p for p in (str(i).strip() for i in items) if p)
    for p in paths:
        if not p.startswith("/"):
            raise ValueError(f"{p!r} is not an absolute path")
    return paths


def _log_levels(value: str | dict[str, str]) -> dict[str, str]:
    """ "LOGGER=LEVEL,..." from a flag or the environment, or a table in the
    config file."""
    from osd.logs import parse_levels

    if isinstance(value, dict):
        value = ",".join(f"{k}={v}" for k, v in value.items())
    return parse_levels(value)


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{value!r} is not one of debug, info, warning, error")
    return level


@dataclass(frozen=True)
class Settings:
    grpc_listen: str = DEFAULT_GRPC_LISTEN
    rest_listen: str = DEFAULT_REST_LISTEN
    metrics_listen: str = ""
    rest_enabled: bool = True
    data_dir: str = ""
    database_url: str = ""
    # Connections to the store: 0 sizes the pool to the workers and the
    # background threads; a statement running longer is cancelled (PostgreSQL).
    store_pool_size: int = 0
    store_statement_timeout_seconds: float = 30.0
    driver: str = "fake"
    # The node this daemon is the agent of (its driver work runs here); by
    # name, the local driver's host too.
    node_id: str = ""
    node_name: str = ""
    local_filesystem: str = "xfs"
    local_mount_roots: tuple[str, ...] = ("/mnt", "/media", "/run/osd", "/var/lib/kubelet")
    workers: int = 16
    # Serving processes; 0 is one per core.
    processes: int = 0
    max_jobs: int = 4
    grace_seconds: float = 10.0
    log_level: str = "INFO"
    log_format: str = "text"
    log_levels: dict[str, str] = field(default_factory=dict)
    # Self-healing (the repair controller); a cluster may override the policy.
    repair_enabled: bool = True
    repair_delay_seconds: int = 300
    repair_maintenance_timeout_seconds: int = 3600
    repair_max: int = 2
    repair_max_per_drive: int = 1
    repair_interval_seconds: float = 30.0
    usage_interval_seconds: float = 60.0
    # Daemons sharing a store: how often each beats, and after how long
    # without a beat one is gone (its jobs and changes are taken over).
    heartbeat_seconds: float = 2.0
    gone_seconds: float = 10.0
    # How long recorded changes are kept for watches that resume.
    watch_retention_seconds: float = 3600.0
    # Authentication and access.
    auth_enabled: bool = False
    auth_secret_file: str = ""
    auth_leeway_seconds: float = 30.0
    auth_issuers: tuple[dict[str, Any], ...] = ()
    auth_roles: dict[str, Any] = field(default_factory=dict)
    auth_client_certs: dict[str, Any] = field(default_factory=dict)
    insecure: bool = False
    reflection_enabled: bool = True
    audit_retention_days: float = 90.0
    job_retention_days: float = 30.0
    # TLS on the gRPC and REST listeners; mutual TLS with a client CA.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # OpenTelemetry spans (the otel extra): off, to an OTLP collector, or to stdout.
    tracing: str = "off"
    tracing_endpoint: str = ""
    tracing_service_name: str = "osd"
    tracing_sample_ratio: float = 1.0

    @property
    def auth_on(self) -> bool:
        """Whether callers must authenticate: asked for, or implied by a
        secret file or an issuer."""
        return (
            self.auth_enabled
            or bool(self.auth_secret_file)
            or bool(self.auth_issuers)
            or bool(self.auth_client_certs)
        )

    def resolved_processes(self) -> int:
        """How many processes serve: ``processes``, or one per core when 0. A
        store in memory is one process's alone, so it is served by one."""
        if self.database_url.startswith("sqlite") and ":memory:" in self.database_url:
            return 1
        return self.processes or len(os.sched_getaffinity(0)) or 1

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir or _default_data_dir()).expanduser()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir() / 'osd.db'}"


@dataclass(frozen=True)
class _Spec:
    name: str
    parse: Callable[[Any], Any]
    help: str
    metavar: str


SPECS: tuple[_Spec, ...] = (
    _Spec("grpc_listen", str, f"gRPC address (default {DEFAULT_GRPC_LISTEN})", "HOST:PORT"),
    _Spec("rest_listen", str, f"REST gateway address (default {DEFAULT_REST_LISTEN})", "HOST:PORT"),
    _Spec(
        "metrics_listen",
        str,
        "also serve Prometheus /metrics on this address of its own, without credentials "
        "(default: none; /metrics is always on the REST port)",
        "HOST:PORT",
    ),
    _Spec("rest_enabled", _bool, "serve the REST gateway in the daemon (default true)", "BOOL"),
    _Spec(
        "data_dir",
        str,
        "data directory for the SQLite store (default $XDG_DATA_HOME/osd or ~/.local/share/osd)",
        "DIR",
    ),
    _Spec(
        "database_url",
        str,
        "SQLAlchemy URL of the store, e.g. "
        "postgresql://host/osd (default: SQLite in the data directory)",
        "URL",
    ),
    _Spec(
        "store_pool_size",
        _non_negative_int,
        "connections each process keeps to the store (default 0: the workers and 8 "
        "for the background threads)",
        "N",
    ),
    _Spec(
        "store_statement_timeout_seconds",
        _positive_float,
        "PostgreSQL cancels a statement of the daemon that runs longer, and the call "
        "answers UNAVAILABLE (default 30)",
        "SECONDS",
    ),
    _Spec(
        "driver",
        _driver,
        "storage driver: fake (no storage) or local (files on this host's drives, "
        "attached as loop devices) (default fake)",
        "NAME",
    ),
    _Spec(
        "node_name",
        str,
        "the node this daemon is the agent of, by name: that node's driver work runs "
        "here, whichever daemon took the call; for the local driver, also the node this "
        "host is, besides the nodes named by the host's names and addresses (default none)",
        "NAME",
    ),
    _Spec(
        "node_id",
        str,
        "the node this daemon is the agent of, by id (default none: a daemon that runs "
        "the driver work of every node without an agent)",
        "ID",
    ),
    _Spec(
        "local_mount_roots",
        _paths,
        "with the local driver, the folders below which volumes may be mounted, "
        "joined with : (default /mnt:/media:/run/osd:/var/lib/kubelet)",
        "DIR:DIR",
    ),
    _Spec(
        "local_filesystem",
        _filesystem,
        "filesystem the local driver formats block devices and image files with: xfs "
        "(with reflink) or btrfs (default xfs)",
        "NAME",
    ),
    _Spec("workers", _positive_int, "gRPC worker threads per process (default 16)", "N"),
    _Spec(
        "processes",
        _non_negative_int,
        "processes serving gRPC on the one port; reads are served by each, changes "
        "by the first (default 0: one per core)",
        "N",
    ),
    _Spec(
        "max_jobs",
        _positive_int,
        "long-running jobs active at once; more answer RESOURCE_EXHAUSTED (default 4)",
        "N",
    ),
    _Spec(
        "grace_seconds",
        _non_negative_float,
        "on SIGTERM/SIGINT, how long in-flight calls may finish (default 10)",
        "SECONDS",
    ),
    _Spec("log_level", _log_level, "debug, info, warning or error (default info)", "LEVEL"),
    _Spec(
        "log_format",
        _log_format,
        "text, or json for one JSON object per line with the request id, method, subject, "
        "code and duration as fields (default text)",
        "FORMAT",
    ),
    _Spec(
        "log_levels",
        _log_levels,
        "levels per logger, e.g. osd.access=warning,uvicorn=error (default none)",
        "LOGGER=LEVEL,...",
    ),
    _Spec(
        "repair_enabled",
        _bool,
        "run the repair controller, which rebuilds lost copies by itself (default true)",
        "BOOL",
    ),
    _Spec(
        "repair_delay_seconds",
        _non_negative_int,
        "how long a volume stays degraded before its repair starts, unless its cluster "
        "sets repair.delay_seconds (default 300)",
        "SECONDS",
    ),
    _Spec(
        "repair_maintenance_timeout_seconds",
        _non_negative_int,
        "copies on a node in maintenance are rebuilt only after this long, unless the "
        "cluster sets repair.maintenance_timeout_seconds (default 3600)",
        "SECONDS",
    ),
    _Spec(
        "repair_max",
        _positive_int,
        "repairs unfinished at once per cluster, unless the cluster sets "
        "repair.max_repairs (default 2)",
        "N",
    ),
    _Spec(
        "repair_max_per_drive",
        _positive_int,
        "repairs writing to one drive at once, unless the cluster sets "
        "repair.max_repairs_per_drive (default 1)",
        "N",
    ),
    _Spec(
        "repair_interval_seconds",
        _positive_float,
        "how often the repair controller looks for volumes to repair besides when "
        "availability changes (default 30)",
        "SECONDS",
    ),
    _Spec(
        "usage_interval_seconds",
        _positive_float,
        "how often a driver that measures (local) is asked the space volumes and "
        "snapshots use (default 60)",
        "SECONDS",
    ),
    _Spec(
        "heartbeat_seconds",
        _positive_float,
        "how often this daemon tells the store it runs (default 2)",
        "SECONDS",
    ),
    _Spec(
        "watch_retention_seconds",
        _positive_float,
        "how long changes are kept for a watch that resumes from a generation (default 3600)",
        "SECONDS",
    ),
    _Spec(
        "gone_seconds",
        _positive_float,
        "after how long without a heartbeat a daemon sharing the store is gone, and "
        "another takes over its jobs and unfinished changes (default 10)",
        "SECONDS",
    ),
    _Spec(
        "auth_enabled",
        _bool,
        "require credentials on every call (default false; implied by --auth-secret-file "
        "or auth_issuers); API keys are accepted whenever it is on",
        "BOOL",
    ),
    _Spec(
        "auth_secret_file",
        str,
        "accept HS256 tokens of issuer 'osd' signed with the secret in FILE (at least 32 "
        "bytes; 'osd token issue' makes such tokens)",
        "FILE",
    ),
    _Spec(
        "auth_leeway_seconds",
        _non_negative_float,
        "clock skew allowed on a token's exp, nbf and iat (default 30)",
        "SECONDS",
    ),
    _Spec(
        "insecure",
        _bool,
        "allow listening on a non-loopback address without authentication (default false)",
        "BOOL",
    ),
    _Spec(
        "audit_retention_days",
        _positive_float,
        "how long audit records are kept (default 90)",
        "DAYS",
    ),
    _Spec(
        "job_retention_days",
        _positive_float,
        "how long finished jobs are kept after they end (default 30)",
        "DAYS",
    ),
    _Spec(
        "reflection_enabled",
        _bool,
        "serve gRPC server reflection, to authenticated callers when auth is on (default true)",
        "BOOL",
    ),
    _Spec(
        "tls_cert",
        str,
        "serve gRPC and REST over TLS with the PEM certificate chain in FILE (server "
        "certificate first; needs --tls-key; re-read on SIGHUP)",
        "FILE",
    ),
    _Spec(
        "tls_key",
        str,
        "the unencrypted PEM private key of --tls-cert (re-read on SIGHUP)",
        "FILE",
    ),
    _Spec(
        "tls_client_ca",
        str,
        "mutual TLS: require every client to present a certificate signed by a CA in this "
        "PEM bundle (needs --tls-cert and --tls-key)",
        "FILE",
    ),
    _Spec(
        "tracing",
        _tracing,
        "OpenTelemetry spans of gRPC calls, REST requests and their SQL statements: off, "
        "otlp (to a collector, see --tracing-endpoint) or console (one JSON object per span "
        "on stdout); needs the otel extra, pip install 'osd[otel]' (default off)",
        "MODE",
    ),
    _Spec(
        "tracing_endpoint",
        str,
        "with --tracing otlp, the collector's OTLP/gRPC address, e.g. http://collector:4317 "
        "(default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT or "
        "localhost:4317)",
        "URL",
    ),
    _Spec(
        "tracing_service_name",
        str,
        "the service.name of the spans (default osd)",
        "NAME",
    ),
    _Spec(
        "tracing_sample_ratio",
        _ratio,
        "the share of calls traced, from 0 to 1; a call whose caller sent a sampled trace "
        "context is traced as the caller decided (default 1)",
        "RATIO",
    ),
)


class SettingsError(ValueError):
    """A setting has a bad value; the message names the setting and its source."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file of settings (env OSD_CONFIG); keys are the setting names below",
    )
    for spec in SPECS:
        flag = "--" + spec.name.replace("_", "-")
        env = "OSD_" + spec.name.upper()
        parser.add_argument(
            flag,
            dest=spec.name,
            default=None,
            metavar=spec.metavar,
            help=f"{spec.help}; env {env}",
        )


def load(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Settings from flags, environment and config file, in that precedence."""
    flags = flags or {}
    environ = os.environ if environ is None else environ
    path = config_file or flags.get("config") or environ.get("OSD_CONFIG")
    from_file: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                from_file = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from None
        known = {f.name for f in fields(Settings)}
        unknown = sorted(set(from_file) - known)
        if unknown:
            raise SettingsError(f"config file {path}: unknown settings {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for spec in SPECS:
        env = "OSD_" + spec.name.upper()
        for rank, (source, raw) in enumerate(
            (
                (f"--{spec.name.replace('_', '-')}", flags.get(spec.name)),
                (env, environ.get(env)),
                (f"{path}: {spec.name}", from_file.get(spec.name)),
            )
        ):
            if raw is None:
                continue
            try:
                values[spec.name] = spec.parse(raw)
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"{source}: {exc}") from None
            if rank == 2 and path and spec.name in FILE_RELATIVE:
                values[spec.name] = _beside(path, values[spec.name])
            break
    if path:
        values.update(_tables(path, from_file))
    settings = Settings(**values)
    if settings.gone_seconds < 2 * settings.heartbeat_seconds:
        raise SettingsError(
            f"gone_seconds ({settings.gone_seconds:g}) must be at least twice "
            f"heartbeat_seconds ({settings.heartbeat_seconds:g}): a daemon between two "
            "beats would look gone, and two daemons would finish the same change"
        )
    return settings


# Settings naming a folder or file: given relative in a config file, they are
# read from the file's own folder, not from wherever the daemon was started.
FILE_RELATIVE = frozenset({"data_dir", "auth_secret_file", "tls_cert", "tls_key", "tls_client_ca"})
_ISSUER_FILES = ("secret_file", "public_key_file", "jwks_file")


def _tables(path: str, from_file: Mapping[str, Any]) -> dict[str, Any]:
    """The config file's tables: auth_issuers, auth_roles and
    auth_client_certs, shape-checked
    (their content is checked when the daemon builds its authenticator)."""
    out: dict[str, Any] = {}
    issuers = from_file.get("auth_issuers")
    if issuers is not None:
        if not isinstance(issuers, list) or not all(isinstance(i, dict) for i in issuers):
            raise SettingsError(
                f"{path}: auth_issuers must be an array of tables ([[auth_issuers]])"
            )
        resolved = []
        for issuer in issuers:
            issuer = dict(issuer)
            for key in _ISSUER_FILES:
                if isinstance(issuer.get(key), str):
                    issuer[key] = _beside(path, issuer[key])
            resolved.append(issuer)
        out["auth_issuers"] = tuple(resolved)
    roles = from_file.get("auth_roles")
    if roles is not None:
        if not isinstance(roles, dict):
            raise SettingsError(f"{path}: auth_roles must be a table ([auth_roles.NAME])")
        out["auth_roles"] = roles
    certs = from_file.get("auth_client_certs")
    if certs is not None:
        if not isinstance(certs, dict):
            raise SettingsError(
                f"{path}: auth_client_certs must be a table of subject = [roles] "
                "([auth_client_certs])"
            )
        out["auth_client_certs"] = certs
    return out


def is_loopback(host: str) -> bool:
    """Whether ``host`` (from HOST:PORT) is a loopback address or localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _beside(config_path: str, value: str) -> str:
    if not value or Path(value).expanduser().is_absolute():
        return value
    return str(Path(config_path).resolve().parent / value)


def format_listen(host: str, port: int) -> str:
    """HOST:PORT, with an IPv6 host in brackets: what parse_listen reads."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise SettingsError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def describe(settings: Settings) -> Sequence[str]:
    return [f"{f.name}={getattr(settings, f.name)!r}" for f in fields(settings)]
