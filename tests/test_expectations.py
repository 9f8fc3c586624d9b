"""Exact Gaussian expectations: closed forms, identities and 30-digit mpmath values."""

import math

import mpmath
import numpy as np
import pytest
import sympy as sp

from lora_theory.activations import Z, parse_activation
from lora_theory.expectations import Q, R, expectation_1d, hermite_coefficients, pair_expectation


def _mp_pair(f, h, variance, covariance, dps=16):
    """E[f(lam) h(lam*)] by nested mpmath quadrature split at 0, lam = R y + s xi."""
    with mpmath.workdps(dps):
        variance = mpmath.mpf(variance)
        covariance = mpmath.mpf(covariance)
        spread = mpmath.sqrt(variance - covariance**2)
        density = lambda x: mpmath.exp(-x**2 / 2) / mpmath.sqrt(2 * mpmath.pi)  # noqa: E731

        def outer(y):
            kink = -covariance * y / spread
            inner = mpmath.quad(lambda xi: f(covariance * y + spread * xi) * density(xi), [-mpmath.inf, kink, mpmath.inf])
            return inner * h(y) * density(y)

        return mpmath.quad(outer, [-mpmath.inf, 0, mpmath.inf])


def _mp_hermite(k):
    """Probabilists' He_k from mpmath's physicists' H_k: He_k(x) = 2^(-k/2) H_k(x / sqrt 2)."""
    return lambda x: mpmath.hermite(k, x / mpmath.sqrt(2)) / mpmath.mpf(2) ** (mpmath.mpf(k) / 2)


def _mp_gauss_hermite(nodes, dps):
    """Nodes and weights of Gauss quadrature for N(0, 1) at dps digits (Golub-Welsch with mpmath)."""
    with mpmath.workdps(dps):
        jacobi = mpmath.zeros(nodes, nodes)
        for k in range(1, nodes):
            jacobi[k, k - 1] = jacobi[k - 1, k] = mpmath.sqrt(k)
        points, vectors = mpmath.eigsy(jacobi)
        weights = [vectors[0, k] ** 2 for k in range(nodes)]
        return [points[k] for k in range(nodes)], weights


def _mp_pair_polynomial(f, h, variance, covariance, degree, dps=40):
    """E[f(lam) h(lam*)] for polynomials of total degree <= degree by tensor Gauss quadrature (exact)."""
    points, weights = _mp_gauss_hermite(degree // 2 + 1, dps)
    with mpmath.workdps(dps):
        covariance = mpmath.mpf(covariance)
        spread = mpmath.sqrt(mpmath.mpf(variance) - covariance**2)
        total = mpmath.mpf(0)
        for y, weight_y in zip(points, weights):
            h_value = h(y)
            for xi, weight_xi in zip(points, weights):
                total += weight_y * weight_xi * f(covariance * y + spread * xi) * h_value
        return total


def test_relu_shifted_kink_exact():
    # Value given to 20 digits: phi(0.1) - 0.1 (1 - Phi(0.1)).
    value = expectation_1d(parse_activation("relu(z - 0.1)").expr)
    assert abs(sp.N(value, 25) - sp.Float("0.35093533120471466366", 25)) < sp.Float("1e-20")


def test_erf_pair_correlation_point_six():
    # With unit-variance X, Y: lam = X (Q = 1), lam* = Y (R = 0.6), f = erf(0.7 z), h = erf(1.3 z).
    value = pair_expectation(sp.erf(sp.Rational(7, 10) * Z), sp.erf(sp.Rational(13, 10) * Z)).subs({Q: 1, R: sp.Rational(3, 5)})
    assert abs(sp.N(value, 25) - sp.Float("0.24184069349095682607", 25)) < sp.Float("1e-20")


def test_correlation_one_finite():
    # Student equal to teacher at u = 0: lam = lam*, so Q = 1 and R = 1 exactly.
    for spec in ["relu", "erf", "He3", "relu^2"]:
        sigma = parse_activation(spec).expr
        value = pair_expectation(sigma, sigma)
        at_one = sp.N(value.subs({Q: 1, R: 1}), 20)
        second_moment = sp.N(pair_expectation(sigma**2, 1).subs({Q: 1, R: 1}), 20)
        assert at_one.is_finite, spec
        # At correlation 1, E[sigma(lam) sigma(lam*)] = E[sigma(lam)^2].
        assert abs(at_one - second_moment) < 1e-15, spec


@pytest.mark.parametrize("degree", [0, 1, 2, 5, 10, 17, 30])
def test_hermite_orthogonality_exact(degree):
    # E[He_j(lam) He_k(lam*)] = k! R^k delta_jk at Q = 1, the Mehler formula.
    He = sp.hermite_prob
    assert sp.expand(pair_expectation(He(degree, Z), He(degree, Z)).subs(Q, 1) - sp.factorial(degree) * R**degree) == 0
    if degree >= 1:
        assert sp.expand(pair_expectation(He(degree, Z), He(degree - 1, Z)).subs(Q, 1)) == 0


@pytest.mark.parametrize("degree", [3, 12, 30])
def test_hermite_pair_against_mpmath(degree):
    # Exact rational polynomial in (Q, R) at 40 digits versus Gauss quadrature at 40 digits
    # (exact for polynomials). Tolerance 1e-25 relative: both sides carry 30 or more correct digits.
    variance, covariance = sp.Rational(7, 10), sp.Rational(-2, 5)
    expression = pair_expectation(sp.hermite_prob(degree, Z) ** 2 / 4 + sp.hermite_prob(degree, Z), sp.hermite_prob(degree, Z))
    exact = sp.N(expression.subs({Q: variance, R: covariance}), 40)
    f = lambda x: _mp_hermite(degree)(x) ** 2 / 4 + _mp_hermite(degree)(x)  # noqa: E731
    with mpmath.workdps(40):
        reference = _mp_pair_polynomial(f, _mp_hermite(degree), mpmath.mpf(7) / 10, mpmath.mpf(-2) / 5, 3 * degree)
        assert abs(mpmath.mpf(str(exact)) - reference) <= mpmath.mpf("1e-25") * abs(reference)


@pytest.mark.parametrize("degree", [1, 4, 9, 16, 25, 30])
def test_hermite_square_moment_against_mpmath(degree):
    # E[He_k(sqrt(Q) z)^2] exact versus 40-digit Gauss quadrature (exact for this degree), Q = 0.3.
    exact = sp.N(expectation_1d(sp.hermite_prob(degree, Z) ** 2, sp.Rational(3, 10)), 40)
    points, weights = _mp_gauss_hermite(degree + 1, 40)
    with mpmath.workdps(40):
        scale = mpmath.sqrt(mpmath.mpf(3) / 10)
        reference = sum(w * _mp_hermite(degree)(scale * x) ** 2 for x, w in zip(points, weights))
        assert abs(mpmath.mpf(str(exact)) - reference) <= mpmath.mpf("1e-28") * reference


def test_hermite_coefficients_roundtrip():
    polynomial = sp.expand(3 * Z**4 - Z + 2)
    coefficients = hermite_coefficients(polynomial)
    rebuilt = sum(c * sp.hermite_prob(n, Z) for n, c in enumerate(coefficients))
    assert sp.expand(rebuilt - polynomial) == 0


def test_relu_arc_cosine_kernel():
    # Cho and Saul arc-cosine kernel of degree 1 for unit variances.
    kernel = pair_expectation(sp.Max(0, Z), sp.Max(0, Z)).subs(Q, 1)
    for rho in [-0.9, -0.3, 0.0, 0.5, 0.99]:
        theta = math.acos(rho)
        expected = (math.sin(theta) + (math.pi - theta) * math.cos(theta)) / (2 * math.pi)
        assert abs(float(kernel.subs(R, rho)) - expected) < 1e-14


CLOSED_FORM_CASES = [
    (sp.Max(0, Z) ** 2, sp.Heaviside(Z)),
    (sp.Heaviside(Z), sp.Max(0, Z) ** 3),
    (sp.Max(0, Z) * Z**2, Z - sp.Max(0, Z)),
    (sp.erf(Z) ** 2 * sp.exp(-2 * Z**2), Z**2),
    (Z**3 * sp.erf(2 * Z), sp.erf(Z / 2) * Z),
    (sp.erf(Z) * sp.exp(-Z**2), sp.erf(Z) * sp.exp(-Z**2 / 3)),
]
CLOSED_FORM_IDS = ["relu2-heaviside", "heaviside-relu3", "relu-z2", "erf2-gauss", "poly-erf", "erf-gauss-both"]


@pytest.mark.parametrize("f, h", CLOSED_FORM_CASES, ids=CLOSED_FORM_IDS)
@pytest.mark.parametrize("variance, covariance", [(1.3, -0.5), (0.49, 0.7), (2.0, 0.3)])
def test_closed_forms_against_quadrature(f, h, variance, covariance):
    # The numerical path (kinks as panel edges) is accurate to 1e-9 relative or 1e-12 absolute;
    # it shares no code with the closed forms.
    from lora_theory import _numeric

    expression = pair_expectation(f, h)
    assert expression is not None
    exact = float(sp.N(expression.subs({Q: sp.Rational(str(variance)), R: sp.Rational(str(covariance))}), 30))
    f_numpy = sp.lambdify(Z, f, ["scipy", "numpy"])
    h_numpy = sp.lambdify(Z, h, ["scipy", "numpy"])
    numeric = float(
        _numeric.pair_expectation(
            lambda x: np.asarray(f_numpy(x), dtype=float) * np.ones_like(x),
            lambda x: np.asarray(h_numpy(x), dtype=float) * np.ones_like(x),
            variance,
            covariance,
            kinks_f=(0.0,) if f.has(sp.Max, sp.Heaviside) else (),
            kinks_h=(0.0,) if h.has(sp.Max, sp.Heaviside) else (),
        )
    )
    assert abs(exact - numeric) <= 1e-9 * abs(exact) + 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("f, h", CLOSED_FORM_CASES, ids=CLOSED_FORM_IDS)
def test_closed_forms_against_mpmath(f, h):
    # Closed forms at a generic point versus 16-digit nested quadrature split at the kinks;
    # 1e-13 relative leaves room for the quadrature error.
    expression = pair_expectation(f, h)
    assert expression is not None
    variance, covariance = sp.Rational(13, 10), sp.Rational(-1, 2)
    exact = mpmath.mpf(str(sp.N(expression.subs({Q: variance, R: covariance}), 40)))
    f_mp = sp.lambdify(Z, f.rewrite(sp.Piecewise), "mpmath")
    h_mp = sp.lambdify(Z, h.rewrite(sp.Piecewise), "mpmath")
    reference = _mp_pair(f_mp, h_mp, 1.3, -0.5)
    assert abs(exact - reference) <= mpmath.mpf("1e-13") * max(abs(reference), 1)


def test_no_closed_form_returns_none():
    assert pair_expectation(sp.tanh(Z), sp.tanh(Z)) is None
    assert pair_expectation(sp.erf(Z) ** 4, 1) is None


def test_expectation_1d_polynomial_variance():
    assert expectation_1d(Z**4, Q) == 3 * Q**2
    assert np.isclose(float(expectation_1d(sp.Abs(Z))), math.sqrt(2 / math.pi), rtol=0, atol=1e-15)
