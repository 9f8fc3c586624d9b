"""Search-phase length against the linear theory, and the information exponent.

Conventions: probabilists' Hermite polynomials ``He_k``; time
``t = eta * steps`` (plain unit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import sympy as sp

from . import _numeric
from ._errors import ParameterError
from .activations import Activation, Z, parse_activation
from .dynamics import integrate_flow
from .expectations import expectation_1d
from .rates import escape_rates

__all__ = ["SearchPhaseFit", "search_phase", "information_exponent", "hermite_coefficient"]

#: Relative tolerance of the flow integrations of :func:`search_phase`.
FLOW_RTOL = 1e-10

#: ``solve_ivp`` method of :func:`search_phase`. The search phase is stiff: the stable rate at the
#: origin is O(1) while the escape rate 1/tau is small, so an explicit method would be bounded by
#: stability, not accuracy. LSODA switches to an implicit method (BDF) where the run is stiff.
FLOW_METHOD = "LSODA"

#: Default initial overlaps of :func:`search_phase`: 13 values log-spaced in [1e-12, 1e-3].
DEFAULT_M0 = np.logspace(-12, -3, 13)


@dataclass(frozen=True)
class SearchPhaseFit:
    """Flow escape times from ``(0, m0)`` fitted by ``slope * log(m_exit / m0) + offset``.

    Linear theory predicts ``slope = tau`` and
    ``offset = tau * log(1 + (lambda_plus / A)^2)``. Arrays have the shape
    ``(n,)`` of ``m0``; ``escape_time`` is nan where the flow did not escape.
    Obtained from the flow (SciPy ``solve_ivp``), not from simulations.
    """

    mu: float
    kappa: float
    m_exit: float
    m0: np.ndarray
    escape_time: np.ndarray
    slope: float
    offset: float
    tau: float
    offset_linear: float

    @property
    def slope_relative_error(self) -> float:
        """``|slope / tau - 1|``."""
        return abs(self.slope / self.tau - 1)


def search_phase(
    student,
    teacher=None,
    *,
    mu: float,
    m0=None,
    kappa: float = 0.0,
    m_exit: float = 0.5,
    u0: float = 0.0,
    callback: Optional[Callable[[int, float, object], None]] = None,
) -> SearchPhaseFit:
    """Measure t_search(mu, m0) on the flow and fit it against the linear theory.

    ``m0`` (shape ``(n,)``) defaults to :data:`DEFAULT_M0`. Each run starts
    at ``(u0, m0)`` and is integrated with relative tolerance
    :data:`FLOW_RTOL` by :data:`FLOW_METHOD` up to the default horizon of
    :func:`lora_theory.dynamics.integrate_flow`. ``callback(index, m0, trajectory)``,
    if given, is called after each run, for example to advance a progress bar.
    """
    m0 = DEFAULT_M0.copy() if m0 is None else np.asarray(m0, dtype=float)
    if m0.ndim != 1 or m0.size < 2 or np.any(~np.isfinite(m0)) or np.any(m0 <= 0) or np.any(m0 >= m_exit):
        raise ParameterError(f"m0 must be at least two finite values in (0, m_exit = {m_exit}), got {m0.tolist()}")
    rates = escape_rates(student, teacher, mu=[mu])
    if rates.notes[0] is not None:
        raise ParameterError(f"no linear search phase at mu = {mu!r}: {rates.notes[0]}")
    tau = float(rates.tau[0])
    offset_linear = tau * float(np.log1p((rates.lambda_plus[0] / rates.A[0]) ** 2))

    times = np.full(m0.size, np.nan)
    for index, start in enumerate(m0):
        trajectory = integrate_flow(
            student, teacher, mu=mu, u0=u0, m0=float(start), kappa=kappa, m_exit=m_exit, rtol=FLOW_RTOL,
            method=FLOW_METHOD,
        )
        if trajectory.escaped:
            times[index] = trajectory.escape_time
        if callback is not None:
            callback(index, float(start), trajectory)

    escaped = np.isfinite(times)
    if escaped.sum() < 2:
        raise ParameterError(
            f"the flow escaped from fewer than two of the m0 values at mu = {mu!r}, kappa = {kappa!r}, "
            f"m_exit = {m_exit!r}; use larger m0, a smaller kappa or a smaller m_exit"
        )
    logarithm = np.log(m_exit / m0[escaped])
    slope, offset = np.polyfit(logarithm, times[escaped], 1)
    return SearchPhaseFit(float(mu), float(kappa), float(m_exit), m0, times, float(slope), float(offset), tau, offset_linear)


def hermite_coefficient(activation, degree: int) -> float:
    """``E[sigma(z) He_k(z)] / k!``, the probabilists' Hermite coefficient of degree k.

    Exact where :func:`lora_theory.expectations.expectation_1d` has a closed
    form, otherwise by quadrature (relative accuracy about 1e-9).
    """
    activation = parse_activation(activation)
    integrand = activation.expr * sp.hermite_prob(degree, Z)
    exact = expectation_1d(integrand)
    if exact is not None:
        return float(sp.N(exact / sp.factorial(degree), 30))
    function = Activation(spec=str(integrand), expr=integrand)
    value = _numeric.expectation_1d(function.numpy(), 1.0, kinks=activation.kinks)
    return float(value) / float(sp.factorial(degree))


def information_exponent(teacher, max_degree: int = 30) -> Optional[int]:
    """Find the smallest ``k >= 1`` with ``E[sigma*(z) He_k(z)] != 0`` (``None`` if none up to ``max_degree``).

    A coefficient counts as zero when it is exactly zero (closed forms) or
    below ``1e-10`` times the root-mean-square of the teacher (quadrature).
    """
    teacher = parse_activation(teacher)
    scale = float(np.sqrt(abs(_second_moment(teacher))))
    for degree in range(1, max_degree + 1):
        integrand = teacher.expr * sp.hermite_prob(degree, Z)
        exact = expectation_1d(integrand)
        if exact is not None:
            if sp.simplify(exact) != 0:
                return degree
            continue
        if abs(hermite_coefficient(teacher, degree)) * np.sqrt(float(sp.factorial(degree))) > 1e-10 * scale:
            return degree
    return None


def _second_moment(activation) -> float:
    exact = expectation_1d(activation.expr**2)
    if exact is not None:
        return float(sp.N(exact))
    square = Activation(spec=f"({activation.spec})^2", expr=activation.expr**2)
    return float(_numeric.expectation_1d(square.numpy(), 1.0, kinks=activation.kinks))
