"""Singular pre-training strengths: zeros of A(mu) and the critical initial alignment.

Convention: aligned rank-1 model, time ``t = eta * steps`` (plain unit)
unless ``time_unit="hermite"`` is requested, ``Var lam = Q``,
``Cov(lam, lam*) = R``.

At a zero ``mu_s`` of ``A(mu)`` the linear escape rate vanishes. With
``B(mu_s) < 0``, ``tau(mu) ~ |B(mu_s)| / (A'(mu_s)^2 (mu - mu_s)^2)`` on
both sides (expand ``tau = (-B + sqrt(B^2 + 4 A^2)) / (2 A^2)`` for small A).
With ``B(mu_s) > 0``, tau stays finite (``tau -> 1 / B``) but the overlap
still does not move at linear order.

At ``mu_s`` the line ``u = 0`` is invariant (``du/dt = A m = 0`` there),
and the growth rate of ``u`` along it is

    g(m) = -d^2 L / du^2 (0, m) = B + c m^2,
    c = -(4 mu^2 L_QQ + 4 mu L_QR + L_RR)  at (Q, R) = (mu^2, mu),

because ``dQ/du = 2 mu m``, ``dR/du = m`` and ``d^2 Q / du^2 = 2`` at
``u = 0``. From a small ``u0`` the flow stays frozen on ``u = 0`` when
``g(m0) < 0`` and leaves it when ``g(m0) > 0``: the critical initial
alignment is ``m_c = sqrt(-B / c)`` when that lies in (0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import sympy as sp

from .activations import parse_activation
from ._errors import LoraTheoryError
from .codegen import generate
from .derivation import derive
from .expectations import Q, R
from .model import mu as MU
from .rates import _time_unit_factor, escape_rates, rate_functions, validate_mu

__all__ = ["SingularPoint", "singular_points"]


@dataclass(frozen=True)
class SingularPoint:
    """A zero ``mu`` of A(mu) with the local behaviour of the flow.

    ``A_slope`` (dA/dmu), ``B`` and ``growth_curvature`` are rates and
    ``tau_prefactor`` is a time, all in ``time_unit``: the hermite unit divides
    the rates of a student He_k by k! * k and multiplies the prefactor by it.
    ``critical_alignment`` is an overlap and has no unit.
    """

    mu: float
    A_slope: float
    B: float
    growth_curvature: float
    tau_prefactor: Optional[float]
    critical_alignment: Optional[float]
    time_unit: str = "plain"

    def describe(self) -> str:
        """Summarise the divergence law and m_c in one line."""
        if self.tau_prefactor is not None:
            law = f"tau ~ {self.tau_prefactor:.6g} (mu - {self.mu:.10g})^-2"
        elif self.B > 0:
            law = f"tau -> 1/B = {1 / self.B:.6g} (B > 0), no linear motion of m"
        else:
            law = "no divergence law: B(mu_s) or dA/dmu(mu_s) is zero or undefined"
        if self.critical_alignment is not None:
            alignment = f"escapes from u0 -> 0 only if |m0| > m_c = {self.critical_alignment:.6g}"
        elif not np.isfinite(self.growth_curvature):
            alignment = "critical alignment unknown (the growth curvature is undefined at a kink)"
        else:
            alignment = "no critical alignment in (0, 1]"
        return f"mu_s = {self.mu:.10g}: {law}; {alignment}"


def _local_expressions(student, teacher):
    derivation = derive(student, teacher)
    at_point = {Q: MU**2, R: MU}
    loss = derivation.loss
    curvature = -(4 * MU**2 * sp.diff(loss, Q, 2) + 4 * MU * sp.diff(loss, Q, R) + sp.diff(loss, R, 2))
    curvature = curvature.subs(at_point, simultaneous=True)
    return derivation, sp.diff(derivation.A, MU), curvature


#: |B(mu_s)| below this multiple of the scale of dA/dmu and c counts as zero.
B_ZERO_TOLERANCE = 1e-12


def _undefined(value):
    return np.nan


def _generate_or_nan(expression: sp.Expr, name: str):
    """Generate a callable of mu, or one that returns nan where a kink leaves the quantity undefined.

    Kinked activations give Dirac-delta terms: after substitution they are
    infinite (zoo), or the numerical kernel rejects them (LoraTheoryError)
    when it is compiled or first evaluated.
    """
    if expression.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        return _undefined
    try:
        function = generate(expression, [MU], name)
    except LoraTheoryError:
        return _undefined

    def evaluate(value):
        try:
            return function(value)
        except LoraTheoryError:
            return np.nan

    return evaluate


def _numerical_slope(function, value: float, step: float = 1e-6) -> float:
    """Estimate dA/dmu by a central difference (error of order step^2), one-sided at mu = 0 and 1 (order step)."""
    lower, upper = max(value - step, 0.0), min(value + step, 1.0)
    values = function(np.array([lower, upper]))
    return float((values[1] - values[0]) / (upper - lower))


def singular_points(student, teacher=None, mu_range=(0.0, 1.0), time_unit: str = "plain") -> tuple[SingularPoint, ...]:
    """Zeros of A(mu) in ``mu_range`` with the tau prefactor and the critical alignment m_c.

    ``time_unit`` is ``"plain"`` (t = eta * steps) or ``"hermite"`` (rates
    divided by k! * k for a student that is exactly He_k, as in
    :func:`lora_theory.rates.escape_rates`).

    Example: He3 learning He3 has mu_s = 0.3207243 and m_c = 0.58193.
    """
    lower, upper = validate_mu(mu_range)[[0, -1]]
    # Check the unit before any derivation, so that a bad request fails fast.
    factor = _time_unit_factor(parse_activation(student), time_unit)
    located = escape_rates(student, teacher, mu=np.array([lower, upper])).singular_mu
    if not located:
        return ()
    derivation, slope, curvature = _local_expressions(student, teacher)
    slope_function = _generate_or_nan(slope, "A_slope")
    curvature_function = _generate_or_nan(curvature, "growth_curvature")
    rates = rate_functions(student, teacher)

    points = []
    for value in located:
        A_slope = float(slope_function(value))
        if not np.isfinite(A_slope):
            A_slope = _numerical_slope(rates.A, float(value))
        B = float(rates.B(np.array([value]))[0])
        c = float(curvature_function(value))

        # B evaluated at a floating-point root of A can be round-off (1e-16) where B vanishes with A.
        scale = max([1.0] + [abs(number) for number in (A_slope, c) if np.isfinite(number)])
        if abs(B) <= B_ZERO_TOLERANCE * scale:
            B = 0.0
        prefactor = abs(B) / A_slope**2 if B < 0 and A_slope != 0 and np.isfinite(A_slope) else None
        critical = None
        if c != 0 and 0 < -B / c <= 1:
            critical = float(np.sqrt(-B / c))

        # Rates scale by 1 / factor and the prefactor |B| / A'^2 by factor; m_c is a ratio of rates.
        if prefactor is not None:
            prefactor *= factor
        points.append(SingularPoint(float(value), A_slope / factor, B / factor, c / factor, prefactor, critical, time_unit))
    return tuple(points)
