"""Tests of the compiled erf step of the reduced sampler (needs numba).

The table evaluation of erf and erf' is checked against mpmath at 40 digits,
and compiled trajectories against the NumPy step on the same random numbers.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from lora_theory import _sgd_compiled, _sgd_reduced
from lora_theory._sgd_common import SGDProblem
from lora_theory.activations import parse_activation

pytest.importorskip("numba")

# Each table value is rounded once (0.5 ulp). Cancellation between a_0 and
# the Taylor correction at most doubles that error (in the cell around
# z0 = 1/128), and the final rounding adds 0.5 ulp. The truncated Taylor
# terms are below 1e-17 relative. So 4 ulp of the exact value bounds the
# error, and the measured maximum is 2 ulp.
TABLE_ULPS = 4


def mpmath_erf_and_derivative(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with mpmath.workdps(40):
        values = [mpmath.erf(mpmath.mpf(float(z))) for z in points]
        derivatives = [2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-mpmath.mpf(float(z)) ** 2) for z in points]
    return np.array([float(v) for v in values]), np.array([float(v) for v in derivatives])


def table_points() -> np.ndarray:
    """Points over the whole table: random ones, cell centres and both sides of every cell edge."""
    generator = np.random.default_rng(0)
    cells = _sgd_compiled.CELLS_PER_UNIT
    centres = np.arange(int(_sgd_compiled.TABLE_END * cells) + 1) / cells
    edges = (np.arange(int(_sgd_compiled.TABLE_END * cells)) + 0.5) / cells
    points = np.concatenate(
        [
            generator.uniform(-_sgd_compiled.TABLE_END, _sgd_compiled.TABLE_END, 2000),
            generator.standard_normal(1000) * 1e-3,
            centres,
            -centres,
            np.nextafter(edges, 0.0),
            np.nextafter(edges, np.inf),
            [_sgd_compiled.TABLE_END, 1e-300, -5e-324],
        ]
    )
    return points[np.abs(points) <= _sgd_compiled.TABLE_END]


def test_table_erf_matches_mpmath():
    points = table_points()
    values, _ = _sgd_compiled.erf_with_derivative(points)
    reference, _ = mpmath_erf_and_derivative(points)
    error_in_ulps = np.abs(values - reference) / np.spacing(np.abs(reference))
    assert np.max(error_in_ulps) <= TABLE_ULPS


def test_table_erf_derivative_matches_mpmath():
    points = table_points()
    _, derivatives = _sgd_compiled.erf_with_derivative(points)
    _, reference = mpmath_erf_and_derivative(points)
    error_in_ulps = np.abs(derivatives - reference) / np.spacing(reference)
    assert np.max(error_in_ulps) <= TABLE_ULPS


def test_table_erf_is_odd():
    points = table_points()
    positive, positive_derivative = _sgd_compiled.erf_with_derivative(np.abs(points))
    negative, negative_derivative = _sgd_compiled.erf_with_derivative(-np.abs(points))
    np.testing.assert_array_equal(negative, -positive)
    np.testing.assert_array_equal(negative_derivative, positive_derivative)


def test_erf_outside_table_uses_library():
    points = np.array([6.0000001, -7.5, 26.0, 40.0, -np.inf, np.inf])
    values, derivatives = _sgd_compiled.erf_with_derivative(points)
    np.testing.assert_array_equal(values, np.sign(points))
    # Same formula as the NumPy step; exp(-z^2) carries the rounding of z^2,
    # a relative error up to about z^2 * 1.1e-16 (7e-14 at z = 26).
    expected = 2 / np.sqrt(np.pi) * np.exp(-points * points)
    np.testing.assert_allclose(derivatives, expected, rtol=1e-13, atol=0)


def test_erf_of_nan_is_nan():
    values, derivatives = _sgd_compiled.erf_with_derivative(np.array([np.nan]))
    assert np.isnan(values[0])
    assert np.isnan(derivatives[0])


# ---------------------------------------------------------------------------
# Compiled step against the NumPy step
# ---------------------------------------------------------------------------


def erf_problem(**overrides) -> SGDProblem:
    erf = parse_activation("erf")
    arguments = dict(mu=0.5, d=1000, eta=0.2, batch=500) | overrides
    return SGDProblem.build(erf, erf, **arguments)


def samplers(problem: SGDProblem, n_runs: int, u0: float, m0: float | None):
    """A NumPy and a compiled sampler with identical generators."""
    built = []
    for compiled in (False, True):
        generators = [np.random.Generator(np.random.PCG64(sequence)) for sequence in np.random.SeedSequence(4).spawn(n_runs)]
        built.append(_sgd_reduced.ReducedSampler(problem, generators, u0, m0, compiled=compiled))
    return built


@pytest.mark.parametrize(("mu", "u0", "m0"), [(0.5, 1e-6, None), (0.9, 0.8, 0.4), (0.0, 2.5, -0.7)])
def test_compiled_step_matches_numpy_step(mu, u0, m0):
    # Both steps round differently (table erf against scipy's, fused
    # multiply-adds, another summation order), by a few ulp per sample.
    # Over 48 steps of B = 500 samples such differences stay below about
    # steps * B * eps = 3e-12 relative. A relative error of 1e-7 in g
    # already exceeds rtol = 1e-9.
    reference, compiled = samplers(erf_problem(mu=mu), n_runs=6, u0=u0, m0=m0)
    assert not reference.compiled
    assert compiled.compiled
    for _ in range(48):
        reference.step()
        compiled.step()
        np.testing.assert_allclose(compiled.m, reference.m, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(compiled.u, reference.u, rtol=1e-9, atol=1e-15)
    # Both consumed the same stream: the last drawn blocks are identical.
    np.testing.assert_array_equal(compiled._normals, reference._normals)
    np.testing.assert_array_equal(compiled._chi_square, reference._chi_square)


def test_compiled_step_escapes_like_numpy_step():
    # A run that leaves the search phase: m grows from 0.05 to order one, so
    # the check covers lam well outside the initial range.
    reference, compiled = samplers(erf_problem(mu=0.2, d=50, eta=0.5, batch=64), n_runs=4, u0=0.5, m0=0.05)
    for _ in range(200):
        reference.step()
        compiled.step()
    assert np.min(np.abs(reference.m)) > 0.5
    np.testing.assert_allclose(compiled.m, reference.m, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(compiled.u, reference.u, rtol=1e-8, atol=1e-12)


def test_compiled_step_chosen_only_for_erf_pair():
    generator = [np.random.default_rng(0)]
    assert _sgd_reduced.ReducedSampler(erf_problem(), generator, 0.1, 0.2).compiled
    linear = parse_activation("linear")
    erf = parse_activation("erf")
    for student, teacher in ((linear, linear), (erf, linear), (linear, erf), (parse_activation("expr:erf(2*z)"), erf)):
        problem = SGDProblem.build(student, teacher, mu=0.5, d=10, eta=0.1, batch=4)
        assert not _sgd_reduced.ReducedSampler(problem, generator, 0.1, 0.2).compiled
        with pytest.raises(RuntimeError, match="compiled=None or False"):
            _sgd_reduced.ReducedSampler(problem, generator, 0.1, 0.2, compiled=True)


def test_compiled_diverged_run_stays_nan():
    reference, compiled = samplers(erf_problem(), n_runs=3, u0=0.3, m0=0.2)
    for sampler in (reference, compiled):
        sampler.mark_diverged(np.array([False, True, False]))
        for _ in range(3):
            sampler.step()
    assert np.isnan(compiled.u[1])
    assert np.isnan(compiled.m[1])
    # The other runs are not affected by the nan run.
    np.testing.assert_allclose(compiled.m[[0, 2]], reference.m[[0, 2]], rtol=1e-9, atol=0)
