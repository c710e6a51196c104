"""The entry point: the parser of every command, built from each command's own builder, and
:func:`main`, which runs one command and turns its errors into one line and an exit status
(2 for bad input; 130 when interrupted, after the command that resumes a study interrupted once it existed).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from ..config import ConfigError, Interrupted, format_validation_error
from .exports import add_evaluate, add_export, add_predict
from .inspection import add_profile, add_show
from .proxies import add_proxies
from .records import add_plot, add_query, add_ui
from .studies import add_ablate, add_run
from .training import add_train

_DESCRIPTION = "Neural-architecture search and ablations of convolutional networks: Optuna proposes, Ray Tune runs, MLflow records."
# The commands in the order that --help lists them.
_COMMANDS = (add_show, add_profile, add_proxies, add_train, add_run, add_ablate, add_query, add_plot, add_export, add_evaluate, add_predict, add_ui)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, not after its usage block, and takes no flag by a prefix of its name.

    Each command's parser is one too: argparse builds subparsers of their parent's class.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A prefix such as --epoch for --epochs would be taken silently and echoed into the resume command.
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> None:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``cnnsearch`` parser: each command's flags, and in ``run`` the function that runs it."""
    parser = _Parser(prog="cnnsearch", description=_DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run one ``cnnsearch`` command.

    Args:
        argv: the command line without the program's name (default: ``sys.argv[1:]``).

    Raises:
        SystemExit: 2 for a bad flag or bad input, 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not getattr(args, "verbose", False):  # the one place where the command line sets the libraries' logging
        from ..tracking import quiet

        quiet()
    args.resume_command = f"cnnsearch {shlex.join(argv if '--resume' in argv else [*argv, '--resume'])}"
    try:
        args.run(args)
    except Interrupted as error:
        print(f"cnnsearch: {error}", file=sys.stderr)
        print(f"Resume it: {args.resume_command}", file=sys.stderr)
        raise SystemExit(130) from None
    except KeyboardInterrupt:  # outside a study's trials: its set-up or summary, or another command
        print("cnnsearch: interrupted", file=sys.stderr)
        if getattr(args, "resumable", False):
            print(f"Resume it: {args.resume_command}", file=sys.stderr)
        raise SystemExit(130) from None
    except ValidationError as error:  # options checked by the configs they fill
        error = format_validation_error(error, "option")
        print(f"cnnsearch: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except ConfigError as error:
        print(f"cnnsearch: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
