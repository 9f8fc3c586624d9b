"""Information exponent and the search-phase fit against the linear theory."""

import math

import pytest

from lora_theory._errors import ParameterError
from lora_theory.analysis import hermite_coefficient, information_exponent, search_phase


@pytest.mark.parametrize(
    "teacher, expected",
    [
        ("x", 1),
        ("He2", 2),
        ("He3", 3),
        ("He4", 4),
        ("He7", 7),
        # He3^2 = He6 + 9 He4 + 18 He2 + 6 (linearisation formula): first non-constant term He2.
        ("He3^2", 2),
        ("relu", 1),
        ("erf", 1),
        ("sigmoid", 1),
        ("He0", None),
    ],
)
def test_information_exponent(teacher, expected):
    assert information_exponent(teacher) == expected


def test_hermite_coefficients_of_relu():
    # relu = 1/sqrt(2 pi) + z/2 + He2/(2 sqrt(2 pi)) + ...: c_0 = E[relu] = 1/sqrt(2 pi), c_1 = 1/2,
    # c_2 = E[relu (z^2 - 1)]/2 = (1/sqrt(2 pi)) / 2.
    assert abs(hermite_coefficient("relu", 0) - 1 / math.sqrt(2 * math.pi)) < 1e-14
    assert abs(hermite_coefficient("relu", 1) - 0.5) < 1e-14
    assert abs(hermite_coefficient("relu", 2) - 1 / (2 * math.sqrt(2 * math.pi))) < 1e-14


def test_hermite_coefficient_numerical_path():
    # tanh is odd: even coefficients vanish; c_1 = E[tanh'(z)] = 0.6057055... (1e-9 quadrature accuracy).
    assert abs(hermite_coefficient("tanh", 2)) < 1e-10
    assert abs(hermite_coefficient("tanh", 1) - 0.6057055096021585) < 1e-9


@pytest.mark.parametrize("spec, mu", [("erf", 0.5), ("He3", 0.6)])
def test_search_phase_slope_is_tau(spec, mu):
    # For m0 <= 1e-3 the escape time is linear in log(1/m0) with slope tau; 1e-6 relative covers
    # the integrator tolerance (rtol 1e-10) and the nonlinear corrections of order m0.
    fit = search_phase(spec, mu=mu)
    assert fit.slope_relative_error < 1e-6
    assert fit.escape_time.shape == fit.m0.shape


def test_search_phase_rejects_singular_mu():
    with pytest.raises(ParameterError, match="no linear search phase"):
        search_phase("x", mu=1.0)


def test_search_phase_stiff_evaluation_cap(monkeypatch):
    # He3 at mu = 0.33 (tau = 483, near mu_s = 0.3207): the Jacobian at the origin has eigenvalues
    # -5.6 and 0.0021, so an explicit method needs about 150,000 evaluations for m0 = 1e-12 alone.
    # A stiff solver needs a few thousand; the cap of 20,000 for both runs leaves a factor 3 of margin.
    from lora_theory import dynamics

    count = [0]
    original = dynamics.flow_functions

    class Counting:
        def __init__(self, functions):
            self.functions = functions
            self.loss = functions.loss

        def velocity(self, *arguments):
            count[0] += 1
            return self.functions.velocity(*arguments)

    monkeypatch.setattr(dynamics, "flow_functions", lambda *arguments: Counting(original(*arguments)))
    fit = search_phase("He3", mu=0.33, m0=[1e-12, 1e-6])

    assert count[0] < 20_000
    assert fit.slope_relative_error < 1e-4


def test_search_phase_matches_explicit_solver():
    # Both solvers run at rtol 1e-10; their escape times from m0 = 1e-6 differ by about 1e-9
    # relative, so 1e-7 leaves a margin of 100 for the error accumulated over t ~ 7,000.
    from lora_theory.dynamics import integrate_flow

    fit = search_phase("He3", mu=0.33, m0=[1e-6, 1e-4])
    explicit = integrate_flow("He3", mu=0.33, u0=0.0, m0=1e-6, rtol=1e-10, method="DOP853")

    assert fit.escape_time[0] == pytest.approx(explicit.escape_time, rel=1e-7)
