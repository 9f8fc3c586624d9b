"""Escape rates of the search phase: A(mu), B(mu), lambda_plus(mu), tau(mu), t_exit.

Convention: time ``t = eta * steps`` (``time_unit="plain"``). With
``time_unit="hermite"`` and a student that is a single probabilists'
Hermite polynomial ``He_k``, the rates A, B and lambda_plus are divided by
``k! * k`` and tau is multiplied by it, which is the unit of the reference
figures of G. Nwemadji, B. Loureiro, J. Barbier, arXiv:2602.02855 (2026),
where the learning rate is divided by ``k! * k``.

Near the search point ``(u, m) = (0, 0)`` the flow is linear,
``d/dt (u, m) = [[B, A], [A, 0]] (u, m)``, with unstable eigenvalue

    lambda_plus = (B + sqrt(B^2 + 4 A^2)) / 2,     tau = 1 / lambda_plus,

and from ``(0, m0)`` the overlap reaches ``m_exit`` after about

    t_exit = tau * ( log(m_exit / m0) + log(1 + (lambda_plus / A)^2) ),

which is ``tau * (1/2) log d`` at leading order for ``m0 = 1/sqrt(d)``.
Where ``A(mu) = 0`` (singular mu) the linear escape rate vanishes and tau
is undefined; such points are located, reported and never returned as a
bare infinity.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import sympy as sp
from scipy.optimize import brentq

from ._errors import ParameterError, QuadratureError, TimeUnitError
from .activations import parse_activation
from . import cache
from .codegen import deserialise, generate, generate_polynomial, serialise
from .derivation import FORMAT_VERSION, Derivation, derive
from .model import mu as MU

__all__ = ["EscapeRates", "escape_rates", "exit_time", "rate_functions", "TIME_UNITS"]

TIME_UNITS = ("plain", "hermite")

#: Tolerance on the location of a zero of A(mu).
SINGULAR_TOLERANCE = 1e-10

#: |A| below this multiple of the scale of A on the grid counts as zero.
_ZERO_RELATIVE = 1e-13


@dataclass(frozen=True)
class EscapeRates:
    """Escape rates on a grid of pre-training strengths.

    Arrays have the shape ``(n,)`` of ``mu``. Undefined entries are nan in
    the arrays, ``None`` in :meth:`rows`, and ``notes[i]`` gives the reason.
    """

    student: str
    teacher: str
    time_unit: str
    mu: np.ndarray
    A: np.ndarray
    B: np.ndarray
    lambda_plus: np.ndarray
    tau: np.ndarray
    notes: tuple
    singular_mu: tuple
    exact: bool

    def rows(self) -> list[dict]:
        """Return one dict per mu with keys mu, A, B, lambda_plus, tau (``None`` where undefined)."""

        def clean(value):
            return float(value) if np.isfinite(value) else None

        return [
            {
                "mu": float(self.mu[i]),
                "A": clean(self.A[i]),
                "B": clean(self.B[i]),
                "lambda_plus": clean(self.lambda_plus[i]),
                "tau": clean(self.tau[i]),
            }
            for i in range(self.mu.size)
        ]


@dataclass(frozen=True)
class RateFunctions:
    """Generated callables A(mu), B(mu) in the plain time unit.

    ``real_roots`` contains every real zero of A when A is a polynomial (else
    ``None``); ``exact`` is True when A and B are closed forms.
    """

    student: object
    teacher: object
    A: Callable[[np.ndarray], np.ndarray]
    B: Callable[[np.ndarray], np.ndarray]
    real_roots: Optional[tuple]
    exact: bool

    @property
    def derivation(self) -> Derivation:
        """The symbolic derivation behind the callables (loaded on first use)."""
        return derive(self.student, self.teacher)


def _is_rational_polynomial_in_mu(expression: sp.Expr) -> bool:
    """True when the expression is a polynomial in mu with rational coefficients.

    Such polynomials get the exact-coefficient callable and exact real roots.
    A polynomial with irrational coefficients (``sqrt(2/pi) - mu/2`` for a
    ReLU student and a squared-ReLU teacher) takes the general path.
    """
    if not (expression.free_symbols <= {MU} and expression.is_polynomial(MU)):
        return False
    return sp.Poly(expression, MU).domain in (sp.ZZ, sp.QQ)


def _callable(expression: sp.Expr, name: str):
    if _is_rational_polynomial_in_mu(expression):
        return generate_polynomial(expression, MU, name)
    return generate(expression, [MU], name)


@functools.lru_cache(maxsize=256)
def _rate_functions(student_canonical: str, teacher_canonical: str, student, teacher) -> RateFunctions:
    key_fields = {"format": FORMAT_VERSION, "student": student_canonical, "teacher": teacher_canonical}
    stored = cache.load("rates", key_fields)
    if stored is not None:
        roots = None if stored["real_roots"] is None else tuple(stored["real_roots"])
        return RateFunctions(student, teacher, deserialise(stored["A"]), deserialise(stored["B"]), roots, stored["exact"])

    derivation = derive(student, teacher)
    A = _callable(derivation.A, "A")
    B = _callable(derivation.B, "B")
    roots = None
    if _is_rational_polynomial_in_mu(derivation.A) and not derivation.A.is_zero:
        roots = tuple(sorted(float(root.evalf(30)) for root in sp.Poly(derivation.A, MU).real_roots()))
    functions = RateFunctions(student, teacher, A, B, roots, derivation.rates_exact)
    cache.store(
        "rates",
        key_fields,
        {"A": serialise(A), "B": serialise(B), "real_roots": None if roots is None else list(roots), "exact": functions.exact},
    )
    return functions


def rate_functions(student, teacher=None) -> RateFunctions:
    """Derive (or load from the cache) A(mu) and B(mu) and generate their NumPy callables."""
    student = parse_activation(student)
    teacher = student if teacher is None else parse_activation(teacher)
    return _rate_functions(student.canonical, teacher.canonical, student, teacher)


def validate_mu(mu) -> np.ndarray:
    """Return mu as a 1-D float array, or raise ParameterError naming the bad value."""
    values = np.atleast_1d(np.asarray(mu, dtype=float))
    if values.ndim != 1 or values.size == 0:
        raise ParameterError(f"mu must be a non-empty 1-D grid of values, got shape {values.shape}")
    bad = values[~np.isfinite(values)]
    if bad.size:
        raise ParameterError(f"mu must be finite, got {float(bad[0])!r}")
    outside = values[(values < 0) | (values > 1)]
    if outside.size:
        raise ParameterError(
            f"mu = {float(outside[0])!r} is outside [0, 1]; the pre-training strength mu must lie in [0, 1]"
        )
    return values


def _time_unit_factor(student, time_unit: str) -> float:
    if time_unit not in TIME_UNITS:
        raise TimeUnitError(f"unknown time unit {time_unit!r}; use one of {', '.join(TIME_UNITS)}")
    if time_unit == "plain":
        return 1.0
    degree = student.hermite_degree
    if degree is None or degree < 1:
        raise TimeUnitError(
            f"time unit 'hermite' divides rates by k!*k and needs a student that is a single He_k "
            f"with k >= 1, but the student is {student.spec!r}; use the plain time unit"
        )
    return float(sp.factorial(degree) * degree)


def _unstable_eigenvalue(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    # Stable branches of (B + sqrt(B^2 + 4 A^2)) / 2: no cancellation when B < 0.
    root = np.hypot(B, 2 * A)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(B >= 0, (B + root) / 2, 2 * A**2 / (root - B))


def _find_singular(functions: RateFunctions, lower: float, upper: float) -> tuple:
    """Zeros of A(mu) in [lower, upper], to SINGULAR_TOLERANCE."""
    if functions.real_roots is not None:
        roots = []
        for value in functions.real_roots:
            if lower - SINGULAR_TOLERANCE <= value <= upper + SINGULAR_TOLERANCE:
                roots.append(min(max(value, lower), upper))
        return tuple(sorted(set(roots)))

    grid = np.linspace(lower, upper, 4001)
    values = functions.A(grid)
    scale = np.nanmax(np.abs(values)) if np.any(np.isfinite(values)) else 1.0
    if scale == 0:
        # A vanishes identically (a constant student or teacher): no isolated zeros to report.
        return ()
    roots = list(grid[np.abs(values) <= _ZERO_RELATIVE * scale])
    for index in np.nonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0)[0]:
        root = brentq(lambda x: float(functions.A(np.array([x]))[0]), grid[index], grid[index + 1], xtol=1e-14)
        roots.append(root)
    # NOTE: zeros where A touches 0 without changing sign are found here only if they fall on
    # the sampling grid; polynomial A(mu) (exact real roots above) has no such blind spot.
    return tuple(sorted(set(float(root) for root in roots)))


def escape_rates(student, teacher=None, mu=None, time_unit: str = "plain") -> EscapeRates:
    """A, B, lambda_plus and tau on a grid of mu, with singular points located.

    Parameters
    ----------
    student, teacher:
        Spec strings or :class:`~lora_theory.activations.Activation`; the
        teacher defaults to the student.
    mu:
        Pre-training strengths in [0, 1], shape ``(n,)`` (a scalar is a grid of one).
    time_unit:
        ``"plain"`` (t = eta * steps) or ``"hermite"`` (rates divided by k!*k
        for a student equal to He_k).
    """
    student = parse_activation(student)
    teacher = student if teacher is None else parse_activation(teacher)
    factor = _time_unit_factor(student, time_unit)
    grid = validate_mu(np.linspace(0.02, 0.99, 200) if mu is None else mu)
    functions = rate_functions(student, teacher)

    try:
        A = functions.A(grid) / factor
        B = functions.B(grid) / factor
    except QuadratureError as error:
        raise QuadratureError(f"computing A(mu) and B(mu) for student {student.spec}, teacher {teacher.spec} failed: {error}") from error
    lambda_plus = _unstable_eigenvalue(A, B)
    with np.errstate(divide="ignore"):
        tau = 1.0 / lambda_plus

    singular = _find_singular(functions, float(grid.min()), float(grid.max()))
    notes: list[Optional[str]] = [None] * grid.size
    kinked = student.expr.has(sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign)
    scale = np.nanmax(np.abs(A)) if np.any(np.isfinite(A)) else 1.0
    for i, value in enumerate(grid):
        if scale == 0:
            notes[i] = "A(mu) = 0 at every mu: the search phase has no linear escape rate"
        elif kinked and value == 0:
            notes[i] = "mu = 0: the student pre-activation vanishes at the search point, where the activation has a kink"
        elif any(abs(value - root) <= SINGULAR_TOLERANCE for root in singular) or abs(A[i]) <= _ZERO_RELATIVE * scale:
            notes[i] = "A(mu) = 0: singular mu, the linear escape rate vanishes"
        elif not (np.isfinite(A[i]) and np.isfinite(B[i]) and np.isfinite(tau[i]) and tau[i] > 0):
            notes[i] = "not finite in floating point"
        if notes[i] is not None:
            lambda_plus[i] = np.nan
            tau[i] = np.nan
            if notes[i].startswith("mu = 0"):
                A[i] = np.nan
                B[i] = np.nan

    return EscapeRates(
        student=student.spec,
        teacher=teacher.spec,
        time_unit=time_unit,
        mu=grid,
        A=A,
        B=B,
        lambda_plus=lambda_plus,
        tau=tau,
        notes=tuple(notes),
        singular_mu=singular,
        exact=functions.exact,
    )


def exit_time(student, teacher=None, mu=None, *, m0=None, d=None, m_exit: float = 0.5, time_unit: str = "plain"):
    """Linear estimate of the time for |m| to reach ``m_exit`` from ``(u, m) = (0, m0)``.

    ``t_exit = tau (log(m_exit / m0) + log(1 + (lambda_plus / A)^2))``, in the
    requested time unit. Give either ``m0`` in (0, m_exit) or the dimension
    ``d`` (then ``m0 = 1 / sqrt(d)``). Returns ``(times, rates)`` with times of
    shape ``(n,)`` and nan where tau is undefined (see ``rates.notes``).
    """
    if (m0 is None) == (d is None):
        raise ParameterError("give exactly one of m0 (initial overlap) or d (dimension, m0 = 1/sqrt(d))")
    if d is not None:
        if not (np.isfinite(d) and d >= 1):
            raise ParameterError(f"d must be a finite number >= 1, got {d!r}")
        m0 = 1.0 / np.sqrt(d)
    if not (np.isfinite(m_exit) and 0 < m_exit <= 1):
        raise ParameterError(f"m_exit must lie in (0, 1], got {m_exit!r}")
    if not (np.isfinite(m0) and 0 < abs(m0) < m_exit):
        raise ParameterError(f"|m0| must lie in (0, m_exit = {m_exit}), got {m0!r}")
    rates = escape_rates(student, teacher, mu, time_unit)
    with np.errstate(divide="ignore", invalid="ignore"):
        projection = np.log1p((rates.lambda_plus / rates.A) ** 2)
        times = rates.tau * (np.log(m_exit / abs(m0)) + projection)
    return times, rates
