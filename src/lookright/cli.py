"""``lookright``: one subcommand per pipeline stage, plus ``explain``, ``experiment-summary`` and
``tracking-init``.

Rules in ``rules/*.smk`` call these; each stage reads its config (JSON from the rule, or YAML
files, merged over typed defaults), reads/writes Parquet, and logs one MLflow run
(:mod:`lookright.stages`). The parser is built from the command registry
(:data:`lookright.stages.COMMANDS`): only the module of the command being run is imported, so
``lookright --help`` and a bad argument answer at once.

Every error a user can cause (a bad config value, a missing file, an unknown method) is one
line naming the bad value and the valid ones; ``--verbose`` (or ``LOOKRIGHT_DEBUG=1``) shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from lookright.stages import COMMANDS


def _command_of(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The CLI parser; the arguments of the command named in ``argv`` only (others: help)."""
    parser = argparse.ArgumentParser(prog="lookright", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _command_of(argv)
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(name, help=command.help, description=command.help)
        if name != chosen:
            continue
        module = importlib.import_module(command.module)
        if command.stage:
            from lookright.stages.base import add_common_arguments

            add_common_arguments(command_parser)
            module.STAGE.add_arguments(command_parser)
            command_parser.set_defaults(func=module.STAGE.main)
        else:
            module.add_cli_arguments(command_parser)
            command_parser.set_defaults(func=module.cli_main)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``lookright <argv>`` parsed: ``args.func(args)`` runs the command (tests, notebooks)."""
    return build_parser(argv).parse_args(list(argv))


USER_ERRORS = (ValueError, FileNotFoundError, KeyError)
"""What a user's input can cause (ConfigError is a ValueError): one line, exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    from lookright.versions import print_problems

    if not print_problems():  # untested versions warn, known-broken ones stop here
        return 2
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    debug = args.verbose or os.environ.get("LOOKRIGHT_DEBUG") == "1"
    from lookright.config import StageFailure

    try:
        return int(args.func(args) or 0)
    except StageFailure as error:  # the stage ran and failed a check; its MLflow run is FAILED
        if debug:
            raise
        print(f"lookright {args.command}: failed: {error}", file=sys.stderr)
        return 1
    except USER_ERRORS as error:
        if debug:
            raise
        message = str(error).strip("'\"") if isinstance(error, KeyError) else str(error)
        print(f"lookright {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
