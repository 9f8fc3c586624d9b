"""Flow integration: closed-form escape times, fixed points, linear theory, bad input."""

import numpy as np
import pytest

from lora_theory._errors import ParameterError
from lora_theory.dynamics import integrate, integrate_flow
from lora_theory.rates import exit_time


@pytest.mark.parametrize("m0", [1e-3, 1e-8, 1e-12])
def test_logistic_escape_closed_form(m0):
    # dm/dt = m (1 - m^2) reaches m = 1/2 at t = (1/2) ln((1 - m0^2) / (3 m0^2)); 1e-6 relative requested.
    trajectory = integrate(lambda t, y: np.array([0.0, y[1] * (1 - y[1] ** 2)]), [0.0, m0], t_max=100.0)
    expected = 0.5 * np.log((1 - m0**2) / (3 * m0**2))
    assert trajectory.escaped
    assert abs(trajectory.escape_time / expected - 1) <= 1e-6


def test_fixed_point_never_escapes():
    trajectory = integrate_flow("erf", mu=0.5, u0=0.0, m0=0.0)
    assert trajectory.escape_time is None
    assert "fixed point" in trajectory.status


def test_censored_run_has_no_time():
    # A horizon far shorter than the escape: the run is censored, not escaped at t_max.
    trajectory = integrate_flow("erf", mu=0.5, u0=0.0, m0=1e-6, t_max=10.0)
    assert trajectory.escape_time is None
    assert not trajectory.escaped
    assert "did not escape" in trajectory.status


def test_linear_estimate_matches_flow_erf():
    # At m0 = 1e-6 the linear phase dominates; the linear t_exit and the flow agree to 1 %.
    trajectory = integrate_flow("erf", mu=0.5, u0=0.0, m0=1e-6, kappa=0.0)
    estimate, _ = exit_time("erf", mu=[0.5], m0=1e-6)
    assert abs(trajectory.escape_time / estimate[0] - 1) <= 0.01


def test_trajectory_on_grid_with_loss():
    grid = np.linspace(0, 200, 11)
    trajectory = integrate_flow("relu", mu=0.5, u0=0.0, m0=1e-3, t_max=200.0, t_eval=grid)
    assert trajectory.t.shape == (11,)
    assert trajectory.state.shape == (2, 11)
    assert trajectory.loss.shape == (11,)
    # The loss decreases once the adapter has found the teacher direction.
    assert trajectory.loss[-1] < trajectory.loss[0]
    assert trajectory.escaped


def test_odd_symmetry_of_escape():
    positive = integrate_flow("He3", mu=0.6, u0=1e-4, m0=1e-3)
    negative = integrate_flow("He3", mu=0.6, u0=-1e-4, m0=-1e-3)
    assert np.isclose(positive.escape_time, negative.escape_time, rtol=1e-8)


@pytest.mark.parametrize(
    "keywords, word",
    [
        ({"mu": 1.5}, "mu"),
        ({"m0": 2.0}, "m0"),
        ({"kappa": -1.0}, "kappa"),
        ({"u0": float("nan")}, "u0"),
    ],
)
def test_bad_input_rejected(keywords, word):
    arguments = {"mu": 0.5, "u0": 0.0, "m0": 1e-3, **keywords}
    with pytest.raises(ParameterError, match=word):
        integrate_flow("x", **arguments)
