"""Optimal and harmful pre-training, and the (mu, k) phase diagram."""

import numpy as np
import pytest

from lora_theory._errors import ParameterError
from lora_theory.baseline import largest_noise_ratio
from lora_theory.pretraining import assess_pretraining, phase_diagram
from lora_theory.rates import exit_time


def test_harmful_mu_matches_baseline_time():
    # He2 at d = 1e4 with eta at half its largest stable value: the baseline escapes, and the
    # harmful mu is where the linear escape time of the LoRA model reaches the baseline's.
    d = 1e4
    eta = 0.5 * largest_noise_ratio("He2", m0=1 / np.sqrt(d)) / d
    verdict = assess_pretraining("He2", d=d, eta=eta)
    assert verdict.baseline_time is not None
    assert verdict.harmful_mu is not None
    assert verdict.harmful_mu > verdict.optimal_mu
    at_harmful, _ = exit_time("He2", mu=[verdict.harmful_mu], d=d)
    assert at_harmful[0] == pytest.approx(verdict.baseline_time, rel=1e-8)


def test_optimal_mu_is_grid_minimum_or_better():
    verdict = assess_pretraining("He3", d=1e4, eta=1e-6)
    assert verdict.optimal_time <= np.min(verdict.exit_time) * (1 + 1e-12)
    # The polished minimum lies between neighbouring grid points of the grid minimum.
    index = int(np.argmin(verdict.exit_time))
    assert verdict.mu[max(index - 1, 0)] <= verdict.optimal_mu <= verdict.mu[min(index + 1, verdict.mu.size - 1)]


def test_linear_student_prefers_weak_pretraining():
    # A = 1 - mu and B = -1 make tau increase with mu, so the optimum sits at the smallest mu.
    verdict = assess_pretraining("x", d=1e4, eta=1e-5)
    assert verdict.optimal_mu == pytest.approx(verdict.mu[0], abs=1e-8)


def test_phase_diagram_singular_curves():
    diagram = phase_diagram(k_max=6)
    assert diagram.tau.shape == (6, 200)
    assert abs(diagram.singular[3][0] - 0.3207243) < 1e-7
    assert diagram.singular[2] == ()


def test_bad_arguments():
    with pytest.raises(ParameterError, match="eta"):
        assess_pretraining("x", d=100, eta=0.0)
    with pytest.raises(ParameterError, match="k_max"):
        phase_diagram(k_max=31)


def test_boundary_brackets_singular_mu():
    # He7 at d = 1000: tau diverges at mu_s = 0.4718..., so a sliver around mu_s hurts even though
    # no grid point falls in it; the two boundaries bracket mu_s and t_exit equals the baseline there.
    diagram = phase_diagram(k_max=7, d=1000)
    comparison = diagram.comparison
    (mu_s,) = diagram.singular[7]
    lower, upper = comparison.boundary[7]
    assert lower < mu_s < upper
    assert np.all(comparison.verdict[6] == "helps")
    times, _ = exit_time("He7", mu=[lower, upper], d=1000)
    # Brent's method stops at 1e-10 in mu, over which t_exit changes by a relative 4e-7 near mu_s
    # (measured), so 1e-5 leaves room.
    np.testing.assert_allclose(times * 7 * 5040, comparison.baseline_time[6], rtol=1e-5)


def test_phase_diagram_bad_dimension():
    with pytest.raises(ParameterError, match="d must be"):
        phase_diagram(k_max=2, d=2)
