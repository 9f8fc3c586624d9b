"""Spec-string parsing: grammar, exactness, Hermite limits and safety."""

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_theory._errors import ActivationError
from lora_theory.activations import MAX_HERMITE_DEGREE, Z, parse_activation


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("linear", Z),
        ("x", Z),
        ("erf", sp.erf(Z)),
        ("relu", sp.Max(0, Z)),
        ("sigmoid", 1 / (1 + sp.exp(-Z))),
        ("tanh", sp.tanh(Z)),
        ("He3", Z**3 - 3 * Z),
        ("He3^2", (Z**3 - 3 * Z) ** 2),
        ("He3**2", (Z**3 - 3 * Z) ** 2),
        ("0.5*He2+He4", (Z**2 - 1) / 2 + Z**4 - 6 * Z**2 + 3),
        ("relu^2", sp.Max(0, Z) ** 2),
        ("x^2", Z**2),
        ("(x + 1) / 2 - -x", (Z + 1) / 2 + Z),
        ("relu(z - 0.1)", sp.Max(0, Z - sp.Rational(1, 10))),
        ("expr:tanh(2*z)", sp.tanh(2 * Z)),
        ("expr:exp(-z^2) + abs(z) + pi", sp.exp(-(Z**2)) + sp.Abs(Z) + sp.pi),
        # '^' binds like '**': tighter than * and unary minus.
        ("0.5*He2^2", (Z**2 - 1) ** 2 / 2),
        ("x+1^2", Z + 1),
        ("-x^2", -(Z**2)),
        ("2^3^2", sp.Integer(2) ** 9),
    ],
)
def test_grammar(spec, expected):
    assert sp.simplify(parse_activation(spec).expr - expected) == 0


def test_decimal_literals_exact():
    assert parse_activation("0.1*x").expr == Z / 10


def test_equivalent_specs_share_canonical_form():
    assert parse_activation("He3^2").canonical == parse_activation("He3**2").canonical
    assert parse_activation("x").canonical == parse_activation("linear").canonical


def test_hermite_degree_limit():
    # He30 is the largest accepted degree; He31 names the limit in the error.
    assert parse_activation(f"He{MAX_HERMITE_DEGREE}").hermite_degree == MAX_HERMITE_DEGREE
    with pytest.raises(ActivationError, match="Hermite degree 31"):
        parse_activation("He31")


@pytest.mark.parametrize("degree", [0, 1, 5, 30])
def test_hermite_matches_recurrence(degree):
    # He_{k+1} = z He_k - k He_{k-1}, He_0 = 1, He_1 = z (probabilists').
    previous, current = sp.Integer(1), Z
    for k in range(1, degree):
        previous, current = current, sp.expand(Z * current - k * previous)
    expected = sp.Integer(1) if degree == 0 else current
    assert sp.expand(parse_activation(f"He{degree}").expr - expected) == 0


@pytest.mark.parametrize(
    "spec",
    ["foo", "He31", "1+", "", "expr:", "__import__('os')", "x.real", "lambda: 1", "expr:y", "exp", "relu(z, z)", "[x]", "x if x else x"],
)
def test_invalid_specs_rejected(spec):
    with pytest.raises(ActivationError, match="activation|Hermite"):
        parse_activation(spec)


def test_non_string_rejected():
    with pytest.raises(ActivationError, match="string"):
        parse_activation(3)


def test_hermite_degree_detection():
    assert parse_activation("He4").hermite_degree == 4
    assert parse_activation("x").hermite_degree == 1
    assert parse_activation("2*He3").hermite_degree is None
    assert parse_activation("erf").hermite_degree is None


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=-6, max_value=6, allow_nan=False))
def test_numpy_derivative_matches_sympy(point):
    # The vectorised callables are generated from the SymPy expression; compare with evalf at 30 digits.
    for spec in ["erf", "sigmoid", "tanh", "He5", "expr:tanh(2*z)"]:
        activation = parse_activation(spec)
        for order in (0, 1, 2):
            exact = float(activation.derivative_expr(order).subs(Z, sp.Float(point, 30)).evalf(30))
            value = float(activation.numpy(order)(np.array(point)))
            assert math.isclose(value, exact, rel_tol=1e-12, abs_tol=1e-12 * max(1.0, abs(exact)))


def test_numpy_vectorised_shape():
    values = parse_activation("relu")(np.linspace(-1, 1, 12).reshape(3, 4))
    assert values.shape == (3, 4)
    assert values.min() == 0.0
