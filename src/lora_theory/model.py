"""Models: which summary statistics describe the state and how they enter the covariance.

A model is data for the derivation: its state variables, its parameters,
the covariance entries of the pre-activations ``(lam, lam_star)`` as
functions of state and parameters, and the geometry of the training
dynamics (which state variables live on a sphere, what the step-size noise
adds). The derivation never names ``u`` or ``m`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .expectations import Q, R

__all__ = ["AlignedRankOne", "ALIGNED_RANK_ONE", "SphericalBaseline", "SPHERICAL_BASELINE", "u", "m", "mu", "kappa"]

#: LoRA scale.
u = sp.Symbol("u", real=True)
#: Overlap m = <v, w*> of the LoRA direction with the teacher.
m = sp.Symbol("m", real=True)
#: Pre-training strength, w0 = mu w*.
mu = sp.Symbol("mu", nonnegative=True)
#: Noise ratio kappa = eta d / B of one-pass SGD.
kappa = sp.Symbol("kappa", nonnegative=True)


@dataclass(frozen=True)
class AlignedRankOne:
    """Aligned pre-training ``w0 = mu w*`` with a rank-1 adapter ``u v``, ``|v| = 1``.

    State ``(u, m)`` with ``m = <v, w*>``; parameters ``(mu, kappa)``. The
    student pre-activation is ``lam = mu lam* + u nu`` with ``nu = <v, x>``, so

        Q = Var lam = mu^2 + 2 mu u m + u^2,     R = Cov(lam, lam*) = mu + u m.

    Flow (time t = eta * steps, limit d -> infinity at fixed kappa):

        du/dt = -dL/du
        dm/dt = -(1 - m^2) dL/dm - (kappa / 2) m u^2 E[g^2]

    where ``1 - m^2`` projects onto the tangent space of the sphere and the
    kappa term is the drift from renormalising v after each noisy step
    (G. Nwemadji, B. Loureiro, J. Barbier, arXiv:2602.02855, 2026).
    """

    name: str = "aligned-rank-one"
    state: tuple = (u, m)
    parameters: tuple = (mu, kappa)
    covariance: dict = field(default_factory=lambda: {Q: mu**2 + 2 * mu * u * m + u**2, R: mu + u * m})
    search_point: dict = field(default_factory=lambda: {u: sp.Integer(0), m: sp.Integer(0)})
    #: Factor of the tangent projection for each state variable (1 for flat directions).
    projection: dict = field(default_factory=lambda: {u: sp.Integer(1), m: 1 - m**2})

    def gradient(self, partials: dict) -> dict:
        """dL/dx for each state variable x from the partials dL/dc of the covariance entries c."""
        return {
            variable: sum(partials[entry] * sp.diff(expression, variable) for entry, expression in self.covariance.items())
            for variable in self.state
        }

    def vector_field(self, partials: dict, gradient_second_moment: sp.Expr) -> dict:
        """Right-hand side ``{u: du/dt, m: dm/dt}`` in the time unit t = eta * steps."""
        gradient = self.gradient(partials)
        field_ = {variable: -self.projection[variable] * gradient[variable] for variable in self.state}
        field_[m] = field_[m] - kappa / 2 * m * u**2 * gradient_second_moment
        return field_

    def search_jacobian(self, partials_at_point: dict) -> sp.Matrix:
        """Jacobian of the flow at the search point, from the partials dL/dc evaluated there.

        At the search point every covariance entry is stationary (its first
        derivatives vanish), so the Hessian of L reduces to
        ``sum_c dL/dc * d^2 c / dx dy`` and needs no second partials of L. The
        kappa term is of order u^2 and does not enter.
        """
        for entry, expression in self.covariance.items():
            for variable in self.state:
                if sp.diff(expression, variable).subs(self.search_point) != 0:
                    raise NotImplementedError(
                        f"covariance entry {entry} is not stationary at the search point of model {self.name}"
                    )
        size = len(self.state)
        hessian = sp.zeros(size, size)
        for row, first in enumerate(self.state):
            for column, second in enumerate(self.state):
                hessian[row, column] = sum(
                    partials_at_point[entry] * sp.diff(expression, first, second).subs(self.search_point)
                    for entry, expression in self.covariance.items()
                )
        projection = sp.diag(*[self.projection[variable].subs(self.search_point) for variable in self.state])
        return (-projection * hessian).applyfunc(sp.expand)

    def substitute(self, expression: sp.Expr) -> sp.Expr:
        """Express a function of (Q, R) in the state and parameters.

        Radicals of the conditional variance Q - R^2 are replaced by their
        factored form (here u^2 (1 - m^2)) first, and the angle
        acos(R / sqrt(Q)) by atan2(sqrt(Q - R^2), R): evaluating Q - R^2 or
        acos near 1 in floating point near perfect correlation would turn
        rounding of size 1e-16 into errors of size 1e-8.
        """
        residual = sp.factor(self.covariance[Q] - self.covariance[R] ** 2)
        expression = expression.subs(sp.acos(R / sp.sqrt(Q)), sp.atan2(sp.sqrt(Q - R**2), R))

        def radical(power):
            return sp.powdenest(residual**power.exp, force=False)

        expression = expression.replace(
            lambda e: e.is_Pow and not e.exp.is_Integer and sp.expand(e.base - (Q - R**2)) == 0, radical
        )
        return expression.subs(self.covariance, simultaneous=True)


ALIGNED_RANK_ONE = AlignedRankOne()


@dataclass(frozen=True)
class SphericalBaseline:
    """Plain spherical SGD on a unit vector ``w = v`` (no pre-training, no LoRA scale).

    State ``(m,)`` with ``m = <v, w*>``; parameter ``kappa``. The student
    pre-activation is ``lam = <v, x>``, so ``Q = 1`` and ``R = m``, and

        dm/dt = -(1 - m^2) dL/dR - (kappa / 2) m E[g^2],

    the flow of online SGD with step ``eta``, batch ``B`` and
    renormalisation, at fixed ``kappa = eta d / B``, time ``t = eta * steps``
    (G. Ben Arous, R. Gheissari, A. Jagannath, JMLR 22, 2021, for the
    scaling of its escape time with the information exponent).
    """

    name: str = "spherical-baseline"
    state: tuple = (m,)
    parameters: tuple = (kappa,)
    covariance: dict = field(default_factory=lambda: {Q: sp.Integer(1), R: m})

    def vector_field(self, partials: dict, gradient_second_moment: sp.Expr) -> dict:
        """Right-hand side ``{m: dm/dt}`` in the time unit t = eta * steps."""
        substituted = {entry: self.substitute(partial) for entry, partial in partials.items()}
        gradient = sum(substituted[entry] * sp.diff(expression, m) for entry, expression in self.covariance.items())
        drift = kappa / 2 * m * self.substitute(gradient_second_moment)
        return {m: -(1 - m**2) * gradient - drift}

    def substitute(self, expression: sp.Expr) -> sp.Expr:
        """Express a function of (Q, R) in the state (Q - R^2 = 1 - m^2 is factored first)."""
        expression = expression.subs(sp.acos(R / sp.sqrt(Q)), sp.atan2(sp.sqrt(Q - R**2), R))
        residual = sp.factor(1 - m**2)
        expression = expression.replace(
            lambda e: e.is_Pow and not e.exp.is_Integer and sp.expand(e.base - (Q - R**2)) == 0,
            lambda power: residual**power.exp,
        )
        return expression.subs(self.covariance, simultaneous=True)


SPHERICAL_BASELINE = SphericalBaseline()
