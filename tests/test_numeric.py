"""Tests of the numerical Gaussian expectations in ``lora_theory._numeric``.

Layers, from exact to numerical: closed forms (arc-sine and arc-cosine
kernels, Stein's identity, Gaussian moments), polynomial exactness of
Gauss–Hermite, mpmath references at 30 digits, and a property test over
random (Q, R). Unless a test states otherwise the tolerance is the accuracy
that the module documents: relative 1e-9, or absolute 1e-12 where the
expectation is close to zero.
"""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import erf, ndtr

from lora_theory._errors import ActivationError, LoraTheoryError, LoraTheoryWarning, ParameterError, QuadratureError
from lora_theory._numeric import (
    MAX_HERMITE_NODES,
    QuadratureWarning,
    expectation_1d,
    expectation_1d_mp,
    pair_expectation,
    pair_expectation_mp,
)
from lora_theory.activations import parse_activation

# Inside the tested range no QuadratureWarning (a RuntimeWarning) and no NumPy floating-point
# warning may appear.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

RELATIVE = 1e-9
ABSOLUTE = 1e-12


def assert_close(value, reference, relative=RELATIVE, absolute=ABSOLUTE):
    value = np.asarray(value, dtype=float)
    reference = np.asarray(reference, dtype=float)
    error = np.abs(value - reference)
    bound = np.maximum(relative * np.abs(reference), absolute)
    assert np.all(error <= bound), f"value {value}, reference {reference}, error {error}"


# ---- integrands, in NumPy and in mpmath ----

def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_derivative(z):
    return sigmoid(z) * (1.0 - sigmoid(z))


def mp_sigmoid(z):
    return 1 / (1 + mpmath.exp(-z))


def mp_sigmoid_derivative(z):
    return mp_sigmoid(z) * (1 - mp_sigmoid(z))


NUMPY = {
    "tanh": np.tanh,
    "tanh2": lambda z: np.tanh(2 * z),
    "sigmoid": sigmoid,
    "sigmoid_dsigmoid2": lambda z: sigmoid(z) * sigmoid_derivative(z) ** 2,
    "sigmoid2_dsigmoid2": lambda z: sigmoid(z) ** 2 * sigmoid_derivative(z) ** 2,
    "relu_shift": lambda z: np.maximum(z - 0.1, 0.0),
    "relu_plus": lambda z: np.maximum(z + 0.2, 0.0),
}

MPMATH = {
    "tanh": mpmath.tanh,
    "tanh2": lambda z: mpmath.tanh(2 * z),
    "sigmoid": mp_sigmoid,
    "sigmoid_dsigmoid2": lambda z: mp_sigmoid(z) * mp_sigmoid_derivative(z) ** 2,
    "sigmoid2_dsigmoid2": lambda z: mp_sigmoid(z) ** 2 * mp_sigmoid_derivative(z) ** 2,
    "relu_shift": lambda z: max(z - mpmath.mpf(1) / 10, 0),
    "relu_plus": lambda z: max(z + mpmath.mpf(1) / 5, 0),
}

# Kinks as strings, so that mpmath reads them at full precision.
KINKS = {"relu_shift": ("0.1",), "relu_plus": ("-0.2",)}


def kinks_of(name):
    return tuple(float(c) for c in KINKS.get(name, ()))


def heaviside(z):
    return np.where(z > 0, 1.0, np.where(z < 0, 0.0, 0.5))


# ---- closed forms ----

def test_relu_shift_1d_closed_form():
    # E[max(0, Z - c)] = phi(c) - c Phi(-c) for c = 0.1, to 20 digits.
    reference = 0.35093533120471466366
    assert_close(expectation_1d(NUMPY["relu_shift"], 1.0, kinks=(0.1,)), reference)

    with mpmath.workdps(40):
        c = mpmath.mpf("0.1")
        exact = mpmath.npdf(c) - c * mpmath.ncdf(-c)
        reference_mp = expectation_1d_mp(MPMATH["relu_shift"], 1, kinks=("0.1",), dps=30)
        assert abs(reference_mp - exact) < mpmath.mpf("1e-30")
        assert abs(exact - mpmath.mpf("0.35093533120471466366")) < mpmath.mpf("1e-20")


def test_erf_pair_arcsine_kernel():
    # X, Y standard with correlation 0.6, lam = 0.7 X, lam_star = Y: Q = 0.49, R = 0.42.
    # E[erf(a X) erf(b Y)] = (2/pi) arcsin(2 a b c / sqrt((1 + 2a^2)(1 + 2b^2))).
    a, b, c = 0.7, 1.3, 0.6
    arcsine = 2 / math.pi * math.asin(2 * a * b * c / math.sqrt((1 + 2 * a * a) * (1 + 2 * b * b)))
    assert abs(arcsine - 0.24184069349095682607) < 1e-15

    value = pair_expectation(erf, lambda y: erf(1.3 * y), 0.49, 0.42)
    assert_close(value, 0.24184069349095682607)


def erf_kernel(Q, R, a=1.0, b=1.0):
    """E[erf(a lam) erf(b lam_star)] = (2/pi) arcsin(2 a b R / sqrt((1 + 2 a^2 Q)(1 + 2 b^2)))."""
    return 2 / np.pi * np.arcsin(2 * a * b * R / np.sqrt((1 + 2 * a * a * Q) * (1 + 2 * b * b)))


@pytest.mark.parametrize("Q", [9.0, 16.0, 25.0])
def test_erf_kernel_above_tested_range(Q):
    # Beyond Q = 4 the step shrinks with sqrt(Q); the closed form checks that this suffices.
    R = np.array([0.0, 0.3, -0.8, 1.0]) * math.sqrt(Q)
    value = pair_expectation(lambda z: erf(2 * z), erf, Q, R)
    assert_close(value, erf_kernel(Q, R, a=2.0))


def arc_cosine_kernel(Q, R):
    """E[relu(lam) relu(lam_star)] = sqrt(Q) / (2 pi) (sqrt(1 - rho^2) + (pi - arccos rho) rho)."""
    rho = np.clip(np.divide(R, np.sqrt(Q), out=np.zeros_like(R), where=Q > 0), -1.0, 1.0)
    return np.sqrt(Q) / (2 * np.pi) * (np.sqrt(1 - rho * rho) + (np.pi - np.arccos(rho)) * rho)


# (Q, R) with s = sqrt(Q - R^2) from 0 (degenerate) through nearly degenerate to R = 0.
POINTS = [
    (1.0, 0.5), (4.0, 1.3), (2.0, -0.9), (0.3, 0.0),
    (4.0, 2.0), (4.0, -2.0), (1.0, 1.0 - 1e-3), (1.0, 1.0 - 1e-6), (1.0, 1.0 - 1e-9),
    (0.0, 0.0),
]


@pytest.mark.parametrize("Q, R", POINTS)
def test_relu_pair_arc_cosine_kernel(Q, R):
    relu = lambda z: np.maximum(z, 0.0)
    value = pair_expectation(relu, relu, Q, R, kinks_f=(0.0,), kinks_h=(0.0,))
    assert_close(value, arc_cosine_kernel(np.array(Q), np.array(R)))


@pytest.mark.parametrize("Q, R", POINTS)
def test_heaviside_pair_orthant_probability(Q, R):
    # P(lam > 0, lam_star > 0) = 1/4 + arcsin(rho) / (2 pi); a jump, not just a kink.
    rho = R / math.sqrt(Q) if Q > 0 else 0.0
    reference = 0.25 + math.asin(min(rho, 1.0)) / (2 * math.pi)
    value = pair_expectation(heaviside, heaviside, Q, R, kinks_f=(0.0,), kinks_h=(0.0,))
    assert_close(value, reference)


@pytest.mark.parametrize("Q, R", [p for p in POINTS if p[0] > 0])
def test_stein_identities_with_kink(Q, R):
    # For f = relu(. - c): E[f(lam) lam_star] = R P(lam > c) and
    # E[f(lam) He_2(lam_star)] = R^2 E[f''(lam)] = R^2 phi(c / sqrt Q) / sqrt Q.
    c = 0.1
    f = NUMPY["relu_shift"]
    root = math.sqrt(Q)

    linear = pair_expectation(f, lambda y: y, Q, R, kinks_f=(c,))
    assert_close(linear, R * ndtr(-c / root))

    quadratic = pair_expectation(f, lambda y: y * y - 1, Q, R, kinks_f=(c,))
    density = math.exp(-0.5 * c * c / Q) / math.sqrt(2 * math.pi * Q)
    assert_close(quadratic, R * R * density)


# ---- polynomials ----

def hermite(k, x):
    """Probabilists' He_k(x) by the three-term recurrence."""
    previous, current = np.ones_like(x), x
    if k == 0:
        return previous
    for n in range(1, k):
        previous, current = current, x * current - n * previous
    return current


@pytest.mark.parametrize("j, k", [(5, 5), (5, 4), (3, 3), (0, 0)])
def test_hermite_rule_exact_at_degree_limit(j, k):
    # E[He_j(lam / sqrt Q) He_k(lam_star)] = delta_jk k! rho^k. In y the integrand has
    # degree j + k, so n nodes are exact for j + k <= 2n - 1: the smallest such n.
    Q, R = 2.0, -0.8
    rho = R / math.sqrt(Q)
    nodes = (j + k) // 2 + 1
    value = pair_expectation(
        lambda x: hermite(j, x / math.sqrt(Q)), lambda y: hermite(k, y), Q, R, nodes=nodes
    )
    reference = math.factorial(k) * rho**k if j == k else 0.0
    assert_close(value, reference, relative=1e-13, absolute=1e-13)


def test_hermite_rule_inexact_past_degree_limit():
    # One node fewer than needed: n = 5 integrates degree 9 exactly but not He_5^2 (degree 10).
    value = expectation_1d(lambda x: hermite(5, x) ** 2, 1.0, nodes=5)
    assert abs(value - math.factorial(5)) > 1.0


def test_hermite_rule_at_max_nodes():
    # E[He_k(Z)^2] = k! with the largest accepted node count.
    for k in (10, 25):
        value = expectation_1d(lambda x: hermite(k, x) ** 2, 1.0, nodes=MAX_HERMITE_NODES)
        assert_close(value, math.factorial(k), relative=1e-12)
    with pytest.raises(ParameterError, match="nodes must lie in 1"):
        expectation_1d(np.cos, 1.0, nodes=MAX_HERMITE_NODES + 1)


@pytest.mark.parametrize("Q, R", [(1.0, 0.5), (4.0, -1.5), (4.0, 2.0), (0.0, 0.0)])
def test_default_rule_gaussian_moments(Q, R):
    # Isserlis: E[lam^2 y^2] = Q + 2 R^2, E[lam^3 y] = 3 Q R, E[lam^4] = 3 Q^2. The trapezoidal
    # rule is not exact for polynomials, but its error is below rounding at these degrees.
    assert_close(pair_expectation(lambda x: x * x, lambda y: y * y, Q, R), Q + 2 * R * R, 1e-13, 1e-14)
    assert_close(pair_expectation(lambda x: x**3, lambda y: y, Q, R), 3 * Q * R, 1e-13, 1e-14)
    assert_close(expectation_1d(lambda x: x**4, Q), 3 * Q * Q, 1e-13, 1e-14)


# ---- mpmath references ----

# (f, h, Q, R, value): pair_expectation_mp(f, h, Q, R, kinks from KINKS, dps=20). A nested
# mpmath quad takes 1 to 5 minutes here, so the fast test compares with the stored value and
# the slow test recomputes it. 20 digits leave a margin of 10^11 over the tolerance.
STORED = [
    ("tanh2", "tanh2", 4.0, 0.5, "0.1431700102239325381301"),
    ("sigmoid_dsigmoid2", "tanh", 3.0, 1.2, "0.001576007432330053116666"),
    ("relu_shift", "tanh", 1.0, 0.5, "0.139040227803892296026"),
    ("tanh", "sigmoid", 2.0, -0.9, "-0.0906744852494444285905"),
    ("relu_shift", "relu_plus", 1.0, 0.99, "0.5257582000032178047747"),
]


@pytest.mark.parametrize("f, h, Q, R, reference", STORED)
def test_pair_matches_stored_mp(f, h, Q, R, reference):
    value = pair_expectation(NUMPY[f], NUMPY[h], Q, R, kinks_f=kinks_of(f), kinks_h=kinks_of(h))
    assert_close(value, float(reference))


@pytest.mark.slow
@pytest.mark.parametrize("f, h, Q, R, reference", STORED)
def test_stored_mp_values_reproduce(f, h, Q, R, reference):
    value = pair_expectation_mp(
        MPMATH[f], MPMATH[h], Q, R, kinks_f=KINKS.get(f, ()), kinks_h=KINKS.get(h, ()), dps=20
    )
    with mpmath.workdps(30):
        assert abs(value - mpmath.mpf(reference)) <= mpmath.mpf("1e-19") * abs(value)


# s = 0 exactly, Q = 0, and a negative R: one-dimensional for mpmath, so cheap enough to run.
DEGENERATE = [
    ("tanh2", "sigmoid", 2.25, -1.5),
    ("sigmoid_dsigmoid2", "tanh", 4.0, 2.0),
    ("relu_shift", "tanh", 4.0, -2.0),
    ("relu_shift", "relu_plus", 1.0, 1.0),
    ("tanh2", "relu_plus", 0.0, 0.0),
    ("sigmoid", "tanh2", 0.0, 0.0),
]


@pytest.mark.parametrize("f, h, Q, R", DEGENERATE)
def test_degenerate_pair_matches_mp(f, h, Q, R):
    reference = pair_expectation_mp(
        MPMATH[f], MPMATH[h], Q, R, kinks_f=KINKS.get(f, ()), kinks_h=KINKS.get(h, ()), dps=30
    )
    value = pair_expectation(NUMPY[f], NUMPY[h], Q, R, kinks_f=kinks_of(f), kinks_h=kinks_of(h))
    assert_close(value, float(reference))


@pytest.mark.parametrize("name", ["tanh", "tanh2", "sigmoid2_dsigmoid2", "relu_shift"])
@pytest.mark.parametrize("variance", [0.0, 0.25, 1.0, 4.0])
def test_1d_matches_mp(name, variance):
    square = lambda z: NUMPY[name](z) ** 2
    reference = expectation_1d_mp(lambda z: MPMATH[name](z) ** 2, variance, kinks=KINKS.get(name, ()))
    assert_close(expectation_1d(square, variance, kinks=kinks_of(name)), float(reference))

    # The same expectation as a pair with h = 1 runs through the two-dimensional code.
    value = pair_expectation(square, np.ones_like, variance, 0.3 * math.sqrt(variance), kinks_f=kinks_of(name))
    assert_close(value, float(reference))


# ---- property test over random (Q, R) ----

def cubic(x):
    return x**3 - 0.5 * x**2 + 0.3 * x + 0.2


# E[c^(k)(sqrt(Q) Z)] for k = 0..3 as functions of Q.
CUBIC_DERIVATIVE_MEANS = [lambda Q: 0.2 - 0.5 * Q, lambda Q: 3 * Q + 0.3, lambda Q: -1.0, lambda Q: 6.0]

# E[tanh(2Z) He_k(Z)], k = 0..3, from the one-dimensional path (tested against mpmath above).
TANH2_HERMITE = [float(expectation_1d(lambda z, k=k: np.tanh(2 * z) * hermite(k, z), 1.0)) for k in range(4)]


@settings(max_examples=60, deadline=None)
@given(Q=st.floats(0.0, 4.0), correlation=st.floats(-1.0, 1.0))
def test_hermite_series_identity(Q, correlation):
    # For a cubic c, E[c(lam) h(lam_star)] = sum_{k<=3} R^k / k! E[c^(k)(sqrt(Q) Z)] E[h(Z) He_k(Z)]:
    # the two-dimensional rule against one-dimensional ones.
    R = correlation * math.sqrt(Q)
    series = sum(
        R**k / math.factorial(k) * CUBIC_DERIVATIVE_MEANS[k](Q) * TANH2_HERMITE[k] for k in range(4)
    )
    value = pair_expectation(cubic, lambda y: np.tanh(2 * y), Q, R)
    assert_close(value, series, absolute=1e-11)


@settings(max_examples=40, deadline=None)
@given(Q=st.floats(0.0, 4.0), correlation=st.floats(-1.0, 1.0))
def test_relu_kernel_random_points(Q, correlation):
    R = correlation * math.sqrt(Q)
    relu = lambda z: np.maximum(z, 0.0)
    value = pair_expectation(relu, relu, Q, R, kinks_f=(0.0,), kinks_h=(0.0,))
    assert_close(value, arc_cosine_kernel(np.array(Q), np.array(R)))


@pytest.mark.slow
def test_closed_form_sweep():
    # 2000 random points, a tenth of them with correlation +-1 or within 1e-12..1e-1 of it.
    rng = np.random.default_rng(7)
    Q = rng.uniform(0.0, 4.0, 2000)
    correlation = rng.uniform(-1.0, 1.0, 2000)
    correlation[:100] = np.sign(correlation[:100])
    correlation[100:200] = np.sign(correlation[100:200]) * (1 - 10 ** rng.uniform(-12, -1, 100))
    Q[200:220] = 0.0
    R = correlation * np.sqrt(Q)

    for a, b in [(1.0, 1.0), (2.0, 1.0), (1.0, 2.0)]:
        value = pair_expectation(lambda z: erf(a * z), lambda y: erf(b * y), Q, R)
        assert_close(value, erf_kernel(Q, R, a, b))

    relu = lambda z: np.maximum(z, 0.0)
    value = pair_expectation(relu, relu, Q, R, kinks_f=(0.0,), kinks_h=(0.0,))
    assert_close(value, arc_cosine_kernel(Q, R))

    # atan2(R, s) is arcsin(rho) with the s of the rounded inputs, which matters near rho = +-1.
    s = np.sqrt(np.maximum(Q - R * R, 0.0))
    orthant = np.where(Q > 0, 0.25 + np.arctan2(R, s) / (2 * np.pi), 0.25)
    value = pair_expectation(heaviside, heaviside, Q, R, kinks_f=(0.0,), kinks_h=(0.0,))
    assert_close(value, orthant)


# ---- shapes, validation and warnings ----

def test_broadcast_shape():
    Q = np.array([[1.0], [2.0], [4.0]])
    R = np.array([0.5, -1.0])
    value = pair_expectation(np.tanh, sigmoid, Q, R)
    assert value.shape == (3, 2)
    assert_close(value[1, 1], pair_expectation(np.tanh, sigmoid, 2.0, -1.0))
    assert pair_expectation(np.tanh, sigmoid, 1.0, 0.5).shape == ()
    assert expectation_1d(np.cos, [[1.0, 2.0]]).shape == (1, 2)


def test_rounding_in_covariance_is_accepted():
    # R^2 above Q by a relative 1e-13 counts as s = 0.
    Q = 2.0
    R = math.sqrt(Q) * (1 + 5e-14)
    assert_close(pair_expectation(np.tanh, sigmoid, Q, R), pair_expectation(np.tanh, sigmoid, Q, math.sqrt(Q)))


@pytest.mark.parametrize(
    "Q, R, message",
    [
        (-0.1, 0.0, r"Q = Var\(lam\) must be >= 0, got Q = -0.1"),
        (1.0, 1.1, r"R = 1.1 and Q = 1.0 .* R\^2 <= Q is needed"),
        ([1.0, 4.0], [0.5, 2.5], r"R = 2.5 and Q = 4.0 at index \(1,\) do not"),
        (float("nan"), 0.0, "Q must be finite"),
        (1.0, float("inf"), "R must be finite"),
    ],
)
def test_invalid_covariance_raises(Q, R, message):
    with pytest.raises(ParameterError, match=message):
        pair_expectation(np.tanh, np.tanh, Q, R)


def test_invalid_arguments_raise():
    with pytest.raises(ParameterError, match="variance must be finite and >= 0"):
        expectation_1d(np.tanh, -1.0)
    with pytest.raises(ParameterError, match="inaccurate across kinks"):
        pair_expectation(np.tanh, np.tanh, 1.0, 0.5, kinks_f=(0.0,), nodes=20)
    with pytest.raises(ParameterError, match="nodes must be an integer"):
        pair_expectation(np.tanh, np.tanh, 1.0, 0.5, nodes=2.5)
    with pytest.raises(ParameterError, match="finite kink locations"):
        pair_expectation(np.tanh, np.tanh, 1.0, 0.5, kinks_h=(math.inf,))
    with pytest.raises(ParameterError, match=r"R\^2 <= Q is needed"):
        pair_expectation_mp(mpmath.tanh, mpmath.tanh, 1, 2)
    with pytest.raises(ParameterError, match="variance must be finite"):
        expectation_1d_mp(mpmath.tanh, -1)


def test_missing_kink_warns():
    # Without its kink, relu converges only algebraically in one dimension, but the estimated
    # error (about 2e-6 relative) stays below the error limit 1e-3 * |value|: a warning, no error.
    with pytest.warns(QuadratureWarning, match="estimated quadrature error is above tolerance at 1 of 1") as record:
        value = expectation_1d(lambda z: np.maximum(z, 0.0), 1.0)
    assert issubclass(record[0].category, LoraTheoryWarning)
    assert "below the error limit" in str(record[0].message)
    # E relu(z) = 1 / sqrt(2 pi); 1e-5 is ten times the error estimate of this case.
    assert value == pytest.approx(1.0 / math.sqrt(2.0 * math.pi), rel=1e-5)


def test_nonexistent_expectation_raises():
    # E exp(z^2) is infinite for z ~ N(0, 1). The truncated integral is finite (about 1.4e21)
    # and must not be returned as a value.
    with pytest.raises(QuadratureError, match="variance = 1.0") as caught:
        expectation_1d(lambda z: np.exp(z * z), 1.0)
    message = str(caught.value)
    assert isinstance(caught.value, LoraTheoryError)
    assert "estimated error" in message
    assert "does not exist under the Gaussian" in message
    assert "exp(z^2)" in message


def test_nonexistent_pair_expectation_raises():
    # (1 + lam^2) exp(lam*^2) with Var lam* = 1 has no expectation, and the error names the point (Q, R).
    with pytest.raises(QuadratureError, match=r"at Q = 0\.25, R = 0\.5: value .* estimated error"):
        pair_expectation(lambda z: 1.0 + z * z, lambda z: np.exp(z * z), 0.25, 0.5)


def test_overflowing_integrand_raises():
    # exp(z^3) overflows to inf inside [-10, 10].
    with pytest.raises(QuadratureError, match="overflowed at variance = 1.0"):
        expectation_1d(lambda z: np.exp(z**3), 1.0)


def test_heavy_tail_at_truncation_raises():
    # E exp(0.45 z^2) = 1 / sqrt(0.1) exists, but 0.4% of E|f| lies at 9 to 10 standard
    # deviations, so the truncation at 10 loses about 1e-3 of it: an error, not a value.
    with pytest.raises(QuadratureError, match="9 to 10 standard deviations"):
        expectation_1d(lambda z: np.exp(0.45 * z * z), 1.0)


def test_gaussian_growth_below_limit_converges():
    # E exp(0.3 z^2) = 1 / sqrt(1 - 0.6), with 2e-8 of E|f| at 9 to 10 standard deviations:
    # below the tail limit 1e-6, so the documented accuracy applies and nothing is raised.
    value = expectation_1d(lambda z: np.exp(0.3 * z * z), 1.0)
    assert value == pytest.approx(1.0 / math.sqrt(0.4), rel=RELATIVE)


# ---- activations ----

@pytest.mark.parametrize(
    "spec, kinks",
    [
        ("relu", (0.0,)),
        ("relu(z - 0.1)", (0.1,)),
        ("erf", ()),
        ("sigmoid", ()),
        ("He3", ()),
        ("relu^2", (0.0,)),
        ("expr:abs(z) + heaviside(2*z + 1) + max(z, 1 - z)", (-0.5, 0.0, 0.5)),
    ],
)
def test_activation_kinks(spec, kinks):
    assert parse_activation(spec).kinks == kinks


def test_activation_kinks_nonlinear_argument_raises():
    with pytest.raises(ActivationError, match="cannot determine the kink location"):
        parse_activation("expr:max(0, z**2 - 1)").kinks


def test_activation_mpmath_callable():
    relu = parse_activation("relu(z - 0.1)")
    assert relu.mpmath(0)(0.5) == mpmath.mpf("0.4")
    assert relu.mpmath(1)(mpmath.mpf(1) / 10) == mpmath.mpf("0.5")
    with pytest.raises(ActivationError, match="Dirac delta"):
        relu.mpmath(2)

    with mpmath.workdps(30):
        derivative = parse_activation("sigmoid").mpmath(1)(1)
        assert abs(derivative - mpmath.exp(-1) / (1 + mpmath.exp(-1)) ** 2) < mpmath.mpf("1e-30")


def test_activation_pair_matches_mp():
    student = parse_activation("relu(z - 0.1)")
    teacher = parse_activation("tanh")
    # s = 0 exactly in binary, so that mpmath integrates in one dimension. The float kink 0.1
    # misses the exact kink 1/10 by 5.6e-18, which limits mpmath to about 28 digits, so ask for 25.
    Q, R = 2.25, -1.5
    reference = pair_expectation_mp(student.mpmath(), teacher.mpmath(), Q, R, kinks_f=student.kinks, dps=25)
    value = pair_expectation(student.numpy(), teacher.numpy(), Q, R, kinks_f=student.kinks)
    assert_close(value, float(reference))
