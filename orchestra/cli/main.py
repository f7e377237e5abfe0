"""The ``orchestra`` command: the composition root.

Commands parse their arguments, call one service and render the result.
Exit codes are part of the contract: 0 success (or no changes), 1 an error,
2 changes present (``plan --detailed-exitcode``), and 64 a usage error,
since click's own usage code 2 would collide with "changes".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from orchestra.cli import daemon_cmd, export_cmd, get_cmds, job_cmds, run_cmds, spec_cmds, worker_cmd
from orchestra.cli.context import AppContext, RemoteSettings
from orchestra.cli.tokens import TOKEN_ENV, read_token
from orchestra.diagnostics import SpecError
from orchestra.errors import OrchestraError
from orchestra.settings import Settings

EXIT_ERROR = 1
EXIT_USAGE = 64


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", envvar="ORCHESTRA_DB", metavar="URL",
              help="SQLAlchemy URL of the store (default: SQLite under .orchestra/). Env: ORCHESTRA_DB.")
@click.option("--api-url", envvar="ORCHESTRA_API_URL", metavar="URL",
              help="Talk to the daemon serving its API at URL instead of a store (--db is then unused). "
                   "Env: ORCHESTRA_API_URL.")
@click.option("--api-token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"File holding the API's bearer token (default: the {TOKEN_ENV} environment variable).")
@click.version_option(package_name="orchestra")
@click.pass_context
def cli(ctx: click.Context, db: str | None, api_url: str | None, api_token_file: Path | None) -> None:
    """Declarative workflow orchestration: specs in git, plan, apply, run."""
    remote = RemoteSettings(api_url, read_token(api_token_file)) if api_url else None
    ctx.obj = AppContext(Settings(db_url=db, cwd=Path(os.getcwd())), remote)
    ctx.call_on_close(ctx.obj.close)


for module in (spec_cmds, get_cmds, job_cmds, run_cmds, daemon_cmd, export_cmd, worker_cmd):
    module.register(cli)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI with orchestra's exit codes."""
    try:
        code = cli.main(args=argv, prog_name="orchestra", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        exc.show()
        code = EXIT_USAGE
    except click.Abort:
        click.echo("Aborted.", err=True)
        code = EXIT_ERROR
    except click.ClickException as exc:
        exc.show()
        code = EXIT_ERROR
    except SpecError as exc:
        for diagnostic in exc.diagnostics:
            click.echo(str(diagnostic), err=True)
        click.echo(f"{len(exc.diagnostics)} error(s); nothing was changed.", err=True)
        code = EXIT_ERROR
    except OrchestraError as exc:
        click.echo(f"Error: {exc}", err=True)
        code = EXIT_ERROR
    sys.exit(code if isinstance(code, int) else 0)
