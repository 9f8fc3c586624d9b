"""Escape steps against the dimension d, without and with pre-training.

Conventions: probabilists' Hermite polynomials ``He_k``; time
``t = eta * steps``, samples ``= B * steps``; every run starts from the
overlap ``m0 = 1/sqrt(d)`` (the flow's start), LoRA runs from ``u0 = 1/d^2``.

Learning-rate rule. At each d the noise ratio is a fixed fraction of the
largest one that still escapes, ``kappa = fraction * kappa_max(d)`` and
``eta = kappa B / d``:

* no pre-training (``mu=None``, spherical baseline ``w = v``):
  ``kappa_max`` from :func:`lora_theory.baseline.largest_noise_ratio` at
  ``m0``. It tends to a constant for information exponent ``k* <= 2``, so
  ``eta ∝ 1/d``, and falls like ``m0^(k*-2)`` for ``k* >= 3``, so
  ``eta ∝ d^(-k*/2)``. The escape then costs of order ``d``, ``d log d``
  and ``d^(k*-1)`` steps for ``k* = 1``, ``2`` and ``>= 3`` (G. Ben Arous,
  R. Gheissari, A. Jagannath, JMLR 22, 2021).
* pre-training (``mu`` given, aligned LoRA model):
  ``kappa_max`` from :func:`largest_lora_noise_ratio` at ``(u0, m0)``,
  bounded away from 0, so ``eta ∝ 1/d``, and the escape time is
  ``t ≈ tau(mu) (1/2) log d + const`` (G. Nwemadji, B. Loureiro,
  J. Barbier, arXiv:2602.02855, 2026).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ._errors import ParameterError
from .activations import parse_activation
from .baseline import integrate_baseline, largest_noise_ratio, simulate_baseline
from .dynamics import integrate_flow
from .rates import escape_rates, validate_mu

__all__ = ["ScalingResult", "largest_lora_noise_ratio", "scaling_law", "SCALING_METHODS"]

#: Methods accepted by :func:`scaling_law`.
SCALING_METHODS = ("flow", "reduced")

# Largest noise ratio tried when bracketing kappa_max of the LoRA flow.
_KAPPA_CEILING = 1e8


def _flow_escapes(student, teacher, mu, u0, m0, kappa, m_exit, t_max) -> bool:
    trajectory = integrate_flow(student, teacher, mu=mu, u0=u0, m0=m0, kappa=kappa, m_exit=m_exit, t_max=t_max)
    return trajectory.escaped


def largest_lora_noise_ratio(
    student, teacher=None, *, mu: float, u0: float, m0: float, m_exit: float = 0.5, rtol: float = 1e-4
) -> float:
    """``kappa_max``: the (u, m) flow from ``(u0, m0)`` escapes to ``|m| = m_exit`` for ``kappa`` below it, not above.

    The largest learning rate is ``eta_max = kappa_max B / d``. The kappa
    drift ``-(kappa / 2) m u^2 E[g^2]`` is of order u^2, so it does not act
    in the search phase but stops the flow on a fixed point with
    ``|m| < m_exit`` once kappa is too large. Found by bisection in
    ``log kappa`` to relative accuracy ``rtol``; each trial integrates the
    flow up to 200 times its escape time at ``kappa = 0``. Returns 0 when
    even ``kappa = 0`` does not escape.

    NOTE: the bisection assumes that the escaping kappa form one interval
    ``[0, kappa_max)``; a flow that escapes again above a gap would be missed.
    """
    for name, value in (("u0", u0), ("m0", m0), ("rtol", rtol)):
        if not np.isfinite(value):
            raise ParameterError(f"{name} must be finite, got {value!r}")
    if not 0 < abs(m0) < m_exit <= 1:
        raise ParameterError(f"need 0 < |m0| < m_exit <= 1, got m0 = {m0!r}, m_exit = {m_exit!r}")
    if not 0 < rtol < 1:
        raise ParameterError(f"rtol must lie in (0, 1), got {rtol!r}")
    validate_mu([mu])

    reference = integrate_flow(student, teacher, mu=mu, u0=u0, m0=m0, kappa=0.0, m_exit=m_exit)
    if not reference.escaped:
        return 0.0
    horizon = 200 * reference.escape_time

    def escapes(kappa: float) -> bool:
        return _flow_escapes(student, teacher, mu, u0, m0, kappa, m_exit, horizon)

    # Bracket: lower escapes, upper does not.
    lower, upper = 0.0, 1.0
    while escapes(upper):
        lower, upper = upper, upper * 4
        if upper > _KAPPA_CEILING:
            raise ArithmeticError(f"the flow still escapes at kappa = {lower:g}; no largest noise ratio below {_KAPPA_CEILING:g}")
    if lower == 0.0:
        lower = upper / 4
        while not escapes(lower):
            upper, lower = lower, lower / 4
            if lower < 1e-12:
                return 0.0

    while upper / lower - 1 > rtol:
        middle = np.sqrt(lower * upper)
        if escapes(middle):
            lower = middle
        else:
            upper = middle
    return float(lower)


@dataclass(frozen=True)
class ScalingResult:
    """Escape against d at a learning rate scaled with d (see the module docstring).

    Arrays have the shape ``(n,)`` of ``d``. ``steps`` is the flow's escape
    time over ``eta`` (``method="flow"``) or the median escape step of
    ``n_runs`` reduced SGD runs. The median counts censored runs as not yet
    escaped. ``steps_ci`` has shape ``(n, 2)``: a 95% percentile bootstrap
    interval of that median, nan for the flow. ``samples = batch * steps`` and ``t = eta * steps``.

    Fit: without pre-training, ``response = log(steps)`` (``log(steps /
    log d)`` when ``divide_log``, for ``k* = 2``) against ``log d``, so
    ``slope`` is the exponent of d and ``expected`` is 1 or ``k* - 1``.
    With pre-training, ``t`` against ``(1/2) log d``, so ``slope`` estimates
    ``tau(mu)`` (``expected``). ``slope_ci`` is a 95% bootstrap interval over
    runs (``None`` for the flow) and ``residual_rms`` the root-mean-square
    residual of the least-squares line, in the units of the response.
    """

    student: str
    teacher: str
    mu: Optional[float]
    method: str
    n_runs: Optional[int]
    batch: int
    fraction: float
    m_exit: float
    information_exponent: Optional[int]
    rule: str
    d: np.ndarray
    kappa_max: np.ndarray
    kappa: np.ndarray
    eta: np.ndarray
    steps: np.ndarray
    steps_ci: np.ndarray
    censored_fraction: np.ndarray
    max_steps: np.ndarray
    divide_log: bool
    slope: float
    intercept: float
    slope_ci: Optional[tuple]
    residual_rms: float
    expected: float

    @property
    def samples(self) -> np.ndarray:
        """Escape in samples, ``batch * steps``."""
        return self.batch * self.steps

    @property
    def t(self) -> np.ndarray:
        """Escape in flow time, ``eta * steps``."""
        return self.eta * self.steps

    @property
    def fit_variable(self) -> np.ndarray:
        """Abscissa of the fit: ``log d`` without pre-training, ``(1/2) log d`` with it."""
        return np.log(self.d) if self.mu is None else 0.5 * np.log(self.d)

    def fit_response(self, steps: np.ndarray | None = None) -> np.ndarray:
        """Ordinate of the fit for the given escape steps (default ``self.steps``)."""
        steps = self.steps if steps is None else steps
        if self.mu is not None:
            return self.eta * steps
        if self.divide_log:
            return np.log(steps / np.log(self.d))
        return np.log(steps)

    def fitted_steps(self, d) -> np.ndarray:
        """Escape steps on the fitted line at dimensions ``d`` (for plots)."""
        d = np.asarray(d, dtype=float)
        if self.mu is not None:
            # The line is in t; steps = t / eta with the same learning-rate rule (eta = kappa B / d).
            kappa = np.interp(np.log(d), np.log(self.d), self.kappa)
            return (self.intercept + self.slope * 0.5 * np.log(d)) * d / (kappa * self.batch)
        values = np.exp(self.intercept + self.slope * np.log(d))
        return values * np.log(d) if self.divide_log else values


def _validate_grid(d_values) -> np.ndarray:
    try:
        grid = np.asarray(d_values, dtype=float)
    except (TypeError, ValueError):
        raise ParameterError(f"d must be a sequence of dimensions, got {d_values!r}") from None
    if grid.ndim != 1 or grid.size < 2:
        raise ParameterError(f"d needs at least two dimensions to fit a law, got {np.atleast_1d(grid).tolist()}; pass a grid such as 1e2,1e3,1e4")
    bad = grid[~np.isfinite(grid) | (grid < 3) | (grid != np.round(grid))]
    if bad.size:
        raise ParameterError(f"every d must be an integer >= 3, got {bad.tolist()}; the reduced samplers need d >= 3")
    if np.unique(grid).size != grid.size:
        raise ParameterError(f"d contains repeated values {grid.tolist()}; pass distinct dimensions")
    return np.sort(grid)


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    return float(slope), float(intercept), float(np.sqrt(np.mean(residual**2)))


def _median_with_censoring(steps: np.ndarray) -> float:
    """Median of escape steps where censored runs are +inf; nan when half or more are censored."""
    ordered = np.sort(steps)
    value = float(np.median(ordered))
    return value if np.isfinite(value) else float("nan")


def scaling_law(
    student,
    teacher=None,
    *,
    d,
    mu: Optional[float] = None,
    method: str = "flow",
    n_runs: int = 32,
    fraction: float = 0.5,
    batch: int = 1,
    m_exit: float = 0.5,
    seed: int = 0,
    horizon: float = 10.0,
    n_bootstrap: int = 1000,
    backend: str = "auto",
    progress: bool | None = None,
) -> ScalingResult:
    """Measure escape steps over a grid of dimensions ``d`` and fit their law (see :class:`ScalingResult`).

    ``mu=None`` is the no-pre-training baseline (plain spherical SGD on
    ``v``); a number is the pre-training strength of the aligned LoRA
    model. ``method="reduced"`` simulates ``n_runs`` SGD runs per d with
    the exact reduced samplers, stopped at ``horizon`` times the flow's
    escape steps (later escapes are censored). ``fraction`` in (0, 1) sets
    ``kappa = fraction * kappa_max``. ``backend`` selects the kernel of the
    baseline sampler (see :func:`lora_theory.baseline.simulate_baseline`);
    the LoRA runs use :func:`lora_theory.simulation.simulate`.
    """
    grid = _validate_grid(d)
    if method not in SCALING_METHODS:
        raise ParameterError(f"method must be one of {SCALING_METHODS}, got {method!r}")
    if not 0 < fraction < 1:
        raise ParameterError(f"fraction of the largest learning rate must lie in (0, 1), got {fraction!r}; the default is 0.5")
    if not (isinstance(batch, (int, np.integer)) and batch >= 1):
        raise ParameterError(f"batch must be an integer >= 1, got {batch!r}")
    if not (isinstance(n_runs, (int, np.integer)) and n_runs >= 1):
        raise ParameterError(f"n_runs must be an integer >= 1, got {n_runs!r}")
    if not (np.isfinite(horizon) and horizon > 1):
        raise ParameterError(f"horizon must be a finite factor > 1 of the flow's escape steps, got {horizon!r}")
    if not 0 < m_exit <= 1:
        raise ParameterError(f"m_exit must lie in (0, 1], got {m_exit!r}")
    student_activation = parse_activation(student)
    teacher_activation = student_activation if teacher is None else parse_activation(teacher)

    if mu is None:
        plan = _baseline_plan(student_activation, teacher_activation, grid, fraction, batch, m_exit)
    else:
        validate_mu([mu])
        plan = _lora_plan(student_activation, teacher_activation, float(mu), grid, fraction, batch, m_exit)
    kappa_max, kappa, eta, flow_steps, k_star, rule, expected = plan

    # Escape steps: the flow's, or the median of reduced SGD runs.
    max_steps = np.ceil(horizon * flow_steps) if method == "reduced" else np.full(grid.size, np.nan)
    samples_per_d = []
    steps = flow_steps.copy()
    steps_ci = np.full((grid.size, 2), np.nan)
    censored = np.zeros(grid.size)
    if method == "reduced":
        for index, dimension in enumerate(grid):
            run_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
            escape = _simulate_escape(student_activation, teacher_activation, mu, int(dimension), float(eta[index]),
                                      batch, int(max_steps[index]), n_runs, run_seed, m_exit, backend, progress)
            samples_per_d.append(escape)
            steps[index] = _median_with_censoring(escape)
            censored[index] = float(np.mean(~np.isfinite(escape)))
        if np.any(~np.isfinite(steps)):
            bad = grid[~np.isfinite(steps)]
            raise ArithmeticError(
                f"half or more of the runs did not escape within {horizon:g} times the flow's escape steps at "
                f"d = {bad.tolist()}; raise horizon or lower fraction"
            )

    # Fit of the law, and its bootstrap over runs.
    divide_log = mu is None and k_star == 2
    result = ScalingResult(
        student=student_activation.spec, teacher=teacher_activation.spec, mu=None if mu is None else float(mu),
        method=method, n_runs=n_runs if method == "reduced" else None, batch=int(batch), fraction=float(fraction),
        m_exit=float(m_exit), information_exponent=k_star, rule=rule, d=grid, kappa_max=kappa_max, kappa=kappa,
        eta=eta, steps=steps, steps_ci=steps_ci, censored_fraction=censored, max_steps=max_steps,
        divide_log=divide_log, slope=np.nan, intercept=np.nan, slope_ci=None, residual_rms=np.nan, expected=expected,
    )
    slope, intercept, residual = _fit(result.fit_variable, result.fit_response())
    slope_ci = None
    if method == "reduced" and n_runs >= 2:
        rng = np.random.default_rng(seed)
        slopes = np.empty(n_bootstrap)
        medians = np.empty((n_bootstrap, grid.size))
        for index, escape in enumerate(samples_per_d):
            resampled = escape[rng.integers(0, escape.size, size=(n_bootstrap, escape.size))]
            medians[:, index] = np.median(resampled, axis=1)
        for repeat in range(n_bootstrap):
            row = medians[repeat]
            slopes[repeat] = _fit(result.fit_variable, result.fit_response(row))[0] if np.all(np.isfinite(row)) else np.nan
        finite = slopes[np.isfinite(slopes)]
        if finite.size:
            slope_ci = tuple(float(value) for value in np.quantile(finite, [0.025, 0.975]))
        # A resampled median is +inf when half or more of its runs are censored. Interpolating between two
        # infinite medians gives inf - inf, so that bound is nan (undefined), as intended.
        with np.errstate(invalid="ignore"):
            steps_ci[:] = np.quantile(medians, [0.025, 0.975], axis=0).T
    return ScalingResult(**{**result.__dict__, "slope": slope, "intercept": intercept, "slope_ci": slope_ci,
                            "residual_rms": residual, "steps_ci": steps_ci})


def _baseline_plan(student, teacher, grid, fraction, batch, m_exit):
    from .analysis import information_exponent

    k_star = information_exponent(teacher)
    if k_star is None:
        raise ParameterError(
            f"teacher {teacher.spec!r} has no finite information exponent (every Hermite coefficient up to degree 30 "
            "is zero), so no escape law exists without pre-training; choose a teacher with a non-zero He_k component"
        )
    kappa_max = np.empty(grid.size)
    times = np.empty(grid.size)
    for index, dimension in enumerate(grid):
        m0 = 1 / np.sqrt(dimension)
        if not m0 < m_exit:
            raise ParameterError(f"d = {dimension:g} starts at m0 = 1/sqrt(d) >= m_exit = {m_exit}; use larger d")
        kappa_max[index] = largest_noise_ratio(student, teacher, m0=m0, m_exit=m_exit)
        if kappa_max[index] <= 0:
            raise ParameterError(
                f"the baseline flow of student {student.spec!r} and teacher {teacher.spec!r} does not escape from "
                f"m0 = {m0:.3g} at any learning rate (its drive -dL/dR is not positive on [m0, m_exit])"
            )
        kappa = fraction * kappa_max[index]
        trajectory = integrate_baseline(student, teacher, m0=m0, kappa=kappa, t_max=1e3 * dimension**2, m_exit=m_exit)
        if not trajectory.escaped:
            raise ArithmeticError(f"the baseline flow did not escape at d = {dimension:g} ({trajectory.status})")
        times[index] = trajectory.escape_time
    kappa = fraction * kappa_max
    eta = kappa * batch / grid
    if k_star <= 2:
        rule = f"eta = {fraction:g} * kappa_max(m0) * B / d, kappa_max -> const, so eta ∝ 1/d (k* = {k_star})"
        expected = 1.0
    else:
        rule = (f"eta = {fraction:g} * kappa_max(m0) * B / d, kappa_max ∝ m0^{k_star - 2} with m0 = 1/sqrt(d), "
                f"so eta ∝ d^(-{k_star}/2) (k* = {k_star})")
        expected = float(k_star - 1)
    return kappa_max, kappa, eta, times / eta, k_star, rule, expected


def _lora_plan(student, teacher, mu, grid, fraction, batch, m_exit):
    rates = escape_rates(student, teacher, mu=[mu])
    if rates.notes[0] is not None:
        raise ParameterError(f"no linear search phase at mu = {mu!r}: {rates.notes[0]}; choose another mu")
    kappa_max = np.empty(grid.size)
    times = np.empty(grid.size)
    for index, dimension in enumerate(grid):
        m0, u0 = 1 / np.sqrt(dimension), 1 / dimension**2
        if not m0 < m_exit:
            raise ParameterError(f"d = {dimension:g} starts at m0 = 1/sqrt(d) >= m_exit = {m_exit}; use larger d")
        kappa_max[index] = largest_lora_noise_ratio(student, teacher, mu=mu, u0=u0, m0=m0, m_exit=m_exit, rtol=1e-3)
        if kappa_max[index] <= 0:
            raise ParameterError(f"the LoRA flow at mu = {mu!r} does not escape from m0 = {m0:.3g} even at kappa = 0")
        trajectory = integrate_flow(student, teacher, mu=mu, u0=u0, m0=m0, kappa=fraction * kappa_max[index], m_exit=m_exit)
        if not trajectory.escaped:
            raise ArithmeticError(f"the LoRA flow did not escape at d = {dimension:g} ({trajectory.status})")
        times[index] = trajectory.escape_time
    kappa = fraction * kappa_max
    eta = kappa * batch / grid
    rule = f"eta = {fraction:g} * kappa_max(u0, m0) * B / d of the LoRA flow, kappa_max bounded, so eta ∝ 1/d"
    return kappa_max, kappa, eta, times / eta, None, rule, float(rates.tau[0])


def _simulate_escape(student, teacher, mu, d, eta, batch, max_steps, n_runs, seed, m_exit, backend, progress) -> np.ndarray:
    """Escape steps of ``n_runs`` reduced SGD runs from ``m0 = 1/sqrt(d)``, +inf for censored or diverged runs."""
    from .simulation import simulate

    m0 = 1 / np.sqrt(d)
    common = dict(d=d, eta=eta, batch=batch, steps=max_steps, n_runs=n_runs, seed=seed, m0=m0, m_exit=m_exit,
                  record=None, stop_when_escaped=True, on_divergence="report", progress=progress)
    if mu is None:
        result = simulate_baseline(student, teacher, backend=backend, **common)
    else:
        result = simulate(student, teacher, mu=mu, u0=1 / d**2, method="reduced", **common)
    return np.where(result.escaped, result.escape_step.filled(0), np.inf).astype(float)
