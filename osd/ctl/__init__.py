"""The client side of the ``osd`` command: a group of commands per resource
(``osd volume list``, ``osd node drain ID --wait`` ...), derived from the
contract, with tables, JSON or YAML, progress bars and shell completion.

:func:`main` runs them; ``osd.cli`` hands it the command lines whose first
word is one of :data:`NAMES`. A failed call exits with the code of its
status's class (``osd.client.EXIT_CODES``), a usage error with 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from osd import config as cfg
from osd.client import CallError, exit_code
from osd.ctl import connection, output
from osd.ctl.build import Failed, follow_job, groups, job_exit
from osd.ctl.commands import GROUPS
from osd.v1 import job_pb2

COMPLETE_ENV = "_OSD_COMPLETE"
# The first words osd.cli hands to main.
NAMES = frozenset({*GROUPS, "completion"})
# The commands osd.cli keeps: named here so that completion offers them.
OTHERS = {
    "serve": "run the daemon",
    "gateway": "run the REST gateway alone",
    "db": "store administration",
    "token": "bearer tokens",
    "apikey": "static API keys",
    "health": "check the daemon's health",
    "csi": "run the CSI plugin",
    "call": "call any method by name, with its request as JSON",
    "watch": "print changes as they commit, one JSON line each",
}


def _job_watch() -> click.Command:
    @click.command("watch")
    @click.argument("job_id", metavar="JOB_ID")
    @click.option("--quiet", is_flag=True, help="no progress on stderr")
    @click.option(
        "--wait-timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="give up after this long (exit 10); default: wait to the end",
    )
    def watch(job_id: str, quiet: bool, wait_timeout: float, **values: Any) -> None:
        """Follow a job to its end with its progress; exit 0 DONE, 12 FAILED,
        13 CANCELLED."""
        conn = connection.resolve(values, tty=sys.stdout.isatty())
        with conn.client() as client:
            try:
                job = follow_job(client, job_id, quiet=quiet, timeout=wait_timeout or None)
            except TimeoutError as exc:
                click.echo(f"osd: {exc}", err=True)
                raise Failed(10) from None
        click.echo(output.render(job_pb2.InspectJobResponse(job=job), conn.output))
        job_exit(job)

    return connection.options(watch)  # type: ignore[no-any-return]


def _completion() -> click.Command:
    @click.command("completion")
    @click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
    def completion(shell: str) -> None:
        """Print the shell completion script: e.g. `eval "$(osd completion bash)"`."""
        from click.shell_completion import get_completion_class

        cls = get_completion_class(shell)
        assert cls is not None
        click.echo(cls(root(), {}, "osd", COMPLETE_ENV).source())

    return completion


def root() -> click.Group:
    """The whole command tree, as click sees it."""
    top = click.Group("osd", help="osd storage control plane.")
    for name, group in groups().items():
        if name == "job":
            group.add_command(_job_watch())
        top.add_command(group)
    top.add_command(_completion())
    for name, text in OTHERS.items():
        top.add_command(
            click.Command(name, help=text, context_settings={"ignore_unknown_options": True})
        )
    return top


def main(argv: Sequence[str]) -> int:
    """Runs one client command line; its exit code."""
    try:
        root().main(list(argv), prog_name="osd", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 2
    except click.UsageError as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        return 130
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except cfg.SettingsError as exc:
        click.echo(f"osd: {exc}", err=True)
        return 2
    except CallError as err:
        click.echo(f"osd: {err}", err=True)
        return exit_code(err.code)
    except Failed as failed:
        return failed.code
    except KeyboardInterrupt:
        return 130
    return 0


def complete() -> int:
    """Answers the shell's completion request (``_OSD_COMPLETE`` is set)."""
    return int(
        root().main([], prog_name="osd", complete_var=COMPLETE_ENV, standalone_mode=False) or 0
    )
