"""Parts shared by the full and the reduced SGD samplers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import sympy as sp

from .activations import Activation, Z

Vectorised = Callable[[np.ndarray], np.ndarray]


def _compile(expression: sp.Expr) -> Vectorised | float:
    """Compile an expression in z to a NumPy callable, or a constant expression to its value.

    Unlike :meth:`Activation.numpy`, the callable may return its argument
    itself (for ``z``) and does not copy its result. That copy took about a
    tenth of a reduced SGD step (erf, B = 500, 256 runs).
    """
    if Z not in expression.free_symbols:
        return float(expression)
    return sp.lambdify(Z, expression, modules=["scipy", "numpy"])


@dataclass(frozen=True)
class SGDProblem:
    """One-pass SGD on the aligned rank-1 model, as the samplers need it.

    ``student`` and ``teacher`` are sigma and sigma*, ``student_derivative``
    is sigma'; each is a vectorised NumPy callable or, for a constant, a float.
    ``student_expression`` and ``teacher_expression`` are their SymPy
    expressions in ``z`` when known, so a sampler can pick a compiled step.
    """

    student: Vectorised | float
    student_derivative: Vectorised | float
    teacher: Vectorised | float
    mu: float
    d: int
    eta: float
    batch: int
    student_expression: sp.Expr | None = field(default=None, compare=False)
    teacher_expression: sp.Expr | None = field(default=None, compare=False)

    @classmethod
    def build(cls, student: Activation, teacher: Activation, *, mu: float, d: int, eta: float, batch: int) -> "SGDProblem":
        """Compile the activations of a validated parameter set."""
        return cls(
            student=_compile(student.expr),
            student_derivative=_compile(student.derivative_expr(1)),
            teacher=_compile(teacher.expr),
            mu=mu,
            d=d,
            eta=eta,
            batch=batch,
            student_expression=student.expr,
            teacher_expression=teacher.expr,
        )

    @staticmethod
    def _evaluate(function: Vectorised | float, values: np.ndarray):
        return function if isinstance(function, float) else function(values)

    def gradient_factor(self, lam: np.ndarray, lam_star: np.ndarray) -> np.ndarray:
        """Per-sample factor g = (sigma(lam) - sigma*(lam*)) sigma'(lam) of the loss gradient, a new array."""
        error = np.subtract(self._evaluate(self.student, lam), self._evaluate(self.teacher, lam_star))
        if isinstance(error, float):
            error = np.full(lam.shape, error)
        if isinstance(self.student_derivative, float):
            if self.student_derivative != 1.0:
                error *= self.student_derivative
        else:
            error *= self.student_derivative(lam)
        return error
