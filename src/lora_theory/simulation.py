"""Online SGD of rank-1 LoRA on a single-index model, full or exactly reduced.

Setting (G. Nwemadji, B. Loureiro, J. Barbier, "When pre-training hurts
LoRA fine-tuning: a dynamical analysis via single-index models",
arXiv:2602.02855, 2026): inputs ``x ~ N(0, I_d)``, teacher
``y = sigma*(<w*, x>)`` with ``|w*| = 1``, aligned pre-trained weight
``w0 = mu w*`` and student ``yhat = sigma(<w0 + u v, x>)`` with a scalar
``u`` and a unit vector ``v``. Each step draws a fresh batch of ``B``
samples, takes a gradient step of size ``eta`` on the batch mean of
``(yhat - y)^2 / 2`` in ``u`` and ``v`` at once, and renormalises ``v``.
The state is summarised by ``(u, m)`` with the overlap ``m = <v, w*>``.

Two samplers of the same process:

``method="full"``
    the d-dimensional SGD in plain NumPy, ``O(B d)`` work per step and run;
``method="reduced"``
    exact sampling of the law of ``(u, m)`` from ``2B`` normals and one
    chi-square value per step, ``O(B)`` work at any ``d >= 3``.

Time units: ``steps`` counts SGD steps (step 0 is the initial state),
``samples = B * steps`` and ``t = eta * steps`` (the time of the
summary-statistic flow).

Randomness: run ``r`` draws from its own generator seeded by
``numpy.random.SeedSequence(seed).spawn(n_runs)[r]``. Its trajectory is
therefore the same whether it is simulated alone or with other runs, and
however the runs are split into chunks. The two methods consume their
streams differently, so the same seed gives different trajectories.

Symbols and identifiers
-----------------------
========  ==============  ===========================================
symbol    identifier      meaning
========  ==============  ===========================================
sigma     ``student``     student activation
sigma*    ``teacher``     teacher activation (defaults to the student)
mu        ``mu``          pre-training strength, ``w0 = mu w*``
d         ``d``           input dimension
eta       ``eta``         learning rate
B         ``batch``       mini-batch size
u, m      ``u``, ``m``    LoRA scale and overlap ``<v, w*>``
m_exit    ``m_exit``      threshold of ``|m|`` that defines escape
========  ==============  ===========================================
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import _sgd_compiled, _sgd_full, _sgd_reduced
from ._errors import ParameterError
from ._sgd_common import SGDProblem
from .activations import Activation, parse_activation
from .escape import NOT_ESCAPED, EscapeSummary, TimeSummary, summarize_escape

__all__ = [
    "simulate",
    "log_grid",
    "SimulationParameters",
    "SimulationResult",
    "SimulationDivergedError",
    "EscapeSummary",
    "TimeSummary",
    "summarize_escape",
    "NOT_ESCAPED",
    "DEFAULT_MEMORY_LIMIT",
    "METHODS",
    "validate_protocol",
    "BACKENDS",
]

#: Names of the samplers accepted by :func:`simulate`.
METHODS = ("reduced", "full")

#: Steps of the reduced sampler accepted by :func:`simulate` (see its ``backend`` parameter).
BACKENDS = ("auto", "numpy", "numba")

#: Default cap, in bytes, on the memory a simulation may allocate (2 GiB).
DEFAULT_MEMORY_LIMIT = 2 * 1024**3

# Target size of the working buffers of one chunk of runs. Larger chunks do
# not run faster once the per-run work dwarfs the Python loop, and smaller
# buffers stay in cache.
_CHUNK_BUFFER_BYTES = 64 * 1024**2

# Number of points of the default logarithmic record grid.
_LOG_GRID_POINTS = 100

_QUANTITIES = ("u", "m", "abs_m")


class SimulationDivergedError(ArithmeticError):
    """A simulated run reached a non-finite ``u`` or ``m``.

    Attributes ``run``, ``step``, ``u``, ``m`` and ``parameters`` describe the
    first run found non-finite and the simulation it belongs to.
    """

    def __init__(self, message: str, *, run: int, step: int, u: float, m: float, parameters: "SimulationParameters"):
        super().__init__(message)
        self.run = run
        self.step = step
        self.u = u
        self.m = m
        self.parameters = parameters


@dataclass(frozen=True)
class SimulationParameters:
    """Everything that determines a simulation, after validation.

    ``seed`` is the entropy of the root :class:`numpy.random.SeedSequence`,
    also when it was drawn fresh, so passing it back reproduces the runs.
    ``m0`` is ``None`` when each run starts from a uniformly random ``v``.
    """

    method: str
    student: str
    teacher: str
    mu: float
    d: int
    eta: float
    batch: int
    steps: int
    n_runs: int
    seed: int
    m0: float | None
    u0: float
    m_exit: float
    backend: str = "numpy"

    @property
    def kappa(self) -> float:
        """Noise ratio ``kappa = eta d / B`` of the flow limit."""
        return self.eta * self.d / self.batch


class RunOutcomes:
    """Escape, censoring and their statistics, shared by the results of the SGD samplers.

    Needs the attributes ``escape_step`` and ``diverged_step`` (masked
    arrays of shape (n_runs,)) and ``parameters`` with ``batch``, ``eta``
    and ``steps``.
    """

    @property
    def escaped(self) -> np.ndarray:
        """Boolean mask of the runs that escaped, shape (n_runs,)."""
        return ~np.ma.getmaskarray(self.escape_step)

    @property
    def censored(self) -> np.ndarray:
        """Boolean mask of the runs that neither escaped nor diverged, shape (n_runs,)."""
        return np.ma.getmaskarray(self.escape_step) & np.ma.getmaskarray(self.diverged_step)

    def escape_summary(self, confidence: float = 0.95, n_bootstrap: int = 2000, seed: int = 0) -> EscapeSummary:
        """Escape statistics in steps, samples and ``t`` (see :func:`summarize_escape`)."""
        return summarize_escape(
            self.escape_step,
            batch=self.parameters.batch,
            eta=self.parameters.eta,
            max_steps=self.parameters.steps,
            diverged_step=self.diverged_step,
            confidence=confidence,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )


@dataclass(frozen=True, eq=False)
class SimulationResult(RunOutcomes):
    """Recorded trajectories and escape steps of a set of runs.

    Attributes
    ----------
    parameters : SimulationParameters
    record_steps : ndarray of int, shape (n_records,)
        Steps at which the state was recorded, increasing.
    u, m : ndarray of float, shape (n_runs, n_records)
        The state of run ``r`` at ``record_steps[j]`` is ``(u[r, j], m[r, j])``.
        Entries after a run's ``last_step`` are nan.
    initial_m : ndarray, shape (n_runs,)
        Overlap at step 0 of each run.
    final_u, final_m : ndarray, shape (n_runs,)
        State at each run's ``last_step``; non-finite for diverged runs.
    last_step : ndarray of int, shape (n_runs,)
        Last simulated step of each run: ``steps``, the escape step when
        simulating with ``stop_when_escaped``, or the step of divergence.
    escape_step : numpy.ma.MaskedArray of int, shape (n_runs,)
        First step with ``|m| >= m_exit``; masked (fill value
        :data:`NOT_ESCAPED`) for runs that did not escape.
    diverged_step : numpy.ma.MaskedArray of int, shape (n_runs,)
        First step with a non-finite state; masked for runs that stayed finite.
    """

    parameters: SimulationParameters
    record_steps: np.ndarray
    u: np.ndarray
    m: np.ndarray
    initial_m: np.ndarray
    final_u: np.ndarray
    final_m: np.ndarray
    last_step: np.ndarray
    escape_step: np.ma.MaskedArray
    diverged_step: np.ma.MaskedArray

    @property
    def record_samples(self) -> np.ndarray:
        """Recorded times in samples, ``B * steps``."""
        return self.record_steps * self.parameters.batch

    @property
    def record_t(self) -> np.ndarray:
        """Recorded times in flow time, ``t = eta * steps``."""
        return self.record_steps * self.parameters.eta

    def _values(self, quantity: str) -> np.ndarray:
        if quantity not in _QUANTITIES:
            raise ParameterError(f"quantity must be one of {_QUANTITIES}, got {quantity!r}.")
        if quantity == "u":
            return self.u
        if quantity == "m":
            return self.m
        return np.abs(self.m)

    def mean(self, quantity: str = "m") -> np.ndarray:
        """Mean over runs at each recorded step, shape (n_records,).

        ``quantity`` is ``"u"``, ``"m"`` (signed overlap) or ``"abs_m"``. Runs
        whose entry is nan at a step (diverged, or stopped after escaping)
        are left out at that step. A step with no finite entry gives nan.
        """
        values = self._values(quantity)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(values, axis=0)

    def quantiles(self, q, quantity: str = "m") -> np.ndarray:
        """Quantiles over runs at each recorded step, shape ``np.shape(q) + (n_records,)``.

        Nan entries are left out as in :meth:`mean`.
        """
        levels = np.asarray(q, dtype=float)
        if not np.all((levels >= 0) & (levels <= 1)):
            raise ParameterError(f"quantile levels q must lie in [0, 1], got {q!r}.")
        values = self._values(quantity)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanquantile(values, levels, axis=0)


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _integer(name: str, value, minimum: int, fix: str) -> int:
    """Validate an integer parameter; integral floats such as 1e6 are accepted."""
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {_describe(value)}; {fix}.")
    if isinstance(value, numbers.Integral):
        result = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        result = int(value)
    else:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {_describe(value)}; {fix}.")
    if result < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {_describe(value)}; {fix}.")
    return result


def _real(name: str, value, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite real number, got {_describe(value)}; {fix}.")
    return float(value)


def log_grid(steps: int, n_points: int = _LOG_GRID_POINTS) -> np.ndarray:
    """Record steps spaced evenly in log(step) from 1 to ``steps``, plus step 0.

    Rounding to integers merges close points, so the grid has at most
    ``n_points + 1`` distinct, increasing entries.
    """
    steps = _integer("steps", steps, 0, "pass the number of SGD steps")
    n_points = _integer("n_points", n_points, 1, "pass the number of grid points")
    if steps == 0:
        return np.zeros(1, dtype=np.int64)
    grid = np.rint(np.geomspace(1, steps, n_points)).astype(np.int64)
    return np.unique(np.concatenate(([0], grid)))


def _record_size(record, steps: int) -> int:
    """Number of recorded steps, known before the grid is built so memory can be checked first."""
    return steps + 1 if isinstance(record, str) and record == "all" else _record_steps(record, steps).size


def _record_steps(record, steps: int) -> np.ndarray:
    if record is None:
        return np.zeros(0, dtype=np.int64)
    if isinstance(record, str):
        if record == "all":
            return np.arange(steps + 1, dtype=np.int64)
        if record == "log":
            return log_grid(steps)
        raise ParameterError(
            f"record must be 'all', 'log', None or a sequence of steps, got {record!r}; "
            "use log_grid(steps, n_points) for a logarithmic grid of another size."
        )
    values = np.asarray(record)
    if values.ndim != 1 or not (np.issubdtype(values.dtype, np.integer) or values.size == 0):
        raise ParameterError(f"record must be a 1-d sequence of integer steps, got {record!r}.")
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > steps):
        raise ParameterError(
            f"record steps must lie in [0, steps] = [0, {steps}], got values from {values.min()} to {values.max()}; "
            "drop the steps outside or raise steps."
        )
    return np.unique(values)


def _check_memory(
    method: str, n_runs: int, n_records: int, batch: int, d: int, memory_limit: int
) -> int:
    """Return the number of runs per chunk, or raise when one run does not fit in ``memory_limit``."""
    # Records of u and m plus about ten state arrays of shape (n_runs,).
    fixed = 8 * n_runs * (2 * n_records + 10)
    if method == "full":
        per_run = _sgd_full.bytes_per_run(batch, d)
        alternative = "or use method='reduced', which needs no d-dimensional vectors"
    else:
        per_run = _sgd_reduced.bytes_per_run(batch)
        alternative = "or lower batch"

    if fixed > memory_limit:
        raise ParameterError(
            f"the records need {fixed / 1024**2:.0f} MiB for n_runs = {n_runs} and {n_records} recorded steps, "
            f"above memory_limit = {memory_limit / 1024**2:.0f} MiB; record fewer steps (record='log' or a "
            "shorter sequence), lower n_runs, or raise memory_limit."
        )
    if fixed + per_run > memory_limit:
        raise ParameterError(
            f"one {method} run needs {per_run / 1024**2:.0f} MiB of working memory at batch = {batch}, d = {d}, "
            f"which with the records exceeds memory_limit = {memory_limit / 1024**2:.0f} MiB; raise "
            f"memory_limit {alternative}."
        )
    budget = min(_CHUNK_BUFFER_BYTES, memory_limit - fixed)
    return int(max(1, min(n_runs, budget // per_run)))


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(progress: bool | None, total: int, description: str):
    """Create a tqdm bar on stderr when requested or, by default, when stderr is a terminal."""
    if progress is False:
        return _NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress:
            warnings.warn("progress=True needs the tqdm package, which is not installed; running without a progress bar.", RuntimeWarning, stacklevel=3)
        return _NoProgress()
    if progress is None and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return _NoProgress()
    return tqdm(total=total, desc=description, unit="run-step", unit_scale=True, file=sys.stderr)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def validate_protocol(*, d, eta, batch, steps, n_runs, seed, m0, m_exit, on_divergence) -> tuple:
    """Check the SGD protocol shared by every sampler and return it as ``(d, eta, batch, steps, n_runs, seed, m0, m_exit)``.

    Raises :class:`ParameterError` naming the first value outside its domain.
    """
    d = _integer("d", d, 3, "the reduced sampler needs w* and two further directions, so use d >= 3")
    eta = _real("eta", eta, "pass a positive learning rate")
    if eta <= 0:
        raise ParameterError(f"eta must be > 0, got {eta!r}; pass a positive learning rate.")
    batch = _integer("batch", batch, 1, "use a mini-batch of at least one sample")
    steps = _integer("steps", steps, 0, "pass the number of SGD steps")
    n_runs = _integer("n_runs", n_runs, 1, "simulate at least one run")
    if seed is not None:
        seed = _integer("seed", seed, 0, "pass a non-negative integer or None for fresh entropy")
    if m0 is not None:
        m0 = _real("m0", m0, "pass an overlap in [-1, 1] or None for a uniformly random v")
        if not -1.0 <= m0 <= 1.0:
            raise ParameterError(f"m0 must lie in [-1, 1], got {m0!r}; it is the overlap <v, w*> of unit vectors.")
    m_exit = _real("m_exit", m_exit, "pass an escape threshold in (0, 1]")
    if not 0.0 < m_exit <= 1.0:
        raise ParameterError(f"m_exit must lie in (0, 1], got {m_exit!r}; the default is 0.5.")
    if on_divergence not in ("raise", "report"):
        raise ParameterError(f"on_divergence must be 'raise' or 'report', got {on_divergence!r}.")
    return d, eta, batch, steps, n_runs, seed, m0, m_exit


def _compiled_step(method: str, backend: str, problem: SGDProblem) -> bool:
    """Return whether the reduced sampler runs its compiled step for ``backend``."""
    usable = method == "reduced" and _sgd_compiled.available() and _sgd_compiled.supports(problem)
    if backend == "numba" and not usable:
        if method != "reduced":
            raise ParameterError("backend='numba' applies to method='reduced' only; use backend='auto' or 'numpy'.")
        raise ParameterError(
            "backend='numba' needs numba (pip install 'lora-theory[fast]') and an erf student and teacher, "
            f"got numba installed: {_sgd_compiled.available()}, student {problem.student_expression}, "
            f"teacher {problem.teacher_expression}; use backend='auto' or 'numpy'."
        )
    return usable and backend != "numpy"


def simulate(
    student: str | Activation,
    teacher: str | Activation | None = None,
    *,
    mu: float,
    d: int,
    eta: float,
    batch: int,
    steps: int,
    n_runs: int = 1,
    seed: int | None = 0,
    method: str = "reduced",
    m0: float | None = None,
    u0: float | None = None,
    m_exit: float = 0.5,
    record: str | Sequence[int] | None = "log",
    stop_when_escaped: bool = False,
    on_divergence: str = "raise",
    progress: bool | None = None,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    backend: str = "auto",
) -> SimulationResult:
    """Simulate one-pass SGD of the aligned rank-1 LoRA model for ``n_runs`` independent runs.

    Parameters
    ----------
    student, teacher : str or Activation
        Activation specs of sigma and sigma* (see :mod:`lora_theory.activations`);
        the teacher defaults to the student.
    mu : float
        Pre-training strength, ``w0 = mu w*``; any finite value.
    d : int
        Input dimension, ``d >= 3``.
    eta : float
        Learning rate, ``> 0``; the flow time of step ``n`` is ``t = eta n``.
    batch : int
        Mini-batch size ``B >= 1``, fresh samples at every step.
    steps : int
        Number of SGD steps, ``>= 0``.
    n_runs : int
        Number of independent runs.
    seed : int or None
        Entropy of the root :class:`numpy.random.SeedSequence`; ``None``
        draws fresh entropy, stored in ``result.parameters.seed``.
    method : {"reduced", "full"}
        Exact low-dimensional sampler or the d-dimensional SGD.
    m0 : float, optional
        Initial overlap ``<v, w*>`` in ``[-1, 1]`` for every run. By default
        ``v`` is uniform on the sphere, so ``m0`` has the law of one
        coordinate of a uniform unit vector (variance ``1/d``).
    u0 : float, optional
        Initial LoRA scale, ``1/d^2`` by default.
    m_exit : float
        Escape threshold on ``|m|``, in ``(0, 1]``.
    record : {"log", "all"}, sequence of int, or None
        Steps at which ``(u, m)`` is stored: a logarithmic grid of about 100
        points (see :func:`log_grid`), every step, the given steps, or none.
    stop_when_escaped : bool
        End each run at its escape step. Records after it are nan and the
        simulation ends once every run has escaped or diverged.
    on_divergence : {"raise", "report"}
        When a run's ``u`` or ``m`` becomes non-finite, raise
        :class:`SimulationDivergedError`, or set its state to nan, store the
        step in ``result.diverged_step`` and continue with the other runs.
    progress : bool or None
        Show a tqdm progress bar on stderr. ``None`` shows one only when tqdm
        is installed and stderr is a terminal; nothing is printed otherwise.
    memory_limit : int
        Bytes the simulation may allocate for records and working buffers;
        larger requests raise :class:`ParameterError` before any work.
    backend : {"auto", "numpy", "numba"}
        Step of the reduced sampler. ``"numba"`` is the compiled step for an
        erf student and teacher (needs the extra ``lora-theory[fast]``);
        ``"numpy"`` is the NumPy step; ``"auto"`` takes the compiled step
        where it applies. The two consume the same random numbers and agree
        to about 1e-14 relative, not bit for bit. The full sampler always
        uses NumPy. ``result.parameters.backend`` names the step that ran.

    Returns
    -------
    SimulationResult

    Raises
    ------
    ParameterError
        For a parameter outside its domain or a simulation that does not fit
        in ``memory_limit``, before any sampling.
    ActivationError
        For an invalid activation spec.
    SimulationDivergedError
        With ``on_divergence="raise"``, at the first non-finite state.
    """
    # -- validation, before any work --------------------------------------
    if method not in METHODS:
        raise ParameterError(f"method must be one of {METHODS}, got {method!r}.")
    student_activation = parse_activation(student)
    teacher_activation = student_activation if teacher is None else parse_activation(teacher)
    mu = _real("mu", mu, "pass the pre-training strength, usually in [0, 1]")
    d, eta, batch, steps, n_runs, seed, m0, m_exit = validate_protocol(
        d=d, eta=eta, batch=batch, steps=steps, n_runs=n_runs, seed=seed, m0=m0, m_exit=m_exit, on_divergence=on_divergence
    )
    u0 = 1.0 / d**2 if u0 is None else _real("u0", u0, "pass a finite initial LoRA scale or None for 1/d^2")
    if backend not in BACKENDS:
        raise ParameterError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    memory_limit = _integer("memory_limit", memory_limit, 1, "pass a number of bytes")
    runs_per_chunk = _check_memory(method, n_runs, _record_size(record, steps), batch, d, memory_limit)
    record_steps = _record_steps(record, steps)

    problem = SGDProblem.build(student_activation, teacher_activation, mu=mu, d=d, eta=eta, batch=batch)
    compiled = _compiled_step(method, backend, problem)
    root = np.random.SeedSequence(seed)
    parameters = SimulationParameters(
        method=method,
        student=student_activation.spec,
        teacher=teacher_activation.spec,
        mu=mu,
        d=d,
        eta=eta,
        batch=batch,
        steps=steps,
        n_runs=n_runs,
        seed=int(root.entropy),
        m0=m0,
        u0=u0,
        m_exit=m_exit,
        backend="numba" if compiled else "numpy",
    )

    # -- outputs -----------------------------------------------------------
    n_records = record_steps.size
    recorded_u = np.full((n_runs, n_records), np.nan)
    recorded_m = np.full((n_runs, n_records), np.nan)
    initial_m = np.empty(n_runs)
    final_u = np.empty(n_runs)
    final_m = np.empty(n_runs)
    last_step = np.full(n_runs, steps, dtype=np.int64)
    escape_step = np.full(n_runs, NOT_ESCAPED, dtype=np.int64)
    diverged_step = np.full(n_runs, NOT_ESCAPED, dtype=np.int64)

    # -- chunks of runs, each advanced in lock-step --------------------------
    run_seeds = root.spawn(n_runs)
    bar = _progress_bar(progress, n_runs * steps, f"{method} SGD")
    try:
        for start in range(0, n_runs, runs_per_chunk):
            runs = slice(start, min(start + runs_per_chunk, n_runs))
            generators = [np.random.Generator(np.random.PCG64(sequence)) for sequence in run_seeds[runs]]
            with np.errstate(all="ignore"):
                if method == "full":
                    sampler = _sgd_full.FullSampler(problem, generators, u0, m0)
                else:
                    sampler = _sgd_reduced.ReducedSampler(problem, generators, u0, m0, compiled=compiled)
            _run_chunk(
                sampler,
                parameters,
                start,
                record_steps,
                stop_when_escaped,
                on_divergence,
                bar,
                outputs=(
                    recorded_u[runs],
                    recorded_m[runs],
                    initial_m[runs],
                    final_u[runs],
                    final_m[runs],
                    last_step[runs],
                    escape_step[runs],
                    diverged_step[runs],
                ),
            )
    finally:
        bar.close()

    return SimulationResult(
        parameters=parameters,
        record_steps=record_steps,
        u=recorded_u,
        m=recorded_m,
        initial_m=initial_m,
        final_u=final_u,
        final_m=final_m,
        last_step=last_step,
        escape_step=np.ma.masked_equal(escape_step, NOT_ESCAPED),
        diverged_step=np.ma.masked_equal(diverged_step, NOT_ESCAPED),
    )


def _run_chunk(sampler, parameters, first_run, record_steps, stop_when_escaped, on_divergence, bar, outputs) -> None:
    """Advance one chunk of runs to the end, writing into the views in ``outputs``."""
    recorded_u, recorded_m, initial_m, final_u, final_m, last_step, escape_step, diverged_step = outputs
    n_runs = initial_m.size
    # A run is active until it diverges or, with stop_when_escaped, escapes.
    active = np.ones(n_runs, dtype=bool)
    next_record = 0
    initial_m[:] = sampler.m

    for step in range(parameters.steps + 1):
        if step > 0:
            with np.errstate(all="ignore"):
                sampler.step()
            bar.update(n_runs)
        u, m = sampler.u, sampler.m

        # Divergence: the first non-finite state ends the run.
        newly_diverged = active & ~(np.isfinite(u) & np.isfinite(m))
        if newly_diverged.any():
            run = int(np.flatnonzero(newly_diverged)[0])
            if on_divergence == "raise":
                raise SimulationDivergedError(
                    f"SGD run {first_run + run} diverged at step {step}: u = {float(u[run])!r}, m = {float(m[run])!r} "
                    f"(method {parameters.method!r}, student {parameters.student!r}, teacher {parameters.teacher!r}, "
                    f"mu = {parameters.mu}, d = {parameters.d}, eta = {parameters.eta}, batch = {parameters.batch}, "
                    f"seed = {parameters.seed}); lower eta, or pass on_divergence='report' to keep the other runs.",
                    run=first_run + run,
                    step=step,
                    u=float(u[run]),
                    m=float(m[run]),
                    parameters=parameters,
                )
            diverged_step[newly_diverged] = step
            last_step[newly_diverged] = step
            final_u[newly_diverged] = u[newly_diverged]
            final_m[newly_diverged] = m[newly_diverged]
            sampler.mark_diverged(newly_diverged)
            active &= ~newly_diverged

        # Escape: the first step with |m| >= m_exit, checked at every step.
        newly_escaped = active & (escape_step == NOT_ESCAPED) & (np.abs(m) >= parameters.m_exit)
        escape_step[newly_escaped] = step

        if next_record < record_steps.size and record_steps[next_record] == step:
            recorded_u[active, next_record] = u[active]
            recorded_m[active, next_record] = m[active]
            next_record += 1

        if stop_when_escaped and newly_escaped.any():
            last_step[newly_escaped] = step
            final_u[newly_escaped] = u[newly_escaped]
            final_m[newly_escaped] = m[newly_escaped]
            active &= ~newly_escaped
        if not active.any():
            bar.update(n_runs * (parameters.steps - step))
            return

    final_u[active] = sampler.u[active]
    final_m[active] = sampler.m[active]
