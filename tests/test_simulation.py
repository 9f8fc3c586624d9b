"""Tests of the full and reduced SGD samplers and of the escape statistics.

The layers go from exact to statistical. Input validation comes first,
then exact properties: seeding, stream layout, and the algebra of one
reduced step against the explicit d-dimensional update. Monte Carlo
checks of closed forms follow, with tolerances derived from the standard
error. Last come two-sample Kolmogorov-Smirnov comparisons of the two
samplers, each paired with a check that the same sample size detects a
shift, so the comparison can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from lora_theory import _sgd_reduced
from lora_theory import simulation as simulation_module
from lora_theory._errors import ParameterError
from lora_theory._sgd_common import SGDProblem
from lora_theory.activations import parse_activation
from lora_theory.escape import NOT_ESCAPED, summarize_escape
from lora_theory.simulation import SimulationDivergedError, log_grid, simulate

METHODS = ("reduced", "full")

# Significance level of every two-sample and goodness-of-fit test below.
KS_LEVEL = 1e-3

SMALL = dict(mu=0.5, d=20, eta=0.1, batch=8)


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("d", 2),
        ("d", 2.5),
        ("d", float("nan")),
        ("batch", 0),
        ("eta", 0.0),
        ("eta", -0.1),
        ("eta", float("inf")),
        ("mu", float("nan")),
        ("m0", 1.5),
        ("m0", -1.0000001),
        ("m0", float("nan")),
        ("u0", float("inf")),
        ("steps", -1),
        ("n_runs", 0),
        ("seed", -3),
        ("m_exit", 0.0),
        ("m_exit", 1.5),
    ],
)
def test_invalid_parameter_named_in_error(name, value):
    arguments = dict(SMALL, steps=5)
    arguments[name] = value
    with pytest.raises(ParameterError) as error:
        simulate("linear", **arguments)
    message = str(error.value)
    assert name in message
    assert repr(value) in message or str(value) in message


@pytest.mark.parametrize(
    "arguments",
    [
        dict(method="exact"),
        dict(record="sometimes"),
        dict(record=[0, 6]),
        dict(record=[0.5]),
        dict(on_divergence="ignore"),
        dict(memory_limit=0),
    ],
)
def test_invalid_option_rejected(arguments):
    with pytest.raises(ParameterError):
        simulate("linear", **SMALL, steps=5, **arguments)


def test_records_beyond_memory_rejected_before_work():
    # 2 * 8 bytes * 1000 runs * 1e9 steps is 16 TB; the check must come before any sampling.
    with pytest.raises(ParameterError, match="memory_limit") as error:
        simulate("linear", **SMALL, steps=10**9, n_runs=1000, record="all")
    assert "record fewer steps" in str(error.value)


def test_full_run_beyond_memory_suggests_reduced():
    with pytest.raises(ParameterError, match="method='reduced'"):
        simulate("linear", mu=0.5, d=10**9, eta=0.1, batch=500, steps=1, method="full")


def test_reduced_accepts_huge_dimension():
    result = simulate("linear", mu=0.5, d=10**12, eta=1e-9, batch=4, steps=3, n_runs=2, record="all")
    assert np.all(np.isfinite(result.m))
    # m0 of a uniform v has standard deviation 1/sqrt(d) = 1e-6; 8 sigma bounds it.
    assert np.all(np.abs(result.initial_m) < 8e-6)


def test_integral_float_dimension_accepted():
    result = simulate("linear", mu=0.5, d=1e3, eta=0.1, batch=2.0, steps=1)
    assert result.parameters.d == 1000
    assert result.parameters.batch == 2


# ---------------------------------------------------------------------------
# Seeding and stream layout
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_run_zero_independent_of_batch(method):
    arguments = dict(SMALL, steps=40, seed=11, method=method, record="all")
    together = simulate("erf", n_runs=8, **arguments)
    alone = simulate("erf", n_runs=1, **arguments)
    np.testing.assert_array_equal(together.u[0], alone.u[0])
    np.testing.assert_array_equal(together.m[0], alone.m[0])
    assert together.initial_m[0] == alone.initial_m[0]


@pytest.mark.parametrize("method", METHODS)
def test_runs_independent_of_chunking(method, monkeypatch):
    arguments = dict(SMALL, eta=0.005, steps=30, seed=5, method=method, record="all", n_runs=6)
    in_one_chunk = simulate("He3", **arguments)
    # A buffer budget of one byte forces chunks of a single run.
    monkeypatch.setattr(simulation_module, "_CHUNK_BUFFER_BYTES", 1)
    one_run_per_chunk = simulate("He3", **arguments)
    np.testing.assert_array_equal(in_one_chunk.u, one_run_per_chunk.u)
    np.testing.assert_array_equal(in_one_chunk.m, one_run_per_chunk.m)


@pytest.mark.parametrize("method", METHODS)
def test_prefix_independent_of_length(method):
    # 21 steps end inside the second block of 16 steps of the reduced stream.
    arguments = dict(SMALL, seed=2, method=method, record="all", n_runs=3)
    short = simulate("linear", steps=21, **arguments)
    long = simulate("linear", steps=50, **arguments)
    np.testing.assert_array_equal(short.m, long.m[:, :22])
    np.testing.assert_array_equal(short.u, long.u[:, :22])


def test_seed_none_stores_reproducible_entropy():
    first = simulate("linear", **SMALL, steps=10, seed=None, n_runs=2)
    again = simulate("linear", **SMALL, steps=10, seed=first.parameters.seed, n_runs=2)
    np.testing.assert_array_equal(first.m, again.m)


def test_different_seeds_differ():
    first = simulate("linear", **SMALL, steps=10, seed=1)
    second = simulate("linear", **SMALL, steps=10, seed=2)
    assert not np.array_equal(first.m, second.m)


# ---------------------------------------------------------------------------
# Initial condition
# ---------------------------------------------------------------------------


def overlap_cdf(t, d):
    """CDF of <v, w*> for v uniform on the sphere of R^d: m^2 ~ Beta(1/2, (d - 1)/2), symmetric."""
    t = np.asarray(t, dtype=float)
    return 0.5 + 0.5 * np.sign(t) * special.betainc(0.5, (d - 1) / 2, np.minimum(t * t, 1.0))


@pytest.mark.parametrize("d", [3, 10, 1000])
def test_reduced_initial_overlap_exact_law(d):
    result = simulate("linear", mu=0.5, d=d, eta=0.1, batch=1, steps=0, n_runs=8000, seed=d)
    assert stats.kstest(result.initial_m, overlap_cdf, args=(d,)).pvalue > KS_LEVEL


def test_initial_overlap_test_rejects_gaussian_approximation():
    # At d = 3 the exact law is uniform on [-1, 1], and the test must reject N(0, 1/d) at this sample size.
    approximate = np.random.default_rng(0).normal(0.0, 1.0 / np.sqrt(3), size=8000)
    assert stats.kstest(approximate, overlap_cdf, args=(3,)).pvalue < KS_LEVEL


def test_full_initial_overlap_exact_law():
    result = simulate("linear", mu=0.5, d=10, eta=0.1, batch=1, steps=0, n_runs=4000, seed=4, method="full")
    assert stats.kstest(result.initial_m, overlap_cdf, args=(10,)).pvalue > KS_LEVEL


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("m0", [-1.0, 0.0, 0.3, 1.0])
def test_given_initial_overlap_used(method, m0):
    result = simulate("linear", **SMALL, steps=0, n_runs=3, m0=m0, method=method, record="all")
    np.testing.assert_array_equal(result.initial_m, m0)
    np.testing.assert_array_equal(result.u[:, 0], 1.0 / SMALL["d"] ** 2)


# ---------------------------------------------------------------------------
# One step: exact algebra and exact conditional moments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["linear", "erf", "He3", "relu"])
def test_reduced_step_matches_explicit_update(activation):
    """One reduced step equals the d-dimensional update of a batch built from the same numbers.

    With v = m e1 + c e2 and x_b = lam*_b e1 + zeta_b e2 + xi_b e3, the part
    of sum_b g_b x_b orthogonal to (e1, e2) is (sum_b g_b xi_b) e3. Choosing
    xi_b = g_b sqrt(q / sum_b g_b^2) makes its squared norm (sum_b g_b^2) q,
    the value the reduced sampler uses with q ~ chi^2_{d-2}.
    """
    d, batch, mu, eta, u, m = 7, 5, 0.4, 0.3, 0.8, 0.35
    sigma = parse_activation(activation)
    problem = SGDProblem.build(sigma, sigma, mu=mu, d=d, eta=eta, batch=batch)
    generator = np.random.default_rng(3)
    sampler = _sgd_reduced.ReducedSampler(problem, [generator], u0=u, m0=m)
    sampler.step()

    lam_star, zeta = sampler._normals[0, 0]
    q = sampler._chi_square[0, 0]
    c = np.sqrt(1 - m * m)
    nu = m * lam_star + c * zeta
    lam = mu * lam_star + u * nu
    g = (sigma(lam) - sigma(lam_star)) * sigma.numpy(1)(lam)
    xi = g * np.sqrt(q / np.sum(g * g))

    inputs = np.zeros((batch, d))
    inputs[:, 0], inputs[:, 1], inputs[:, 2] = lam_star, zeta, xi
    v = np.zeros(d)
    v[0], v[1] = m, c
    assert np.allclose(inputs @ v, nu, rtol=0, atol=1e-15)
    v_new = v - eta * u * (g @ inputs) / batch
    u_new = u - eta * np.mean(g * (inputs @ v))

    assert sampler.u[0] == pytest.approx(u_new, rel=1e-13, abs=1e-15)
    assert sampler.m[0] == pytest.approx(v_new[0] / np.linalg.norm(v_new), rel=1e-13, abs=1e-15)


def linear_one_step_moments(mu, eta, batch, u, m):
    """Mean and variance of u after one SGD step for sigma = sigma* = identity.

    g = lam - lam* = alpha lam* + u nu with alpha = mu - 1, and (lam*, nu) are
    standard normals with correlation m. Isserlis' theorem gives
    E[g nu] = alpha m + u and
    E[(g nu)^2] = alpha^2 (1 + 2 m^2) + 6 alpha u m + 3 u^2, so
    Var(g nu) = alpha^2 (1 + m^2) + 4 alpha u m + 2 u^2. With
    u_new = u - eta mean_b g_b nu_b over B independent samples:
    E[u_new] = u - eta (alpha m + u), Var(u_new) = eta^2 Var(g nu) / B.
    """
    alpha = mu - 1.0
    mean = u - eta * (alpha * m + u)
    variance = eta**2 * (alpha**2 * (1 + m * m) + 4 * alpha * u * m + 2 * u * u) / batch
    return mean, variance


@pytest.mark.parametrize("method", METHODS)
def test_linear_one_step_mean_and_variance(method):
    mu, eta, batch, u0, m0 = 0.5, 0.5, 4, 0.7, 0.3
    n_runs = 20000 if method == "reduced" else 6000
    result = simulate(
        "linear", mu=mu, d=12, eta=eta, batch=batch, steps=1, n_runs=n_runs, seed=8, method=method, m0=m0, u0=u0, record="all"
    )
    u_new = result.u[:, 1]
    mean, variance = linear_one_step_moments(mu, eta, batch, u0, m0)

    # Sample mean: five standard errors, a false failure rate below 1e-6.
    standard_error = np.sqrt(variance / n_runs)
    assert abs(u_new.mean() - mean) < 5 * standard_error
    # The check resolves the drift: the gradient term is many standard errors wide.
    assert eta * abs((mu - 1) * m0 + u0) > 20 * standard_error

    # Sample variance: its relative standard error is sqrt((excess kurtosis + 2) / N).
    # g nu = alpha lam* nu + u nu^2 is a quadratic form of centred Gaussians, with excess
    # kurtosis 12 sum(l^4) / sum(l^2)^2 <= 12 over its eigenvalues l. The batch mean divides it by B.
    relative_error = np.sqrt((12 / batch + 2) / n_runs)
    assert u_new.var(ddof=1) == pytest.approx(variance, rel=5 * relative_error)


# ---------------------------------------------------------------------------
# Full versus reduced, in distribution
# ---------------------------------------------------------------------------


def censored_escape(result):
    """min(escape step, steps + 1): the same statistic for both samplers, censoring included."""
    return np.ma.filled(result.escape_step, result.parameters.steps + 1)


def overlap_or_infinity(result, column):
    """m at one recorded step, with +inf for diverged runs, so rare divergences are compared too."""
    values = result.m[:, column]
    return np.where(np.isnan(values), np.inf, values)


def compare_samplers(student, *, steps, n_runs, check_steps, shift, **arguments):
    """KS-compare full and reduced SGD, and check that the sample size detects a shift.

    The power check scales the reduced escape steps by (1 + shift): the same
    KS test at the same sample size must reject that against the full
    sampler, or the agreement would prove nothing. The last entry of
    ``check_steps`` should lie after most escapes, where the level of m
    reflects the noise that the renormalisation of v adds.
    """
    arguments.update(steps=steps, n_runs=n_runs, record=list(check_steps), on_divergence="report")
    full = simulate(student, method="full", seed=1, **arguments)
    reduced = simulate(student, method="reduced", seed=2, **arguments)

    for column, step in enumerate(check_steps):
        p_value = stats.ks_2samp(overlap_or_infinity(full, column), overlap_or_infinity(reduced, column)).pvalue
        assert p_value > KS_LEVEL, f"m at step {step}: p = {p_value:.2e}"
    p_value = stats.ks_2samp(censored_escape(full), censored_escape(reduced)).pvalue
    assert p_value > KS_LEVEL, f"escape steps: p = {p_value:.2e}"

    shifted = np.rint((1 + shift) * censored_escape(reduced))
    power_p_value = stats.ks_2samp(censored_escape(full), shifted).pvalue
    assert power_p_value < KS_LEVEL, f"a {shift:.0%} shift of the escape steps was not detected: p = {power_p_value:.2e}"
    return full, reduced


def test_full_matches_reduced_small():
    # kappa = eta d / B = 2, so the noise of the renormalisation sets the level of m after escape.
    full, _ = compare_samplers(
        "linear", mu=0.5, d=40, eta=0.1, batch=2, steps=250, n_runs=1000, check_steps=(10, 40, 80, 250), shift=0.2
    )
    assert full.escape_summary().censored_fraction < 0.05


def test_full_matches_reduced_smallest_dimension():
    """At d = 3 the rest of v' lives in one dimension (chi^2 with one degree of freedom).

    A large u0 makes that orthogonal noise dominate from the first step. The
    same test must tell d = 3 from d = 4, so a wrong number of degrees of
    freedom would be caught.
    """
    arguments = dict(mu=0.5, eta=0.5, batch=1, steps=20, n_runs=2000, m0=0.2, u0=1.0, record=[3, 10, 20])
    full = simulate("erf", d=3, method="full", seed=1, **arguments)
    reduced = simulate("erf", d=3, method="reduced", seed=2, **arguments)
    reduced_d4 = simulate("erf", d=4, method="reduced", seed=3, **arguments)
    for column, step in enumerate(arguments["record"]):
        p_value = stats.ks_2samp(full.m[:, column], reduced.m[:, column]).pvalue
        assert p_value > KS_LEVEL, f"m at step {step}: p = {p_value:.2e}"
    assert stats.ks_2samp(reduced.m[:, -1], reduced_d4.m[:, -1]).pvalue < KS_LEVEL


@pytest.mark.slow
@pytest.mark.parametrize(
    "student, mu, eta, steps, check_steps",
    [
        # Median escape steps about 130, 100 and 170; about 1% of the runs are censored.
        ("linear", 0.5, 0.1, 350, (20, 60, 120, 350)),
        ("erf", 0.5, 1.0, 300, (20, 50, 100, 300)),
        ("He3", 0.7, 0.003, 400, (20, 80, 160, 400)),
    ],
)
def test_full_matches_reduced_d200(student, mu, eta, steps, check_steps):
    compare_samplers(
        student, mu=mu, d=200, eta=eta, batch=25, steps=steps, n_runs=1500, check_steps=check_steps, shift=0.1
    )


# ---------------------------------------------------------------------------
# Escape detection in simulations
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_escape_step_is_first_crossing(method):
    result = simulate("linear", mu=0.5, d=30, eta=0.1, batch=10, steps=80, n_runs=40, seed=6, method=method, record="all")
    crossed = np.abs(result.m) >= result.parameters.m_exit
    escaped = crossed.any(axis=1)
    assert 0 < escaped.sum() < result.parameters.n_runs, "the horizon should censor some runs but not all"
    np.testing.assert_array_equal(result.escaped, escaped)
    np.testing.assert_array_equal(result.escape_step[escaped], np.argmax(crossed[escaped], axis=1))
    # Censored runs carry no step, in particular not the last one.
    assert np.all(np.ma.getmaskarray(result.escape_step)[~escaped])
    assert result.escape_summary().censored_fraction == pytest.approx(1 - escaped.mean())


def test_escape_at_step_zero():
    result = simulate("linear", **SMALL, steps=3, m0=0.7)
    assert result.escape_step[0] == 0


def test_short_horizon_censors_everything():
    result = simulate("linear", mu=0.5, d=10**6, eta=0.1, batch=10, steps=5, n_runs=4)
    summary = result.escape_summary()
    assert summary.censored_fraction == 1.0
    assert summary.steps.median is None
    assert summary.t.mean is None
    assert summary.samples.mean_ci is None


@pytest.mark.parametrize("method", METHODS)
def test_stop_when_escaped_truncates_records(method):
    arguments = dict(mu=0.5, d=30, eta=0.1, batch=10, steps=150, n_runs=12, seed=9, method=method, record="all")
    complete = simulate("linear", **arguments)
    stopped = simulate("linear", stop_when_escaped=True, **arguments)
    np.testing.assert_array_equal(stopped.escape_step, complete.escape_step)
    for run in range(12):
        last = stopped.last_step[run]
        expected_last = complete.escape_step[run] if complete.escaped[run] else 150
        assert last == expected_last
        np.testing.assert_array_equal(stopped.m[run, : last + 1], complete.m[run, : last + 1])
        assert np.all(np.isnan(stopped.m[run, last + 1 :]))
        assert stopped.final_m[run] == complete.m[run, last]


# ---------------------------------------------------------------------------
# Divergence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_divergence_raises_with_step_and_parameters(method):
    with pytest.raises(SimulationDivergedError) as error:
        simulate("He3", mu=0.5, d=20, eta=5.0, batch=8, steps=200, n_runs=2, method=method, u0=1.0, m0=0.5)
    assert error.value.step >= 1
    assert f"step {error.value.step}" in str(error.value)
    assert "eta = 5.0" in str(error.value)
    assert "He3" in str(error.value)


def test_divergence_reported_per_run():
    result = simulate(
        "He3", mu=0.5, d=20, eta=5.0, batch=8, steps=200, n_runs=3, u0=1.0, m0=0.1, m_exit=1.0, on_divergence="report", record="all"
    )
    assert not np.any(np.ma.getmaskarray(result.diverged_step))
    for run in range(3):
        step = result.diverged_step[run]
        assert result.last_step[run] == step
        assert np.all(np.isfinite(result.m[run, :step]))
        assert np.all(np.isnan(result.m[run, step:]))
    summary = result.escape_summary()
    assert summary.diverged_fraction == 1.0
    assert summary.censored_fraction == 0.0


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("steps, n_points", [(0, 10), (1, 10), (7, 100), (10**6, 50)])
def test_log_grid_shape(steps, n_points):
    grid = log_grid(steps, n_points)
    assert grid[0] == 0
    assert grid[-1] == steps
    assert np.all(np.diff(grid) > 0)
    assert grid.size <= n_points + 1


def test_record_summaries_match_numpy():
    result = simulate("erf", **SMALL, steps=30, n_runs=9, seed=4, record=[0, 3, 30, 3])
    np.testing.assert_array_equal(result.record_steps, [0, 3, 30])
    assert result.m.shape == (9, 3)
    np.testing.assert_allclose(result.mean("abs_m"), np.abs(result.m).mean(axis=0))
    np.testing.assert_allclose(result.quantiles([0.1, 0.9], "u"), np.quantile(result.u, [0.1, 0.9], axis=0))
    np.testing.assert_allclose(result.record_t, [0, 0.3, 3.0])
    np.testing.assert_array_equal(result.record_samples, [0, 24, 240])
    with pytest.raises(ParameterError, match="quantity"):
        result.mean("v")


def test_record_none_keeps_final_state():
    recorded = simulate("linear", **SMALL, steps=12, n_runs=2, seed=3, record="all")
    unrecorded = simulate("linear", **SMALL, steps=12, n_runs=2, seed=3, record=None)
    assert unrecorded.m.shape == (2, 0)
    np.testing.assert_array_equal(unrecorded.final_m, recorded.m[:, -1])
    np.testing.assert_array_equal(unrecorded.final_u, recorded.u[:, -1])


def test_no_output_without_terminal(capsys):
    simulate("linear", **SMALL, steps=20, n_runs=2)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_progress_without_tqdm_warns(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def import_without_tqdm(name, *arguments, **keywords):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *arguments, **keywords)

    monkeypatch.setattr(builtins, "__import__", import_without_tqdm)
    with pytest.warns(RuntimeWarning, match="tqdm"):
        simulate("linear", **SMALL, steps=2, progress=True)


# ---------------------------------------------------------------------------
# Escape statistics on synthetic data
# ---------------------------------------------------------------------------


def test_summary_known_values():
    steps = np.ma.masked_array([10, 20, 30, 0], mask=[False, False, False, True])
    summary = summarize_escape(steps, batch=500, eta=0.2, max_steps=40)
    assert summary.n_escaped == 3
    assert summary.censored_fraction == 0.25
    assert summary.steps.median == 20.0
    assert summary.steps.mean == 20.0
    assert summary.samples.mean == 10000.0
    assert summary.t.median == pytest.approx(4.0)
    low, high = summary.steps.mean_ci
    assert 10.0 <= low <= 20.0 <= high <= 30.0
    assert summary.t.mean_ci == pytest.approx((0.2 * low, 0.2 * high))


def test_summary_negative_means_not_escaped():
    masked = summarize_escape(np.ma.masked_array([5, 9, 0], mask=[0, 0, 1]), batch=1, eta=1.0)
    sentinel = summarize_escape(np.array([5, 9, NOT_ESCAPED]), batch=1, eta=1.0)
    assert masked == sentinel


def test_summary_single_escape_has_no_interval():
    summary = summarize_escape(np.array([NOT_ESCAPED, 7]), batch=2, eta=0.5)
    assert summary.steps.median == 7.0
    assert summary.steps.mean_ci is None
    assert summary.steps.median_ci is None


def test_summary_all_censored_is_none():
    summary = summarize_escape(np.full(5, NOT_ESCAPED), batch=2, eta=0.5, max_steps=100)
    assert summary.n_escaped == 0
    assert summary.censored_fraction == 1.0
    for in_unit in (summary.steps, summary.samples, summary.t):
        assert in_unit.median is None
        assert in_unit.mean is None
        assert in_unit.mean_ci is None


def test_summary_partitions_runs():
    escape = np.array([3, NOT_ESCAPED, NOT_ESCAPED, 4])
    # Run 3 diverged after escaping, so it counts as escaped.
    diverged = np.array([NOT_ESCAPED, 8, NOT_ESCAPED, 9])
    summary = summarize_escape(escape, batch=1, eta=1.0, diverged_step=diverged)
    assert (summary.n_escaped, summary.n_diverged, summary.n_censored) == (2, 1, 1)


def test_summary_rejects_bad_input():
    with pytest.raises(ParameterError, match="confidence"):
        summarize_escape(np.array([1, 2]), batch=1, eta=1.0, confidence=1.0)
    with pytest.raises(ParameterError, match="diverged_step"):
        summarize_escape(np.array([1, 2]), batch=1, eta=1.0, diverged_step=np.array([1]))


def test_bootstrap_interval_coverage():
    """The 95% intervals cover the true mean and median in about 95% of repetitions.

    For n = 60 normal samples the percentile interval of the mean is close to
    mean +- 1.96 s sqrt((n-1)/n) / sqrt(n), whose coverage is about 0.943.
    Over 400 repetitions the binomial standard error is about 0.012, so
    [0.89, 0.99] is more than four standard errors either side. A 68% or a
    doubled interval falls outside.
    """
    generator = np.random.default_rng(12)
    repetitions, n, centre = 400, 60, 100.0
    mean_covered = median_covered = 0
    for repetition in range(repetitions):
        sample = np.rint(generator.normal(centre, 15.0, size=n) * 1000).astype(np.int64)
        summary = summarize_escape(sample, batch=1, eta=1e-3, n_bootstrap=1000, seed=repetition)
        low, high = summary.t.mean_ci
        mean_covered += low <= centre <= high
        low, high = summary.t.median_ci
        median_covered += low <= centre <= high
    assert 0.89 <= mean_covered / repetitions <= 0.99
    assert 0.89 <= median_covered / repetitions <= 0.995


def test_backend_numpy_records_numpy():
    result = simulate("erf", mu=0.5, d=1000, eta=0.2, batch=50, steps=5, n_runs=2, backend="numpy")
    assert result.parameters.backend == "numpy"


def test_backend_numba_matches_numpy():
    pytest.importorskip("numba")
    settings = dict(mu=0.5, d=1000, eta=0.2, batch=500, steps=50, n_runs=4, seed=3)
    reference = simulate("erf", backend="numpy", **settings)
    compiled = simulate("erf", backend="numba", **settings)
    assert compiled.parameters.backend == "numba"
    # Same random numbers, erf evaluated to 2 ulp by either step: the overlaps
    # drift apart by rounding only, far below 1e-9 relative after 50 steps.
    np.testing.assert_allclose(compiled.m, reference.m, rtol=1e-9, atol=0)
    np.testing.assert_allclose(compiled.u, reference.u, rtol=1e-9, atol=0)


@pytest.mark.parametrize(
    "student, method, backend, message",
    [
        ("erf", "reduced", "gpu", "backend must be one of"),
        ("erf", "full", "numba", "method='reduced' only"),
        ("x", "reduced", "numba", "an erf student and teacher"),
    ],
)
def test_backend_rejects_bad_choice(student, method, backend, message):
    with pytest.raises(ParameterError, match=message):
        simulate(student, mu=0.5, d=100, eta=0.1, batch=5, steps=3, method=method, backend=backend)
