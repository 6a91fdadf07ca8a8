"""The ``aiops`` command line: data, train, retrain, promote, rollback, models, detect, forecast, serve.

User-facing output goes to stdout; errors are one line on stderr naming what
is wrong, with exit code 1 (bad input or state) or 2 (bad usage).

Each command group's module registers its subcommands (``add_commands``) and
holds the functions that run them; this module puts the groups together and
owns what every command shares: the parsing of the argument list, logging and
the turning of a bad input into one line and an exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

from cli import data, models, replay, serve, train
from features.schema import DataValidationError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiops", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True)
    # In this order: the order `aiops --help` lists the commands in.
    for group in (data, train, models, replay, serve):
        group.add_commands(commands)
    return parser


#: Options whose value may start with a minus: a time before now such as ``-1h``.
_TIME_OPTIONS = frozenset({"--start", "--end", "--until"})


def _attach_time_values(argv: Sequence[str]) -> list[str]:
    """``--start -1h`` as ``--start=-1h``.

    argparse takes any word that starts with ``-`` (and is not a plain negative number)
    for an option, so ``--start -1h`` would be "expected one argument". A word after a time
    option that starts with a minus and a digit cannot be an option: it is that option's
    value, and is attached to it before parsing.
    """
    words = list(argv)
    attached: list[str] = []
    while words:
        word = words.pop(0)
        if word in _TIME_OPTIONS and words and re.match(r"-\d", words[0]):
            word = f"{word}={words.pop(0)}"
        attached.append(word)
    return attached


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_attach_time_values(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    # LookupError: serving.loader.ModelUnavailableError, caught without importing MLflow here.
    except (DataValidationError, ValueError, TypeError, FileNotFoundError, LookupError) as error:
        print(f"aiops {args.command}: error: {error}", file=sys.stderr)
        return 1
