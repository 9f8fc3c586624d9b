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
from .model import SPHERICAL_BASELINE, kappa, m

__all__ = ["BaselineFunctions", "ScalingSweep", "baseline_functions", "integrate_baseline", "largest_noise_ratio", "scaling_sweep"]


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
