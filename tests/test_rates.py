"""Escape rates: closed forms, reference table, singular points and time units."""

from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from lora_theory._errors import ParameterError, TimeUnitError
from lora_theory.derivation import derive
from lora_theory.model import mu
from lora_theory.rates import escape_rates, exit_time

# Linearised tau(mu) from the authors' public code (truncated Hermite series), copied into tests/data.
REFERENCE = Path(__file__).resolve().parent / "data" / "tau_matching_teacher.csv"


def test_linear_closed_form():
    derivation = derive("x")
    assert sp.simplify(derivation.A - (1 - mu)) == 0
    assert derivation.B == -1


def test_relu_closed_form():
    derivation = derive("relu")
    assert sp.simplify(derivation.A - (1 - mu) / 2) == 0
    assert derivation.B == sp.Rational(-1, 2)


@pytest.mark.parametrize("spec", ["x", "erf", "relu", "He2", "He3", "He5", "relu^2", "0.5*He2+He4"])
def test_rates_A_zero_at_mu_one(spec):
    # sigma = sigma_star makes the pre-trained model exact at mu = 1, so L0'(1) = 0.
    value = sp.N(derive(spec).A.subs(mu, 1), 30)
    assert abs(value) < 1e-25


def test_tau_matches_linear_formula():
    # tau = (-B + sqrt(B^2 + 4A^2)) / (2A^2) with A = 1 - mu, B = -1.
    grid = np.linspace(0.05, 0.95, 19)
    rates = escape_rates("x", mu=grid)
    expected = (1 + np.sqrt(1 + 4 * (1 - grid) ** 2)) / (2 * (1 - grid) ** 2)
    np.testing.assert_allclose(rates.tau, expected, rtol=1e-14)


def _reference():
    if not REFERENCE.is_file():
        pytest.skip(f"reference table not found at {REFERENCE}")
    return np.genfromtxt(REFERENCE, delimiter=",", names=True)


@pytest.mark.parametrize(
    "spec, time_unit, tolerance",
    [
        # The reference series are accurate to about four digits for polynomials and sigmoid.
        ("x", "plain", 1e-3),
        ("He2", "hermite", 1e-3),
        ("He3", "hermite", 1e-3),
        ("He5", "hermite", 1e-3),
        ("He6", "hermite", 1e-3),
        # The reference erf column carries its own truncation error of about 1e-2.
        ("erf", "plain", 2e-2),
    ],
)
def test_reference_tau_table(spec, time_unit, tolerance):
    reference = _reference()
    rates = escape_rates(spec, mu=reference["mu"], time_unit=time_unit)
    relative = np.abs(rates.tau / reference[spec] - 1)
    assert np.all(np.isfinite(rates.tau))
    assert relative.max() <= tolerance, f"max relative deviation {relative.max():.2e} at mu={reference['mu'][relative.argmax()]}"


def test_reference_tau_sigmoid():
    # The reference sigmoid column deviates by 1.006e-3 at mu = 0.0464 and by less than 1e-3
    # everywhere else; test_sigmoid_rates_against_mpmath shows that the deviation is the
    # reference's own truncation error (our A and B agree with 25-digit quadrature there).
    reference = _reference()
    rates = escape_rates("sigmoid", mu=reference["mu"])
    relative = np.abs(rates.tau / reference["sigmoid"] - 1)
    assert relative.max() <= 1.1e-3
    assert np.mean(relative <= 1e-3) >= 0.99


def test_sigmoid_rates_against_mpmath():
    # A = -E[(s(mu z) - s(z)) s'(mu z) z], B = -E[s'(mu z)^2 + (s(mu z) - s(z)) s''(mu z)] by
    # mpmath quadrature at 25 digits; the numerical kernels promise 1e-9 relative.
    import mpmath

    value = 0.04644221106
    rates = escape_rates("sigmoid", mu=[value, 0.5])
    with mpmath.workdps(25):
        s = lambda x: 1 / (1 + mpmath.exp(-x))  # noqa: E731
        s1 = lambda x: s(x) * (1 - s(x))  # noqa: E731
        s2 = lambda x: s1(x) * (1 - 2 * s(x))  # noqa: E731
        density = lambda z: mpmath.exp(-z * z / 2) / mpmath.sqrt(2 * mpmath.pi)  # noqa: E731
        for index, point in enumerate([mpmath.mpf(value), mpmath.mpf("0.5")]):
            A = -mpmath.quad(lambda z: (s(point * z) - s(z)) * s1(point * z) * z * density(z), [-mpmath.inf, mpmath.inf])
            B = -mpmath.quad(
                lambda z: (s1(point * z) ** 2 + (s(point * z) - s(z)) * s2(point * z)) * density(z), [-mpmath.inf, mpmath.inf]
            )
            assert abs(rates.A[index] - float(A)) <= 1e-9 * abs(float(A))
            assert abs(rates.B[index] - float(B)) <= 1e-9 * abs(float(B))


def test_he3_singular_mu():
    rates = escape_rates("He3", mu=np.linspace(0.02, 0.99, 50))
    assert len(rates.singular_mu) == 1
    # Root of 5 mu^4 - 4 mu^2 - 2 mu + 1 (from A = 9 mu (-5 mu^4 + 4 mu^2 + 2 mu - 1)) by sympy nroots at 30 digits.
    root = [r for r in sp.Poly(5 * mu**4 - 4 * mu**2 - 2 * mu + 1, mu).nroots(n=30) if r.is_real and 0 < r < 0.5][0]
    assert abs(rates.singular_mu[0] - float(root)) < 1e-10
    assert abs(rates.singular_mu[0] - 0.3207243) < 1e-7


def test_singular_point_on_grid_is_undefined():
    root = escape_rates("He3", mu=[0.1, 0.5]).singular_mu[0]
    rates = escape_rates("He3", mu=[0.1, root, 0.5])
    assert np.isnan(rates.tau[1])
    assert rates.notes[1].startswith("A(mu) = 0")
    assert rates.rows()[1]["tau"] is None
    assert rates.rows()[0]["tau"] is not None


def test_mu_one_is_singular_not_inf():
    rates = escape_rates("erf", mu=[0.5, 1.0])
    assert rates.rows()[1]["tau"] is None
    assert rates.notes[1] is not None
    assert 1.0 in rates.singular_mu


def test_relu_mu_zero_undefined():
    rates = escape_rates("relu", mu=[0.0, 0.5])
    assert rates.rows()[0]["tau"] is None
    assert "kink" in rates.notes[0]
    assert np.isclose(rates.A[1], 0.25, rtol=1e-14)


def test_hermite_time_unit_scales_by_k_factorial_k():
    grid = np.array([0.2, 0.6])
    plain = escape_rates("He3", mu=grid)
    hermite = escape_rates("He3", mu=grid, time_unit="hermite")
    np.testing.assert_allclose(hermite.tau, plain.tau * 18, rtol=1e-14)
    np.testing.assert_allclose(hermite.A, plain.A / 18, rtol=1e-14)


@pytest.mark.parametrize("spec", ["erf", "He3^2", "relu", "He0"])
def test_hermite_time_unit_rejected(spec):
    with pytest.raises(TimeUnitError, match="He_k"):
        escape_rates(spec, mu=[0.5], time_unit="hermite")


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_mu_out_of_range(bad):
    with pytest.raises(ParameterError, match="mu"):
        escape_rates("x", mu=[0.5, bad])


def test_exit_time_leading_order():
    # t_exit = tau (log(m_exit / m0) + log(1 + (lambda_plus / A)^2)); at m0 = 1/sqrt(d) the first term is (1/2) log d - log 2.
    times, rates = exit_time("x", mu=[0.5], d=1e6)
    A = rates.A[0]
    expected = rates.tau[0] * (0.5 * np.log(1e6) + np.log(0.5) + np.log1p((rates.lambda_plus[0] / A) ** 2))
    assert np.isclose(times[0], expected, rtol=1e-14)
    with pytest.raises(ParameterError):
        exit_time("x", mu=[0.5], d=1e6, m0=0.01)


@pytest.mark.parametrize("degree", [10, 20, 30])
def test_high_degree_rates_accurate(degree):
    # The polynomial path re-evaluates ill-conditioned points with mpmath; compare with exact evaluation.
    spec = f"He{degree}"
    grid = np.array([0.1, 0.5, 0.9, 0.97])
    rates = escape_rates(spec, mu=grid)
    A_expression = derive(spec).A
    for value, computed in zip(grid, rates.A):
        exact = float(sp.N(A_expression.subs(mu, sp.Rational(str(value))), 40))
        assert abs(computed - exact) <= 1e-12 * abs(exact)


def test_shifted_relu_rates_against_mpmath():
    # Kink at c = 0.1, no closed form: Price's theorem gives a Dirac delta in dL/dQ.
    # A = -E[(s(mu z) - s(z)) s'(mu z) z]; B = -E[s'(mu z)^2] - (s(c) - s(c/mu)) phi(c/mu) / mu
    # (the delta term by the sifting property), by 25-digit quadrature split at the kinks.
    import mpmath

    rates = escape_rates("relu(z - 0.1)", mu=[0.3, 0.6])
    with mpmath.workdps(25):
        c = mpmath.mpf("0.1")
        density = lambda z: mpmath.exp(-z * z / 2) / mpmath.sqrt(2 * mpmath.pi)  # noqa: E731
        relu = lambda x: max(x - c, 0)  # noqa: E731
        step = lambda x: 1 if x > c else 0  # noqa: E731
        for index, value in enumerate([mpmath.mpf("0.3"), mpmath.mpf("0.6")]):
            breaks = [-mpmath.inf, *sorted([c / value, c]), mpmath.inf]
            A = -mpmath.quad(lambda z: (relu(value * z) - relu(z)) * step(value * z) * z * density(z), breaks)
            kink = c / value
            B = -mpmath.quad(lambda z: step(value * z) * density(z), [-mpmath.inf, kink, mpmath.inf])
            B -= (relu(value * kink) - relu(kink)) * density(kink) / value
            # The numerical kernels promise 1e-9 relative.
            assert abs(rates.A[index] - float(A)) <= 1e-9 * abs(float(A))
            assert abs(rates.B[index] - float(B)) <= 1e-9 * abs(float(B))


def test_relu_student_squared_relu_teacher_closed_form():
    # A = -E[(s(mu z) - s*(z)) s'(mu z) z] with s = relu, s* = relu^2, mu > 0:
    # -mu E[z^2; z > 0] + E[z^3; z > 0] = sqrt(2/pi) - mu/2, and B = -E[s'(mu z)^2] = -1/2.
    # A is a polynomial in mu with an irrational coefficient, which must not be
    # forced through the rational-coefficient path.
    grid = np.array([0.2, 0.5, 0.9, 1.0])
    rates = escape_rates("relu", "relu^2", mu=grid)
    expected_A = np.sqrt(2 / np.pi) - grid / 2
    # Float64 evaluation of a two-term expression: a few ulps.
    np.testing.assert_allclose(rates.A, expected_A, rtol=1e-14)
    np.testing.assert_allclose(rates.B, -0.5, rtol=1e-14)
    # The zero 2 sqrt(2/pi) = 1.596 lies outside [0, 1].
    assert rates.singular_mu == ()
