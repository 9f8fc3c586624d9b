"""The simulate and escape commands: trajectories and escape times from the flow and SGD."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _sgd_full, _sgd_reduced, outputs
from .._errors import GridError, ParameterError
from ..activations import Activation
from ..dynamics import integrate_flow
from ..grids import GRID_FORMS, parse_grid
from ..rates import escape_rates, validate_mu
from ..simulation import DEFAULT_MEMORY_LIMIT, SimulationResult, log_grid, simulate
from ._common import (
    EXIT_OK,
    PROGRAM,
    ComputationError,
    UsageError,
    integer,
    is_terminal,
    number,
    parse_spec,
    write_outputs,
)


def add_parsers(commands) -> None:
    """Add the simulate and escape commands."""
    _add_simulate_parser(commands)
    _add_escape_parser(commands)


# ---------------------------------------------------------------------------
# simulate and escape: options
# ---------------------------------------------------------------------------

#: Default number of independent SGD runs of the simulate and escape commands.
DEFAULT_SEEDS = 64

#: Escape threshold on |m| of the escape command.
DEFAULT_M_EXIT = 0.5

# Without --max-steps, the horizon is this many times the linear estimate of
# the escape time, at least _MIN_HORIZON_T, and _UNDEFINED_HORIZON_T where the
# estimate is undefined. These are the defaults of dynamics.integrate_flow.
_HORIZON_FACTOR = 20.0
_MIN_HORIZON_T = 100.0
_UNDEFINED_HORIZON_T = 1e4

# Bytes of CSV text per written number, for the memory estimate of simulate.
_CSV_BYTES_PER_NUMBER = 24


def _add_model_options(parser: argparse.ArgumentParser, mu_metavar: str, mu_help: str) -> None:
    """Add the options that set the model and the SGD protocol, shared by simulate and escape."""
    parser.add_argument("--student", required=True, metavar="SPEC", help="student activation, same syntax as for the tau command")
    parser.add_argument("--teacher", metavar="SPEC", help="teacher activation (default: the student)")
    parser.add_argument("--mu", required=True, metavar=mu_metavar, help=mu_help)

    # The SGD protocol.
    parser.add_argument("--d", required=True, type=integer, metavar="D", help="input dimension, an integer >= 3")
    parser.add_argument("--lr", required=True, type=number, metavar="ETA", help="learning rate eta > 0; time is t = eta * steps")
    parser.add_argument("--batch", required=True, type=integer, metavar="B", help="mini-batch size B >= 1; samples = B * steps")
    parser.add_argument("--seeds", type=integer, default=DEFAULT_SEEDS, metavar="K", help=f"independent SGD runs (default: {DEFAULT_SEEDS}); unused by the flow")

    # The start and the flow.
    parser.add_argument(
        "--m0",
        type=number,
        metavar="X",
        help="initial overlap <v, w*> in [-1, 1] (default: 1/sqrt(d) for the flow and the linear estimate, "
        "a uniformly random v for SGD)",
    )
    parser.add_argument("--u0", type=number, metavar="X", help="initial LoRA scale u (default: 1/d^2)")
    parser.add_argument(
        "--kappa",
        type=number,
        metavar="X",
        help="noise ratio of the flow, >= 0 (default: eta * d / B; 0 gives pure gradient flow). "
        "SGD gets its noise from --lr, --d and --batch, so --kappa is rejected for reduced and full",
    )
    parser.add_argument(
        "--seed",
        type=integer,
        default=0,
        metavar="S",
        help="root seed of the SGD runs, an integer >= 0 (default: 0); every mu of a grid uses the same runs' streams",
    )


def _add_simulate_parser(commands) -> None:
    simulate_parser = commands.add_parser(
        "simulate",
        help="write trajectories of (u, m) from the flow or from SGD",
        description=(
            "Integrate the summary-statistic flow, or simulate online SGD (the exact reduced sampler or the "
            "d-dimensional one), and write the trajectories of m, |m| and u: the values for the flow (with the "
            "loss), the mean and quantiles over runs for SGD. Time columns: step, samples = B * step and "
            "t = eta * step."
        ),
    )
    _add_model_options(simulate_parser, "M", "pre-training strength, one value in [0, 1]")
    simulate_parser.add_argument("--steps", required=True, type=integer, metavar="N", help="number of SGD steps >= 1; the flow runs to t = eta * N")
    simulate_parser.add_argument(
        "--method",
        required=True,
        choices=("flow", "reduced", "full"),
        help="flow: the d -> infinity limit at kappa; reduced: exact O(B)-per-step sampling of SGD; full: SGD with d-dimensional vectors",
    )
    simulate_parser.add_argument(
        "--record",
        choices=("log", "all"),
        default="log",
        help="steps written: log, about 100 steps spaced evenly in log(step) plus step 0 (default), or all, every step",
    )
    simulate_parser.add_argument("--output", metavar="CSV", help="write the CSV to this file instead of standard output")
    simulate_parser.add_argument("--plot", metavar="PNG", help="also write a PNG figure of the trajectories to this file")
    simulate_parser.set_defaults(handler=_run_simulate)


def _add_escape_parser(commands) -> None:
    escape_parser = commands.add_parser(
        "escape",
        help="tabulate escape times over a grid of mu",
        description=(
            "Compute, for each mu, the time at which |m| first reaches --m-exit: the linear estimate "
            "tau * log(m_exit / c) of the search phase, the flow's escape time, or the median (or mean) over "
            "escaped SGD runs with a 95% bootstrap interval. Times are in t = eta * steps, also given in "
            "steps and samples = B * steps. Runs that did not escape by --max-steps are censored and never "
            "counted as escaping."
        ),
    )
    _add_model_options(escape_parser, "GRID", f"pre-training strengths in [0, 1]: {GRID_FORMS}")
    escape_parser.add_argument(
        "--method",
        required=True,
        choices=("linear", "flow", "reduced", "full"),
        help="linear: estimate from the linearisation at (0, 0); flow: the d -> infinity limit; "
        "reduced or full: SGD runs as in the simulate command",
    )
    escape_parser.add_argument("--m-exit", type=number, default=DEFAULT_M_EXIT, metavar="X", help=f"escape threshold on |m|, in (0, 1] (default: {DEFAULT_M_EXIT})")
    escape_parser.add_argument(
        "--max-steps",
        type=integer,
        metavar="N",
        help="horizon in SGD steps; later escapes are censored (default: 20 times the linear estimate of the escape "
        "time from --m0 (default 1/sqrt(d)) and u0 = 0, at least t = 100, and t = 10^4 where the estimate is undefined)",
    )
    escape_parser.add_argument(
        "--statistic",
        choices=("median", "mean"),
        default="median",
        help="statistic of the escape times of SGD runs, over the escaped runs (default: median)",
    )
    escape_parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default: table)")
    escape_parser.add_argument("--output", metavar="PATH", help="write the output to this file instead of standard output")
    escape_parser.set_defaults(handler=_run_escape)


# ---------------------------------------------------------------------------
# simulate and escape: validation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ModelSetting:
    """Validated options shared by simulate and escape.

    ``m0``, ``u0`` and ``kappa`` are None when not given; see the
    ``start_*`` and ``flow_kappa`` properties for the defaults.
    """

    method: str
    student: Activation
    teacher: Activation
    mu: np.ndarray
    d: int
    eta: float
    batch: int
    seeds: int
    seed: int
    m0: float | None
    u0: float | None
    kappa: float | None

    @property
    def start_u0(self) -> float:
        """Initial LoRA scale of every method: --u0 or 1/d^2."""
        return 1.0 / self.d**2 if self.u0 is None else self.u0

    @property
    def deterministic_m0(self) -> float:
        """Initial overlap of the flow and the linear estimate: --m0 or 1/sqrt(d)."""
        return 1.0 / math.sqrt(self.d) if self.m0 is None else self.m0

    @property
    def flow_kappa(self) -> float:
        """Noise ratio of the flow: --kappa or eta d / B."""
        return self.eta * self.d / self.batch if self.kappa is None else self.kappa

    @property
    def is_sgd(self) -> bool:
        return self.method in ("reduced", "full")

    def describe_start(self) -> str:
        """Describe the initial state in words, for headers."""
        if self.is_sgd and self.m0 is None:
            return f"start: v uniform on the unit sphere (m0 random, variance 1/d), u0 = {self.start_u0:.6g}"
        return f"start: m0 = {self.deterministic_m0:.6g}, u0 = {self.start_u0:.6g}"

    def describe_kappa(self) -> str:
        """Describe the noise ratio in words, for headers."""
        if self.method == "linear":
            # The kappa term of dm/dt is of order m u^2, so it drops out of the linearisation.
            return f"kappa = {self.flow_kappa:.6g} (the linear estimate does not depend on it)"
        if self.is_sgd or self.kappa is None:
            return f"kappa = eta d / B = {self.eta * self.d / self.batch:.6g}"
        return f"kappa = {self.kappa:.6g} (set by --kappa; eta d / B = {self.eta * self.d / self.batch:.6g})"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def _model_setting(options: argparse.Namespace, single_mu: bool) -> _ModelSetting:
    """Validate the shared options, before any computation."""
    student = parse_spec("--student", options.student)
    teacher = parse_spec("--teacher", options.teacher) if options.teacher is not None else student

    # mu: one value or a grid, each in [0, 1].
    try:
        mu = validate_mu(parse_grid(options.mu))
    except (GridError, ParameterError) as error:
        raise UsageError(f"--mu {options.mu}: {error}") from error
    if single_mu:
        _require(mu.size == 1, f"--mu must be one value in [0, 1], got {options.mu!r}; the escape command takes a grid.")

    _require(options.d >= 3, f"--d must be an integer >= 3, got {options.d}: SGD on the sphere needs w* and two more directions.")
    _require(options.batch >= 1, f"--batch must be an integer >= 1, got {options.batch}.")
    _require(math.isfinite(options.lr) and options.lr > 0, f"--lr must be a finite learning rate > 0, got {options.lr!r}.")
    _require(options.seeds >= 1, f"--seeds must be an integer >= 1, got {options.seeds}.")
    _require(options.seed >= 0, f"--seed must be an integer >= 0, got {options.seed}.")
    if options.m0 is not None:
        _require(
            math.isfinite(options.m0) and -1.0 <= options.m0 <= 1.0,
            f"--m0 must lie in [-1, 1], got {options.m0!r}: it is the overlap <v, w*> of two unit vectors.",
        )
    if options.u0 is not None:
        _require(math.isfinite(options.u0), f"--u0 must be a finite number, got {options.u0!r}.")
    if options.kappa is not None:
        _require(math.isfinite(options.kappa) and options.kappa >= 0, f"--kappa must be a finite number >= 0, got {options.kappa!r}.")
        _require(
            options.method not in ("reduced", "full"),
            f"--kappa {options.kappa:g} applies to the flow only; --method {options.method} gets its noise from "
            f"--lr, --d and --batch (kappa = eta d / B = {options.lr * options.d / options.batch:.6g}). Drop --kappa.",
        )

    return _ModelSetting(
        method=options.method,
        student=student,
        teacher=teacher,
        mu=mu,
        d=options.d,
        eta=options.lr,
        batch=options.batch,
        seeds=options.seeds,
        seed=options.seed,
        m0=options.m0,
        u0=options.u0,
        kappa=options.kappa,
    )


def _format_bytes(size: float) -> str:
    return f"{size / 1024**3:.1f} GiB" if size >= 1024**3 else f"{size / 1024**2:.0f} MiB"


def _check_full_memory(setting: _ModelSetting) -> None:
    """Reject a full SGD run whose d-dimensional batch does not fit in the memory limit."""
    if setting.method != "full":
        return
    per_run = _sgd_full.bytes_per_run(setting.batch, setting.d)
    _require(
        per_run <= DEFAULT_MEMORY_LIMIT,
        f"--method full needs {_format_bytes(per_run)} per run at --d {setting.d} and --batch {setting.batch}, "
        f"above the limit of {_format_bytes(DEFAULT_MEMORY_LIMIT)}; use --method reduced, which samples the same "
        "process exactly without d-dimensional vectors.",
    )


# ---------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------


def _check_simulate_memory(setting: _ModelSetting, steps: int, n_records: int, n_columns: int, record: str) -> None:
    """Reject a simulation whose records and CSV text do not fit in the memory limit."""
    # Records of u and m per run, their copies in the quantile computation, and the CSV text.
    runs = 1 if setting.method == "flow" else setting.seeds
    needed = 8 * 4 * runs * n_records + _CSV_BYTES_PER_NUMBER * n_columns * n_records
    if setting.method == "full":
        needed += _sgd_full.bytes_per_run(setting.batch, setting.d)
    elif setting.method == "reduced":
        needed += _sgd_reduced.bytes_per_run(setting.batch)
    if needed <= DEFAULT_MEMORY_LIMIT:
        return

    if setting.method == "flow":
        request, fix = f"--steps {steps} with --record {record}", "use --record log or fewer --steps"
    else:
        request = f"--steps {steps} with --record {record} and --seeds {setting.seeds}"
        fix = "use --record log, or fewer --steps or --seeds" if record == "all" else "use fewer --seeds"
    raise UsageError(
        f"{request} needs about {_format_bytes(needed)} for the records and the CSV text, above the limit of "
        f"{_format_bytes(DEFAULT_MEMORY_LIMIT)}; {fix}."
    )


def _simulate_description(setting: _ModelSetting, steps: int, record_steps: np.ndarray, record: str) -> tuple[str, ...]:
    mu = float(setting.mu[0])
    grid = "every step" if record == "all" else f"step 0 and {record_steps.size - 1} steps spaced evenly in log(step)"
    if setting.method == "flow":
        title = f"lora-theory simulate: flow of (u, m), student {setting.student.spec}, teacher {setting.teacher.spec}, mu = {mu:g}"
        run_line = f"d = {setting.d}, eta = {setting.eta:g}, B = {setting.batch}, {setting.describe_kappa()}, t from 0 to eta * {steps} = {setting.eta * steps:.6g}"
    else:
        title = f"lora-theory simulate: {setting.method} SGD, student {setting.student.spec}, teacher {setting.teacher.spec}, mu = {mu:g}"
        run_line = (
            f"d = {setting.d}, eta = {setting.eta:g}, B = {setting.batch}, {setting.describe_kappa()}, "
            f"{setting.seeds} runs, seed {setting.seed}, {steps} steps"
        )
    return (title, run_line, setting.describe_start(), f"recorded: {grid}")


def _sgd_trajectories(setting: _ModelSetting, steps: int, record: str) -> tuple[SimulationResult, list[str]]:
    """Simulate SGD; return the result and warnings about diverged runs."""
    result = simulate(
        setting.student,
        setting.teacher,
        mu=float(setting.mu[0]),
        d=setting.d,
        eta=setting.eta,
        batch=setting.batch,
        steps=steps,
        n_runs=setting.seeds,
        seed=setting.seed,
        method=setting.method,
        m0=setting.m0,
        u0=setting.start_u0,
        record=record,
        on_divergence="report",
        progress=None,
    )
    warnings = []
    n_diverged = int(result.diverged_step.count())
    if n_diverged:
        warnings.append(
            f"{n_diverged} of {setting.seeds} runs diverged (non-finite u or m), the first at step "
            f"{int(result.diverged_step.min())}. They are left out of the statistics from that step on. "
            "A smaller --lr avoids this."
        )
    return result, warnings


def _sgd_columns(result: SimulationResult) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for quantity in ("m", "abs_m", "u"):
        columns[f"{quantity}_mean"] = result.mean(quantity)
        quantiles = result.quantiles(outputs.TRAJECTORY_QUANTILES, quantity)
        for level, values in zip(outputs.TRAJECTORY_QUANTILES, quantiles):
            columns[outputs.quantile_column(quantity, level)] = values
    return columns


def _flow_columns(setting: _ModelSetting, steps: int, record_steps: np.ndarray) -> dict[str, np.ndarray]:
    # m_exit = 1 so that integrate_flow covers the whole grid; it only stops early when |m0| >= m_exit.
    times = record_steps * setting.eta
    try:
        trajectory = integrate_flow(
            setting.student,
            setting.teacher,
            mu=float(setting.mu[0]),
            u0=setting.start_u0,
            m0=setting.deterministic_m0,
            kappa=setting.flow_kappa,
            t_max=steps * setting.eta,
            t_eval=times,
            m_exit=1.0,
        )
    except ArithmeticError as error:
        raise ComputationError(f"flow integration failed at mu = {float(setting.mu[0]):g}: {error}") from error
    if trajectory.t.size != times.size:
        raise ComputationError(f"flow integration returned {trajectory.t.size} time points instead of {times.size}: {trajectory.status}")
    return {"u": trajectory.u, "m": trajectory.m, "abs_m": np.abs(trajectory.m), "loss": trajectory.loss}


def _run_simulate(options: argparse.Namespace, command: str) -> int:
    # -- validation, before any computation ------------------------------
    if options.output is not None and options.plot is not None and Path(options.output).resolve() == Path(options.plot).resolve():
        raise UsageError(f"--output and --plot name the same file {options.output!r}. Give the figure its own path.")
    setting = _model_setting(options, single_mu=True)
    _require(options.steps >= 1, f"--steps must be an integer >= 1, got {options.steps}.")
    if setting.method == "flow" and setting.m0 is not None:
        # NOTE: integrate_flow returns a single point when |m0| >= m_exit, and m_exit cannot exceed 1.
        _require(abs(setting.m0) < 1.0, f"--m0 {setting.m0:g} is not supported by --method flow; use |m0| < 1.")
    _check_full_memory(setting)
    n_records = options.steps + 1 if options.record == "all" else log_grid(options.steps).size
    n_columns = 7 if setting.method == "flow" else 4 + 3 * (1 + len(outputs.TRAJECTORY_QUANTILES))
    _check_simulate_memory(setting, options.steps, n_records, n_columns, options.record)

    # -- computation -----------------------------------------------------
    warnings: list[str] = []
    if setting.method == "flow":
        record_steps = np.arange(options.steps + 1) if options.record == "all" else log_grid(options.steps)
        columns = _flow_columns(setting, options.steps, record_steps)
        runs = None
    else:
        result, warnings = _sgd_trajectories(setting, options.steps, options.record)
        record_steps = result.record_steps
        columns = _sgd_columns(result)
        runs = np.sum(np.isfinite(result.m), axis=0)
    table = outputs.TrajectoryTable(
        method=setting.method,
        student=setting.student.spec,
        teacher=setting.teacher.spec,
        mu=float(setting.mu[0]),
        eta=setting.eta,
        batch=setting.batch,
        steps=record_steps,
        runs=runs,
        columns=columns,
        description=_simulate_description(setting, options.steps, record_steps, options.record),
        log_grid=options.record == "log",
    )

    # -- output ----------------------------------------------------------
    text = outputs.format_trajectory_csv(table, command)
    figure = outputs.render_trajectory_figure(table, command) if options.plot is not None else None
    write_outputs(text, options.output, figure, options.plot)
    for warning in warnings:
        print(f"{PROGRAM} simulate: warning: {warning}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------
# escape
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _LinearEstimate:
    """Linear estimate of the escape time at one mu: ``time`` in t, or None with the reason in ``note``."""

    time: float | None
    note: str


def _linear_estimates(setting: _ModelSetting, m0: float, u0: float, m_exit: float) -> list[_LinearEstimate]:
    """Estimate the escape time from the linearisation of the flow at (u, m) = (0, 0), for each mu.

    The linear flow d(u, m)/dt = [[B, A], [A, 0]] (u, m) has eigenvectors
    (lambda / A, 1). The m-component of the unstable mode at t = 0 is
    c = (A lambda_plus u0 + A^2 m0) / (lambda_plus^2 + A^2), and it grows like
    exp(lambda_plus t), so |m| reaches m_exit at t = tau log(m_exit / |c|).
    For u0 = 0 this is rates.exit_time.
    """
    rates = escape_rates(setting.student, setting.teacher, mu=setting.mu)
    estimates = []
    for index, mu in enumerate(setting.mu):
        A, lambda_plus, tau = (float(np.asarray(values)[index]) for values in (rates.A, rates.lambda_plus, rates.tau))
        if abs(m0) >= m_exit:
            estimates.append(_LinearEstimate(0.0, ""))
            continue
        if not math.isfinite(tau):
            reason = rates.notes[index] or "tau is undefined"
            estimates.append(_LinearEstimate(None, f"linear rate undefined: {reason}"))
            continue

        unstable_overlap = (A * lambda_plus * u0 + A * A * m0) / (lambda_plus**2 + A * A)
        if unstable_overlap == 0:
            estimates.append(_LinearEstimate(None, "the start has no component along the unstable mode"))
            continue
        _require(
            abs(unstable_overlap) < m_exit,
            f"--u0 {u0:g} and --m0 {m0:g} put the unstable mode at |m| = {abs(unstable_overlap):.3g} >= --m-exit "
            f"{m_exit:g} at mu = {float(mu):g}, where the linear estimate does not apply; use --method flow.",
        )
        estimates.append(_LinearEstimate(tau * math.log(m_exit / abs(unstable_overlap)), ""))
    return estimates


def _horizon_steps(setting: _ModelSetting, max_steps: int | None, m_exit: float) -> list[int]:
    """Return the horizon in steps at each mu: --max-steps, or a multiple of the linear estimate from (0, m0)."""
    if max_steps is not None:
        return [max_steps] * setting.mu.size
    m0 = abs(setting.deterministic_m0)
    horizons = []
    if m0 == 0 or m0 >= m_exit:
        estimates = [_LinearEstimate(None, "")] * setting.mu.size
    else:
        estimates = _linear_estimates(setting, m0, 0.0, m_exit)
    for estimate in estimates:
        if estimate.time is None or not math.isfinite(estimate.time) or estimate.time <= 0:
            horizon_t = _UNDEFINED_HORIZON_T
        else:
            horizon_t = max(_HORIZON_FACTOR * estimate.time, _MIN_HORIZON_T)
        horizons.append(max(1, math.ceil(horizon_t / setting.eta)))
    return horizons


def _row_from_time(setting: _ModelSetting, mu: float, time: float | None, note: str) -> outputs.EscapeRow:
    """Build a row of the linear estimate or the flow: one time, no interval, censored fraction 0 or 1."""
    if time is None:
        return outputs.EscapeRow(mu, setting.method, None, None, None, None, None, 1.0, note)
    steps = time / setting.eta
    return outputs.EscapeRow(mu, setting.method, time, steps, steps * setting.batch, None, None, 0.0, note)


def _flow_row(setting: _ModelSetting, mu: float, horizon: int, m_exit: float) -> outputs.EscapeRow:
    try:
        trajectory = integrate_flow(
            setting.student,
            setting.teacher,
            mu=mu,
            u0=setting.start_u0,
            m0=setting.deterministic_m0,
            kappa=setting.flow_kappa,
            t_max=horizon * setting.eta,
            m_exit=m_exit,
        )
    except ArithmeticError as error:
        raise ComputationError(f"flow integration failed at mu = {mu:g}: {error}") from error
    note = "" if trajectory.escaped else f"the flow did not escape by t = {horizon * setting.eta:.6g} ({horizon} steps)"
    return _row_from_time(setting, mu, trajectory.escape_time, note)


def _sgd_row(setting: _ModelSetting, mu: float, horizon: int, m_exit: float, statistic: str) -> outputs.EscapeRow:
    result = simulate(
        setting.student,
        setting.teacher,
        mu=mu,
        d=setting.d,
        eta=setting.eta,
        batch=setting.batch,
        steps=horizon,
        n_runs=setting.seeds,
        seed=setting.seed,
        method=setting.method,
        m0=setting.m0,
        u0=setting.start_u0,
        m_exit=m_exit,
        record=None,
        stop_when_escaped=True,
        on_divergence="report",
        progress=None,
    )
    summary = result.escape_summary()

    def pick(time_summary):
        value = getattr(time_summary, statistic)
        interval = getattr(time_summary, f"{statistic}_ci")
        return value, interval

    time, interval = pick(summary.t)
    steps, _ = pick(summary.steps)
    samples, _ = pick(summary.samples)
    notes = []
    if summary.n_censored:
        notes.append(f"{summary.n_censored} of {summary.n_runs} runs censored at step {horizon}")
    if summary.n_diverged:
        first = int(result.diverged_step.min())
        notes.append(f"{summary.n_diverged} of {summary.n_runs} runs diverged, the first at step {first}")
    return outputs.EscapeRow(
        mu,
        setting.method,
        time,
        steps,
        samples,
        None if interval is None else interval[0],
        None if interval is None else interval[1],
        summary.censored_fraction,
        "; ".join(notes),
    )


def _escape_settings(setting: _ModelSetting, m_exit: float, statistic: str, max_steps: int | None) -> dict[str, object]:
    is_sgd = setting.is_sgd
    return {
        "student": setting.student.spec,
        "teacher": setting.teacher.spec,
        "method": setting.method,
        "d": setting.d,
        "eta": setting.eta,
        "batch": setting.batch,
        "m_exit": m_exit,
        "m0": setting.m0 if is_sgd else setting.deterministic_m0,
        "u0": setting.start_u0,
        "kappa": setting.eta * setting.d / setting.batch if is_sgd else setting.flow_kappa,
        "n_runs": setting.seeds if is_sgd else None,
        "seed": setting.seed if is_sgd else None,
        "statistic": statistic if is_sgd else None,
        "confidence": 0.95 if is_sgd else None,
        "max_steps": max_steps,
        "time_unit": "t = eta * steps",
    }


def _escape_description(setting: _ModelSetting, m_exit: float, statistic: str) -> tuple[str, ...]:
    lines = [
        f"escape times (first |m| >= {m_exit:g}): student {setting.student.spec}, teacher {setting.teacher.spec}, method {setting.method}",
        f"d = {setting.d}, eta = {setting.eta:g}, B = {setting.batch}, {setting.describe_kappa()}",
        setting.describe_start(),
        "time unit: escape_time in t = eta * steps; escape_steps in steps; escape_samples in samples = B * steps",
    ]
    if setting.is_sgd:
        lines.append(
            f"escape_time: {statistic} over the escaped runs of {setting.seeds} (seed {setting.seed}), "
            "with its 95% percentile-bootstrap interval [ci_low, ci_high]; censored runs are not counted as escaping"
        )
    elif setting.method == "linear":
        lines.append("escape_time: tau * log(m_exit / c), c = m-component of the unstable mode at t = 0; no interval")
    else:
        lines.append("escape_time: first time the flow reaches |m| = m_exit; no interval")
    return tuple(lines)


def _run_escape(options: argparse.Namespace, command: str) -> int:
    # -- validation, before any computation ------------------------------
    setting = _model_setting(options, single_mu=False)
    m_exit = options.m_exit
    _require(math.isfinite(m_exit) and 0.0 < m_exit <= 1.0, f"--m-exit must lie in (0, 1], got {m_exit!r}.")
    if options.max_steps is not None:
        _require(options.max_steps >= 1, f"--max-steps must be an integer >= 1, got {options.max_steps}.")
    _check_full_memory(setting)
    horizons = _horizon_steps(setting, options.max_steps, m_exit)
    linear = _linear_estimates(setting, setting.deterministic_m0, setting.start_u0, m_exit) if setting.method == "linear" else None

    # -- computation, one mu at a time -----------------------------------
    mu_values = [float(value) for value in setting.mu]
    if setting.method != "linear" and is_terminal():
        from tqdm.auto import tqdm

        mu_values = tqdm(mu_values, desc=f"escape ({setting.method})", unit="mu", file=sys.stderr)
    rows = []
    for index, mu in enumerate(mu_values):
        horizon = horizons[index]
        if linear is not None:
            estimate = linear[index]
            time = estimate.time
            note = estimate.note
            if time is not None and time > horizon * setting.eta:
                time, note = None, f"linear estimate t = {estimate.time:.6g} is beyond --max-steps {horizon}"
            rows.append(_row_from_time(setting, mu, time, note))
        elif setting.method == "flow":
            rows.append(_flow_row(setting, mu, horizon, m_exit))
        else:
            rows.append(_sgd_row(setting, mu, horizon, m_exit, options.statistic))

    # -- output ----------------------------------------------------------
    table = outputs.EscapeTable(
        rows=tuple(rows),
        settings=_escape_settings(setting, m_exit, options.statistic, options.max_steps),
        description=_escape_description(setting, m_exit, options.statistic),
    )
    if options.format == "csv":
        text = outputs.format_escape_csv(table, command)
    elif options.format == "json":
        text = outputs.format_escape_json(table)
    else:
        text = outputs.format_escape_table(table)
    write_outputs(text, options.output, None, None)
    return EXIT_OK

