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
from typing import Optional

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from ._errors import ParameterError
from .baseline import integrate_baseline
from .rates import escape_rates, exit_time

__all__ = ["PretrainingVerdict", "assess_pretraining", "PhaseDiagram", "phase_diagram"]


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


def _exit_time_function(student, teacher, m0: float):
    def evaluate(value: float) -> float:
        times, _ = exit_time(student, teacher, [value], m0=m0)
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
    function = _exit_time_function(student, teacher, m0)
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
class PhaseDiagram:
    """tau(mu) for students equal to their He_k teacher, k = 1 ... k_max (hermite time unit).

    ``tau`` has shape ``(len(k), len(mu))`` (nan where undefined);
    ``singular`` maps k to its zeros of A(mu) in the mu range.
    """

    k: np.ndarray
    mu: np.ndarray
    tau: np.ndarray
    singular: dict


def phase_diagram(k_max: int = 10, mu=None) -> PhaseDiagram:
    """Compute tau over (mu, k) for He_k learning He_k (linear theory, hermite time unit)."""
    if not 1 <= k_max <= 30:
        raise ParameterError(f"k_max must lie in 1 ... 30, got {k_max!r}")
    grid = np.linspace(0.02, 0.99, 200) if mu is None else np.asarray(mu, dtype=float)
    degrees = np.arange(1, k_max + 1)
    table = np.empty((degrees.size, grid.size))
    singular = {}
    for row, degree in enumerate(degrees):
        rates = escape_rates(f"He{degree}", mu=grid, time_unit="hermite")
        table[row] = rates.tau
        singular[int(degree)] = rates.singular_mu
    return PhaseDiagram(degrees, grid, table, singular)
