"""Pieces shared by the commands: errors, exit codes, parsing helpers and output writing."""

from __future__ import annotations

import argparse
import math
import sys

from .. import outputs
from .._errors import ActivationError
from ..activations import Activation, parse_activation

PROGRAM = "lora-theory"

EXIT_OK = 0
EXIT_WRITE_FAILED = 1
EXIT_COMPUTATION_FAILED = 1
EXIT_USAGE = 2

# Options whose value may legitimately begin with "-" (a negative number in a
# grid, a negated activation such as "-He3"). See attach_dash_values.
VALUE_OPTIONS = ("--student", "--teacher", "--mu", "--m0", "--u0", "--kappa")


class UsageError(Exception):
    """A user input error, reported as one line with exit status 2."""


class ComputationError(Exception):
    """A computation failed on valid input (a flow integration), reported with exit status 1."""


class WriteError(Exception):
    """An output file could not be written, reported with exit status 1."""

    def __init__(self, path, error: OSError):
        reason = error.strerror or str(error)
        super().__init__(f"cannot write {path}: {reason}")


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser that reports errors on one line, with exit status 2."""

    def error(self, message: str) -> None:
        one_line = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line} (run '{self.prog} --help' for usage)\n")



def attach_dash_values(arguments: list[str]) -> list[str]:
    """Join ``--mu -0.1:0.5:3`` into ``--mu=-0.1:0.5:3``.

    argparse takes a value that starts with "-" for an option unless it is a
    plain negative number, so without this step ``--mu -0.1:0.5:3`` would fail
    with "expected one argument" and the offending grid would go unnamed.
    Values starting with "--" are left alone because they are options.
    """
    joined: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        following = arguments[index + 1] if index + 1 < len(arguments) else None
        if argument in VALUE_OPTIONS and following is not None and following.startswith("-") and not following.startswith("--"):
            joined.append(f"{argument}={following}")
            index += 2
            continue
        joined.append(argument)
        index += 1
    return joined


def parse_spec(option: str, spec: str) -> Activation:
    try:
        return parse_activation(spec)
    except ActivationError as error:
        raise UsageError(f"{option}: {error}") from error


def write_outputs(text: str, output: str | None, figure: bytes | None, plot: str | None) -> None:
    """Write the text to ``output`` (or standard output) and the figure to ``plot``.

    The files are written together, so that a failure leaves neither.
    """
    files: dict[str, bytes] = {}
    if output is not None:
        files[output] = text.encode("utf-8")
    if figure is not None:
        files[plot] = figure
    try:
        written = outputs.atomic_write_files(files) if files else []
    except OSError as error:
        raise WriteError(error.filename or ", ".join(files), error) from error

    # File notices go to standard error so that standard output stays pure data.
    if output is None:
        sys.stdout.write(text)
    for path in written:
        print(f"{PROGRAM}: wrote {path}", file=sys.stderr)


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None


def integer(text: str) -> int:
    # Accept integral decimal forms such as 1e5 as well as plain integers.
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if not (math.isfinite(value) and value.is_integer()):
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}")
    return int(value)



def is_terminal() -> bool:
    """True when standard error is a terminal, where progress bars and lines are shown."""
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
