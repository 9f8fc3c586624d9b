"""The scaling command: escape steps against d, with the fitted exponent or slope."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from .. import __version__
from .._errors import ParameterError
from ..analysis import information_exponent
from ..scaling import SCALING_METHODS, ScalingResult, scaling_law
from ._common import EXIT_OK, ComputationError, UsageError, integer, number, parse_spec, write_outputs

#: Default number of SGD runs per d of the reduced method.
DEFAULT_SEEDS = 32

#: Default fraction of the largest learning rate.
DEFAULT_FRACTION = 0.5

# Largest number of d values of a grid.
_MAX_GRID_POINTS = 100

_D_GRID_FORMS = (
    "a comma-separated list of integers '100,1000,10000', or 'start:stop:num' for num values spaced evenly "
    "in log d from start to stop (both included), rounded to integers"
)

_UNITS = {"steps": "SGD steps", "samples": "B * steps", "t": "eta * steps"}


def add_parsers(commands) -> None:
    """Add the scaling command."""
    parser = commands.add_parser(
        "scaling",
        help="tabulate escape steps against d and fit their law",
        description=(
            "Compute the escape steps from m0 = 1/sqrt(d) (and u0 = 1/d^2 with pre-training) over a grid of d, at a "
            "learning rate that is a fixed fraction of the largest one for which the flow escapes, and fit their law. "
            "Without pre-training (--mu none) the fit is the exponent of d (of d / log d for information exponent 2); "
            "with pre-training it is the slope of t against (1/2) log d, compared with tau(mu). Units: steps, "
            "samples = B * steps with B = 1, and t = eta * steps."
        ),
    )

    # The model.
    parser.add_argument("--teacher", required=True, metavar="SPEC", help="teacher activation, same syntax as for the tau command")
    parser.add_argument("--student", metavar="SPEC", help="student activation (default: the teacher)")
    parser.add_argument(
        "--mu",
        default="none",
        metavar="M|none",
        help="pre-training strength in [0, 1] for the aligned LoRA model, or none (default) for plain spherical SGD on v",
    )

    # The sweep.
    parser.add_argument(
        "--d",
        metavar="GRID",
        help=f"dimensions, each an integer >= 3: {_D_GRID_FORMS}. Default: 1e2:1e8:7 for the flow; for reduced "
        "100,1000,10000 (information exponent <= 2 or pre-training), 32,64,128,256 (3) and 24,32 (4 and above)",
    )
    parser.add_argument(
        "--method",
        choices=SCALING_METHODS,
        default="flow",
        help="flow: escape time of the d -> infinity flow over eta (default); reduced: median over exact reduced SGD runs",
    )
    parser.add_argument("--seeds", type=integer, default=DEFAULT_SEEDS, metavar="K", help=f"SGD runs per d for reduced, >= 2 (default: {DEFAULT_SEEDS})")
    parser.add_argument(
        "--fraction",
        type=number,
        default=DEFAULT_FRACTION,
        metavar="F",
        help=f"learning rate as a fraction in (0, 1) of the largest one that escapes (default: {DEFAULT_FRACTION})",
    )
    parser.add_argument("--seed", type=integer, default=0, metavar="S", help="root seed of the SGD runs, an integer >= 0 (default: 0)")

    # The outputs.
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default: table)")
    parser.add_argument("--output", metavar="PATH", help="write the output to this file instead of standard output")
    parser.add_argument("--plot", metavar="PNG", help="also write a log-log PNG figure of steps against d with the fitted line")
    parser.set_defaults(handler=_run_scaling)


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


def parse_d_grid(text: str) -> np.ndarray:
    """Parse a d grid (see ``_D_GRID_FORMS``); raise UsageError naming the text otherwise."""
    text = text.strip()
    if not text:
        raise UsageError(f"--d: empty grid; write {_D_GRID_FORMS}")
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError("expected start:stop:num")
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if not (math.isfinite(start) and math.isfinite(stop) and start > 0 and stop > 0 and count >= 2):
                raise ValueError("start and stop must be positive and num >= 2")
            if count > _MAX_GRID_POINTS:
                raise ValueError(f"num must be at most {_MAX_GRID_POINTS}")
            values = np.unique(np.rint(np.geomspace(start, stop, count)))
        else:
            values = np.array([float(item) for item in text.split(",")])
    except ValueError as error:
        raise UsageError(f"--d: invalid grid {text!r} ({error}); write {_D_GRID_FORMS}") from None
    if values.size < 2:
        raise UsageError(f"--d: grid {text!r} has fewer than two distinct dimensions; a fit needs at least two")
    bad = values[~np.isfinite(values) | (values < 3) | (values != np.round(values))]
    if bad.size:
        raise UsageError(f"--d: every dimension must be an integer >= 3, got {bad[0]:g} in {text!r}; raise it to 3 or more")
    return values


def _default_grid(method: str, mu, teacher) -> np.ndarray:
    if method == "flow":
        return np.logspace(2, 8, 7)
    if mu is not None:
        return np.array([100.0, 1000.0, 10000.0])
    k_star = information_exponent(teacher)
    if k_star is None or k_star <= 2:
        return np.array([100.0, 1000.0, 10000.0])
    if k_star == 3:
        return np.array([32.0, 64.0, 128.0, 256.0])
    return np.array([24.0, 32.0])


def _parse_mu(text: str):
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--mu: invalid value {text!r}; pass one number in [0, 1] or none") from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise UsageError(f"--mu: {text!r} is outside [0, 1]; the pre-training strength mu must lie in [0, 1], or pass none")
    return value


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def _run_scaling(options: argparse.Namespace, command: str) -> int:
    if options.output is not None and options.plot is not None and Path(options.output).resolve() == Path(options.plot).resolve():
        raise UsageError(f"--output and --plot name the same file {options.output!r}. Give the figure its own path.")
    teacher = parse_spec("--teacher", options.teacher)
    student = parse_spec("--student", options.student) if options.student is not None else teacher
    mu = _parse_mu(options.mu)
    if not 0 < options.fraction < 1:
        raise UsageError(f"--fraction: {options.fraction!r} is outside (0, 1); use for example 0.5")
    if options.method == "reduced" and options.seeds < 2:
        raise UsageError(f"--seeds: {options.seeds} runs per d are too few for a median with an interval; use at least 2")
    if options.seed < 0:
        raise UsageError(f"--seed: {options.seed} is negative; pass an integer >= 0")
    grid = parse_d_grid(options.d) if options.d is not None else _default_grid(options.method, mu, teacher)

    try:
        result = scaling_law(student, teacher, d=grid, mu=mu, method=options.method, n_runs=options.seeds,
                             fraction=options.fraction, seed=options.seed)
    except ParameterError as error:
        raise UsageError(str(error)) from error
    except ArithmeticError as error:
        raise ComputationError(str(error)) from error

    formatters = {"table": format_table, "csv": format_csv, "json": format_json}
    text = formatters[options.format](result, command)
    figure = render_figure(result, command) if options.plot is not None else None
    write_outputs(text, options.output, figure, options.plot)
    return EXIT_OK


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def _number(value) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def describe_method(result: ScalingResult) -> str:
    """Method in words, with the number of runs for SGD."""
    if result.method == "flow":
        return "flow (escape time of the d -> infinity flow divided by eta)"
    return (f"simulation: exact reduced SGD, {result.n_runs} runs per d, median escape step with censored runs "
            "counted as not escaped, 95% bootstrap interval")


def describe_fit(result: ScalingResult) -> dict:
    """Describe the fitted law, its estimate, confidence interval and residual as a dictionary."""
    if result.mu is not None:
        law = "t = slope * (1/2) log d + intercept"
        expected_source = "tau(mu) of the linearised flow, lora_theory.rates.escape_rates"
    elif result.divide_log:
        law = "steps / log d = exp(intercept) * d^slope"
        expected_source = "escape in d log d samples for information exponent 2"
    else:
        law = "steps = exp(intercept) * d^slope"
        expected_source = f"escape in d^{int(result.expected)} samples for information exponent {result.information_exponent}"
    low, high = result.slope_ci if result.slope_ci is not None else (None, None)
    return {
        "law": law,
        "slope": result.slope,
        "slope_ci_low": low,
        "slope_ci_high": high,
        "intercept": result.intercept,
        "residual_rms": result.residual_rms,
        "expected": result.expected,
        "expected_source": expected_source,
    }


def _rows(result: ScalingResult) -> list[dict]:
    rows = []
    for index, dimension in enumerate(result.d):
        rows.append({
            "d": int(dimension),
            "m0": 1 / math.sqrt(dimension),
            "kappa_max": float(result.kappa_max[index]),
            "kappa": float(result.kappa[index]),
            "eta": float(result.eta[index]),
            "steps": float(result.steps[index]),
            "steps_ci_low": _number(result.steps_ci[index, 0]),
            "steps_ci_high": _number(result.steps_ci[index, 1]),
            "samples": float(result.samples[index]),
            "t": float(result.t[index]),
            "max_steps": _number(result.max_steps[index]),
            "censored_fraction": float(result.censored_fraction[index]) if result.method == "reduced" else None,
        })
    return rows


def as_dict(result: ScalingResult, command: str) -> dict:
    """Build the JSON document of the scaling command (schema in the README)."""
    return {
        "student": result.student,
        "teacher": result.teacher,
        "mu": result.mu,
        "method": result.method,
        "method_description": describe_method(result),
        "n_runs": result.n_runs,
        "batch": result.batch,
        "fraction": result.fraction,
        "m_exit": result.m_exit,
        "information_exponent": result.information_exponent,
        "learning_rate_rule": result.rule,
        "units": dict(_UNITS),
        "rows": _rows(result),
        "fit": describe_fit(result),
        "command": command,
        "version": __version__,
    }


def format_json(result: ScalingResult, command: str) -> str:
    return json.dumps(as_dict(result, command), indent=2) + "\n"


def _header_lines(result: ScalingResult, command: str) -> list[str]:
    fit = describe_fit(result)
    interval = (f", 95% CI [{fit['slope_ci_low']:.4g}, {fit['slope_ci_high']:.4g}]"
                if fit["slope_ci_low"] is not None else "")
    setting = "no pre-training (spherical SGD on v)" if result.mu is None else f"pre-training mu = {result.mu:g} (LoRA)"
    return [
        f"scaling: student {result.student}, teacher {result.teacher}, {setting}, m_exit = {result.m_exit:g}",
        f"method: {describe_method(result)}",
        f"learning rate: {result.rule}, B = {result.batch}",
        "units: steps = SGD steps, samples = B * steps, t = eta * steps",
        f"fit: {fit['law']}: slope {result.slope:.4g}{interval}, residual rms {result.residual_rms:.3g}, "
        f"expected {result.expected:.4g} ({fit['expected_source']})",
        f"made by: {command} (lora-theory {__version__})",
    ]


def format_table(result: ScalingResult, command: str) -> str:
    lines = _header_lines(result, command)
    columns = ("d", "kappa", "eta", "steps", "steps_ci_low", "steps_ci_high", "samples", "t", "censored_fraction")
    rows = _rows(result)
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[index]) for line in cells)) for index, column in enumerate(columns)]
    lines.append("")
    lines.append("  ".join(column.rjust(width) for column, width in zip(columns, widths)))
    for line in cells:
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(line, widths)))
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def format_csv(result: ScalingResult, command: str) -> str:
    buffer = io.StringIO()
    for line in _header_lines(result, command):
        buffer.write(f"# {line}\n")
    rows = _rows(result)
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()


# ---------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------


def _draw_interval(axes, x: np.ndarray, y: np.ndarray, bounds: np.ndarray, label: str) -> None:
    """Draw points with error bars to the finite ``bounds`` (shape ``(n, 2)``), leaving undefined bounds out.

    A point whose upper bound is undefined (half or more of a resample censored) gets an open
    upward arrow, with its own legend entry.
    """
    points = axes.plot(x, y, "o", label=label)[0]
    for side, column in ((-1, 0), (1, 1)):
        bound = bounds[:, column]
        defined = np.isfinite(bound)
        if np.any(defined):
            length = np.abs(bound[defined] - y[defined])
            yerr = np.vstack([length, np.zeros_like(length)]) if side < 0 else np.vstack([np.zeros_like(length), length])
            axes.errorbar(x[defined], y[defined], yerr=yerr, fmt="none", ecolor=points.get_color(), capsize=3)
    open_upper = ~np.isfinite(bounds[:, 1])
    if np.any(open_upper):
        axes.plot(x[open_upper], y[open_upper], linestyle="none", marker="^", markersize=9, markerfacecolor="none",
                  markeredgecolor=points.get_color(), label="upper bound undefined (censored runs)")


def render_figure(result: ScalingResult, command: str) -> bytes:
    """Render steps against d on log-log axes with the fitted line, as PNG bytes.

    With pre-training a second panel shows t against (1/2) log d, where the
    fitted law is a straight line of slope tau(mu).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 1 if result.mu is None else 2
    figure = Figure(figsize=(7.0 * panels, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    figure.get_layout_engine().set(rect=(0.0, 0.04, 1.0, 0.96))
    axes = figure.add_subplot(1, panels, 1)

    # Left: escape steps against d, log-log, with the fitted law.
    label = "flow" if result.method == "flow" else f"reduced SGD, median of {result.n_runs} runs"
    if result.method == "reduced":
        _draw_interval(axes, result.d, result.steps, result.steps_ci, label + ", 95% CI")
    else:
        axes.plot(result.d, result.steps, "o", label=label)
    dense = np.geomspace(result.d[0], result.d[-1], 200)
    fit = describe_fit(result)
    name = "tau fit" if result.mu is not None else "exponent"
    axes.plot(dense, result.fitted_steps(dense), "-", color="gray",
              label=f"fit {fit['law']}: {name} {result.slope:.3g} (expected {result.expected:.3g})")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("dimension d")
    axes.set_ylabel("escape steps (samples = B * steps)")
    axes.legend(fontsize=7)

    # Right, with pre-training: t = eta * steps against (1/2) log d.
    if result.mu is not None:
        right = figure.add_subplot(1, panels, 2)
        half_log = 0.5 * np.log(result.d)
        if result.method == "reduced":
            _draw_interval(right, half_log, result.t, result.eta[:, None] * result.steps_ci, label + ", 95% CI")
        else:
            right.plot(half_log, result.t, "o", label=label)
        line = np.linspace(half_log[0], half_log[-1], 2)
        right.plot(line, result.intercept + result.slope * line, "-", color="gray",
                   label=f"slope {result.slope:.3g}, tau(mu) = {result.expected:.3g}")
        right.set_xlabel("(1/2) log d")
        right.set_ylabel("escape time t = eta * steps")
        right.legend(fontsize=7)

    setting = "no pre-training" if result.mu is None else f"mu = {result.mu:g}"
    figure.suptitle(f"student {result.student}, teacher {result.teacher}, {setting}\n{result.rule}, B = {result.batch}",
                    fontsize=8)

    provenance = f"made by: {command} (lora-theory {__version__})"
    figure.text(0.01, 0.005, provenance, fontsize=6, color="gray", ha="left", va="bottom")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150, metadata={"Software": f"lora-theory {__version__}", "Description": provenance})
    return buffer.getvalue()
