"""The ``osd`` command: the daemon, its admin subcommands, and a small client."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from osd import __version__, logs
from osd import config as cfg
from osd.client import (
    CallError,
    Client,
    error_of,
    exit_code,
    find_method,
)
from osd.contract import message_class
from osd.v1 import job_pb2

if TYPE_CHECKING:
    from gateway.upstream import ClientTls
    from osd.store.db import Store

log = logging.getLogger("osd")


def cmd_serve(args: argparse.Namespace) -> int:
    settings = cfg.load(vars(args))
    logs.setup(settings.log_level, settings.log_format, settings.log_levels)
    with _shared_metrics(settings.resolved_processes()):
        return _serve(settings)


@contextlib.contextmanager
def _shared_metrics(processes: int) -> Iterator[None]:
    """With several serving processes, a directory where each counts its calls
    for /metrics to sum (see osd.server.metrics); named in the environment
    before prometheus-client is first imported, and so inherited by them all."""
    if processes <= 1 or "prometheus_client" in sys.modules:
        yield
        return
    # The name is osd.server.metrics.MULTIPROCESS_ENV, spelled out: importing
    # that module would import prometheus-client before the name is set.
    with tempfile.TemporaryDirectory(prefix="osd-metrics-") as shared:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
        try:
            yield
        finally:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def _serve(settings: cfg.Settings) -> int:
    from osd.daemon import Daemon

    daemon = Daemon(settings)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    def reload_tls() -> None:
        if daemon.tls is None:
            log.info("received SIGHUP; TLS is off, so there are no certificates to reload")
            return
        reloaded = daemon.reload_tls()  # which logs why when it keeps the old ones
        if reloaded is not None:
            log.info("reloaded TLS certificates (%s)", reloaded.pair.describe())

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, _in_a_thread(reload_tls))
    daemon.start()
    stop.wait()
    daemon.stop()
    _exit_now_if_work_was_cut_off()
    return 0


def _in_a_thread(
    work: Callable[[], None],
) -> Callable[[int, FrameType | None], None]:
    """A signal handler that does ``work`` in a thread of its own.

    Python runs a handler in the main thread, between two of its steps: work
    that takes a lock there would wait forever for a second signal's handler
    that came while the main thread held it. In threads, the reloads queue on
    the daemon's lock instead.
    """

    def handler(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=work, name="osd-tls-reload", daemon=True).start()

    return handler


def _exit_now_if_work_was_cut_off() -> None:
    """Exits at once when calls cut off at the end of the grace still hold
    their threads (a driver call may run on for long): the store refuses their
    commits already, and the next start resumes or rolls back what they
    recorded, as after a crash. (Job threads never hold the exit up.)"""
    from osd.daemon import RPC_THREAD_PREFIX

    others = [t for t in threading.enumerate() if t.name.startswith(RPC_THREAD_PREFIX)]
    leave_by = time.monotonic() + 0.1
    for thread in others:  # idle workers are leaving
        thread.join(timeout=max(0.0, leave_by - time.monotonic()))
    others = [t for t in others if t.is_alive()]
    if not others:
        return
    log.warning(
        "stopping with %d call(s) cut off at the end of the grace period; their changes roll back",
        len(others),
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cmd_gateway(args: argparse.Namespace) -> int:
    """The REST gateway alone, in front of the daemon at --grpc-endpoint; HTTPS
    with --tls-cert and --tls-key, and TLS to the daemon with --tls-ca."""
    from gateway.server import GatewayServer, TlsFiles
    from gateway.upstream import TlsError

    try:
        level = cfg._log_level(args.log_level)
        fmt = cfg._log_format(args.log_format)
        levels = logs.parse_levels(args.log_levels)
        cfg.parse_listen(args.grpc_endpoint)
        cfg.parse_listen(args.rest_listen)
        files = TlsFiles.named(args.tls_cert, args.tls_key, args.tls_client_ca)
        tls = files.read() if files is not None else None
    except ValueError as exc:  # TlsError among them
        raise cfg.SettingsError(str(exc)) from None
    logs.setup(level, fmt, levels)
    upstream_tls = _client_tls(args)
    host, _ = cfg.parse_listen(args.rest_listen)
    if not cfg.is_loopback(host) and not args.insecure:
        _refuse_an_open_daemon(args.grpc_endpoint, upstream_tls, args.rest_listen)
    server = GatewayServer(
        args.rest_listen,
        args.grpc_endpoint,
        call_timeout=args.call_timeout,
        tls=tls,
        upstream_tls=upstream_tls,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    def reload_tls() -> None:
        if server.tls is None:
            log.info("received SIGHUP; TLS is off, so there are no certificates to reload")
            return
        try:
            reloaded = server.reload_tls()
        except TlsError as exc:
            log.warning("TLS certificates not reloaded, keeping the current ones: %s", exc)
            return
        log.info("reloaded TLS certificates (%s)", reloaded.pair.describe())

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, _in_a_thread(reload_tls))
    server.start()
    stop.wait()
    server.stop()
    return 0


def cmd_csi(args: argparse.Namespace) -> int:
    """The CSI plugin on a unix socket, a client of the daemon at --osd-endpoint."""
    from osd.csi.plugin import Options, Plugin, PluginError

    try:
        level = cfg._log_level(args.log_level)
        fmt = cfg._log_format(args.log_format)
    except ValueError as exc:
        raise cfg.SettingsError(str(exc)) from None
    logs.setup(level, fmt, {})
    token = args.token
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise cfg.SettingsError(f"--token-file: {exc}") from None
    if token and args.api_key:
        raise cfg.SettingsError("give a token or an API key, not both")
    client = Client(
        args.osd_endpoint,
        token=token,
        api_key=args.api_key,
        tls=_client_tls(args),
        timeout=args.timeout,
    )
    options = Options(
        endpoint=args.endpoint,
        mode=args.mode,
        node_id=args.node_id,
        node_name=args.node_name,
        cluster_id=args.cluster_id,
        max_volumes_per_node=args.max_volumes_per_node,
    )
    try:
        plugin = Plugin(client, options)
        plugin.start()
    except PluginError as exc:
        client.close()
        raise cfg.SettingsError(str(exc)) from None
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    plugin.stop()
    client.close()
    return 0


def _refuse_an_open_daemon(endpoint: str, tls: ClientTls | None, listen: str) -> None:
    """Refuses to put a non-loopback REST port in front of a daemon that
    answers calls without credentials (where every caller is admin), or of
    one that cannot be asked."""
    with Client(endpoint, tls=tls, timeout=10, retries=1) as client:
        try:
            client.call("ClusterService.ListClusters", {"page_size": 1})
            why = (
                f"the daemon at {endpoint} answers calls without credentials "
                "(every caller is admin)"
            )
        except CallError as err:
            if err.code == grpc.StatusCode.UNAUTHENTICATED:
                return
            why = (
                f"cannot tell whether the daemon at {endpoint} requires credentials "
                f"({err.code.name})"
            )
    raise cfg.SettingsError(
        f"--rest-listen {listen} is not a loopback address and {why}: turn authentication on "
        "in the daemon, start it first, or pass --insecure to serve it anyway"
    )


def cmd_db(args: argparse.Namespace) -> int:
    """Exit 0 on success, 1 for a finding (behind, out of balance), 2 when the
    store cannot be used (one line on stderr, no traceback)."""
    from sqlalchemy.exc import SQLAlchemyError

    from osd.errors import OsdError
    from osd.store.db import Store
    from osd.store.transfer import TransferError

    settings = cfg.load(vars(args))
    logs.setup(settings.log_level)
    # This command reports a store it cannot use itself, in one line.
    logging.getLogger("osd.store.db").setLevel(logging.ERROR)
    store = Store(settings.resolved_database_url())
    try:
        return _db_command(args.db_command, store, args)
    except TransferError as exc:
        print(f"osd db {args.db_command}: {exc}", file=sys.stderr)
        return 2
    except (OsdError, SQLAlchemyError) as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        where = store.engine.url.render_as_string(hide_password=True)
        why = lines[0] if lines else type(exc).__name__
        print(f"osd db {args.db_command}: cannot use the store at {where}: {why}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _db_command(command: str, store: Store, args: argparse.Namespace) -> int:
    import json

    from osd.store import migrate, transfer

    if command == "export":
        document = transfer.export(store)
        text = json.dumps(document, indent=1, sort_keys=True)
        if args.output in ("", "-"):
            print(text)
        else:
            Path(args.output).write_text(text + "\n")
        counts = ", ".join(f"{len(v)} {k}" for k, v in document["tables"].items() if v)
        print(f"exported at revision {document['schema_revision']}: {counts}", file=sys.stderr)
        return 0
    if command == "import":
        store.upgrade()
        source = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        try:
            document = json.loads(source)
        except json.JSONDecodeError as exc:
            raise transfer.TransferError(f"{args.file} is not JSON: {exc}") from None
        written = transfer.import_(store, document)
        counts = ", ".join(f"{n} {k}" for k, n in written.items() if n)
        print(f"imported {counts or 'nothing'}")
        return 0
    if command == "backup":
        how = transfer.backup(store, Path(args.output))
        print(f"backed up to {args.output} ({how})")
        return 0

    if command == "upgrade":
        store.upgrade()
        print(f"store at revision {migrate.current_revision(store.engine)}")
        return 0
    if command == "check":
        return _db_check(store)
    current = migrate.current_revision(store.engine)
    head = migrate.head_revision(store.engine)
    print(f"current {current or 'none'}, head {head}")
    return 0 if current == head else 1


def _db_check(store: Store) -> int:
    """Exit 0 when every drive's used bytes equal the sum of its allocations;
    otherwise list each drive that differs and exit 1."""
    from osd.store import allocations

    with store.read() as s:
        wrong = allocations.check(s)
    for d in wrong:
        print(
            f"drive {d.drive_id}: used_bytes {d.used_bytes}, allocations {d.allocated_bytes} "
            f"(off by {d.used_bytes - d.allocated_bytes})"
        )
    if wrong:
        print(f"{len(wrong)} drive(s) out of balance", file=sys.stderr)
        return 1
    print("allocations balance on every drive")
    return 0


# -- credentials ----------------------------------------------------------

_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL_SECONDS = 366 * 86400


def _ttl(text: str) -> int:
    """Seconds of a TTL such as 90, 90s, 30m, 1h or 7d."""
    value = text.strip().lower()
    unit = _TTL_UNITS.get(value[-1:], 0)
    number = value[:-1] if unit else value
    if not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 30m, 1h or 7d")
    seconds = int(number) * (unit or 1)
    if seconds > MAX_TTL_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than 366 days")
    return seconds


def cmd_token(args: argparse.Namespace) -> int:
    """Prints an HS256 token of issuer ``osd`` for a subject and its roles."""
    from osd.engine.access.tokens import IssuerConfigError, issue, read_secret

    try:
        secret = read_secret(args.secret_file)
    except IssuerConfigError as exc:
        raise cfg.SettingsError(str(exc)) from None
    print(
        issue(
            secret,
            subject=args.subject,
            roles=args.role,
            ttl_seconds=args.ttl,
            groups=args.group,
        )
    )
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    """API keys, made, listed and revoked in the store directly (no daemon
    needed, so that the first admin key can be made)."""
    from sqlalchemy.exc import SQLAlchemyError

    from osd.engine.access.apikeys import ApiKeys
    from osd.engine.access.principal import BUILT_IN_ROLES
    from osd.engine.access.roles import RoleConfigError, custom_roles
    from osd.errors import OsdError
    from osd.store.db import Store

    settings = cfg.load(vars(args))
    logs.setup(settings.log_level)
    logging.getLogger("osd.store.db").setLevel(logging.ERROR)
    store = Store(settings.resolved_database_url())
    keys = ApiKeys(store)
    try:
        store.upgrade()
        if args.apikey_command == "create":
            try:
                known = {*BUILT_IN_ROLES, *custom_roles(settings.auth_roles)}
            except RoleConfigError as exc:
                raise cfg.SettingsError(str(exc)) from None
            if args.role not in known:
                raise cfg.SettingsError(
                    f"--role {args.role}: not a role; roles are {', '.join(sorted(known))}"
                )
            record, key = keys.create(
                subject=args.subject, role=args.role, description=args.description
            )
            print(key)
            print(
                f"API key {record.id} for {record.subject} ({record.role}); "
                "it is shown only this once",
                file=sys.stderr,
            )
        elif args.apikey_command == "list":
            rows = keys.list(include_revoked=args.all)
            print(f"{'ID':<16}  {'SUBJECT':<24}  {'ROLE':<8}  {'CREATED':<20}  REVOKED")
            for k in rows:
                revoked = k.revoke_time.strftime("%Y-%m-%dT%H:%M:%SZ") if k.revoke_time else "-"
                print(
                    f"{k.id:<16}  {k.subject:<24}  {k.role:<8}  "
                    f"{k.create_time.strftime('%Y-%m-%dT%H:%M:%SZ'):<20}  {revoked}"
                )
        else:
            keys.revoke(args.key_id)
            print(f"API key {args.key_id} revoked")
        return 0
    except OsdError as exc:
        print(f"osd apikey {args.apikey_command}: {exc.message}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        where = store.engine.url.render_as_string(hide_password=True)
        why = lines[0] if lines else type(exc).__name__
        print(
            f"osd apikey {args.apikey_command}: cannot use the store at {where}: {why}",
            file=sys.stderr,
        )
        return 2
    finally:
        store.close()


# -- client ---------------------------------------------------------------


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    """How to dial the daemon over TLS, from --tls-ca, --tls-client-cert,
    --tls-client-key and --tls-server-name; None to dial in plaintext.

    A client certificate without --tls-ca trusts the system's CAs for the
    daemon's certificate.
    """
    from gateway.upstream import ClientTls, TlsError

    if not (args.tls_ca or args.tls_client_cert or args.tls_client_key):
        if args.tls_server_name:
            raise cfg.SettingsError(
                "--tls-server-name applies to TLS only: give --tls-ca (or a client certificate)"
            )
        return None
    try:
        return ClientTls.from_files(
            ca=args.tls_ca,
            client_cert=args.tls_client_cert,
            client_key=args.tls_client_key,
            server_name=args.tls_server_name,
        )
    except TlsError as exc:
        raise cfg.SettingsError(str(exc)) from None


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the daemon's health service answers SERVING, 1 otherwise."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # The health service takes no credentials, and a probe does not retry.
    with Client(args.endpoint, tls=_client_tls(args), retries=1) as client:
        try:
            resp = health_pb2_grpc.HealthStub(client.channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as err:
            print(f"osd: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    print(name)
    return 0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1


def _print(message: Message) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2))


def _labels(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"osd: --label {pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def _flag(value: str | None) -> bool | None:
    return None if value is None else cfg._bool(value)


def _client(args: argparse.Namespace) -> Client:
    """A client of the daemon the command line names, with its credentials."""
    if args.token and args.api_key:
        raise cfg.SettingsError("give --token or --api-key, not both")
    return Client(
        args.endpoint,
        token=args.token,
        api_key=args.api_key,
        tls=_client_tls(args),
        timeout=args.timeout,
    )


def _failed(err: CallError) -> int:
    print(f"osd: {err}", file=sys.stderr)
    return exit_code(err.code)


def cmd_watch(args: argparse.Namespace) -> int:
    """osd watch: prints each change as one JSON line, until interrupted
    (or, with --no-follow, once caught up)."""
    from osd.v1 import watch_pb2

    kinds = []
    for name in args.kind:
        full = "OBJECT_KIND_" + name.upper()
        if full not in set(job_pb2.ObjectKind.keys()):
            raise cfg.SettingsError(
                f"--kind {name}: not cluster, volume, snapshot, node, drive, pool or job"
            )
        kinds.append(job_pb2.ObjectKind.Value(full))
    request = watch_pb2.WatchRequest(
        from_generation=args.from_generation, kinds=kinds, follow=args.follow
    )
    with _client(args) as client:
        stream = client.stub("WatchService").Watch(request, timeout=None)
        try:
            for event in stream:
                line = json_format.MessageToJson(
                    event, preserving_proto_field_name=True, indent=None
                )
                print(line, flush=True)
        except KeyboardInterrupt:
            stream.cancel()
            return 0
        except grpc.RpcError as err:
            return _failed(error_of(err))
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    """Any method, by name, with its request as JSON: the escape hatch for
    what no other command covers."""
    try:
        method = find_method(args.method)
    except KeyError as exc:
        raise cfg.SettingsError(str(exc.args[0])) from None
    text = args.data
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise cfg.SettingsError(f"-d {args.data}: {exc.strerror}") from None
    request = message_class(method.input_type)()
    try:
        json_format.Parse(text or "{}", request)
    except json_format.ParseError as exc:
        raise cfg.SettingsError(f"-d: not a {method.input_type.name}: {exc}") from None
    with _client(args) as client:
        try:
            reply = client.call(method, request)
        except CallError as err:
            return _failed(err)
    _print(reply)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="osd", description="osd storage control-plane daemon")
    parser.add_argument("--version", action="version", version=f"osd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the daemon",
        description="Run the daemon. Settings come from flags, then OSD_* environment "
        "variables, then the --config file, then defaults.",
    )
    cfg.add_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    _add_gateway(sub)
    _add_db(sub)
    _add_token(sub)
    _add_apikey(sub)
    client = _client_arguments()
    health = sub.add_parser(
        "health", parents=[client], help="check the daemon's health (exit 0 when SERVING)"
    )
    health.add_argument("--service", default="", help="one service's health (default: overall)")
    health.set_defaults(func=cmd_health)
    _add_csi(sub)
    _add_call(sub, client)
    _add_client_groups(sub)
    watch = sub.add_parser(
        "watch",
        parents=[client],
        help="print changes to volumes, snapshots, nodes, drives, pools and jobs as they "
        "commit, one JSON line each",
    )
    watch.add_argument(
        "--from-generation",
        type=int,
        default=0,
        metavar="N",
        help="resume after generation N (default 0: every change still kept)",
    )
    watch.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        help="cluster, volume, snapshot, node, drive, pool or job (repeat; default all)",
    )
    watch.add_argument(
        "--no-follow",
        dest="follow",
        action="store_false",
        help="stop once caught up instead of waiting for more",
    )
    watch.set_defaults(func=cmd_watch)
    return parser


def _add_gateway(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gw = sub.add_parser(
        "gateway",
        help="run the REST gateway alone, in front of a remote daemon",
        description="Serve the REST /v1 API and /v1/openapi.json, calling the daemon at "
        "--grpc-endpoint over gRPC. `osd serve` already runs one on rest_listen.",
    )
    gw.add_argument(
        "--grpc-endpoint",
        metavar="HOST:PORT",
        default=os.environ.get("OSD_ENDPOINT", cfg.DEFAULT_GRPC_LISTEN),
        help=f"the daemon's gRPC address (env OSD_ENDPOINT, default {cfg.DEFAULT_GRPC_LISTEN})",
    )
    gw.add_argument(
        "--rest-listen",
        metavar="HOST:PORT",
        default=os.environ.get("OSD_REST_LISTEN", cfg.DEFAULT_REST_LISTEN),
        help=f"HTTP address (env OSD_REST_LISTEN, default {cfg.DEFAULT_REST_LISTEN})",
    )
    gw.add_argument(
        "--call-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="deadline of each gRPC call (default 30)",
    )
    gw.add_argument(
        "--log-level",
        default=os.environ.get("OSD_LOG_LEVEL", "info"),
        metavar="LEVEL",
        help="debug, info, warning or error (default info)",
    )
    gw.add_argument(
        "--log-format",
        default=os.environ.get("OSD_LOG_FORMAT", "text"),
        metavar="FORMAT",
        help="text, or json for one JSON object per line (env OSD_LOG_FORMAT, default text)",
    )
    gw.add_argument(
        "--log-levels",
        default=os.environ.get("OSD_LOG_LEVELS", ""),
        metavar="LOGGER=LEVEL,...",
        help="levels per logger, e.g. gateway=warning (env OSD_LOG_LEVELS)",
    )
    for name, text in (
        ("tls_cert", "serve HTTPS with the PEM certificate chain in FILE (needs --tls-key)"),
        ("tls_key", "the unencrypted PEM private key of --tls-cert"),
        (
            "tls_client_ca",
            "mutual TLS: require HTTP clients to present a certificate signed by a CA in "
            "this PEM bundle",
        ),
    ):
        env = "OSD_" + name.upper()
        gw.add_argument(
            "--" + name.replace("_", "-"),
            default=os.environ.get(env, ""),
            metavar="FILE",
            help=f"{text}; re-read on SIGHUP (env {env})",
        )
    gw.add_argument(
        "--insecure",
        action="store_true",
        default=os.environ.get("OSD_INSECURE", "").lower() in ("1", "true", "yes"),
        help="serve a non-loopback --rest-listen even when the daemon answers calls without "
        "credentials, or cannot be asked at start (env OSD_INSECURE)",
    )
    _add_tls_client_arguments(gw)
    gw.set_defaults(func=cmd_gateway)


def _add_csi(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    csi = sub.add_parser(
        "csi",
        help="run the CSI plugin (a Container Storage Interface driver) on a unix socket",
        description="Serve CSI Identity, Controller and Node on --endpoint, a client of the "
        "daemon at --osd-endpoint. The node mode runs on each node, as root, and acts for "
        "one osd node (--node-id or --node-name).",
    )
    csi.add_argument(
        "--endpoint",
        default=os.environ.get("CSI_ENDPOINT", "unix:///run/osd/csi.sock"),
        metavar="unix:///PATH",
        help="the socket to serve CSI on (env CSI_ENDPOINT, default unix:///run/osd/csi.sock)",
    )
    csi.add_argument(
        "--mode",
        choices=("controller", "node", "all"),
        default=os.environ.get("OSD_CSI_MODE", "all"),
        help="which services to serve besides Identity (env OSD_CSI_MODE, default all)",
    )
    csi.add_argument(
        "--node-id",
        default=os.environ.get("OSD_NODE_ID", ""),
        metavar="ID",
        help="the osd node this plugin acts for, in node and all modes (env OSD_NODE_ID)",
    )
    csi.add_argument(
        "--node-name",
        default=os.environ.get("OSD_NODE_NAME", ""),
        metavar="NAME",
        help="the osd node by name, when --node-id is not given (env OSD_NODE_NAME)",
    )
    csi.add_argument(
        "--cluster-id",
        default=os.environ.get("OSD_CLUSTER_ID", ""),
        metavar="ID",
        help="the cluster volumes are made in unless a StorageClass names one "
        "(env OSD_CLUSTER_ID; default: the only cluster)",
    )
    csi.add_argument(
        "--max-volumes-per-node",
        type=int,
        default=int(os.environ.get("OSD_CSI_MAX_VOLUMES_PER_NODE", "0") or 0),
        metavar="N",
        help="volumes a node takes, told to the orchestrator (0: no limit)",
    )
    csi.add_argument(
        "--osd-endpoint",
        default=os.environ.get("OSD_ENDPOINT", cfg.DEFAULT_GRPC_LISTEN),
        help=f"the daemon's gRPC address (env OSD_ENDPOINT, default {cfg.DEFAULT_GRPC_LISTEN})",
    )
    csi.add_argument("--timeout", type=float, default=60.0, help="seconds per daemon call")
    csi.add_argument(
        "--token",
        default=os.environ.get("OSD_TOKEN", ""),
        help="bearer token sent to the daemon (env OSD_TOKEN)",
    )
    csi.add_argument(
        "--token-file",
        default=os.environ.get("OSD_TOKEN_FILE", ""),
        metavar="FILE",
        help="read the bearer token from FILE, as a mounted secret (env OSD_TOKEN_FILE)",
    )
    csi.add_argument(
        "--api-key",
        default=os.environ.get("OSD_API_KEY", ""),
        help="API key sent to the daemon (env OSD_API_KEY)",
    )
    csi.add_argument(
        "--log-level",
        default=os.environ.get("OSD_LOG_LEVEL", "info"),
        metavar="LEVEL",
        help="debug, info, warning or error (default info)",
    )
    csi.add_argument(
        "--log-format",
        default=os.environ.get("OSD_LOG_FORMAT", "text"),
        metavar="FORMAT",
        help="text or json (env OSD_LOG_FORMAT, default text)",
    )
    _add_tls_client_arguments(csi)
    csi.set_defaults(func=cmd_csi)


def _add_db(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="store administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    for name, text in (
        ("upgrade", "apply pending migrations"),
        ("current", "print the schema revision; exit 1 when behind"),
        ("check", "prove each drive's used bytes equal its allocations; exit 1 listing misfits"),
    ):
        p = db_sub.add_parser(name, help=text)
        cfg.add_arguments(p)
        p.set_defaults(func=cmd_db)
    export = db_sub.add_parser(
        "export", help="write every table as one portable, versioned JSON document"
    )
    export.add_argument("--output", "-o", default="-", metavar="FILE", help="default stdout")
    imp = db_sub.add_parser(
        "import", help="read an export into a new, empty store (migrated first)"
    )
    imp.add_argument("file", metavar="FILE", help="the document, or - for stdin")
    backup = db_sub.add_parser(
        "backup", help="a consistent copy: SQLite's online backup, or pg_dump for PostgreSQL"
    )
    backup.add_argument("--output", "-o", required=True, metavar="FILE")
    for p in (export, imp, backup):
        cfg.add_arguments(p)
        p.set_defaults(func=cmd_db)


def _add_token(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="bearer tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    issue = tsub.add_parser(
        "issue",
        help="print an HS256 token for the daemon's --auth-secret-file",
        description="Print a token of issuer 'osd', signed with the secret that "
        "`osd serve --auth-secret-file` checks against.",
    )
    issue.add_argument("--secret-file", required=True, metavar="FILE")
    issue.add_argument(
        "--role",
        action="append",
        required=True,
        metavar="ROLE",
        help="view, user, admin or a custom role (repeat for several)",
    )
    issue.add_argument("--subject", required=True, metavar="NAME", help="who the token is for")
    issue.add_argument("--group", action="append", default=[], metavar="GROUP")
    issue.add_argument(
        "--ttl", type=_ttl, default=3600, metavar="DURATION", help="e.g. 30m, 1h, 7d (default 1h)"
    )
    issue.set_defaults(func=cmd_token)


def _add_apikey(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    apikey = sub.add_parser("apikey", help="static API keys (X-Api-Key), kept in the store")
    asub = apikey.add_subparsers(dest="apikey_command", required=True)
    create = asub.add_parser("create", help="make a key and print it, once")
    create.add_argument("--role", required=True, help="view, user, admin or a custom role")
    create.add_argument("--subject", required=True, metavar="NAME", help="who the key acts as")
    create.add_argument("--description", default="", help="what the key is for")
    lst = asub.add_parser("list", help="list keys (never their secrets)")
    lst.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = asub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id", metavar="ID")
    for p in (create, lst, revoke):
        cfg.add_arguments(p)
        p.set_defaults(func=cmd_apikey)


def _client_arguments() -> argparse.ArgumentParser:
    """The arguments of every command that calls a daemon."""
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--endpoint",
        default=os.environ.get("OSD_ENDPOINT", cfg.DEFAULT_GRPC_LISTEN),
        help=f"daemon gRPC address (env OSD_ENDPOINT, default {cfg.DEFAULT_GRPC_LISTEN})",
    )
    client.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    client.add_argument(
        "--token",
        default=os.environ.get("OSD_TOKEN", ""),
        help="bearer token sent with each call (env OSD_TOKEN)",
    )
    client.add_argument(
        "--api-key",
        default=os.environ.get("OSD_API_KEY", ""),
        help="API key sent with each call (env OSD_API_KEY)",
    )
    _add_tls_client_arguments(client)
    return client


def _add_tls_client_arguments(parser: argparse.ArgumentParser) -> None:
    """How to dial a daemon that serves TLS (`osd serve --tls-cert`)."""
    for flag, metavar, text in (
        (
            "--tls-ca",
            "FILE",
            "dial the daemon over TLS, trusting the CAs in this PEM bundle for its certificate",
        ),
        (
            "--tls-client-cert",
            "FILE",
            "mutual TLS: present this PEM certificate chain (needs --tls-client-key)",
        ),
        ("--tls-client-key", "FILE", "the unencrypted PEM private key of --tls-client-cert"),
        (
            "--tls-server-name",
            "NAME",
            "check the daemon's certificate against NAME instead of the endpoint's host",
        ),
    ):
        env = "OSD_" + flag[2:].replace("-", "_").upper()
        parser.add_argument(
            flag, default=os.environ.get(env, ""), metavar=metavar, help=f"{text} (env {env})"
        )


def _add_client_groups(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The client commands (osd.ctl runs them), listed in --help."""
    from osd.ctl.commands import GROUPS

    for name, text in GROUPS.items():
        sub.add_parser(name, help=f"manage {text} (osd {name} --help)")
    sub.add_parser("completion", help="print a shell completion script: bash, zsh or fish")


def _add_call(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> None:
    call = sub.add_parser(
        "call",
        parents=[client],
        help="call any method by name, with its request as JSON",
        description="Calls METHOD (e.g. VolumeService.ListVolumes, or "
        "osd.v1.VolumeService/ListVolumes) with the request -d gives, in the proto's JSON "
        "form, and prints the response as JSON. A failed call exits with the code of its "
        "status's class (see the README).",
    )
    call.add_argument("method", metavar="METHOD")
    call.add_argument(
        "-d",
        "--data",
        default="{}",
        metavar="JSON",
        help="the request: JSON, @FILE to read it from a file, or - for stdin (default {})",
    )
    call.set_defaults(func=cmd_call)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    from osd import ctl

    if os.environ.get(ctl.COMPLETE_ENV):
        return ctl.complete()
    if args_list and args_list[0] in ctl.NAMES:
        return ctl.main(args_list)
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        rc: int = args.func(args)
    except cfg.SettingsError as exc:
        print(f"osd: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"osd: {exc}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
