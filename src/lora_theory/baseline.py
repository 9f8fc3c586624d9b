"""No pre-training: plain spherical SGD on a unit vector, and its largest learning rate.

Convention: state ``m = <v, w*>``, time ``t = eta * steps``, noise ratio
``kappa = eta d / B``. The flow (see
:class:`lora_theory.model.SphericalBaseline`) is

    dm/dt = -(1 - m^2) dL/dR (1, m) - (kappa / 2) m E[g^2](1, m).

The kappa term pulls m back towards 0. The flow escapes from ``m0`` to
``m_exit`` if and only if ``dm/dt > 0`` on all of ``[m0, m_exit]``, that is

    kappa < kappa_max(m0) = min_{m0 <= m <= m_exit} 2 (1 - m^2) (-dL/dR) / (m E[g^2]),

and the largest learning rate is ``eta_max = kappa_max B / d``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ._errors import ParameterError
from .activations import parse_activation
from .codegen import generate
from .derivation import derive
from .dynamics import FlowTrajectory, integrate
from .expectations import Q, R
from .escape import NOT_ESCAPED
from .model import SPHERICAL_BASELINE, kappa, m
from .simulation import DEFAULT_MEMORY_LIMIT, RunOutcomes, SimulationDivergedError

__all__ = [
    "BaselineFunctions",
    "BaselineSimulationParameters",
    "BaselineSimulationResult",
    "ScalingSweep",
    "baseline_functions",
    "integrate_baseline",
    "largest_noise_ratio",
    "scaling_sweep",
    "simulate_baseline",
]

# Target size of the working buffers of one chunk of runs, as for the LoRA samplers.
_CHUNK_BYTES = 64 * 1024**2


@dataclass(frozen=True)
class BaselineFunctions:
    """``dm_dt(m, kappa)``, ``loss(m)``, ``gradient_second_moment(m)`` and the escape drive ``-dL/dR(1, m)``."""

    dm_dt: object
    loss: object
    gradient_second_moment: object
    drive: object


@functools.lru_cache(maxsize=64)
def _baseline_functions(student_canonical: str, teacher_canonical: str, student, teacher) -> BaselineFunctions:
    derivation = derive(student, teacher)
    model = SPHERICAL_BASELINE
    field = model.vector_field({Q: derivation.loss_Q, R: derivation.loss_R}, derivation.gradient_second_moment)
    return BaselineFunctions(
        dm_dt=generate(field[m], [m, kappa], "dm_dt"),
        loss=generate(model.substitute(derivation.loss), [m], "loss"),
        gradient_second_moment=generate(model.substitute(derivation.gradient_second_moment), [m], "gradient_second_moment"),
        drive=generate(-model.substitute(derivation.loss_R), [m], "drive"),
    )


def baseline_functions(student, teacher=None) -> BaselineFunctions:
    """Generated callables of the spherical baseline for a student/teacher pair."""
    student = parse_activation(student)
    teacher = student if teacher is None else parse_activation(teacher)
    return _baseline_functions(student.canonical, teacher.canonical, student, teacher)


def largest_noise_ratio(student, teacher=None, *, m0: float, m_exit: float = 0.5, points: int = 4001) -> float:
    """``kappa_max(m0)``: the flow escapes from ``m0`` to ``m_exit`` exactly when ``kappa < kappa_max``.

    The minimum over ``[m0, m_exit]`` is taken on a log-spaced grid of
    ``points`` values (m0 and m_exit included). Returns 0 when the drive
    ``-dL/dR`` is not positive somewhere on the path (no escape at any kappa).
    """
    if not (0 < m0 < m_exit <= 1):
        raise ParameterError(f"need 0 < m0 < m_exit <= 1, got m0 = {m0!r}, m_exit = {m_exit!r}")
    functions = baseline_functions(student, teacher)
    grid = np.geomspace(m0, m_exit, points)
    drive = functions.drive(grid)
    second_moment = functions.gradient_second_moment(grid)
    if np.any(drive <= 0):
        return 0.0
    ratio = 2 * (1 - grid**2) * drive / (grid * second_moment)
    return float(np.min(ratio))


def integrate_baseline(
    student, teacher=None, *, m0: float, kappa: float = 0.0, t_max: float = 1e6, m_exit: float = 0.5, t_eval=None
) -> FlowTrajectory:
    """Integrate the baseline flow from ``m0`` (time t = eta * steps)."""
    if not -1 <= m0 <= 1:
        raise ParameterError(f"m0 = {m0!r} is outside [-1, 1]; the overlap of two unit vectors lies in [-1, 1]")
    if not (np.isfinite(kappa) and kappa >= 0):
        raise ParameterError(f"kappa must be finite and >= 0, got {kappa!r}")
    functions = baseline_functions(student, teacher)

    def velocity(t, state):
        return np.array([float(functions.dm_dt(state[0], kappa))])

    return integrate(velocity, [m0], t_max=t_max, t_eval=t_eval, m_exit=m_exit)


@dataclass(frozen=True)
class ScalingSweep:
    """Escape of the baseline flow against the dimension d, with the learning rate at a fixed fraction of its maximum.

    Arrays have the shape ``(n,)`` of ``d``. For each d: ``m0 = 1/sqrt(d)``,
    ``eta = fraction * kappa_max(m0) * batch / d``, ``kappa = eta d / batch``,
    ``t`` the flow's escape time (t = eta * steps) and ``steps = t / eta``.
    ``exponent`` is the least-squares slope of log(steps) against log(d)
    (of log(steps / log d) when ``divide_log`` is set, as for k* = 2).
    Obtained from the flow, not from simulations.
    """

    teacher: str
    d: np.ndarray
    eta: np.ndarray
    kappa: np.ndarray
    t: np.ndarray
    steps: np.ndarray
    exponent: float
    divide_log: bool


def scaling_sweep(student, teacher=None, *, d_values, fraction: float = 0.5, batch: int = 1, m_exit: float = 0.5) -> ScalingSweep:
    """Escape steps of the baseline flow over a grid of dimensions (see :class:`ScalingSweep`)."""
    d_values = np.asarray(d_values, dtype=float)
    if d_values.ndim != 1 or d_values.size < 2 or np.any(d_values < 3) or np.any(~np.isfinite(d_values)):
        raise ParameterError(f"d_values must be at least two finite dimensions >= 3, got {d_values.tolist()}")
    if not 0 < fraction < 1:
        raise ParameterError(f"fraction of the largest learning rate must lie in (0, 1), got {fraction!r}")
    if batch < 1:
        raise ParameterError(f"batch must be >= 1, got {batch!r}")

    from .analysis import information_exponent

    reference = parse_activation(student if teacher is None else teacher)
    exponent_k = information_exponent(reference)
    eta = np.empty(d_values.size)
    times = np.empty(d_values.size)
    for index, d in enumerate(d_values):
        m0 = 1 / np.sqrt(d)
        kappa_value = fraction * largest_noise_ratio(student, teacher, m0=m0, m_exit=m_exit)
        eta[index] = kappa_value * batch / d
        trajectory = integrate_baseline(student, teacher, m0=m0, kappa=kappa_value, t_max=1e3 * d**2, m_exit=m_exit)
        if not trajectory.escaped:
            raise ArithmeticError(f"the baseline flow did not escape at d = {d:g} ({trajectory.status})")
        times[index] = trajectory.escape_time

    steps = times / eta
    divide_log = exponent_k == 2
    response = np.log(steps / np.log(d_values)) if divide_log else np.log(steps)
    slope = float(np.polyfit(np.log(d_values), response, 1)[0])
    return ScalingSweep(reference.spec, d_values, eta, eta * d_values / batch, times, steps, slope, divide_log)


# ---------------------------------------------------------------------------
# SGD of the baseline
# ---------------------------------------------------------------------------

#: Names of the baseline samplers accepted by :func:`simulate_baseline`.
BASELINE_METHODS = ("reduced", "full")


@dataclass(frozen=True)
class BaselineSimulationParameters:
    """Everything that determines a baseline simulation, after validation.

    ``seed`` is the entropy of the root :class:`numpy.random.SeedSequence`.
    ``m0`` is ``None`` when each run starts from a uniformly random ``v``.
    ``backend`` is the kernel that ran: ``"numpy"`` or ``"numba"`` for the
    reduced sampler, always ``"numpy"`` for the full one.
    """

    method: str
    student: str
    teacher: str
    d: int
    eta: float
    batch: int
    steps: int
    n_runs: int
    seed: int
    m0: float | None
    m_exit: float
    backend: str

    @property
    def kappa(self) -> float:
        """Noise ratio ``kappa = eta d / B`` of the flow limit."""
        return self.eta * self.d / self.batch


@dataclass(frozen=True, eq=False)
class BaselineSimulationResult(RunOutcomes):
    """Recorded overlaps and escape steps of a set of baseline SGD runs.

    ``m`` has shape ``(n_runs, n_records)``: the overlap of run ``r`` at
    ``record_steps[j]``, nan after the run's ``last_step``. ``initial_m``,
    ``final_m`` and ``last_step`` have shape ``(n_runs,)``. ``escape_step``
    (first step with ``|m| >= m_exit``) and ``diverged_step`` (first
    non-finite overlap) are masked arrays, masked where the event did not
    happen; a run with neither is censored at ``steps``.
    """

    parameters: BaselineSimulationParameters
    record_steps: np.ndarray
    m: np.ndarray
    initial_m: np.ndarray
    final_m: np.ndarray
    last_step: np.ndarray
    escape_step: np.ma.MaskedArray
    diverged_step: np.ma.MaskedArray


def simulate_baseline(
    student,
    teacher=None,
    *,
    d: int,
    eta: float,
    batch: int = 1,
    steps: int,
    n_runs: int = 1,
    seed: int | None = 0,
    method: str = "reduced",
    m0: float | None = None,
    m_exit: float = 0.5,
    record="log",
    stop_when_escaped: bool = False,
    on_divergence: str = "raise",
    backend: str = "auto",
    progress: bool | None = None,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
) -> BaselineSimulationResult:
    """Simulate one-pass spherical SGD of the no-pre-training baseline for ``n_runs`` independent runs.

    The student is ``yhat = sigma(<v, x>)`` with a unit vector ``v`` (no
    ``w0``, no scale ``u``), trained by SGD on ``(yhat - y)^2 / 2`` with step
    ``eta``, a fresh batch of ``B`` samples per step and ``v`` renormalised
    after every step; ``m = <v, w*>``. Time units: ``steps``, samples
    ``= B * steps``, ``t = eta * steps``.

    ``method="reduced"`` samples the law of ``m`` exactly at ``O(B)`` cost
    per step (see :mod:`lora_theory._sgd_baseline`); ``method="full"``
    simulates the d-dimensional vectors. Run ``r`` draws from a generator
    seeded by ``numpy.random.SeedSequence(seed).spawn(n_runs)[r]``, so its
    trajectory does not depend on the other runs.

    ``backend`` selects the reduced kernel: ``"numba"`` (needs numba and
    polynomial activations), ``"numpy"``, or ``"auto"`` for numba where it
    applies. Both give bit-identical results. The remaining arguments mean
    what they mean for :func:`lora_theory.simulation.simulate`; ``m0``
    defaults to the overlap of a uniformly random ``v``.

    Raises
    ------
    ParameterError
        For a parameter outside its domain or a simulation beyond ``memory_limit``.
    SimulationDivergedError
        With ``on_divergence="raise"``, when a run's overlap becomes non-finite.
    """
    from . import _sgd_baseline
    from .simulation import _integer, _progress_bar, _record_size, _record_steps, validate_protocol

    # -- validation, before any work --------------------------------------
    if method not in BASELINE_METHODS:
        raise ParameterError(f"method must be one of {BASELINE_METHODS}, got {method!r}.")
    if backend not in _sgd_baseline.BACKENDS:
        raise ParameterError(f"backend must be one of {_sgd_baseline.BACKENDS}, got {backend!r}.")
    student_activation = parse_activation(student)
    teacher_activation = student_activation if teacher is None else parse_activation(teacher)
    d, eta, batch, steps, n_runs, seed, m0, m_exit = validate_protocol(
        d=d, eta=eta, batch=batch, steps=steps, n_runs=n_runs, seed=seed, m0=m0, m_exit=m_exit, on_divergence=on_divergence
    )
    memory_limit = _integer("memory_limit", memory_limit, 1, "pass a number of bytes")

    activations = _sgd_baseline.BaselineActivations(student_activation, teacher_activation)
    if method == "full":
        chosen_backend = "numpy"
    elif backend == "numba":
        if not _sgd_baseline.numba_available():
            raise ParameterError("backend='numba' needs the numba package; install lora-theory[fast] or use backend='numpy'.")
        if not activations.polynomial:
            raise ParameterError(
                f"backend='numba' needs polynomial activations, got student {student_activation.spec!r} and "
                f"teacher {teacher_activation.spec!r}; use backend='numpy' or 'auto'."
            )
        chosen_backend = "numba"
    elif backend == "auto" and activations.polynomial and _sgd_baseline.numba_available():
        chosen_backend = "numba"
    else:
        chosen_backend = "numpy"

    # Memory: records of m plus the working buffers of one chunk of runs.
    n_records = _record_size(record, steps)
    fixed = 8 * n_runs * (n_records + 10)
    per_run = _sgd_baseline.full_bytes_per_run(batch, d) if method == "full" else _sgd_baseline.bytes_per_run(batch)
    if fixed + per_run > memory_limit:
        raise ParameterError(
            f"the simulation needs {(fixed + per_run) / 1024**2:.0f} MiB for n_runs = {n_runs}, {n_records} recorded "
            f"steps, batch = {batch} and d = {d}, above memory_limit = {memory_limit / 1024**2:.0f} MiB; record fewer "
            "steps, lower n_runs or batch, use method='reduced', or raise memory_limit."
        )
    runs_per_chunk = int(max(1, min(n_runs, (memory_limit - fixed) // per_run, _CHUNK_BYTES // per_run)))
    record_steps = _record_steps(record, steps)

    root = np.random.SeedSequence(seed)
    parameters = BaselineSimulationParameters(
        method=method, student=student_activation.spec, teacher=teacher_activation.spec, d=d, eta=eta, batch=batch,
        steps=steps, n_runs=n_runs, seed=int(root.entropy), m0=m0, m_exit=m_exit, backend=chosen_backend,
    )

    # -- chunks of runs -----------------------------------------------------
    records = np.full((n_runs, record_steps.size), np.nan)
    initial_m = np.empty(n_runs)
    final_m = np.empty(n_runs)
    last_step = np.empty(n_runs, dtype=np.int64)
    escape_step = np.empty(n_runs, dtype=np.int64)
    diverged_step = np.empty(n_runs, dtype=np.int64)
    run_seeds = root.spawn(n_runs)
    bar = _progress_bar(progress, n_runs * steps, f"{method} baseline SGD")
    try:
        for start in range(0, n_runs, runs_per_chunk):
            runs = slice(start, min(start + runs_per_chunk, n_runs))
            generators = [np.random.Generator(np.random.PCG64(sequence)) for sequence in run_seeds[runs]]
            if method == "full":
                sampler = _sgd_baseline.FullBaselineSampler(activations, generators, d=d, eta=eta, batch=batch, m0=m0)
            else:
                sampler = _sgd_baseline.ReducedBaselineSampler(
                    activations, generators, d=d, eta=eta, batch=batch, m0=m0, backend=chosen_backend
                )
            state = _sgd_baseline.RunState(sampler.m0, record_steps, m_exit, stop_when_escaped)
            state.observe(0)
            done = 0
            with np.errstate(all="ignore"):
                while done < steps and state.active.any():
                    n_steps = min(sampler.block, steps - done)
                    sampler.advance(state, done, n_steps)
                    done += n_steps
                    bar.update(n_steps * (runs.stop - runs.start))
            bar.update((steps - done) * (runs.stop - runs.start))
            state.finish(steps)

            diverged = np.flatnonzero(state.diverged_step != _sgd_baseline.NO_STEP)
            if diverged.size and on_divergence == "raise":
                run = int(diverged[0])
                raise SimulationDivergedError(
                    f"baseline SGD run {start + run} diverged at step {state.diverged_step[run]} (method {method!r}, "
                    f"student {parameters.student!r}, teacher {parameters.teacher!r}, d = {d}, eta = {eta}, "
                    f"batch = {batch}, seed = {parameters.seed}); lower eta, or pass on_divergence='report'.",
                    run=start + run, step=int(state.diverged_step[run]), u=1.0, m=float(state.m[run]),
                    parameters=parameters,
                )
            records[runs] = state.records
            initial_m[runs] = state.initial_m
            final_m[runs] = state.m
            last_step[runs] = state.last_step
            escape_step[runs] = state.escape_step
            diverged_step[runs] = state.diverged_step
    finally:
        bar.close()

    return BaselineSimulationResult(
        parameters=parameters,
        record_steps=record_steps,
        m=records,
        initial_m=initial_m,
        final_m=final_m,
        last_step=last_step,
        escape_step=np.ma.masked_equal(escape_step, NOT_ESCAPED),
        diverged_step=np.ma.masked_equal(diverged_step, NOT_ESCAPED),
    )
