"""Generated loss and flow callables against Monte Carlo and exact identities."""

import numpy as np
import pytest
import sympy as sp

from lora_theory.activations import parse_activation
from lora_theory.flow import flow_functions

# One pair per activation family: polynomial, erf, kinked (closed form), numerical kernel, label change.
PAIRS = [
    ("x", "x"),
    ("He3", "He3"),
    ("erf", "erf"),
    ("relu", "relu"),
    ("relu^2", "relu"),
    ("sigmoid", "sigmoid"),
    ("tanh", "erf"),
    ("He2", "He3^2"),
    ("erf", "x^2"),
    ("relu(z - 0.1)", "relu"),
]

SAMPLES = 400_000


def _monte_carlo(student, teacher, u, m, mu, kappa, seed):
    """Sample means and standard errors of the loss and of both flow components.

    With lam* ~ N(0,1), nu = m lam* + sqrt(1 - m^2) zeta and lam = mu lam* + u nu:
    du/dt = -E[g nu] and dm/dt = -u (E[g lam*] - m E[g nu]) - kappa/2 m u^2 E[g^2],
    g = (sigma(lam) - sigma*(lam*)) sigma'(lam). These follow from the SGD gradient
    u E[g x] projected on the sphere of v, independently of the symbolic derivation.
    """
    rng = np.random.default_rng(seed)
    lam_star = rng.standard_normal(SAMPLES)
    zeta = rng.standard_normal(SAMPLES)
    nu = m * lam_star + np.sqrt(1 - m**2) * zeta
    lam = mu * lam_star + u * nu
    sigma = parse_activation(student)
    sigma_star = parse_activation(teacher)
    error = sigma(lam) - sigma_star(lam_star)
    g = error * sigma.numpy(1)(lam)

    loss_samples = error**2 / 2
    du_samples = -g * nu
    dm_samples = -u * (g * lam_star - m * g * nu) - kappa / 2 * m * u**2 * g**2

    def stats(samples):
        return samples.mean(), samples.std(ddof=1) / np.sqrt(samples.size)

    return stats(loss_samples), stats(du_samples), stats(dm_samples)


@pytest.mark.parametrize("student, teacher", PAIRS, ids=[f"{s}|{t}" for s, t in PAIRS])
def test_flow_against_monte_carlo(student, teacher):
    functions = flow_functions(student, teacher)
    rng = np.random.default_rng(12345)
    for trial in range(3):
        u = rng.uniform(-1.2, 1.2)
        m = rng.uniform(-0.95, 0.95)
        mu = rng.uniform(0.05, 0.95)
        kappa = rng.uniform(0, 2)
        (loss, loss_se), (du, du_se), (dm, dm_se) = _monte_carlo(student, teacher, u, m, mu, kappa, seed=trial)
        # Five standard errors: a false alarm has probability below 1e-6 per comparison.
        # The absolute 1e-9 floor covers terms that vanish exactly (zero variance).
        assert abs(functions.loss(u, m, mu) - loss) <= 5 * loss_se + 1e-9, (u, m, mu)
        assert abs(functions.du_dt(u, m, mu, kappa) - du) <= 5 * du_se + 1e-9, (u, m, mu)
        assert abs(functions.dm_dt(u, m, mu, kappa) - dm) <= 5 * dm_se + 1e-9, (u, m, mu, kappa)


@pytest.mark.parametrize("spec", ["x", "erf", "relu", "He3", "sigmoid"])
def test_loss_nonnegative_and_zero_at_teacher(spec):
    functions = flow_functions(spec)
    rng = np.random.default_rng(7)
    u = rng.uniform(-2, 2, 200)
    m = rng.uniform(-1, 1, 200)
    mu_values = rng.uniform(0, 1, 200)
    losses = functions.loss(u, m, mu_values)
    assert np.all(np.isfinite(losses))
    # Rounding can make an exact zero slightly negative; 1e-12 relative to the loss scale allows for it.
    assert losses.min() >= -1e-12 * max(1.0, np.abs(losses).max())
    mu_grid = np.linspace(0.0, 0.9, 10)
    at_teacher = functions.loss(1 - mu_grid, 1.0, mu_grid)
    assert np.all(np.abs(at_teacher) <= 1e-10)


@pytest.mark.parametrize("spec", ["relu", "erf", "He3", "sigmoid"])
def test_flow_finite_at_search_point(spec):
    # u = 0 puts the pre-activations at correlation exactly 1; no nan may appear there.
    functions = flow_functions(spec)
    mu_values = np.linspace(0.05, 1.0, 20)
    du, dm = functions.velocity(0.0, 0.3, mu_values, 1.0)
    assert np.all(np.isfinite(du))
    # dm/dt = u * (...) vanishes on the line u = 0 for every m.
    assert np.all(dm == 0)


def test_flow_odd_symmetry():
    # (u, m) -> (-u, -m) leaves Q and R unchanged, so du/dt and dm/dt flip sign.
    functions = flow_functions("erf", "He3^2")
    u, m, mu = 0.4, 0.3, 0.6
    du, dm = functions.velocity(u, m, mu, 0.5)
    du_flipped, dm_flipped = functions.velocity(-u, -m, mu, 0.5)
    assert np.isclose(du_flipped, -du, rtol=1e-13)
    assert np.isclose(dm_flipped, -dm, rtol=1e-13)


def test_broadcasting_and_docstring():
    functions = flow_functions("erf")
    result = functions.du_dt(np.zeros((3, 1)), np.linspace(0, 0.5, 4), 0.5, 0.0)
    assert result.shape == (3, 4)
    assert "du_dt(u, m, mu, kappa) =" in functions.du_dt.__doc__
    assert isinstance(functions.du_dt.expression, sp.Expr)
