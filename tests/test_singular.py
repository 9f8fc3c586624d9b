"""Singular pre-training strengths: divergence of tau and the critical alignment."""

import numpy as np
import pytest

from lora_theory.dynamics import integrate_flow
from lora_theory.rates import escape_rates
from lora_theory.singular import singular_points


def test_he3_critical_alignment():
    (point,) = singular_points("He3", mu_range=(0.02, 0.99))
    assert abs(point.mu - 0.3207243) < 1e-7
    assert abs(point.critical_alignment - 0.58193) < 1e-5


def test_tau_divergence_prefactor():
    # tau (mu - mu_s)^2 tends to the prefactor on both sides; at distance 1e-4 the
    # relative correction is of order |A| / |B|, about 1e-4 here, so 1e-3 is safe.
    (point,) = singular_points("He3", mu_range=(0.02, 0.99))
    for offset in (-1e-4, 1e-4):
        rates = escape_rates("He3", mu=[point.mu + offset])
        assert abs(rates.tau[0] * offset**2 / point.tau_prefactor - 1) < 1e-3


@pytest.mark.parametrize("shift, escapes", [(-0.02, False), (0.02, True)])
def test_critical_alignment_against_flow(shift, escapes):
    # At mu_s the flow from u0 -> 0 stays on u = 0 below m_c and leaves it above.
    (point,) = singular_points("He3", mu_range=(0.02, 0.99))
    trajectory = integrate_flow("He3", mu=point.mu, u0=1e-8, m0=point.critical_alignment + shift, m_exit=0.95, t_max=300.0)
    assert trajectory.escaped is escapes


def test_no_singular_points_for_linear():
    assert singular_points("x", mu_range=(0.0, 0.9)) == ()


def test_endpoints_are_singular_for_odd_hermite():
    # A(mu) = 9 mu (-5 mu^4 + 4 mu^2 + 2 mu - 1) vanishes at mu = 0 and mu = 1 too.
    located = [point.mu for point in singular_points("He3")]
    assert located[0] == 0.0
    assert located[-1] == 1.0
    assert len(located) == 3


def test_describe_names_law_and_alignment():
    (point,) = singular_points("He3", mu_range=(0.02, 0.99))
    text = point.describe()
    assert "(mu - 0.3207243473" in text
    assert "m_c = 0.5819" in text
    assert np.isfinite(point.tau_prefactor)


def test_hermite_unit_scales_prefactor():
    # The hermite unit divides the rates of He3 by 3! * 3 = 18: tau and its prefactor grow by 18,
    # and m_c, a ratio of two rates, does not change.
    (plain,) = singular_points("He3", mu_range=(0.02, 0.99))
    (hermite,) = singular_points("He3", mu_range=(0.02, 0.99), time_unit="hermite")
    assert hermite.time_unit == "hermite"
    assert hermite.tau_prefactor == pytest.approx(18 * plain.tau_prefactor, rel=1e-12)
    assert hermite.B == pytest.approx(plain.B / 18, rel=1e-12)
    assert hermite.A_slope == pytest.approx(plain.A_slope / 18, rel=1e-12)
    assert hermite.critical_alignment == pytest.approx(plain.critical_alignment, rel=1e-12)


def test_relu_endpoint_prefactor():
    # ReLU: A = (1 - mu) / 2 and B = -1/2, so tau ~ |B| / A'^2 (mu - 1)^-2 = 2 (mu - 1)^-2. The growth
    # curvature contains delta terms of the kink and is reported as nan instead of failing.
    (point,) = singular_points("relu", mu_range=(0.5, 1.0))
    assert point.mu == 1.0
    assert point.tau_prefactor == pytest.approx(2.0, rel=1e-12)
    assert np.isnan(point.growth_curvature)
    assert point.critical_alignment is None
    assert "tau ~ 2 (mu - 1)^-2" in point.describe()


def test_double_zero_has_no_law():
    # He2 learning He3: A and B = 2 - 6 mu^2 both vanish at mu = 1/sqrt(3), so no divergence law exists.
    points = singular_points("He2", "He3", mu_range=(0.1, 0.9))
    (point,) = [point for point in points if abs(point.mu - 1 / np.sqrt(3)) < 1e-9]
    assert point.tau_prefactor is None
    assert "no divergence law" in point.describe()


def test_kinked_teacher_numerical_slope():
    # tanh learning relu: the symbolic dA/dmu and growth curvature need the second derivative of the
    # kink, so the slope comes from a central difference of A and m_c stays unknown. The prefactor
    # still matches tau (mu - mu_s)^2 at distance 1e-4 to 1e-3 (correction of order |A| / |B|).
    (point,) = singular_points("tanh", "relu", mu_range=(0.0, 1.0))
    assert np.isnan(point.growth_curvature)
    assert point.critical_alignment is None
    assert "critical alignment unknown" in point.describe()
    for offset in (-1e-4, 1e-4):
        rates = escape_rates("tanh", "relu", mu=[point.mu + offset])
        assert abs(rates.tau[0] * offset**2 / point.tau_prefactor - 1) < 1e-3
