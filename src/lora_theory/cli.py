"""The ``lora-theory`` command line.

Commands::

    lora-theory tau --student SPEC [--teacher SPEC] --mu GRID
                    [--time-unit plain|hermite] [--format table|csv|json]
                    [--output PATH] [--plot PATH]
    lora-theory report [--output DIR]

Exit status: 0 on success, 1 when an output file cannot be written, 2 for a
usage error. Usage errors are a bad option, an unknown activation, a
malformed grid, mu outside [0, 1], a Hermite degree above 30, and the hermite
time unit for a student that is not a single He_k. Errors are one line on
standard error, without a traceback.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

from . import __version__, outputs
from ._errors import ActivationError, GridError, LoraTheoryError, ParameterError, TimeUnitError
from .activations import MAX_HERMITE_DEGREE, Activation, parse_activation
from .grids import GRID_FORMS, parse_grid
from .rates import escape_rates

__all__ = ["main"]

PROGRAM = "lora-theory"

EXIT_OK = 0
EXIT_WRITE_FAILED = 1
EXIT_USAGE = 2

_FORMATTERS = {
    "table": outputs.format_table,
    "csv": outputs.format_csv,
    "json": outputs.format_json,
}

# Options whose value may legitimately begin with "-" (a negative number in a
# grid, a negated activation such as "-He3"). See _attach_dash_values.
_VALUE_OPTIONS = ("--student", "--teacher", "--mu")


class _UsageError(Exception):
    """A user input error, reported as one line with exit status 2."""


class _WriteError(Exception):
    """An output file could not be written, reported with exit status 1."""

    def __init__(self, path, error: OSError):
        reason = error.strerror or str(error)
        super().__init__(f"cannot write {path}: {reason}")


class _ArgumentParser(argparse.ArgumentParser):
    """An argument parser that reports errors on one line, with exit status 2."""

    def error(self, message: str) -> None:
        one_line = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line} (run '{self.prog} --help' for usage)\n")


def _build_parser() -> _ArgumentParser:
    parser = _ArgumentParser(
        prog=PROGRAM,
        description=(
            "Escape rates of the search phase of rank-1 LoRA fine-tuning on single-index "
            "models (Nwemadji, Loureiro, Barbier, arXiv:2602.02855)."
        ),
        epilog="Exit status: 0 on success, 1 when an output file cannot be written, 2 for a usage error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # --- tau -------------------------------------------------------------
    tau = commands.add_parser(
        "tau",
        help="tabulate A, B, lambda_plus and tau over a grid of mu",
        description=(
            "Compute A(mu), B(mu), the unstable eigenvalue lambda_plus(mu) and the escape time "
            "tau(mu) = 1 / lambda_plus(mu) of the search phase, and the zeros of A(mu) in the grid's range."
        ),
    )
    tau.add_argument(
        "--student",
        required=True,
        metavar="SPEC",
        help=(
            "student activation, for example x, erf, relu, sigmoid, tanh, "
            f"He0 ... He{MAX_HERMITE_DEGREE}, 0.5*He2+He4 or expr:tanh(2*z)"
        ),
    )
    tau.add_argument("--teacher", metavar="SPEC", help="teacher activation (default: the student)")
    tau.add_argument(
        "--mu",
        required=True,
        metavar="GRID",
        help=f"pre-training strengths in [0, 1]: {GRID_FORMS}",
    )
    tau.add_argument(
        "--time-unit",
        choices=("plain", "hermite"),
        default="plain",
        help=(
            "plain (default) measures time as t = eta * steps. hermite divides the rates "
            "by k! * k and only applies to a student that is exactly He_k"
        ),
    )
    tau.add_argument("--format", choices=tuple(_FORMATTERS), default="table", help="output format (default: table)")
    tau.add_argument("--output", metavar="PATH", help="write the output to this file instead of standard output")
    tau.add_argument("--plot", metavar="PATH", help="also write a log-scale PNG figure of tau(mu) to this file")
    tau.set_defaults(handler=_run_tau)

    # --- report ----------------------------------------------------------
    report = commands.add_parser(
        "report",
        help="write the default report: CSV, figure and summary of tau(mu)",
        description=(
            f"Compute tau(mu) at the grid {outputs.REPORT_MU_GRID} (start:stop:num) for "
            + ", ".join(f"{spec} ({unit})" for spec, unit, _ in outputs.REPORT_ACTIVATIONS)
            + " with student = teacher, and write a CSV, a two-panel PNG figure and a Markdown summary."
        ),
    )
    report.add_argument(
        "--output",
        metavar="DIR",
        default="lora-theory-report",
        help="folder for the report files, created if missing (default: ./lora-theory-report/)",
    )
    report.set_defaults(handler=_run_report)
    return parser


def _attach_dash_values(arguments: list[str]) -> list[str]:
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
        if argument in _VALUE_OPTIONS and following is not None and following.startswith("-") and not following.startswith("--"):
            joined.append(f"{argument}={following}")
            index += 2
            continue
        joined.append(argument)
        index += 1
    return joined


def _parse_spec(option: str, spec: str) -> Activation:
    try:
        return parse_activation(spec)
    except ActivationError as error:
        raise _UsageError(f"{option}: {error}") from error


def _run_tau(options: argparse.Namespace, command: str) -> int:
    if options.output is not None and options.plot is not None and Path(options.output).resolve() == Path(options.plot).resolve():
        raise _UsageError(f"--output and --plot name the same file {options.output!r}. Give the figure its own path.")

    student = _parse_spec("--student", options.student)
    teacher = _parse_spec("--teacher", options.teacher) if options.teacher is not None else None
    try:
        mu = parse_grid(options.mu)
    except GridError as error:
        raise _UsageError(f"--mu: {error}") from error

    # Attribute the engine's domain errors to the option that caused them.
    try:
        rates = escape_rates(student, teacher, mu=mu, time_unit=options.time_unit)
    except ParameterError as error:
        raise _UsageError(f"--mu {options.mu}: {error}") from error
    except TimeUnitError as error:
        raise _UsageError(f"--time-unit {options.time_unit}: {error}") from error

    # Render everything before writing anything.
    text = _FORMATTERS[options.format](rates)
    figure = outputs.render_tau_figure(rates, command) if options.plot is not None else None

    # Write the text and the figure together, so that a failure leaves neither.
    files: dict[str, bytes] = {}
    if options.output is not None:
        files[options.output] = text.encode("utf-8")
    if figure is not None:
        files[options.plot] = figure
    try:
        written = outputs.atomic_write_files(files) if files else []
    except OSError as error:
        raise _WriteError(error.filename or ", ".join(files), error) from error

    # File notices go to standard error so that standard output stays pure data.
    if options.output is None:
        sys.stdout.write(text)
    for path in written:
        print(f"{PROGRAM}: wrote {path}", file=sys.stderr)
    return EXIT_OK


def _print_progress(index: int, total: int, spec: str) -> None:
    print(f"{PROGRAM} report: computing {spec} ({index + 1}/{total})", file=sys.stderr, flush=True)


def _run_report(options: argparse.Namespace, command: str) -> int:
    # Progress lines only when a person watches the terminal.
    progress = _print_progress if sys.stderr.isatty() else None
    entries = outputs.compute_report(progress=progress)
    try:
        paths = outputs.write_report(options.output, entries, command)
    except OSError as error:
        raise _WriteError(error.filename or options.output, error) from error

    folder = Path(options.output).resolve()
    print(f"Report written to {folder}:")
    for path in paths:
        print(f"  {path.resolve()}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = " ".join([PROGRAM] + [shlex.quote(argument) for argument in arguments])
    parser = _build_parser()

    try:
        options = parser.parse_args(_attach_dash_values(arguments))
    except SystemExit as exit_request:
        # argparse exits for --help, --version and usage errors. Return its status instead.
        code = exit_request.code
        return code if isinstance(code, int) else EXIT_USAGE

    prefix = f"{PROGRAM} {options.command}"
    try:
        return options.handler(options, command)
    except (_UsageError, LoraTheoryError) as error:
        print(f"{prefix}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    except _WriteError as error:
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
