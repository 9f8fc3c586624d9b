"""Gaussian expectations of pairs of functions, exact wherever possible.

Convention: the pre-activation pair ``(lam, lam_star)`` is centred Gaussian
with ``Var lam = Q``, ``Cov(lam, lam_star) = R`` and ``Var lam_star = 1``.
The kernel of two functions ``f``, ``h`` of one variable is

    K[f, h](Q, R) = E[ f(lam) h(lam_star) ].

Every expectation the model needs (the loss, the squared gradient factor and
their derivatives) is a sum of such kernels, because any integrand in two
Gaussian variables that comes from a product of activations factorises into
a function of ``lam`` times a function of ``lam_star``.

:func:`pair_expectation` tries, in order,

1. the polynomial engine: exact rational polynomials in ``Q`` and ``R``
   through the Hermite (Mehler) expansion
   ``K = sum_n R^n c_n(h) E[f^(n)(sqrt(Q) z)]`` with ``c_n(h)`` the
   probabilists' Hermite coefficients of ``h`` (``h = sum_n c_n He_n``);
2. the erf engine: products of a polynomial, Gaussian factors
   ``exp(-a z^2)`` and at most two centred ``erf(c z)`` factors, through
   absorption of the Gaussian factors into the covariance, Gaussian
   integration by parts (Stein's lemma) and the arcsine kernel
   ``E[erf(a.x) erf(b.x)] = (2/pi) asin(2 a'Sb / sqrt((1 + 2 a'Sa)(1 + 2 b'Sb)))``;
3. the wedge engine: polynomials times Heavisides with kinks at 0 (ReLU
   and its powers), integrated exactly in polar coordinates over the
   wedges that the signs of ``lam`` and ``lam_star`` cut out. This is the
   arc-cosine kernel and its polynomial generalisations;

and returns ``None`` when none applies, so that the caller falls back to a
numerical kernel (:mod:`lora_theory.kernels`).

:func:`expectation_1d` gives ``E[f(sqrt(v) z)]`` exactly for polynomials
and for piecewise polynomials with kinks at arbitrary points (split at the
kinks, truncated Gaussian moments), and otherwise through the pair engines.
"""

from __future__ import annotations

import functools
import itertools
from typing import Optional

import sympy as sp

from .activations import Z

__all__ = ["Q", "R", "pair_expectation", "expectation_1d", "hermite_coefficients"]

#: Variance of the student pre-activation.
Q = sp.Symbol("Q", nonnegative=True)
#: Covariance of student and teacher pre-activations.
R = sp.Symbol("R", real=True)

_THETA = sp.Symbol("theta", real=True)
_PHI = sp.Symbol("phi", real=True)
_S = sp.Symbol("s", nonnegative=True)


# ---------------------------------------------------------------------------
# Polynomials: Hermite (Mehler) expansion
# ---------------------------------------------------------------------------

def _gaussian_moment(order: int) -> sp.Integer:
    """E[z^order] for z ~ N(0, 1): (order - 1)!! for even order, else 0."""
    if order % 2:
        return sp.Integer(0)
    return sp.factorial2(order - 1) if order else sp.Integer(1)


def _scaled_expectation(polynomial: sp.Poly, variance: sp.Expr) -> sp.Expr:
    """E[p(sqrt(variance) z)] for a polynomial p, as a polynomial in the variance."""
    total = sp.Integer(0)
    for (power,), coefficient in polynomial.terms():
        if power % 2 == 0:
            total += coefficient * _gaussian_moment(power) * variance ** (power // 2)
    return total


def hermite_coefficients(polynomial: sp.Expr) -> list[sp.Expr]:
    """Probabilists' Hermite coefficients ``c_n`` with ``p = sum_n c_n He_n``.

    Uses ``c_n = E[p(z) He_n(z)] / n!`` evaluated exactly.
    """
    poly = sp.Poly(sp.expand(polynomial), Z)
    degree = max(poly.degree(), 0)
    coefficients = []
    for n in range(degree + 1):
        product = sp.Poly(poly.as_expr() * sp.hermite_prob(n, Z), Z)
        coefficients.append(_scaled_expectation(product, sp.Integer(1)) / sp.factorial(n))
    return coefficients


def _polynomial_pair(f: sp.Expr, h: sp.Expr) -> sp.Expr:
    # Mehler: E[f(lam) h(lam*)] = sum_n R^n c_n(h) E[f^(n)(sqrt(Q) z)], exact for polynomials.
    f_poly = sp.Poly(f, Z)
    total = sp.Integer(0)
    derivative = f_poly
    for n, coefficient in enumerate(hermite_coefficients(h)):
        if n > 0:
            derivative = derivative.diff(Z)
        if coefficient == 0:
            continue
        if derivative.is_zero:
            break
        total += coefficient * R**n * _scaled_expectation(derivative, Q)
    return sp.expand(total)


# ---------------------------------------------------------------------------
# erf engine: polynomial x Gaussian factors x at most two centred erfs
# ---------------------------------------------------------------------------

class _Unsupported(Exception):
    """Raised inside an engine when a term falls outside its class."""


def _linear_coefficient(argument: sp.Expr) -> sp.Expr:
    """c for an argument c*z (no offset); raises _Unsupported otherwise."""
    argument = sp.expand(argument)
    coefficient = argument.coeff(Z, 1)
    if sp.simplify(argument - coefficient * Z) != 0 or coefficient.free_symbols:
        raise _Unsupported
    return coefficient


def _split_factors(term: sp.Expr):
    """Split one product term in Z into (coefficient, power, gauss, erfs).

    gauss is a with exp(-a z^2), erfs the list of c in erf(c z).
    """
    coefficient = sp.Integer(1)
    power = 0
    gauss = sp.Integer(0)
    erfs: list[sp.Expr] = []
    for factor in sp.Mul.make_args(term):
        base, exponent = factor.as_base_exp()
        if not factor.has(Z):
            coefficient *= factor
        elif base == Z and exponent.is_Integer and exponent > 0:
            power += int(exponent)
        elif isinstance(factor, sp.exp) or (isinstance(base, sp.exp) and exponent.is_number):
            argument = sp.expand(factor.args[0] if isinstance(factor, sp.exp) else base.args[0] * exponent)
            quadratic = argument.coeff(Z, 2)
            if sp.expand(argument - quadratic * Z**2) != 0 or quadratic.free_symbols or not quadratic.is_negative:
                raise _Unsupported
            gauss += -quadratic
        elif isinstance(base, sp.erf) and exponent.is_Integer and exponent > 0:
            erfs.extend([_linear_coefficient(base.args[0])] * int(exponent))
        else:
            raise _Unsupported
    return coefficient, power, gauss, erfs


class _ErfEngine:
    """E[x^alpha exp(-x'Mx/2) prod erf(a_k . x)] for x ~ N(0, S), S symbolic 2x2."""

    def __init__(self, covariance: sp.Matrix):
        self.covariance = covariance

    def expectation(self, terms) -> sp.Expr:
        total = sp.Integer(0)
        for coefficient, alpha, gauss_matrix, erf_vectors in terms:
            covariance, norm = self.absorb(self.covariance, gauss_matrix)
            total += coefficient * norm * self.stein(covariance, alpha, tuple(erf_vectors))
        return total

    @staticmethod
    def absorb(covariance: sp.Matrix, gauss_matrix: sp.Matrix):
        """Absorb exp(-x'Mx/2) into N(0, S): returns (S', det(I + M S)^(-1/2)).

        S' = S (I + M S)^(-1) also holds for singular S (perfect correlation).
        """
        if gauss_matrix.is_zero_matrix:
            return covariance, sp.Integer(1)
        identity = sp.eye(covariance.shape[0])
        factor = identity + gauss_matrix * covariance
        determinant = sp.factor(factor.det())
        new_covariance = (covariance * factor.adjugate() / determinant).applyfunc(sp.factor)
        return new_covariance, 1 / sp.sqrt(determinant)

    def stein(self, covariance: sp.Matrix, alpha: tuple, erfs: tuple) -> sp.Expr:
        return self._stein(tuple(covariance), alpha, erfs)

    @functools.lru_cache(maxsize=None)
    def _stein(self, covariance_entries: tuple, alpha: tuple, erfs: tuple) -> sp.Expr:
        covariance = sp.Matrix(2, 2, covariance_entries)

        # Odd integrands vanish: erf is odd and the Gaussian is centred.
        if (sum(alpha) + len(erfs)) % 2:
            return sp.Integer(0)

        if sum(alpha) == 0:
            return self.base_case(covariance, erfs)

        # Stein's lemma: E[x_i F(x)] = sum_j S_ij E[d_j F(x)], on the first nonzero power.
        i = next(index for index, power in enumerate(alpha) if power > 0)
        lowered = list(alpha)
        lowered[i] -= 1
        total = sp.Integer(0)
        for j in range(2):
            if covariance[i, j] == 0:
                continue
            # Derivative of the remaining monomial.
            if lowered[j] > 0:
                reduced = list(lowered)
                reduced[j] -= 1
                total += covariance[i, j] * lowered[j] * self._stein(covariance_entries, tuple(reduced), erfs)
            # Derivative of each erf: d_j erf(a.x) = a_j (2/sqrt(pi)) exp(-(a.x)^2).
            for k, vector in enumerate(erfs):
                if vector[j] == 0:
                    continue
                rest = erfs[:k] + erfs[k + 1:]
                gauss_matrix = 2 * sp.Matrix(vector) * sp.Matrix(vector).T
                new_covariance, norm = self.absorb(covariance, gauss_matrix)
                total += (
                    covariance[i, j] * vector[j] * 2 / sp.sqrt(sp.pi) * norm
                    * self._stein(tuple(new_covariance), tuple(lowered), rest)
                )
        return total

    @staticmethod
    def base_case(covariance: sp.Matrix, erfs: tuple) -> sp.Expr:
        if not erfs:
            return sp.Integer(1)
        if len(erfs) == 2:
            a, b = (sp.Matrix(vector) for vector in erfs)
            cross = (a.T * covariance * b)[0]
            first = (a.T * covariance * a)[0]
            second = (b.T * covariance * b)[0]
            return 2 / sp.pi * sp.asin(2 * cross / sp.sqrt((1 + 2 * first) * (1 + 2 * second)))
        # One or three erfs are odd (handled above); four or more have no closed form.
        raise _Unsupported


def _erf_pair(f: sp.Expr, h: sp.Expr) -> sp.Expr:
    covariance = sp.Matrix([[Q, R], [R, 1]])
    terms = []
    for f_term in sp.Add.make_args(sp.expand(f)):
        f_coefficient, f_power, f_gauss, f_erfs = _split_factors(f_term)
        for h_term in sp.Add.make_args(sp.expand(h)):
            h_coefficient, h_power, h_gauss, h_erfs = _split_factors(h_term)
            gauss_matrix = sp.diag(2 * f_gauss, 2 * h_gauss)
            erf_vectors = [(c, sp.Integer(0)) for c in f_erfs] + [(sp.Integer(0), c) for c in h_erfs]
            if len(erf_vectors) > 2 and len(erf_vectors) % 2 == 0:
                raise _Unsupported
            terms.append((f_coefficient * h_coefficient, (f_power, h_power), gauss_matrix, erf_vectors))
    return _ErfEngine(covariance).expectation(terms)


# ---------------------------------------------------------------------------
# Wedge engine: polynomial x Heaviside(+-lam) x Heaviside(+-lam*)
# ---------------------------------------------------------------------------

def _rewrite_kinks(expression: sp.Expr) -> sp.Expr:
    """Rewrite Max(0, c z) as c z Heaviside(c z) and normalise Heaviside(c z) to Heaviside(+-z)."""

    def max_to_heaviside(*arguments):
        if len(arguments) != 2 or sp.Integer(0) not in arguments:
            raise _Unsupported
        other = arguments[0] if arguments[1] == 0 else arguments[1]
        return other * sp.Heaviside(other)

    def normalise_heaviside(argument, *_):
        coefficient = _linear_coefficient(argument)
        if coefficient == 0:
            raise _Unsupported
        return sp.Heaviside(sp.sign(coefficient) * Z)

    expression = expression.replace(sp.Max, max_to_heaviside)
    expression = expression.replace(sp.Heaviside, normalise_heaviside)
    return sp.expand(expression)


def _split_wedge_factors(term: sp.Expr):
    """(coefficient, power, sign) with sign +1/-1 for Heaviside(+-z), 0 for none."""
    coefficient = sp.Integer(1)
    power = 0
    sign = 0
    for factor in sp.Mul.make_args(term):
        base, exponent = factor.as_base_exp()
        if not factor.has(Z):
            coefficient *= factor
        elif base == Z and exponent.is_Integer and exponent > 0:
            power += int(exponent)
        elif isinstance(base, sp.Heaviside) and exponent.is_Integer and exponent > 0:
            # Heaviside^n = Heaviside almost everywhere, and H(z) H(-z) = 0 almost everywhere.
            this_sign = 1 if base.args[0] == Z else -1
            if sign and sign != this_sign:
                return sp.Integer(0), 0, 0
            sign = this_sign
        else:
            raise _Unsupported
    return coefficient, power, sign


@functools.lru_cache(maxsize=None)
def _trig_antiderivative(cos_power: int, sin_power: int) -> sp.Expr:
    return sp.integrate(sp.cos(_THETA) ** cos_power * sp.sin(_THETA) ** sin_power, _THETA)


def _angular_interval(sign_student: int, sign_teacher: int):
    """Angles theta of the wedge, with (lam*, xi) = r (cos theta, sin theta) and lam = R lam* + s xi.

    phi = atan2(s, R) in [0, pi] is the direction of lam; lam > 0 on (phi - pi/2, phi + pi/2)
    and lam* > 0 on (-pi/2, pi/2).
    """
    half = sp.pi / 2
    table = {
        (0, 0): (sp.Integer(0), 2 * sp.pi),
        (1, 0): (_PHI - half, _PHI + half),
        (-1, 0): (_PHI + half, _PHI + 3 * half),
        (0, 1): (-half, half),
        (0, -1): (half, 3 * half),
        (1, 1): (_PHI - half, half),
        (1, -1): (half, _PHI + half),
        (-1, 1): (-half, _PHI - half),
        (-1, -1): (_PHI + half, 3 * half),
    }
    return table[(sign_student, sign_teacher)]


def _evaluate_angle(expression: sp.Expr, angle: sp.Expr) -> sp.Expr:
    value = sp.expand_trig(expression.subs(_THETA, angle))
    return value.subs({sp.sin(_PHI): _S / sp.sqrt(Q), sp.cos(_PHI): R / sp.sqrt(Q)})


@functools.lru_cache(maxsize=None)
def _wedge_moment(student_power: int, teacher_power: int, sign_student: int, sign_teacher: int) -> sp.Expr:
    """E[lam^i lam*^j H(+-lam) H(+-lam*)] in terms of R, s = sqrt(Q - R^2) and phi."""
    order = student_power + teacher_power
    radial = 2 ** sp.Rational(order, 2) * sp.gamma(sp.Rational(order, 2) + 1) / (2 * sp.pi)
    lower, upper = _angular_interval(sign_student, sign_teacher)
    angular = sp.Integer(0)
    for l in range(student_power + 1):
        weight = sp.binomial(student_power, l) * R**l * _S ** (student_power - l)
        antiderivative = _trig_antiderivative(l + teacher_power, student_power - l)
        angular += weight * (_evaluate_angle(antiderivative, upper) - _evaluate_angle(antiderivative, lower))
    return sp.expand(radial * angular)


def _wedge_pair(f: sp.Expr, h: sp.Expr) -> sp.Expr:
    f = _rewrite_kinks(f)
    h = _rewrite_kinks(h)
    if not (f.has(sp.Heaviside) or h.has(sp.Heaviside)):
        raise _Unsupported
    total = sp.Integer(0)
    for f_term in sp.Add.make_args(f):
        f_coefficient, f_power, f_sign = _split_wedge_factors(f_term)
        for h_term in sp.Add.make_args(h):
            h_coefficient, h_power, h_sign = _split_wedge_factors(h_term)
            coefficient = f_coefficient * h_coefficient
            if coefficient == 0:
                continue
            total += coefficient * _wedge_moment(f_power, h_power, f_sign, h_sign)
    return _from_wedge_variables(total)


def _from_wedge_variables(expression: sp.Expr) -> sp.Expr:
    """Replace s and phi by their expressions in Q and R."""
    return expression.subs({_PHI: sp.acos(R / sp.sqrt(Q)), _S: sp.sqrt(Q - R**2)})


def simplify_kinked(expression: sp.Expr) -> sp.Expr:
    """Simplify an expression in Q, R produced by the wedge engine or its derivatives.

    Differentiation creates terms in 1/s, s = sqrt(Q - R^2), that cancel
    analytically but give inf - inf at perfect correlation (s = 0, the search
    point). In polar form Q = q^2, R = q cos(phi), s = q sin(phi) every
    coefficient of phi becomes a rational function of (q, cos phi, sin phi);
    reducing its numerator modulo cos^2 + sin^2 = 1 lets the powers of sin phi
    cancel. The result is returned in Q and R again.
    """
    q = sp.Symbol("q", positive=True)
    cosine = sp.Symbol("c", real=True)
    sine = sp.Symbol("t", positive=True)
    phi = _PHI

    polar = expression.subs(sp.acos(R / sp.sqrt(Q)), phi).subs({Q: q**2, R: q * cosine}, simultaneous=True)

    def radical(power):
        base = sp.factor(sp.together(power.base).subs(cosine**2, 1 - sine**2))
        return sp.powdenest(base**power.exp, force=True)

    polar = polar.replace(lambda e: e.is_Pow and e.exp.is_Rational and not e.exp.is_Integer, radical)
    polar = polar.subs(cosine**2, 1 - sine**2)

    collected = sp.collect(sp.expand(polar), [phi], evaluate=False)
    relation = cosine**2 + sine**2 - 1
    total = sp.Integer(0)
    for key, coefficient in collected.items():
        numerator, denominator = sp.fraction(sp.cancel(sp.together(coefficient)))
        numerator = sp.expand(sp.rem(sp.expand(numerator), relation, cosine))
        total += key * sp.factor(sp.cancel(numerator / denominator))

    back = {q: sp.sqrt(Q), cosine: R / sp.sqrt(Q), sine: _S / sp.sqrt(Q), phi: sp.acos(R / sp.sqrt(Q))}
    return sp.expand(total.subs(back, simultaneous=True)).subs(_S, sp.sqrt(Q - R**2))


# ---------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------

def _is_polynomial(expression: sp.Expr) -> bool:
    return bool(expression.is_polynomial(Z))


def pair_expectation(f: sp.Expr, h: sp.Expr) -> Optional[sp.Expr]:
    """Exact ``E[f(lam) h(lam_star)]`` as a SymPy expression in :data:`Q`, :data:`R`.

    ``f`` and ``h`` are SymPy expressions in :data:`lora_theory.activations.Z`.
    Returns ``None`` when no exact engine applies (see the module docstring).
    """
    f = sp.sympify(f)
    h = sp.sympify(h)
    if _is_polynomial(f) and _is_polynomial(h):
        return _polynomial_pair(f, h)
    for engine in (_erf_pair, _wedge_pair):
        try:
            return engine(f, h)
        except _Unsupported:
            continue
    return None


# ---------------------------------------------------------------------------
# One dimension: piecewise polynomials with arbitrary kinks
# ---------------------------------------------------------------------------

def kink_points(expression: sp.Expr) -> list[sp.Expr]:
    """Sorted real points where Max, Min, Abs, Heaviside or sign in the expression switch branch."""
    points = set()
    for node in sp.preorder_traversal(expression):
        if isinstance(node, (sp.Max, sp.Min)):
            arguments = node.args
            for first, second in itertools.combinations(arguments, 2):
                points.update(sp.solve(sp.Eq(first, second), Z))
        elif isinstance(node, (sp.Heaviside, sp.Abs, sp.sign)):
            points.update(sp.solve(sp.Eq(node.args[0], 0), Z))
    real_points = [point for point in points if point.is_real]
    if len(real_points) != len(points):
        raise _Unsupported
    return sorted(real_points, key=lambda point: float(point))


def _truncated_moment(order: int, lower: sp.Expr, upper: sp.Expr) -> sp.Expr:
    """Integral of z^order phi(z) over (lower, upper), phi the standard normal density."""
    density = lambda x: sp.exp(-x**2 / 2) / sp.sqrt(2 * sp.pi) if x.is_finite else sp.Integer(0)  # noqa: E731
    cdf = lambda x: (1 + sp.erf(x / sp.sqrt(2))) / 2 if x.is_finite else (sp.Integer(1) if x == sp.oo else sp.Integer(0))  # noqa: E731
    if order == 0:
        return cdf(upper) - cdf(lower)
    if order == 1:
        return density(lower) - density(upper)

    # M_n = [a^(n-1) phi(a) - b^(n-1) phi(b)] + (n - 1) M_(n-2), from integration by parts.
    def boundary(x):
        return x ** (order - 1) * density(x) if x.is_finite else sp.Integer(0)

    return boundary(lower) - boundary(upper) + (order - 1) * _truncated_moment(order - 2, lower, upper)


def expectation_1d(f: sp.Expr, variance: sp.Expr = sp.Integer(1)) -> Optional[sp.Expr]:
    """Exact ``E[f(sqrt(variance) z)]`` for ``z ~ N(0, 1)``, or ``None``.

    Polynomials and piecewise polynomials (Max, Min, Abs, Heaviside with
    linear arguments, kinks anywhere) are integrated piece by piece with
    truncated Gaussian moments; other functions go through
    :func:`pair_expectation` with a constant partner.
    """
    f = sp.sympify(f)
    variance = sp.sympify(variance)
    scaled = sp.expand(f.subs(Z, sp.sqrt(variance) * Z)) if variance != 1 else f
    if _is_polynomial(scaled):
        return _scaled_expectation(sp.Poly(scaled, Z), sp.Integer(1))
    if variance.is_number:
        try:
            kinks = kink_points(scaled)
        except (_Unsupported, NotImplementedError):
            kinks = None
        if kinks:
            edges = [-sp.oo, *kinks, sp.oo]
            total = sp.Integer(0)
            for lower, upper in zip(edges[:-1], edges[1:]):
                midpoint = _interior_point(lower, upper)
                piece = _piece_at(scaled, midpoint)
                if piece is None:
                    break
                poly = sp.Poly(piece, Z)
                for (power,), coefficient in poly.terms():
                    total += coefficient * _truncated_moment(power, lower, upper)
            else:
                return sp.simplify(total)
    result = pair_expectation(f, sp.Integer(1))
    return None if result is None else result.subs(Q, variance)


def _interior_point(lower: sp.Expr, upper: sp.Expr) -> sp.Expr:
    if lower == -sp.oo:
        return upper - 1
    if upper == sp.oo:
        return lower + 1
    return (lower + upper) / 2


def _piece_at(expression: sp.Expr, point: sp.Expr) -> Optional[sp.Expr]:
    """Resolve a piecewise expression to the polynomial it equals on the interval containing point."""

    def resolve_max(*arguments):
        values = [float(argument.subs(Z, point)) for argument in arguments]
        return arguments[values.index(max(values))]

    def resolve_min(*arguments):
        values = [float(argument.subs(Z, point)) for argument in arguments]
        return arguments[values.index(min(values))]

    def resolve_sign(argument, *_):
        return sp.Integer(1) if float(argument.subs(Z, point)) > 0 else sp.Integer(0)

    def resolve_abs(argument):
        return argument if float(argument.subs(Z, point)) > 0 else -argument

    piece = expression.replace(sp.Max, resolve_max).replace(sp.Min, resolve_min)
    piece = piece.replace(sp.Heaviside, resolve_sign).replace(sp.Abs, resolve_abs)
    piece = sp.expand(piece)
    return piece if _is_polynomial(piece) else None
