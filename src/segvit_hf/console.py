"""What the console commands (`segvit`, `segvit-convert`) share: every failure ends in one line on stderr and a
non-zero exit status, with the traceback only under `--debug`.

- [`ArgumentParser`]: argparse whose argument errors are one line (no usage block), exit status 2.
- [`run_command`]: runs a command's function and turns any exception into one line, exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class CommandError(Exception):
    """A failure the user can fix from the command line; reported by its message alone."""


class ArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose errors are one line, `PROG: error: MESSAGE (see PROG --help)`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a failure")


def one_line(error: BaseException) -> str:
    """The message of `error` on one line, prefixed by its type unless it is a [`CommandError`]."""
    message = " ".join(str(error).split()) or repr(error)
    return message if isinstance(error, CommandError) else f"{type(error).__name__}: {message}"


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    """`command(args)`, its exit status; any exception becomes one line on stderr and status 1, unless `args.debug`."""
    try:
        return command(args)
    except Exception as error:  # every failure, expected or not, must reach the user as one line
        if args.debug:
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
