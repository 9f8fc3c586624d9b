"""The fixed-points, search and phase-diagram commands: the structure of the flow and of tau(mu, k)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from .. import analysis_outputs
from .._errors import GridError, ParameterError, TimeUnitError
from ..analysis import DEFAULT_M0, FLOW_METHOD, FLOW_RTOL, search_phase
from ..dynamics import ABSOLUTE_TOLERANCE_FACTOR
from ..fixed_points import (
    ContinuumOfFixedPointsError,
    DEDUPLICATION_DISTANCE,
    DEFAULT_GRID,
    HYPERBOLICITY_TOLERANCE,
    ONE_SIDED_STEP,
    RESIDUAL_TOLERANCE,
    ROOT_STEP_TOLERANCE,
    fixed_points,
)
from ..flow import flow_functions
from ..grids import GRID_FORMS, parse_grid
from ..outputs import describe_time_unit
from ..pretraining import phase_diagram
from ..rates import escape_rates, validate_mu
from ..singular import singular_points
from ._common import EXIT_OK, ComputationError, UsageError, integer, is_terminal, number, parse_spec, write_outputs

#: Largest |u| of the fixed-point search and the phase portrait.
DEFAULT_U_MAX = 3.0

#: Escape threshold on |m| of the search and phase-diagram commands.
DEFAULT_M_EXIT = 0.5

#: Default m0 grid of the search command: 13 values spaced evenly in log(m0) from 1e-12 to 1e-3.
DEFAULT_M0_GRID = "1e-12:1e-3:13"

#: Default Hermite degrees and mu grid of the phase-diagram command.
DEFAULT_K_MAX = 10
DEFAULT_PHASE_MU = "0.02:0.99:200"

#: Default dimension of the helps/hurts comparison (m0 = 1/sqrt(d)).
DEFAULT_D = 1000


def add_parsers(commands) -> None:
    """Add the fixed-points, search and phase-diagram commands."""
    _add_fixed_points_parser(commands)
    _add_search_parser(commands)
    _add_phase_diagram_parser(commands)


# ---------------------------------------------------------------------------
# Options and validation shared by the commands
# ---------------------------------------------------------------------------


def _add_output_options(parser: argparse.ArgumentParser, plot_help: str) -> None:
    parser.add_argument("--format", choices=analysis_outputs.FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--output", metavar="PATH", help="write the output to this file instead of standard output")
    parser.add_argument("--plot", metavar="PNG", help=plot_help)


def _add_pair_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--student", required=True, metavar="SPEC", help="student activation, same syntax as for the tau command")
    parser.add_argument("--teacher", metavar="SPEC", help="teacher activation (default: the student)")
    parser.add_argument("--mu", required=True, metavar="M", help="pre-training strength, one value in [0, 1]")
    parser.add_argument(
        "--kappa",
        type=number,
        default=0.0,
        metavar="K",
        help="noise ratio kappa = eta d / B of the flow, >= 0 (default: 0, pure gradient flow)",
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def _check_distinct_paths(options: argparse.Namespace) -> None:
    if options.output is not None and options.plot is not None and Path(options.output).resolve() == Path(options.plot).resolve():
        raise UsageError(f"--output and --plot name the same file {options.output!r}. Give the figure its own path.")


def _single_mu(text: str) -> float:
    try:
        values = validate_mu(parse_grid(text))
    except (GridError, ParameterError) as error:
        raise UsageError(f"--mu {text}: {error}") from error
    _require(values.size == 1, f"--mu must be one value in [0, 1], got {text!r}; this command takes a single mu.")
    return float(values[0])


def _kappa(value: float) -> float:
    _require(math.isfinite(value) and value >= 0, f"--kappa must be a finite number >= 0, got {value!r}.")
    return float(value)


def _m_exit(value: float) -> float:
    _require(math.isfinite(value) and 0 < value <= 1, f"--m-exit must lie in (0, 1], got {value!r}.")
    return float(value)


# ---------------------------------------------------------------------------
# fixed-points
# ---------------------------------------------------------------------------


def _add_fixed_points_parser(commands) -> None:
    parser = commands.add_parser(
        "fixed-points",
        help="list the fixed points of the (u, m) flow with stability and role",
        description=(
            "Find every fixed point of the summary-statistic flow with |u| <= --u-max and m in [-1, 1], and give "
            "its loss, the eigenvalues of the Jacobian (rates in 1/t, t = eta * steps), its stability (stable, "
            "saddle, unstable, non-hyperbolic) and its role (search point, global minimum, spurious attractor, other)."
        ),
    )
    _add_pair_options(parser)
    parser.add_argument(
        "--u-max",
        type=number,
        default=DEFAULT_U_MAX,
        metavar="X",
        help=f"largest |u| searched and plotted, > 0 (default: {DEFAULT_U_MAX:g})",
    )
    _add_output_options(parser, "also write a PNG phase portrait of the flow with the fixed points marked by stability")
    parser.set_defaults(handler=_run_fixed_points)


def _fixed_points_method() -> tuple[str, dict]:
    search = {
        "grid": list(DEFAULT_GRID),
        "root_step_tolerance": ROOT_STEP_TOLERANCE,
        "residual_tolerance": RESIDUAL_TOLERANCE,
        "deduplication_distance": DEDUPLICATION_DISTANCE,
        "hyperbolicity_tolerance": HYPERBOLICITY_TOLERANCE,
        "one_sided_step": ONE_SIDED_STEP,
    }
    method = (
        f"sign changes of (du/dt, dm/dt) on a {DEFAULT_GRID[0]} x {DEFAULT_GRID[1]} grid of (u, m), polished by "
        f"scipy.optimize.root (hybrid Powell, xtol {ROOT_STEP_TOLERANCE:g}); kept when |velocity| < {RESIDUAL_TOLERANCE:g}, "
        f"merged within {DEDUPLICATION_DISTANCE:g}; Jacobian generated from the symbolic flow (one-sided differences, "
        f"step {ONE_SIDED_STEP:g}, where it is not finite); fixed points closer than one grid cell may be missed"
    )
    return method, search


def _run_fixed_points(options: argparse.Namespace, command: str) -> int:
    # -- validation, before any computation ------------------------------
    _check_distinct_paths(options)
    student = parse_spec("--student", options.student)
    teacher = parse_spec("--teacher", options.teacher) if options.teacher is not None else student
    mu = _single_mu(options.mu)
    kappa = _kappa(options.kappa)
    _require(math.isfinite(options.u_max) and options.u_max > 0, f"--u-max must be a finite number > 0, got {options.u_max!r}.")

    # -- computation -----------------------------------------------------
    try:
        points = fixed_points(student, teacher, mu=mu, kappa=kappa, u_max=options.u_max)
    except ContinuumOfFixedPointsError as error:
        raise UsageError(f"--student {student.spec}: cannot list fixed points: {error}.") from error
    method, search = _fixed_points_method()
    settings = {"student": student.spec, "teacher": teacher.spec, "mu": mu, "kappa": kappa, "u_max": float(options.u_max)}
    result = analysis_outputs.FixedPointResult(points, settings, method, search)

    # -- output, rendered in full before anything is written -------------
    text = analysis_outputs.format_fixed_points(result, options.format, command)
    figure = None
    if options.plot is not None:
        functions = flow_functions(student, teacher)
        figure = analysis_outputs.render_phase_portrait(
            result,
            lambda u, m: functions.velocity(u, m, mu, kappa),
            lambda u, m: functions.loss(u, m, mu),
            command,
        )
    write_outputs(text, options.output, figure, options.plot)
    return EXIT_OK


# ---------------------------------------------------------------------------
# search
# ---------------------------------------------------------------------------


def _add_search_parser(commands) -> None:
    parser = commands.add_parser(
        "search",
        help="measure the search-phase length on the flow and compare it with tau(mu)",
        description=(
            "Integrate the flow from (u, m) = (0, m0) for each m0 of a grid until |m| reaches --m-exit, fit "
            "t_search = slope * log(m_exit / m0) + offset and compare the slope with the linear theory's tau(mu). "
            "Times are in t = eta * steps."
        ),
    )
    _add_pair_options(parser)
    parser.add_argument(
        "--m0",
        default=DEFAULT_M0_GRID,
        metavar="GRID",
        help=(
            "initial overlaps in (0, m_exit), at least two: a list '1e-9,1e-6,1e-3' or 'start:stop:num', which "
            f"gives num values spaced evenly in log(m0), both ends included (default: {DEFAULT_M0_GRID})"
        ),
    )
    parser.add_argument(
        "--m-exit",
        type=number,
        default=DEFAULT_M_EXIT,
        metavar="X",
        help=f"escape threshold on |m|, in (0, 1] (default: {DEFAULT_M_EXIT})",
    )
    _add_output_options(parser, "also write a PNG of t_search against log(1/m0) with the lines of the linear theory and the fit")
    parser.set_defaults(handler=_run_search)


def _m0_grid(text: str, m_exit: float) -> np.ndarray:
    """Parse --m0: a list as given, or start:stop:num spaced evenly in log(m0)."""
    try:
        values = parse_grid(text)
    except GridError as error:
        raise UsageError(f"--m0: {error}") from error
    for value in values:
        _require(
            0 < value < 1,
            f"--m0 value {value:g} is outside (0, 1); the initial overlap must be positive and below 1. Give values such as 1e-9,1e-6,1e-3.",
        )
        _require(value < m_exit, f"--m0 value {value:g} is not below --m-exit {m_exit:g}; give smaller m0 or a larger --m-exit.")
    _require(values.size >= 2, f"--m0 {text!r} gives {values.size} value; the fit needs at least two distinct m0.")
    _require(np.unique(values).size >= 2, f"--m0 {text!r} repeats one value; the fit needs at least two distinct m0.")

    # The range form is geometric because the search-phase length is linear in log(m0).
    if ":" in text:
        values = np.geomspace(values[0], values[-1], values.size)
    return values


#: tau above which the search command warns that the runs are long: each lasts t ~ tau * log(m_exit / m0).
LONG_SEARCH_TAU = 1e3


def _warn_long_search(student, teacher, mu: float, tau: float, m0: np.ndarray, m_exit: float) -> None:
    """Write one line to stderr when tau is large, with the nearest singular mu and how to shorten the run."""
    if not tau > LONG_SEARCH_TAU:
        return
    longest = tau * math.log(m_exit / float(np.min(m0)))
    roots = [point.mu for point in singular_points(student, teacher)]
    nearest = f"; the nearest singular mu is {min(roots, key=lambda root: abs(root - mu)):.6g}" if roots else ""
    print(
        f"lora-theory search: warning: tau = {tau:.6g} at mu = {mu:g}{nearest}, so the flow runs to t ~ {longest:.3g} "
        f"for each of {m0.size} m0 values and may take minutes; give fewer or larger --m0 values or a mu farther "
        "from the singular one to shorten it.",
        file=sys.stderr,
    )


def _search_method(kappa: float) -> tuple[str, dict]:
    tolerances = {"rtol": FLOW_RTOL, "atol": f"rtol * {ABSOLUTE_TOLERANCE_FACTOR:g} * m0"}
    method = (
        f"flow integrated by scipy solve_ivp ({FLOW_METHOD}, rtol {FLOW_RTOL:g}, atol = rtol * {ABSOLUTE_TOLERANCE_FACTOR:g} * m0) "
        "from (u, m) = (0, m0) to the first |m| = m_exit, horizon 20 times the linear estimate (at least t = 100); "
        f"kappa = {kappa:g}; tau from the linear theory at (u, m) = (0, 0)"
    )
    return method, tolerances


def _run_search(options: argparse.Namespace, command: str) -> int:
    # -- validation, before any computation ------------------------------
    _check_distinct_paths(options)
    student = parse_spec("--student", options.student)
    teacher = parse_spec("--teacher", options.teacher) if options.teacher is not None else student
    mu = _single_mu(options.mu)
    kappa = _kappa(options.kappa)
    m_exit = _m_exit(options.m_exit)
    m0 = _m0_grid(options.m0, m_exit)

    # A singular mu has no linear search phase to compare with, so report that before integrating.
    rates = escape_rates(student, teacher, mu=[mu])
    if rates.notes[0] is not None:
        raise UsageError(f"--mu {options.mu}: no linear search phase at mu = {mu:g}: {rates.notes[0]}. Choose another mu.")

    _warn_long_search(student, teacher, mu, float(rates.tau[0]), m0, m_exit)

    # -- computation -----------------------------------------------------
    progress = None
    if is_terminal():
        from tqdm.auto import tqdm

        progress = tqdm(total=m0.size, desc="search", unit="m0", file=sys.stderr)
    try:
        fit = search_phase(
            student, teacher, mu=mu, m0=m0, kappa=kappa, m_exit=m_exit,
            callback=None if progress is None else lambda index, start, trajectory: progress.update(1),
        )
    except ParameterError as error:
        raise UsageError(f"--m0 {options.m0}: {error}") from error
    except ArithmeticError as error:
        raise ComputationError(f"flow integration failed at mu = {mu:g}: {error}") from error
    finally:
        if progress is not None:
            progress.close()
    method, tolerances = _search_method(kappa)
    settings = {"student": student.spec, "teacher": teacher.spec, "mu": mu, "kappa": kappa, "m_exit": m_exit, "u0": 0.0}
    result = analysis_outputs.SearchResult(
        settings, method, tolerances, fit.m0, fit.escape_time, fit.slope, fit.offset, fit.tau, fit.offset_linear,
        float(rates.A[0]), float(rates.lambda_plus[0]),
    )

    # -- output ----------------------------------------------------------
    text = analysis_outputs.format_search(result, options.format, command)
    figure = analysis_outputs.render_search_figure(result, command) if options.plot is not None else None
    write_outputs(text, options.output, figure, options.plot)
    return EXIT_OK


# ---------------------------------------------------------------------------
# phase-diagram
# ---------------------------------------------------------------------------


def _add_phase_diagram_parser(commands) -> None:
    parser = commands.add_parser(
        "phase-diagram",
        help="tabulate tau over (mu, k) for He_k teachers and where pre-training helps",
        description=(
            "Compute tau(mu) for students equal to their He_k teacher, k = 1 ... --k-max (linear theory), the "
            "singular mu_s(k) where A(mu) = 0, and compare the linear escape time from m0 = 1/sqrt(d) with the "
            "escape time of spherical SGD without pre-training at the same learning rate: pre-training helps where "
            "it is shorter."
        ),
    )
    parser.add_argument(
        "--k-max", type=integer, default=DEFAULT_K_MAX, metavar="K",
        help=f"largest Hermite degree, 1 ... 30 (default: {DEFAULT_K_MAX})",
    )
    parser.add_argument(
        "--mu", default=DEFAULT_PHASE_MU, metavar="GRID",
        help=f"pre-training strengths in [0, 1]: {GRID_FORMS} (default: {DEFAULT_PHASE_MU})",
    )
    parser.add_argument(
        "--time-unit",
        choices=("plain", "hermite"),
        default="hermite",
        help="hermite (default) divides the rates of He_k by k! * k, as the reference figures do; plain is t = eta * steps",
    )
    parser.add_argument(
        "--d", type=number, default=DEFAULT_D, metavar="D",
        help=f"dimension of the helps/hurts comparison, >= 3; both models start from m0 = 1/sqrt(d) (default: {DEFAULT_D})",
    )
    parser.add_argument(
        "--kappa", type=number, default=0.0, metavar="K",
        help=(
            "noise ratio kappa = eta d / B of the no-pre-training baseline, >= 0 (default: 0, its fastest case, "
            "so that 'helps' is the conservative verdict); the linear LoRA estimate does not depend on it"
        ),
    )
    parser.add_argument(
        "--m-exit", type=number, default=DEFAULT_M_EXIT, metavar="X",
        help=f"escape threshold on |m| of both models, in (1/sqrt(d), 1] (default: {DEFAULT_M_EXIT})",
    )
    _add_output_options(parser, "also write a PNG heat map of tau (log colour scale) with the singular curves and the boundary")
    parser.set_defaults(handler=_run_phase_diagram)


def _phase_method(kappa: float) -> str:
    return (
        "linear theory at (u, m) = (0, 0): tau = 1 / lambda_plus from closed forms of A(mu) and B(mu); "
        "t_exit = tau * (log(m_exit / m0) + log(1 + (lambda_plus / A)^2)); baseline_time = escape time of the "
        f"spherical flow without pre-training at kappa = {kappa:g} (scipy solve_ivp, DOP853, rtol 1e-10), "
        "undefined when kappa >= kappa_max(m0); boundaries located by Brent's method to 1e-10 in mu"
    )


def _run_phase_diagram(options: argparse.Namespace, command: str) -> int:
    # -- validation, before any computation ------------------------------
    _check_distinct_paths(options)
    _require(1 <= options.k_max <= 30, f"--k-max must be an integer in 1 ... 30, got {options.k_max}.")
    try:
        mu = validate_mu(parse_grid(options.mu))
    except (GridError, ParameterError) as error:
        raise UsageError(f"--mu {options.mu}: {error}") from error
    _require(math.isfinite(options.d) and options.d >= 3, f"--d must be a dimension >= 3, got {options.d!r}.")
    kappa = _kappa(options.kappa)
    m_exit = _m_exit(options.m_exit)
    _require(
        m_exit > 1 / math.sqrt(options.d),
        f"--m-exit {m_exit:g} is not above m0 = 1/sqrt(d) = {1 / math.sqrt(options.d):.6g}; use a larger --m-exit or --d.",
    )

    # -- computation -----------------------------------------------------
    try:
        diagram = phase_diagram(options.k_max, mu, time_unit=options.time_unit, d=options.d, kappa=kappa, m_exit=m_exit)
    except TimeUnitError as error:
        raise UsageError(f"--time-unit {options.time_unit}: {error}") from error
    except ArithmeticError as error:
        raise ComputationError(f"baseline flow integration failed: {error}") from error
    if options.time_unit == "hermite":
        unit = "hermite (rates of He_k divided by k! * k, so times are k! * k times their plain value)"
    else:
        unit = describe_time_unit("plain", "He1")
    result = analysis_outputs.PhaseDiagramResult(diagram, unit, _phase_method(kappa))

    # -- output ----------------------------------------------------------
    text = analysis_outputs.format_phase_diagram(result, options.format, command)
    figure = analysis_outputs.render_phase_diagram_figure(result, command) if options.plot is not None else None
    write_outputs(text, options.output, figure, options.plot)
    return EXIT_OK
