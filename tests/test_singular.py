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
