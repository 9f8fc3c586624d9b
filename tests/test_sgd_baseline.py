"""Baseline SGD (unit vector v, no pre-training): exact reduced sampler against the full one and the flow."""

import numpy as np
import pytest
from scipy import stats

from lora_theory._errors import ParameterError
from lora_theory._sgd_baseline import numba_available
from lora_theory.baseline import integrate_baseline, simulate_baseline
from lora_theory.simulation import SimulationDivergedError

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_run_independent_of_other_runs(backend):
    # Run 0 draws from its own spawned stream, so simulating seven more runs beside it changes nothing.
    settings = dict(d=50, eta=0.01, batch=3, steps=500, seed=11, record="all", backend=backend)
    alone = simulate_baseline("He2", n_runs=1, **settings)
    together = simulate_baseline("He2", n_runs=8, **settings)
    np.testing.assert_array_equal(alone.m[0], together.m[0])
    assert alone.initial_m[0] == together.initial_m[0]


@needs_numba
@pytest.mark.parametrize("spec, batch", [("He2", 1), ("He3", 4), ("0.5*He1+He3", 7)])
def test_backends_bit_identical(spec, batch):
    # Both kernels use Horner's rule and sequential batch sums, so every recorded value agrees exactly.
    settings = dict(d=40, eta=0.003, batch=batch, steps=3000, n_runs=6, seed=5, record="log", m_exit=0.3,
                    stop_when_escaped=True, on_divergence="report")
    with_numpy = simulate_baseline(spec, backend="numpy", **settings)
    with_numba = simulate_baseline(spec, backend="numba", **settings)
    assert with_numba.parameters.backend == "numba"
    np.testing.assert_array_equal(with_numpy.m, with_numba.m)
    np.testing.assert_array_equal(with_numpy.final_m, with_numba.final_m)
    np.testing.assert_array_equal(with_numpy.escape_step.filled(-1), with_numba.escape_step.filled(-1))
    np.testing.assert_array_equal(with_numpy.last_step, with_numba.last_step)


def test_first_steps_independent_of_length():
    # Whole blocks of random numbers are drawn, so a longer simulation starts with the same steps.
    short = simulate_baseline("He3", d=30, eta=0.002, steps=40, n_runs=3, seed=2, record="all")
    long = simulate_baseline("He3", d=30, eta=0.002, steps=4000, n_runs=3, seed=2, record="all")
    np.testing.assert_array_equal(short.m, long.m[:, :41])


def _overlap_at(method, d, steps, n_runs, seed):
    result = simulate_baseline("He2", d=d, eta=0.05, batch=2, steps=steps, n_runs=n_runs, seed=seed,
                               method=method, record=[steps], backend="numpy")
    return result.m[:, 0]


def test_reduced_matches_full_in_law():
    # Two-sample Kolmogorov-Smirnov test of m after 30 steps at d = 8 (v uniform at start), 1500 runs
    # each. Exact sampling means equal laws, so p is uniform; a fixed seed pair fails with probability 1e-3.
    reduced = _overlap_at("reduced", 8, 30, 1500, seed=1)
    full = _overlap_at("full", 8, 30, 1500, seed=2)
    assert stats.ks_2samp(reduced, full).pvalue > 1e-3


def test_law_comparison_detects_wrong_dimension():
    # Power check of the test above: the reduced sampler at d = 6 against the full one at d = 8
    # differ in law (the chi-square part and the start), and KS must see it at the same sample size.
    reduced = _overlap_at("reduced", 6, 30, 1500, seed=1)
    full = _overlap_at("full", 8, 30, 1500, seed=2)
    assert stats.ks_2samp(reduced, full).pvalue < 1e-3


@pytest.mark.parametrize("spec, m0, kappa", [("He1", 0.01, 1.0), ("He2", 0.1, 0.08)])
def test_escape_time_matches_flow(spec, m0, kappa):
    # At d = 1e4 the SGD escape time t = eta * steps concentrates on the flow's (fluctuations of
    # order 1/sqrt(d) relative to m0). The mean over 100 runs must lie within 4 standard errors,
    # plus 0.5% for the O(1/d) and O(eta) bias of the finite process.
    d = 10_000
    eta = kappa / d
    flow = integrate_baseline(spec, m0=m0, kappa=kappa)
    result = simulate_baseline(spec, d=d, eta=eta, steps=int(3 * flow.escape_time / eta), n_runs=100, seed=7,
                               m0=m0, record=None, stop_when_escaped=True)
    assert result.escaped.all()
    times = result.escape_step.compressed() * eta
    standard_error = times.std(ddof=1) / np.sqrt(times.size)
    assert abs(times.mean() - flow.escape_time) <= 4 * standard_error + 0.005 * flow.escape_time


def test_censored_runs_have_no_escape_step():
    # He4 at m0 = 0.05 needs far more than 10 steps, so every run is censored, never escaped at the last step.
    result = simulate_baseline("He4", d=100, eta=1e-6, steps=10, n_runs=4, m0=0.05, record=None)
    summary = result.escape_summary()
    assert result.censored.all()
    assert summary.n_censored == 4
    assert summary.steps.median is None
    assert np.all(result.last_step == 10)


def test_escape_summary_units():
    result = simulate_baseline("He1", d=100, eta=0.02, batch=5, steps=2000, n_runs=5, m0=0.1, record=None,
                               stop_when_escaped=True)
    summary = result.escape_summary()
    assert summary.n_escaped == 5
    assert summary.samples.median == 5 * summary.steps.median
    assert summary.t.median == pytest.approx(0.02 * summary.steps.median, rel=1e-12)
    np.testing.assert_array_equal(result.last_step, result.escape_step.filled(-1))


def test_divergence_reported_or_raised():
    # exp(400 nu) overflows once nu > 1.78, which a few hundred samples reach; the overlap becomes nan.
    settings = dict(d=10, eta=0.1, batch=1, steps=500, n_runs=3, m0=0.3, record=None)
    with pytest.raises(SimulationDivergedError, match="diverged"):
        simulate_baseline("expr:exp(400*z)", "x", **settings)
    result = simulate_baseline("expr:exp(400*z)", "x", on_divergence="report", **settings)
    assert not np.ma.getmaskarray(result.diverged_step).any()
    assert np.all(np.isnan(result.final_m))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(d=2), "d must be an integer >= 3"),
        (dict(eta=0.0), "eta must be > 0"),
        (dict(eta=-1.0), "eta must be > 0"),
        (dict(batch=0), "batch must be an integer >= 1"),
        (dict(m0=1.5), "m0 must lie in"),
        (dict(method="exact"), "method must be one of"),
        (dict(backend="cuda"), "backend must be one of"),
        (dict(m_exit=0.0), "m_exit must lie in"),
    ],
)
def test_bad_input_rejected(arguments, message):
    settings = dict(d=10, eta=0.01, steps=10)
    settings.update(arguments)
    with pytest.raises(ParameterError, match=message):
        simulate_baseline("He2", **settings)


@needs_numba
def test_numba_rejects_non_polynomial():
    with pytest.raises(ParameterError, match="polynomial activations"):
        simulate_baseline("erf", d=10, eta=0.01, steps=10, backend="numba")


def test_non_polynomial_runs_with_numpy():
    result = simulate_baseline("erf", d=10, eta=0.01, steps=10, n_runs=2)
    assert result.parameters.backend == "numpy"
    assert np.all(np.isfinite(result.final_m))
