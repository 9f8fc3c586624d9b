"""Symbolic derivation of the population loss, the flow and the escape rates.

Conventions: probabilists' Hermite polynomials; ``Var lam = Q``,
``Cov(lam, lam_star) = R``, ``Var lam_star = 1``; time ``t = eta * steps``.

For a student ``sigma`` and a teacher ``sigma_star``:

    L(Q, R)     = 1/2 ( E[sigma(lam)^2] - 2 E[sigma(lam) sigma_star(lam*)] + E[sigma_star(lam*)^2] )
    E[g^2](Q,R) = E[(sigma(lam) - sigma_star(lam*))^2 sigma'(lam)^2]

and, for the aligned rank-1 model, the linearisation at the search point
``(u, m) = (0, 0)`` is ``d/dt (u, m) = [[B, A], [A, 0]] (u, m)`` with

    A(mu) = -(2 mu dL/dQ + dL/dR) at (Q, R) = (mu^2, mu),
    B(mu) = -2 dL/dQ             at (Q, R) = (mu^2, mu),
    lambda_plus = (B + sqrt(B^2 + 4 A^2)) / 2,   tau = 1 / lambda_plus

(G. Nwemadji, B. Loureiro, J. Barbier, "When pre-training hurts LoRA
fine-tuning: a dynamical analysis via single-index models",
arXiv:2602.02855, 2026).

Derivations are cached on disk (:mod:`lora_theory.cache`), keyed by the
canonical form of both activations, the model and the package version.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from . import cache
from .activations import Activation, Z, parse_activation
from .expectations import Q, R, pair_expectation, simplify_kinked
from .kernels import DeltaKernel, GaussianKernel, kernel
from .model import ALIGNED_RANK_ONE, AlignedRankOne

__all__ = ["Derivation", "derive"]

#: Bumped whenever the content of a cached derivation changes meaning.
FORMAT_VERSION = 5


@dataclass(frozen=True)
class Derivation:
    """Symbolic results for one (student, teacher, model).

    Expressions in ``Q``, ``R`` (``loss``, ``loss_Q``, ``loss_R``,
    ``gradient_second_moment``), in the model state and parameters
    (``flow``, ``loss_state``), and in ``mu`` (``A``, ``B``,
    ``lambda_plus``, ``tau``).
    """

    student: Activation
    teacher: Activation
    model_name: str
    loss: sp.Expr
    loss_Q: sp.Expr
    loss_R: sp.Expr
    gradient_second_moment: sp.Expr
    loss_state: sp.Expr
    flow: dict
    A: sp.Expr
    B: sp.Expr
    lambda_plus: sp.Expr
    tau: sp.Expr

    @property
    def exact(self) -> bool:
        """True when no numerical kernel appears (everything is in closed form)."""
        return not any(
            expression.has(GaussianKernel, DeltaKernel)
            for expression in (self.loss, self.loss_Q, self.loss_R, self.gradient_second_moment)
        )

    @property
    def rates_exact(self) -> bool:
        """True when A(mu) and B(mu) are closed forms."""
        return not (self.A.has(GaussianKernel, DeltaKernel) or self.B.has(GaussianKernel, DeltaKernel))


def _kernel(f: sp.Expr, h: sp.Expr) -> sp.Expr:
    exact = pair_expectation(f, h)
    if exact is not None:
        return exact
    return kernel(f, h, Q, R)


def _is_kinked(expression: sp.Expr) -> bool:
    """True for wedge-engine output: the angle acos(R / sqrt(Q)) or radicals of Q - R^2."""
    if expression.has(sp.acos(R / sp.sqrt(Q))):
        return True
    for power in expression.atoms(sp.Pow):
        if power.exp.is_Integer:
            continue
        if sp.cancel(power.base - (Q - R**2)) == 0 or sp.cancel(power.base - (1 - R**2 / Q)) == 0:
            return True
    return False


def _tidy(expression: sp.Expr) -> sp.Expr:
    """Simplify a (Q, R) expression so that it evaluates finitely at perfect correlation."""
    if _is_kinked(expression):
        return simplify_kinked(expression)
    return expression


def _derive(student: Activation, teacher: Activation, model: AlignedRankOne) -> Derivation:
    sigma = student.expr
    sigma_star = teacher.expr
    sigma_prime = sp.diff(sigma, Z)

    # Population loss and its partials in the covariance entries.
    loss = (_kernel(sigma**2, 1) - 2 * _kernel(sigma, sigma_star) + _kernel(sp.Integer(1), sigma_star**2)) / 2
    loss = _tidy(loss)
    loss_Q = _tidy(sp.diff(loss, Q))
    loss_R = _tidy(sp.diff(loss, R))

    # E[g^2] with g = (sigma(lam) - sigma_star(lam*)) sigma'(lam), expanded into three kernels.
    gradient_second_moment = _tidy(
        _kernel(sigma**2 * sigma_prime**2, 1)
        - 2 * _kernel(sigma * sigma_prime**2, sigma_star)
        + _kernel(sigma_prime**2, sigma_star**2)
    )

    # The flow of the summary statistics.
    partials = {Q: loss_Q, R: loss_R}
    state_partials = {entry: model.substitute(partial) for entry, partial in partials.items()}
    flow = model.vector_field(state_partials, model.substitute(gradient_second_moment))
    loss_state = model.substitute(loss)

    # Linearisation at the search point: [[B, A], [A, 0]].
    # Substitute the covariance at the search point directly (Q = mu^2, R = mu), where acos(R / sqrt(Q))
    # and sqrt(Q - R^2) simplify to 0 exactly.
    covariance_at_point = {entry: value.subs(model.search_point) for entry, value in model.covariance.items()}
    at_point = {entry: partial.subs(covariance_at_point, simultaneous=True) for entry, partial in partials.items()}
    jacobian = model.search_jacobian(at_point)
    B = jacobian[0, 0] if jacobian[0, 0].has(GaussianKernel, DeltaKernel) else sp.simplify(jacobian[0, 0])
    A = jacobian[0, 1] if jacobian[0, 1].has(GaussianKernel, DeltaKernel) else sp.simplify(jacobian[0, 1])
    lambda_plus = (B + sp.sqrt(B**2 + 4 * A**2)) / 2
    tau = (-B + sp.sqrt(B**2 + 4 * A**2)) / (2 * A**2)

    return Derivation(
        student=student,
        teacher=teacher,
        model_name=model.name,
        loss=loss,
        loss_Q=loss_Q,
        loss_R=loss_R,
        gradient_second_moment=gradient_second_moment,
        loss_state=loss_state,
        flow=flow,
        A=A,
        B=B,
        lambda_plus=lambda_plus,
        tau=tau,
    )


def derive(student, teacher=None, *, model: AlignedRankOne = ALIGNED_RANK_ONE, use_cache: bool = True) -> Derivation:
    """Derive (or load from the cache) the loss, flow and rates of a student/teacher pair.

    ``student`` and ``teacher`` are spec strings or :class:`Activation`;
    the teacher defaults to the student.
    """
    student = parse_activation(student)
    teacher = student if teacher is None else parse_activation(teacher)
    key_fields = {
        "format": FORMAT_VERSION,
        "model": model.name,
        "student": student.canonical,
        "teacher": teacher.canonical,
    }
    if use_cache:
        stored = cache.load("derivation", key_fields)
        if stored is not None:
            return Derivation(student=student, teacher=teacher, **stored)
    derivation = _derive(student, teacher, model)
    if use_cache:
        content = {
            name: getattr(derivation, name)
            for name in Derivation.__dataclass_fields__
            if name not in ("student", "teacher")
        }
        cache.store("derivation", key_fields, content)
    return derivation
