"""The tau and report commands: escape rates over a grid of mu."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import full_report, outputs
from .._errors import GridError, ParameterError, TimeUnitError
from ..activations import MAX_HERMITE_DEGREE
from ..grids import GRID_FORMS, parse_grid
from ..rates import escape_rates
from ..singular import singular_points
from ._common import EXIT_OK, PROGRAM, ComputationError, UsageError, WriteError, parse_spec, write_outputs

#: Default folders of the report and of report --full.
_REPORT_FOLDER = "lora-theory-report"
_FULL_REPORT_FOLDER = "lora-theory-full-report"

_FORMATTERS = {
    "table": outputs.format_table,
    "csv": outputs.format_csv,
    "json": outputs.format_json,
}


def add_parsers(commands) -> None:
    """Add the tau and report commands."""
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
        help=(
            f"folder for the report files, created if missing (default: ./{_REPORT_FOLDER}/, "
            f"or ./{_FULL_REPORT_FOLDER}/ with --full)"
        ),
    )
    report.add_argument(
        "--full",
        action="store_true",
        help=(
            "instead of the default report, write every figure of the analysis notebooks at full size "
            "(PNG) and a summary.md stating the command, version and settings of each file; takes several minutes"
        ),
    )
    # Size of the --full figures; "small" exists for the tests and is left out of the help.
    report.add_argument("--full-size", choices=full_report.SIZES, default="full", help=argparse.SUPPRESS)
    report.set_defaults(handler=_run_report)


def _run_tau(options: argparse.Namespace, command: str) -> int:
    if options.output is not None and options.plot is not None and Path(options.output).resolve() == Path(options.plot).resolve():
        raise UsageError(f"--output and --plot name the same file {options.output!r}. Give the figure its own path.")

    student = parse_spec("--student", options.student)
    teacher = parse_spec("--teacher", options.teacher) if options.teacher is not None else None
    try:
        mu = parse_grid(options.mu)
    except GridError as error:
        raise UsageError(f"--mu: {error}") from error

    # Attribute the engine's domain errors to the option that caused them.
    try:
        rates = escape_rates(student, teacher, mu=mu, time_unit=options.time_unit)
    except ParameterError as error:
        raise UsageError(f"--mu {options.mu}: {error}") from error
    except TimeUnitError as error:
        raise UsageError(f"--time-unit {options.time_unit}: {error}") from error

    # The divergence law of tau and m_c at each zero of A(mu) in the grid's range, in the same time unit.
    singular = ()
    if rates.singular_mu:
        singular = singular_points(student, teacher, mu_range=(float(mu.min()), float(mu.max())), time_unit=options.time_unit)

    # Render everything before writing anything.
    if options.format == "csv":
        text = outputs.format_csv(rates, singular, command)
    else:
        text = _FORMATTERS[options.format](rates, singular)
    figure = outputs.render_tau_figure(rates, command, singular) if options.plot is not None else None

    write_outputs(text, options.output, figure, options.plot)
    return EXIT_OK


def _print_progress(index: int, total: int, spec: str) -> None:
    print(f"{PROGRAM} report: computing {spec} ({index + 1}/{total})", file=sys.stderr, flush=True)


def _run_full_report(options: argparse.Namespace, command: str) -> int:
    folder = options.output if options.output is not None else _FULL_REPORT_FOLDER
    current: list[str] = []

    def progress(index: int, total: int, name: str) -> None:
        current[:] = [name]
        # Progress lines only when a person watches the terminal.
        if sys.stderr.isatty():
            print(f"{PROGRAM} report --full: computing {name} ({index + 1}/{total})", file=sys.stderr, flush=True)

    try:
        figures = full_report.make_figures(options.full_size, command=command, progress=progress)
    except ArithmeticError as error:
        # A flow integration or SGD simulation that failed on valid settings.
        raise ComputationError(f"computing the figure {current[-1]} failed: {error}") from error
    try:
        paths = full_report.write_full_report(folder, figures, command)
    except OSError as error:
        raise WriteError(error.filename or folder, error) from error

    print(f"Full report written to {Path(folder).resolve()}:")
    for path in paths:
        print(f"  {path.resolve()}")
    return EXIT_OK


def _run_report(options: argparse.Namespace, command: str) -> int:
    if options.full:
        return _run_full_report(options, command)
    if options.full_size != "full":
        raise UsageError("--full-size applies only with --full")

    folder = options.output if options.output is not None else _REPORT_FOLDER
    # Progress lines only when a person watches the terminal.
    progress = _print_progress if sys.stderr.isatty() else None
    entries = outputs.compute_report(progress=progress)
    try:
        paths = outputs.write_report(folder, entries, command)
    except OSError as error:
        raise WriteError(error.filename or folder, error) from error

    folder = Path(folder).resolve()
    print(f"Report written to {folder}:")
    for path in paths:
        print(f"  {path.resolve()}")
    return EXIT_OK


