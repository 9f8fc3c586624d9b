"""When does pre-training help? Optimal mu, harmful mu and the (mu, k) phase diagram.

Convention: time ``t = eta * steps``; both the LoRA model and the
no-pre-training baseline use the same learning rate ``eta`` and batch
``B``, so their escape times compare directly.

* With pre-training, the escape time is the linear estimate
  ``t_exit(mu) = tau(mu) (log(m_exit sqrt(d)) + log(1 + (lambda_plus/A)^2))``
  from ``m0 = 1/sqrt(d)`` (the kappa drift is of order u^2 and does not
  enter the linear phase).
* Without pre-training, it is the escape time of the spherical baseline
  flow (``w = v``) from ``m0 = 1/sqrt(d)`` at ``kappa = eta d / B``
  (:mod:`lora_theory.baseline`), or infinite when that flow does not
  escape at this learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial
from typing import Optional

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from ._errors import ParameterError
from .baseline import integrate_baseline, largest_noise_ratio
from .rates import escape_rates, exit_time

__all__ = ["PretrainingVerdict", "assess_pretraining", "BaselineComparison", "PhaseDiagram", "compare_with_baseline", "phase_diagram"]


@dataclass(frozen=True)
class PretrainingVerdict:
    """Optimal and harmful pre-training strengths for one (student, teacher, d, eta, B).

    ``optimal_mu`` minimises the linear escape time ``t_exit(mu)``;
    ``harmful_mu`` is the smallest mu above ``optimal_mu`` where
    ``t_exit(mu)`` exceeds ``baseline_time`` (``None`` if it never does on
    the grid); times in t = eta * steps.
    """

    optimal_mu: float
    optimal_time: float
    baseline_time: Optional[float]
    harmful_mu: Optional[float]
    mu: np.ndarray
    exit_time: np.ndarray


def _exit_time_function(student, teacher, m0: float, m_exit: float = 0.5):
    def evaluate(value: float) -> float:
        times, _ = exit_time(student, teacher, [value], m0=m0, m_exit=m_exit)
        return float(times[0]) if np.isfinite(times[0]) else np.inf

    return evaluate


def assess_pretraining(
    student, teacher=None, *, d: float, eta: float, batch: int = 1, mu_grid=None, m_exit: float = 0.5
) -> PretrainingVerdict:
    """Locate the optimal and the harmful pre-training strength (see the module docstring)."""
    if not (np.isfinite(d) and d >= 3):
        raise ParameterError(f"d must be a finite dimension >= 3, got {d!r}")
    if not (np.isfinite(eta) and eta > 0):
        raise ParameterError(f"eta must be a positive learning rate, got {eta!r}")
    grid = np.linspace(0.01, 0.99, 197) if mu_grid is None else np.asarray(mu_grid, dtype=float)
    m0 = 1 / np.sqrt(d)
    times, _ = exit_time(student, teacher, grid, m0=m0, m_exit=m_exit)
    times = np.where(np.isfinite(times) & (times > 0), times, np.inf)
    if not np.any(np.isfinite(times)):
        raise ParameterError("the linear escape time is undefined on the whole mu grid")

    # Optimal mu: grid minimum, polished inside its neighbouring cells.
    function = _exit_time_function(student, teacher, m0, m_exit)
    index = int(np.argmin(times))
    lower = grid[max(index - 1, 0)]
    upper = grid[min(index + 1, grid.size - 1)]
    optimal_mu, optimal_time = float(grid[index]), float(times[index])
    if upper > lower:
        result = minimize_scalar(function, bounds=(lower, upper), method="bounded", options={"xatol": 1e-10})
        if result.success and result.fun <= optimal_time:
            optimal_mu, optimal_time = float(result.x), float(result.fun)

    # Baseline: spherical SGD without pre-training at the same eta and batch.
    kappa = eta * d / batch
    trajectory = integrate_baseline(student, teacher, m0=m0, kappa=kappa, t_max=1e3 * max(d, optimal_time), m_exit=m_exit)
    baseline_time = trajectory.escape_time

    harmful_mu = None
    if baseline_time is not None:
        above = np.nonzero((grid > optimal_mu) & (times > baseline_time))[0]
        if above.size:
            first = above[0]
            previous = max(first - 1, 0)
            if first > 0 and np.isfinite(times[previous]) and times[previous] <= baseline_time:
                harmful_mu = float(brentq(lambda x: function(x) - baseline_time, grid[previous], grid[first], xtol=1e-10))
            else:
                harmful_mu = float(grid[first])
    return PretrainingVerdict(optimal_mu, optimal_time, baseline_time, harmful_mu, grid, times)


@dataclass(frozen=True)
class BaselineComparison:
    """Pre-training against no pre-training for every cell of a phase diagram.

    Both escape times start from ``m0 = 1/sqrt(d)`` and end at
    ``|m| = m_exit``, at the same learning rate, and are given in the
    diagram's time unit. ``exit_time`` (shape ``(len(k), len(mu))``) is the
    linear estimate ``t_exit(mu)`` of the LoRA model, nan where tau is
    undefined. ``baseline_time`` (shape ``(len(k),)``) is the escape time of
    the spherical baseline flow at noise ratio ``kappa``, nan where it does not
    escape (``kappa >= kappa_max(m0)``, see :mod:`lora_theory.baseline`).
    ``verdict`` has the shape of ``exit_time``: ``"helps"`` where
    ``t_exit < baseline_time``, ``"hurts"`` where ``t_exit >= baseline_time``
    or where the linear rate vanishes (A = 0) while the baseline escapes, and
    ``"undefined"`` otherwise. ``boundary`` maps k to the mu in the grid's
    range where the verdict changes, located to 1e-10 in mu.
    """

    d: float
    kappa: float
    m_exit: float
    exit_time: np.ndarray
    baseline_time: np.ndarray
    verdict: np.ndarray
    boundary: dict


@dataclass(frozen=True)
class PhaseDiagram:
    """tau(mu) for students equal to their He_k teacher, k = 1 ... k_max.

    ``tau`` has shape ``(len(k), len(mu))`` (nan where undefined), in
    ``time_unit`` (hermite by default: rates of He_k divided by k! * k);
    ``singular`` maps k to its zeros of A(mu) in the mu range;
    ``comparison`` is the comparison with no pre-training when a dimension
    was given, else None.
    """

    k: np.ndarray
    mu: np.ndarray
    tau: np.ndarray
    singular: dict
    time_unit: str = "hermite"
    comparison: Optional[BaselineComparison] = None


def _baseline_time(spec: str, d: float, kappa: float, m_exit: float) -> float:
    """Escape time of the baseline flow from 1/sqrt(d) (plain unit), nan when it does not escape."""
    m0 = 1 / np.sqrt(d)

    # The flow escapes exactly when kappa < kappa_max(m0); skip the integration otherwise.
    if kappa >= largest_noise_ratio(spec, m0=m0, m_exit=m_exit):
        return np.nan
    # NOTE: the horizon t = 1e15 bounds the integration; a baseline that escapes later reads as not escaping.
    trajectory = integrate_baseline(spec, m0=m0, kappa=kappa, t_max=1e15, m_exit=m_exit)
    return np.nan if trajectory.escape_time is None else float(trajectory.escape_time)


def _verdict_boundary(spec: str, grid: np.ndarray, singular: tuple, baseline: float, m0: float, m_exit: float) -> tuple:
    """The mu where t_exit(mu) - baseline changes sign, refined by Brent's method (plain unit)."""
    if not np.isfinite(baseline):
        return ()

    # Sample the grid and the singular mu, where t_exit is infinite; hurting cells count +1.
    samples = sorted(set(float(value) for value in grid) | set(float(value) for value in singular))
    function = _exit_time_function(spec, None, m0, m_exit)

    def excess(value: float) -> float:
        # log(t_exit / baseline) is well scaled for Brent's method; infinite t_exit becomes a large number.
        time = function(value)
        return 1e3 if not np.isfinite(time) else float(np.log(time / baseline))

    values = [excess(value) for value in samples]
    crossings = []
    for index in range(len(samples) - 1):
        left, right = values[index], values[index + 1]
        if (left < 0) != (right < 0):
            crossings.append(float(brentq(excess, samples[index], samples[index + 1], xtol=1e-10)))
    return tuple(crossings)


def compare_with_baseline(k: np.ndarray, mu: np.ndarray, singular: dict, *, d: float, kappa: float = 0.0, m_exit: float = 0.5, time_unit: str = "hermite") -> BaselineComparison:
    """Compare the LoRA escape time of He_k learning He_k with no pre-training, on a (k, mu) grid."""
    if not (np.isfinite(d) and d >= 3):
        raise ParameterError(f"d must be a finite dimension >= 3, got {d!r}")
    if not (np.isfinite(kappa) and kappa >= 0):
        raise ParameterError(f"kappa = eta d / B must be finite and >= 0, got {kappa!r}")
    m0 = 1 / np.sqrt(d)
    if not (np.isfinite(m_exit) and m0 < m_exit <= 1):
        raise ParameterError(f"m_exit must lie in (1/sqrt(d), 1] = ({m0:.6g}, 1], got {m_exit!r}")

    exit_times = np.empty((len(k), len(mu)))
    baseline_times = np.empty(len(k))
    verdict = np.empty((len(k), len(mu)), dtype=object)
    boundary = {}
    for row, degree in enumerate(k):
        spec = f"He{int(degree)}"
        plain, rates = exit_time(spec, mu=mu, m0=m0, m_exit=m_exit)
        baseline = _baseline_time(spec, d, kappa, m_exit)

        # Both times scale by the same factor, so the verdict does not depend on the time unit.
        factor = 1.0 if time_unit == "plain" else float(factorial(int(degree)) * int(degree))
        exit_times[row] = plain * factor
        baseline_times[row] = baseline * factor
        singular_row = np.array([note is not None and note.startswith("A(mu) = 0") for note in rates.notes])
        for column in range(len(mu)):
            if np.isfinite(plain[column]) and np.isfinite(baseline):
                verdict[row, column] = "helps" if plain[column] < baseline else "hurts"
            elif np.isfinite(plain[column]):
                verdict[row, column] = "helps"
            elif singular_row[column] and np.isfinite(baseline):
                verdict[row, column] = "hurts"
            else:
                verdict[row, column] = "undefined"
        boundary[int(degree)] = _verdict_boundary(spec, mu, singular.get(int(degree), ()), baseline, m0, m_exit)
    return BaselineComparison(float(d), float(kappa), float(m_exit), exit_times, baseline_times, verdict, boundary)


def phase_diagram(
    k_max: int = 10,
    mu=None,
    *,
    time_unit: str = "hermite",
    d: Optional[float] = None,
    kappa: float = 0.0,
    m_exit: float = 0.5,
) -> PhaseDiagram:
    """Compute tau over (mu, k) for He_k learning He_k (linear theory).

    ``mu`` has shape ``(n,)`` (default: 200 values in [0.02, 0.99]).
    ``time_unit`` is ``"hermite"`` (default, rates divided by k! * k) or
    ``"plain"`` (t = eta * steps). With a dimension ``d`` the diagram also
    compares each cell with no pre-training at noise ratio ``kappa``
    (see :class:`BaselineComparison`). ``kappa = 0`` gives the fastest
    baseline in t = eta * steps, so "helps" is the conservative verdict.
    """
    if not 1 <= k_max <= 30:
        raise ParameterError(f"k_max must lie in 1 ... 30, got {k_max!r}")
    grid = np.linspace(0.02, 0.99, 200) if mu is None else np.asarray(mu, dtype=float)
    degrees = np.arange(1, k_max + 1)
    table = np.empty((degrees.size, grid.size))
    singular = {}
    for row, degree in enumerate(degrees):
        rates = escape_rates(f"He{degree}", mu=grid, time_unit=time_unit)
        table[row] = rates.tau
        singular[int(degree)] = rates.singular_mu
    comparison = None
    if d is not None:
        comparison = compare_with_baseline(degrees, grid, singular, d=d, kappa=kappa, m_exit=m_exit, time_unit=time_unit)
    return PhaseDiagram(degrees, grid, table, singular, time_unit, comparison)
