"""The Typer application and the one mapping from known exceptions to one-line messages."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence

import typer

from pedseg import __version__
from pedseg.cli import (
    adapt_cmd,
    check_cmd,
    compare_cmd,
    crossval_cmd,
    demo_cmd,
    domains_cmd,
    embed_cmd,
    evaluate_cmd,
    export_cmd,
    export_seg_cmd,
    identify_cmd,
    plan_cmd,
    predict_cmd,
    synth_cmd,
    train_cmd,
)
from pedseg.errors import PedsegError, describe_os_error, one_line

app = typer.Typer(
    name="pedseg",
    help=(
        "Multi-domain segmentation of sparse pediatric MR datasets: one shared 2D UNet with "
        "domain-specific batch norm, per-domain heads and contrastive regularisation."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pedseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


domains_cmd.register(app)
check_cmd.register(app)
synth_cmd.register(app)
demo_cmd.register(app)
plan_cmd.register(app)
train_cmd.register(app)
predict_cmd.register(app)
identify_cmd.register(app)
export_cmd.register(app)
export_seg_cmd.register(app)
evaluate_cmd.register(app)
crossval_cmd.register(app)
compare_cmd.register(app)
embed_cmd.register(app)
adapt_cmd.register(app)


def _debug() -> bool:
    return os.environ.get("PEDSEG_DEBUG", "") not in ("", "0", "false", "no")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (used by the console script and by tests).

    Typer handles its own usage errors, ``--help`` and ``--version`` (standalone mode, exit 0 or 2);
    every :class:`PedsegError` becomes one red line on stderr and its exit code (1), and so does an
    :class:`OSError` that names a file (the file system refused something: a name too long, a folder
    that cannot be searched) where no layer below turned it into a ``PedsegError``. Anything else is
    a bug and keeps its traceback (``PEDSEG_DEBUG=1`` prints it for the others too).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="pedseg", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except PedsegError as exc:
        if _debug():
            traceback.print_exc()
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return exc.exit_code
    except OSError as exc:
        if exc.filename is None:
            raise
        if _debug():
            traceback.print_exc()
        text = one_line(f"{os.fsdecode(exc.filename)}: {describe_os_error(exc)}")
        typer.secho(f"error: {text}", fg=typer.colors.RED, err=True)
        return 1
    return 0
