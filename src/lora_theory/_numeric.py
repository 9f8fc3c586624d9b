r"""Numerical Gaussian expectations of one and two pre-activations.

Convention
----------
The pair :math:`(\lambda, \lambda^*)` is centred Gaussian with
:math:`\operatorname{Var}\lambda = Q`, :math:`\operatorname{Cov}(\lambda, \lambda^*) = R`
and :math:`\operatorname{Var}\lambda^* = 1`. It is written as

.. math::

    \lambda^* = y, \qquad \lambda = R\,y + s\,\xi, \qquad s = \sqrt{Q - R^2},

with :math:`y, \xi` independent standard normal variables. A valid covariance
needs :math:`R^2 \le Q`. The degenerate case :math:`s = 0` (correlation
:math:`\pm 1`, or :math:`Q = 0`) is an ordinary input: the expectation is
then one-dimensional and is computed as such.

Quadrature
----------
Every expectation is an iterated integral
:math:`\mathbb{E}_y\bigl[g(\alpha y)\,\mathbb{E}_\xi[k(\beta y + \gamma\xi)]\bigr]`
over standard normal variables truncated to :math:`|y|, |\xi| \le 10`
(the normal tail mass beyond 10 is :math:`1.5\times10^{-23}`).

* Axes without kinks use the truncated trapezoidal rule. For an integrand
  analytic in a strip :math:`|\operatorname{Im} z| < d` its error decays like
  :math:`e^{-2\pi d / \text{step}}`, much faster than Gauss–Hermite for
  poles near the real axis: for :math:`\mathbb{E}[\tanh(2\lambda + 0.6)^2]`
  at :math:`Q = 4`, 300 Gauss–Hermite nodes leave a relative error of
  :math:`7\times10^{-6}`, and the trapezoidal rule with 269 nodes
  :math:`2\times10^{-13}`.
* Axes with kinks use composite Fejér (second kind) panels whose edges
  include every kink, so that no node lies on a kink and no panel spans
  one. Where the inner integral smooths a kink of ``k`` over a width
  :math:`\gamma/|\beta|` that is small (nearly degenerate covariance), the
  outer panels are graded geometrically towards the smoothed kink.

Default resolution: a trapezoidal step of 0.3 (69 nodes on [-10, 10]) and
Fejér panels of length 2 with 31 nodes each. Both are divided by the
largest factor that multiplies the variable inside ``f`` or ``h`` (at least
1), rounded up to a quarter octave. A smooth pair at ``Q <= 1`` thus starts
with 69 x 69 nodes per point.

Error control: both rules are nested, since dropping every other node
gives the rule with twice the step. The differences of the fine tensor rule
from the rules that are coarse in y, in xi, and in both estimate the error
of those coarser rules, which bounds the error of the fine one, usually by
far. A point is accepted when the estimate is at most
:math:`5\times10^{-10}\,|\mathbb{E} f h| + 5\times10^{-13}
\sqrt{\mathbb{E} f^2\,\mathbb{E} h^2}`. Otherwise the step of the failing
axes shrinks as the observed convergence suggests, up to four times and
within 2**22 values per point. Points that still fail raise
:class:`~lora_theory.QuadratureError` when the integrand overflows, when
more than 1e-6 of :math:`\mathbb{E}|f h|` lies at 9 to 10 standard
deviations (the expectation probably does not exist, as for
:math:`e^{z^2}`), or when the estimate exceeds
:math:`10^{-3}\,|\mathbb{E} f h| + 10^{-6}\sqrt{\mathbb{E} f^2\,\mathbb{E} h^2}`.
A smaller excess issues a :class:`QuadratureWarning` that names the
points.

Accuracy: relative error at most ``1e-9``, or absolute error at most
``1e-12`` where the expectation is close to zero, over
:math:`0 \le Q \le 4`, :math:`|R| \le \sqrt Q`, including :math:`s = 0`,
nearly degenerate :math:`s` and :math:`Q = 0`. ``tests/test_numeric.py``
checks this against :func:`pair_expectation_mp` for sigmoid, tanh,
:math:`\tanh(2z)`, shifted ReLU and products such as
:math:`\sigma\,\sigma'^2`, and against closed forms (arc-sine, arc-cosine
and orthant kernels, Stein's identity) at random points. The rules assume that ``f`` and
``h`` are analytic between their kinks and grow at most polynomially, with
total degree up to about 20, beyond which the truncation at 10 standard
deviations shows. Larger ``Q`` gets proportionally more nodes and relies
on the error estimate; the tests compare it with the arc-sine kernel of
erf up to ``Q = 25`` only, not with mpmath.

``nodes=n`` selects tensor Gauss–Hermite with ``n`` nodes per variable
instead. It is exact for polynomial integrands of degree up to ``2n - 1`` in
each variable, but has no error estimate.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import mpmath
import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from ._errors import LoraTheoryWarning, ParameterError, QuadratureError

__all__ = [
    "QuadratureWarning",
    "pair_expectation",
    "expectation_1d",
    "pair_expectation_mp",
    "expectation_1d_mp",
    "MAX_HERMITE_NODES",
]

Function = Callable[[np.ndarray], np.ndarray]

#: Largest ``nodes`` accepted for the Gauss–Hermite rule. NumPy's
#: ``hermegauss`` loses its weights to overflow a little above 360 nodes.
MAX_HERMITE_NODES = 300

# Both variables are standard normal, and |z| > 10 carries mass 1.5e-23.
_TRUNCATION = 10.0

# Trapezoidal step and Fejér panel length at unit scale, before refinement.
_TRAPEZOID_STEP = 0.3
_PANEL_LENGTH = 2.0

# Fejér nodes per panel. The coarse rule uses the 15 nodes at odd positions.
_FEJER_NODES = 31

# Graded panels around a smoothed kink end at offsets PANEL * 3**-j.
_GRADING_RATIO = 3.0
_MAX_GRADING_LEVELS = 30

# Refinement passes per point, and quarter octaves the step may shrink in one pass.
_MAX_REFINEMENTS = 4
_MAX_LADDER_INCREMENT = 8

# A point is accepted when the error estimate is at most
# RELATIVE * |value| + ABSOLUTE * sqrt(E f(lam)^2 E h(lam_star)^2). The square
# root bounds |E f h| by Cauchy-Schwarz and sets the scale of "close to zero".
_RELATIVE_TOLERANCE = 5e-10
_ABSOLUTE_TOLERANCE = 5e-13

# Largest array of integrand values built at once (8 MB of float64), unless
# one point needs more; refinement stops at MAX_VALUES_PER_POINT (32 MB).
_CHUNK_ELEMENTS = 2**20
_MAX_VALUES_PER_POINT = 2**22

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# A failed point raises QuadratureError, instead of a QuadratureWarning, when its
# error estimate is above MAX_RELATIVE_ERROR * |value| + MAX_ABSOLUTE_ERROR * scale
# (fewer than about three correct digits), or when more than MAX_TAIL_SHARE of
# E|f h| lies at 9 to 10 standard deviations, next to the truncation.
_MAX_RELATIVE_ERROR = 1e-3
_MAX_ABSOLUTE_ERROR = 1e-6
_MAX_TAIL_SHARE = 1e-6
_TAIL_START = 9.0


class QuadratureWarning(LoraTheoryWarning, RuntimeWarning):
    """The estimated quadrature error stays above the tolerance after refinement, but below the error limit."""


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _at(index: tuple[int, ...]) -> str:
    return f" at index {index}" if index else ""


def _validate_pair(Q, R) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcast ``Q`` and ``R`` to float64 arrays and return them with ``s``."""
    Q = np.asarray(Q, dtype=float)
    R = np.asarray(R, dtype=float)
    Q, R = np.broadcast_arrays(Q, R)

    for name, values in (("Q", Q), ("R", R)):
        bad = ~np.isfinite(values)
        if bad.any():
            index = _first_index(bad)
            raise ParameterError(
                f"{name} must be finite, got {name} = {float(values[index])!r}{_at(index)}."
            )

    negative = Q < 0
    if negative.any():
        index = _first_index(negative)
        raise ParameterError(
            f"Q = Var(lam) must be >= 0, got Q = {float(Q[index])!r}{_at(index)}."
        )

    # A relative slack of 1e-12 absorbs rounding in Q = mu^2 + 2 mu u m + u^2.
    invalid = R * R > Q * (1.0 + 1e-12)
    if invalid.any():
        index = _first_index(invalid)
        raise ParameterError(
            f"R = {float(R[index])!r} and Q = {float(Q[index])!r}{_at(index)} do not form a valid "
            "covariance: R^2 <= Q is needed, because R = Cov(lam, lam_star) and "
            "Var(lam_star) = 1."
        )

    # Rounding can leave Q - R^2 slightly negative, which is the degenerate case s = 0.
    s = np.sqrt(np.maximum(Q - R * R, 0.0))
    return Q, R, s


def _validate_variance(variance) -> np.ndarray:
    variance = np.asarray(variance, dtype=float)
    bad = ~np.isfinite(variance) | (variance < 0)
    if bad.any():
        index = _first_index(bad)
        raise ParameterError(
            f"variance must be finite and >= 0, got {float(variance[index])!r}{_at(index)}."
        )
    return variance


def _validate_kinks(kinks, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(c) for c in kinks)
    except (TypeError, ValueError) as error:
        raise ParameterError(f"{name} must be a tuple of floats, got {kinks!r}.") from error
    if not all(math.isfinite(c) for c in values):
        raise ParameterError(f"{name} must contain finite kink locations, got {kinks!r}.")
    return tuple(sorted(set(values)))


def _validate_nodes(nodes) -> int:
    if isinstance(nodes, bool) or not isinstance(nodes, (int, np.integer)):
        raise ParameterError(f"nodes must be an integer or None, got {type(nodes).__name__} {nodes!r}.")
    if not 1 <= nodes <= MAX_HERMITE_NODES:
        raise ParameterError(
            f"nodes must lie in 1 ... {MAX_HERMITE_NODES} for the Gauss-Hermite rule, got {nodes}."
        )
    return int(nodes)


# --------------------------------------------------------------------------
# One-dimensional rules against the standard normal density
# --------------------------------------------------------------------------


def _normal_density(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x - _LOG_SQRT_2PI)


@lru_cache(maxsize=64)
def _trapezoid_rule(step: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``j * step`` on [-10, 10] and the weights of the rules with steps ``step`` and ``2 * step``.

    The weights have shape ``(2, nodes)`` and include the normal density. The
    coarse rule has weight zero on the nodes it skips.
    """
    half_count = math.ceil(_TRUNCATION / step)
    j = np.arange(-half_count, half_count + 1)
    x = j * step
    density = _normal_density(x)
    weights = np.stack([np.where(j % stride == 0, stride * step * density, 0.0) for stride in (1, 2)])
    x.setflags(write=False)
    weights.setflags(write=False)
    return x, weights


@lru_cache(maxsize=None)
def _fejer_rule() -> tuple[np.ndarray, np.ndarray]:
    """Fejér's second rule on [-1, 1]: 31 nodes, and weights of shape ``(2, 31)`` of the nested 31- and 15-node rules."""

    def rule(count: int) -> tuple[np.ndarray, np.ndarray]:
        # Nodes cos(k pi / (n + 1)) for k = 1..n. The weight formula needs n + 1 even.
        theta = np.arange(1, count + 1) * np.pi / (count + 1)
        odd = 2 * np.arange(1, (count + 1) // 2 + 1) - 1
        sums = np.sin(np.outer(theta, odd)) @ (1.0 / odd)
        return np.cos(theta), 4.0 * np.sin(theta) / (count + 1) * sums

    x = rule(_FEJER_NODES)[0]
    weights = np.zeros((2, _FEJER_NODES))
    weights[0] = rule(_FEJER_NODES)[1]
    # cos(2j pi / 32) = cos(j pi / 16): the 15-node rule sits on the odd positions.
    weights[1, 1::2] = rule(_FEJER_NODES // 2)[1]
    return x, weights


def _panel_rule(breaks: np.ndarray, panel_length: float) -> tuple[np.ndarray, np.ndarray]:
    """Composite Fejér rule on [-10, 10] with panel edges at a uniform grid plus ``breaks``.

    ``breaks`` has shape ``(..., K)``. The nodes have shape ``(..., panels * 31)``
    and the weights ``(2, ..., panels * 31)``: the nested 31- and 15-node
    rules on each panel, times the normal density. Breakpoints outside
    [-10, 10] are clipped, which gives empty panels of weight zero.
    """
    base_count = math.ceil(2.0 * _TRUNCATION / panel_length)
    base = np.linspace(-_TRUNCATION, _TRUNCATION, base_count + 1)
    base = np.broadcast_to(base, breaks.shape[:-1] + base.shape)
    edges = np.sort(np.concatenate([base, np.clip(breaks, -_TRUNCATION, _TRUNCATION)], axis=-1), axis=-1)

    middle = 0.5 * (edges[..., 1:] + edges[..., :-1])
    half = 0.5 * (edges[..., 1:] - edges[..., :-1])
    x_ref, weights_ref = _fejer_rule()

    nodes = middle[..., None] + half[..., None] * x_ref
    weights = (half[..., None] * _normal_density(nodes)) * weights_ref[(slice(None),) + (None,) * half.ndim]

    shape = breaks.shape[:-1] + (-1,)
    return nodes.reshape(shape), weights.reshape((2,) + shape)


@lru_cache(maxsize=32)
def _hermite_rule(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite nodes and weights for the standard normal density (probabilists' He_n)."""
    x, w = hermegauss(count)
    w = w / math.sqrt(2.0 * math.pi)
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


# --------------------------------------------------------------------------
# The iterated integral E_y[ g(alpha y) E_xi k(beta y + gamma xi) ]
# --------------------------------------------------------------------------


@dataclass
class _Iterated:
    """One iterated expectation per point; all arrays have shape ``(points,)``."""

    g: Function
    k: Function
    alpha: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    g_kinks: tuple[float, ...]
    k_kinks: tuple[float, ...]

    @property
    def outer_has_breaks(self) -> bool:
        return bool(self.g_kinks or self.k_kinks)


def _evaluate(function: Function, x: np.ndarray) -> np.ndarray:
    values = np.asarray(function(x), dtype=float)
    return np.broadcast_to(values, x.shape)


def _ladder_index(scale: np.ndarray) -> np.ndarray:
    """Smallest integer ``i`` with ``2**(i/4) >= max(1, scale)``."""
    scale = np.maximum(scale, 1.0)
    return np.ceil(4.0 * np.log2(scale) - 1e-9).astype(int)


def _ladder_scale(index: int) -> float:
    return 2.0 ** (index / 4.0)


def _safe_divide(numerator, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, and the (clipped) truncation point where the denominator is 0."""
    out = np.full(np.broadcast_shapes(np.shape(numerator), denominator.shape), 2.0 * _TRUNCATION)
    # A denominator like 5e-324 overflows to inf, which is as far outside [-10, 10] as it should be.
    with np.errstate(over="ignore"):
        np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _grading_levels(beta: np.ndarray, gamma: np.ndarray, panel_length: np.ndarray) -> np.ndarray:
    """Number of graded panels needed on each side of a smoothed kink of ``k``."""
    # The inner integral smooths a kink of k over a width gamma / |beta| in y.
    smoothed = (gamma > 0) & (beta != 0)
    width = _safe_divide(gamma, np.abs(beta))
    with np.errstate(divide="ignore"):
        levels = np.ceil(np.log(panel_length / width) / math.log(_GRADING_RATIO))
    levels = np.where(smoothed & (width < panel_length), levels, 0)
    return np.clip(levels, 0, _MAX_GRADING_LEVELS).astype(int)


def _outer_breaks(problem: _Iterated, select: np.ndarray, panel_length: float, grading: int) -> np.ndarray:
    alpha = problem.alpha[select]
    beta = problem.beta[select]
    columns = [_safe_divide(c, alpha) for c in problem.g_kinks]

    offsets = panel_length * _GRADING_RATIO ** -np.arange(1.0, grading + 1)
    for c in problem.k_kinks:
        # Where beta = 0 the kink of k does not depend on y, so no breakpoint is needed.
        centre = _safe_divide(c, beta)
        columns.append(centre)
        for offset in offsets:
            columns.extend([centre - offset, centre + offset])

    return np.stack(columns, axis=-1)


def _integrate_chunk(problem: _Iterated, select: np.ndarray, outer_index: int, inner_index: int, grading: int):
    """Integrate with the fine and coarse rule on each axis.

    Returns ``values`` of shape ``(2, 2, points)``, where ``values[i, j]`` uses
    rule ``i`` (0 fine, 1 coarse) in y and rule ``j`` in xi, and the scale
    sqrt(E g^2 E k^2).
    """
    alpha = problem.alpha[select][:, None]
    beta = problem.beta[select][:, None]
    gamma = problem.gamma[select][:, None]

    # ---- outer rule in y ----
    outer_scale = _ladder_scale(outer_index)
    if problem.outer_has_breaks:
        panel_length = _PANEL_LENGTH / outer_scale
        y, outer_weights = _panel_rule(_outer_breaks(problem, select, panel_length, grading), panel_length)
    else:
        y, outer_weights = _trapezoid_rule(_TRAPEZOID_STEP / outer_scale)
        y, outer_weights = y[None, :], outer_weights[:, None, :]

    g_values = _evaluate(problem.g, alpha * y)

    # ---- inner rule in xi, for every outer node ----
    if inner_index < 0:
        # gamma = 0: k(beta y) is known at each outer node without an inner integral.
        k_values = _evaluate(problem.k, beta * y)
        inner = np.stack([k_values, k_values])
        inner_square = k_values * k_values
    else:
        inner_scale = _ladder_scale(inner_index)
        offset = (beta * y)[..., None]
        if problem.k_kinks:
            panel_length = _PANEL_LENGTH / inner_scale
            with np.errstate(over="ignore"):
                breaks = np.concatenate([(c - offset) / gamma[..., None] for c in problem.k_kinks], axis=-1)
            xi, weights = _panel_rule(breaks, panel_length)
            k_values = _evaluate(problem.k, offset + gamma[..., None] * xi)
            inner = np.einsum("jpoi,poi->jpo", weights, k_values)
            inner_square = np.einsum("poi,poi,poi->po", weights[0], k_values, k_values)
        else:
            xi, weights = _trapezoid_rule(_TRAPEZOID_STEP / inner_scale)
            k_values = _evaluate(problem.k, offset + gamma[..., None] * xi)
            inner = np.moveaxis(k_values @ weights.T, -1, 0)
            # E k^2 only sets the scale of the tolerance, so the coarse rule's nodes suffice.
            first = np.flatnonzero(weights[1])[0]
            coarse_values = k_values[..., first::2]
            inner_square = (coarse_values * coarse_values) @ weights[1, first::2]

    # ---- combine every outer rule with every inner rule ----
    outer_weights = np.broadcast_to(outer_weights, (2,) + g_values.shape)
    values = np.einsum("ipo,po,jpo->ijp", outer_weights, g_values, inner)
    g_square = np.sum(outer_weights[0] * g_values * g_values, axis=-1)
    k_square = np.sum(outer_weights[0] * inner_square, axis=-1)
    return values, np.sqrt(g_square * k_square)


def _integrate_group(problem: _Iterated, select: np.ndarray, outer_index: int, inner_index: int, grading: int):
    chunk = max(1, _CHUNK_ELEMENTS // int(_values_per_point(problem, outer_index, inner_index, grading)))
    pieces = [
        _integrate_chunk(problem, select[start:start + chunk], outer_index, inner_index, grading)
        for start in range(0, select.size, chunk)
    ]
    values = np.concatenate([piece[0] for piece in pieces], axis=-1)
    scale = np.concatenate([piece[1] for piece in pieces])
    return values, scale


def _values_per_point(problem: _Iterated, outer_index, inner_index, grading) -> np.ndarray:
    """Number of integrand values per point for arrays (or scalars) of ladder indices."""
    outer_scale = 2.0 ** (np.asarray(outer_index) / 4.0)
    if problem.outer_has_breaks:
        panels = np.ceil(2.0 * _TRUNCATION * outer_scale / _PANEL_LENGTH)
        panels += len(problem.g_kinks) + len(problem.k_kinks) * (1 + 2 * np.asarray(grading))
        outer = panels * _FEJER_NODES
    else:
        outer = 2 * np.ceil(_TRUNCATION * outer_scale / _TRAPEZOID_STEP) + 1

    inner_scale = 2.0 ** (np.asarray(inner_index) / 4.0)
    if problem.k_kinks:
        inner = (np.ceil(2.0 * _TRUNCATION * inner_scale / _PANEL_LENGTH) + len(problem.k_kinks)) * _FEJER_NODES
    else:
        inner = 2 * np.ceil(_TRUNCATION * inner_scale / _TRAPEZOID_STEP) + 1
    inner = np.where(np.asarray(inner_index) < 0, 1, inner)
    return (outer * inner).astype(np.int64)


def _ladder_increment(error: np.ndarray, tolerance: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Quarter-octave steps by which to refine an axis whose coarse rule is off by ``error``.

    Both rules converge like C exp(-a / step). Taking C = sqrt(E g^2 E k^2) = ``scale``,
    the step that brings the coarse rule to half the tolerance is the current
    one times log(scale / error) / log(scale / (tolerance / 2)). A smaller C
    only means that the next pass refines again.
    """
    target = 0.5 * tolerance
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log(scale / target) / np.log(scale / error)
        steps = np.ceil(4.0 * np.log2(1.1 * ratio))
    # A coarse rule that is off by more than the scale gives no rate, so refine by the maximum.
    steps = np.where((error < scale) & np.isfinite(steps), steps, _MAX_LADDER_INCREMENT)
    steps = np.clip(steps, 1, _MAX_LADDER_INCREMENT).astype(int)
    return np.where(error <= target, 0, steps)


# An integrand that overflows gives a non-finite value or estimate, which _check_failed
# reports as a QuadratureError, so NumPy's overflow warnings would only repeat it.
@np.errstate(over="ignore", invalid="ignore")
def _integrate(problem: _Iterated) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integrate every point, refining failed points; return value, estimate, scale, failed.

    The error is estimated by the differences of the fine tensor rule from
    the rules that are coarse in y, in xi, and in both (the mixed second
    difference). Each is the error of a coarser rule; all rules converge
    geometrically, so the fine error is usually far smaller. Taking the three
    apart keeps the estimate valid when the errors of the axes cancel in one
    of the coarse rules. Each axis whose
    estimate is too large gets a smaller step, chosen by
    :func:`_ladder_increment` and limited by the memory cap per point.
    """
    count = problem.alpha.size
    value = np.zeros(count)
    estimate = np.zeros(count)
    scale = np.zeros(count)

    # Scale of each variable inside g and k; the Gaussian alone needs scale 1.
    outer_index = _ladder_index(np.maximum(problem.alpha, np.abs(problem.beta)))
    inner_index = np.where(problem.gamma > 0, _ladder_index(problem.gamma), -1)
    refinements = np.zeros(count, dtype=int)
    pending = np.arange(count)

    while pending.size:
        if problem.k_kinks:
            panel_length = _PANEL_LENGTH / 2.0 ** (outer_index[pending] / 4.0)
            grading = _grading_levels(problem.beta[pending], problem.gamma[pending], panel_length)
        else:
            grading = np.zeros(pending.size, dtype=int)

        keys = np.stack([outer_index[pending], inner_index[pending], grading], axis=-1)
        unique_keys, group_of = np.unique(keys, axis=0, return_inverse=True)
        group_of = group_of.reshape(-1)
        outer_error = np.empty(pending.size)
        inner_error = np.empty(pending.size)
        mixed_error = np.empty(pending.size)
        for group, (outer_key, inner_key, grading_key) in enumerate(unique_keys):
            in_group = group_of == group
            members = pending[in_group]
            values, total = _integrate_group(problem, members, int(outer_key), int(inner_key), int(grading_key))
            value[members] = values[0, 0]
            scale[members] = total
            # Mixed difference: the error that only coarsening both axes at once reveals, for
            # example trapezoidal aliasing along the direction (R, s) in which f(R y + s xi) varies.
            mixed = np.abs(values[0, 0] - values[0, 1] - values[1, 0] + values[1, 1])
            outer_error[in_group] = np.abs(values[0, 0] - values[1, 0]) + mixed
            inner_error[in_group] = np.abs(values[0, 0] - values[0, 1]) + mixed
            mixed_error[in_group] = mixed

        estimate[pending] = outer_error + inner_error - mixed_error
        tolerance = _RELATIVE_TOLERANCE * np.abs(value[pending]) + _ABSOLUTE_TOLERANCE * scale[pending]
        # Written so that a nan estimate counts as failed.
        failed = ~(estimate[pending] <= tolerance)
        outer_step = _ladder_increment(outer_error, tolerance, scale[pending])
        inner_step = np.where(
            inner_index[pending] >= 0, _ladder_increment(inner_error, tolerance, scale[pending]), 0
        )

        # Shrink the refinement until the point fits the memory cap.
        while True:
            too_big = _values_per_point(
                problem, outer_index[pending] + outer_step, inner_index[pending] + inner_step, grading
            ) > _MAX_VALUES_PER_POINT
            too_big &= outer_step + inner_step > 0
            if not too_big.any():
                break
            shrink_outer = too_big & (outer_step >= inner_step)
            outer_step -= shrink_outer
            inner_step -= too_big & ~shrink_outer

        refine = failed & (refinements[pending] < _MAX_REFINEMENTS) & (outer_step + inner_step > 0)
        outer_index[pending] += np.where(refine, outer_step, 0)
        inner_index[pending] += np.where(refine, inner_step, 0)
        refinements[pending[refine]] += 1
        pending = pending[refine]

    tolerance = _RELATIVE_TOLERANCE * np.abs(value) + _ABSOLUTE_TOLERANCE * scale
    return value, estimate, scale, ~(estimate <= tolerance)


def _one(x: np.ndarray) -> np.ndarray:
    return np.ones_like(x)


def _tail_share(problem: _Iterated, select: np.ndarray) -> np.ndarray:
    """Share of E|g(alpha y) k(beta y + gamma xi)| with |y| or |xi| in [9, 10], per selected point.

    A coarse trapezoid rule at unit scale suffices, because only the order of
    magnitude matters. For z^20 under N(0, 1) the share is 1.3e-8, and for
    exp(z^2), whose expectation does not exist, it is 1 to six digits.
    """
    y, weights = _trapezoid_rule(_TRAPEZOID_STEP)
    weight = weights[0]
    alpha = problem.alpha[select][:, None]
    beta = problem.beta[select][:, None]
    gamma = problem.gamma[select][:, None, None]
    tail = np.abs(y) >= _TAIL_START

    with np.errstate(all="ignore"):
        outer = weight * np.abs(_evaluate(problem.g, alpha * y))
        # k at every (y, xi) node; gamma = 0 leaves k(beta y) constant in xi.
        inner = np.abs(_evaluate(problem.k, (beta * y)[..., None] + gamma * y))
        inner_total = inner @ weight
        inner_tail = inner[..., tail] @ weight[tail]
        total = np.sum(outer * inner_total, axis=-1)
        # The part with |y| >= 9, plus the part with |y| < 9 and |xi| >= 9.
        in_tail = np.sum(np.where(tail, outer * inner_total, outer * inner_tail), axis=-1)
        share = in_tail / total
    return np.where(np.isfinite(share), share, 1.0)


def _check_failed(
    failed: np.ndarray,
    value: np.ndarray,
    estimate: np.ndarray,
    scale: np.ndarray,
    share: np.ndarray,
    where: Callable[[int], str],
) -> None:
    """Raise :class:`QuadratureError` for a point that failed badly, warn for a mild failure.

    ``share`` is the :func:`_tail_share` of each failed point. The error
    names the worst point of the first class that applies: a non-finite
    result, an integrand that does not decay within the truncation at 10
    standard deviations, or an error estimate above the error limit.
    """
    if not failed.any():
        return
    points = np.flatnonzero(failed)

    # ---- overflow: the integrand or its square is not finite ----
    finite = np.isfinite(value[points]) & np.isfinite(estimate[points]) & np.isfinite(scale[points])
    if not finite.all():
        i = int(points[np.argmin(finite)])
        raise QuadratureError(
            f"the quadrature overflowed at {where(i)}: value {float(value[i])!r}, estimated error {float(estimate[i])!r}. "
            "The expectation probably does not exist under the Gaussian, because the integrand grows like "
            "exp(z^2) or faster. Use an activation that grows at most polynomially."
        )

    # ---- truncation: a visible part of E|f h| sits at 9 to 10 standard deviations ----
    if (share[points] > _MAX_TAIL_SHARE).any():
        i = int(points[np.argmax(share[points])])
        raise QuadratureError(
            f"the quadrature did not converge at {where(i)}: value {value[i]:.6g}, estimated error "
            f"{estimate[i]:.2g}, and a share {share[i]:.2g} of E|f h| lies 9 to 10 standard deviations "
            "from the mean, next to the truncation at 10. The expectation probably does not exist under "
            "the Gaussian (growth like exp(z^2) or faster), or its tails are too heavy for the rule "
            "(growth like exp(c z^2) with c near 1/2). Use an activation that grows at most polynomially."
        )

    # ---- error limit: fewer than about three correct digits ----
    limit = _MAX_RELATIVE_ERROR * np.abs(value[points]) + _MAX_ABSOLUTE_ERROR * scale[points]
    excess = estimate[points] / limit
    if (excess > 1.0).any():
        k = int(np.argmax(excess))
        i = int(points[k])
        raise QuadratureError(
            f"the quadrature did not converge at {where(i)}: value {value[i]:.6g}, estimated error "
            f"{estimate[i]:.2g}, above the limit {_MAX_RELATIVE_ERROR:g} * |value| + "
            f"{_MAX_ABSOLUTE_ERROR:g} * sqrt(E f^2 E h^2). The integrand probably varies faster than the "
            "rule resolves, or has a kink that is missing from the kinks."
        )

    # ---- mild accuracy loss: warn ----
    relative = np.where(failed, estimate / np.where(scale > 0, scale, 1.0), -np.inf)
    worst = int(np.argmax(relative))
    warnings.warn(
        f"estimated quadrature error is above tolerance at {points.size} of "
        f"{failed.size} points after up to {_MAX_REFINEMENTS} refinements (largest: "
        f"{relative[worst]:.1e} * sqrt(E f^2 E h^2) at {where(worst)}), but below the error limit "
        f"{_MAX_RELATIVE_ERROR:g} * |value|. f or h varies faster than the rule resolves or is not "
        "smooth at a point missing from the kinks; check these points with the mpmath reference.",
        QuadratureWarning,
        stacklevel=3,
    )


def _pair_hermite(f: Function, h: Function, R: np.ndarray, s: np.ndarray, count: int) -> np.ndarray:
    x, w = _hermite_rule(count)
    weighted_h = w * _evaluate(h, x)

    result = np.empty(R.size)
    chunk = max(1, _CHUNK_ELEMENTS // (count * count))
    for start in range(0, R.size, chunk):
        part = slice(start, start + chunk)
        # Axis 1 is y = lam_star, axis 2 is xi.
        argument = R[part, None, None] * x[:, None] + s[part, None, None] * x
        result[part] = (_evaluate(f, argument) @ w) @ weighted_h
    return result


def pair_expectation(
    f: Function,
    h: Function,
    Q,
    R,
    *,
    kinks_f=(),
    kinks_h=(),
    nodes: int | None = None,
) -> np.ndarray:
    r"""Compute :math:`\mathbb{E}[f(\lambda)\,h(\lambda^*)]` by quadrature.

    :math:`(\lambda, \lambda^*)` is centred Gaussian with
    :math:`\operatorname{Var}\lambda = Q`, :math:`\operatorname{Cov}(\lambda,
    \lambda^*) = R`, :math:`\operatorname{Var}\lambda^* = 1`; the module
    docstring describes the rules and their tested accuracy.

    Parameters
    ----------
    f, h:
        Vectorised callables of one float64 array of any shape, returning an
        array of that shape (or one that broadcasts to it).
    Q, R:
        Array-likes that broadcast against each other; the result has the
        broadcast shape. ``Q >= 0`` and ``R**2 <= Q`` are required.
    kinks_f, kinks_h:
        Points where ``f`` (in the variable of ``f``) or ``h`` is not smooth:
        kinks, jumps, or points where a derivative jumps. The integrals are
        split there. A missing kink costs accuracy; the error estimate then
        usually triggers a :class:`QuadratureWarning`.
    nodes:
        ``None`` (default) for the adaptive rules. An integer ``n`` selects
        ``n x n`` tensor Gauss–Hermite, exact for polynomial ``f`` and ``h``
        with ``deg f + deg h <= 2n - 1``, without error estimate and only
        without kinks.

    Returns
    -------
    numpy.ndarray
        float64 array of the broadcast shape of ``Q`` and ``R``.

    Raises
    ------
    ParameterError
        For negative or non-finite ``Q``, non-finite ``R``, ``R**2 > Q``, or
        an invalid ``nodes`` or kink list.
    QuadratureError
        When a point overflows, does not decay within the truncation at 10
        standard deviations, or keeps an error estimate above the error limit
        (see the module docstring).

    Warns
    -----
    QuadratureWarning
        When the error estimate stays above tolerance after refinement, but
        below the error limit.
    """
    Q, R, s = _validate_pair(Q, R)
    kinks_f = _validate_kinks(kinks_f, "kinks_f")
    kinks_h = _validate_kinks(kinks_h, "kinks_h")
    shape = Q.shape
    Q, R, s = Q.ravel(), R.ravel(), s.ravel()

    if nodes is not None:
        count = _validate_nodes(nodes)
        if kinks_f or kinks_h:
            raise ParameterError(
                "nodes selects the Gauss-Hermite rule, which is inaccurate across kinks; "
                "pass nodes=None to integrate piecewise between the kinks."
            )
        return _pair_hermite(f, h, R, s, count).reshape(shape)

    value = np.empty(Q.size)
    estimate = np.empty(Q.size)
    scale = np.empty(Q.size)
    failed = np.empty(Q.size, dtype=bool)
    share = np.zeros(Q.size)

    def solve(select: np.ndarray, problem: _Iterated) -> None:
        if select.size:
            value[select], estimate[select], scale[select], failed[select] = _integrate(problem)
            # The tail share distinguishes a missing expectation from slow convergence. Only failed points need it.
            local = np.flatnonzero(failed[select])
            if local.size:
                share[select[local]] = _tail_share(problem, local)

    if kinks_f:
        # lam = sqrt(Q) z1 and lam_star = (R / sqrt(Q)) z1 + (s / sqrt(Q)) z2 put the kinks
        # of f on the outer variable, where they are exact panel edges.
        rotated = np.flatnonzero(Q > 0)
        root = np.sqrt(Q[rotated])
        solve(rotated, _Iterated(f, h, root, R[rotated] / root, s[rotated] / root, kinks_f, kinks_h))

        # Q = 0 means lam = 0, so E = f(0) E h(lam_star); here R = s = 0.
        point_mass = np.flatnonzero(Q == 0)
        ones = np.ones(point_mass.size)
        solve(point_mass, _Iterated(h, f, ones, R[point_mass], s[point_mass], kinks_h, kinks_f))
    else:
        everything = np.arange(Q.size)
        solve(everything, _Iterated(h, f, np.ones(Q.size), R, s, kinks_h, ()))

    _check_failed(failed, value, estimate, scale, share, lambda i: f"Q = {float(Q[i])!r}, R = {float(R[i])!r}")
    return value.reshape(shape)


def expectation_1d(f: Function, variance, *, kinks=(), nodes: int | None = None) -> np.ndarray:
    r"""Compute :math:`\mathbb{E}[f(\sqrt{v}\,z)]` for :math:`z \sim N(0, 1)` and each ``variance`` v.

    The rules and parameters are those of :func:`pair_expectation`; the result
    has the shape of ``variance``. ``kinks`` are in the variable of ``f``.
    """
    variance = _validate_variance(variance)
    kinks = _validate_kinks(kinks, "kinks")
    shape = variance.shape
    root = np.sqrt(variance.ravel())

    if nodes is not None:
        count = _validate_nodes(nodes)
        if kinks:
            raise ParameterError(
                "nodes selects the Gauss-Hermite rule, which is inaccurate across kinks; "
                "pass nodes=None to integrate piecewise between the kinks."
            )
        x, w = _hermite_rule(count)
        return (_evaluate(f, root[:, None] * x) @ w).reshape(shape)

    zeros = np.zeros(root.size)
    problem = _Iterated(f, _one, root, zeros, zeros, kinks, ())
    value, estimate, scale, failed = _integrate(problem)
    share = np.zeros(root.size)
    if failed.any():
        share[failed] = _tail_share(problem, np.flatnonzero(failed))
    _check_failed(failed, value, estimate, scale, share, lambda i: f"variance = {float(variance.ravel()[i])!r}")
    return value.reshape(shape)


# --------------------------------------------------------------------------
# High-precision reference with mpmath
# --------------------------------------------------------------------------


def _validate_dps(dps) -> int:
    if isinstance(dps, bool) or not isinstance(dps, (int, np.integer)) or dps < 15:
        raise ParameterError(f"dps must be an integer >= 15, got {dps!r}.")
    return int(dps)


def _mp_kinks(kinks, name: str) -> list:
    try:
        values = [mpmath.mpf(c) for c in kinks]
    except (TypeError, ValueError) as error:
        raise ParameterError(f"{name} must contain numbers or numeric strings, got {kinks!r}.") from error
    if not all(mpmath.isfinite(c) for c in values):
        raise ParameterError(f"{name} must contain finite kink locations, got {kinks!r}.")
    return values


def _mp_segments(points, limit, spacing) -> list:
    """End points of the segments of [-limit, limit]: a grid of ``spacing`` plus the ``points`` inside."""
    count = int(limit / spacing)
    grid = [k * spacing for k in range(-count, count + 1)]
    inside = sorted({p for p in [*grid, *points] if -limit < p < limit})
    return [-limit, *inside, limit]


class _MpQuadrature:
    """``mpmath.quad`` over a standard normal variable truncated at ``limit``, recording error estimates."""

    def __init__(self, dps: int):
        # exp(-limit^2 / 2) < 10^-(dps + 10): the tail is far below the requested precision.
        self.limit = mpmath.sqrt(2 * mpmath.log(10) * (dps + 10)) + 2
        self.error = mpmath.mpf(0)

    def normal(self, integrand, splits, scale=1, method="gauss-legendre") -> mpmath.mpf:
        """Integrate ``integrand(x) * phi(x)``; ``scale`` is the largest factor of ``x`` inside the integrand.

        Segments of length 1 / max(1, scale) keep the quadrature fast and accurate
        for integrands like tanh(2 lam) whose poles lie close to the real axis.
        Gauss-Legendre needs about half the evaluations of tanh-sinh when the
        integrand is analytic on each closed segment.
        """
        spacing = 1 / max(1, scale)
        value, error = mpmath.quad(
            lambda x: integrand(x) * mpmath.npdf(x),
            _mp_segments(splits, self.limit, spacing),
            error=True,
            method=method,
        )
        self.error = max(self.error, error)
        return value


def _warn_mp(quadrature: _MpQuadrature, value, dps: int) -> None:
    tolerance = mpmath.mpf(10) ** (-dps) * max(1, abs(value))
    if quadrature.error > tolerance:
        warnings.warn(
            f"mpmath.quad estimates an error of {mpmath.nstr(quadrature.error, 3)}, above the "
            f"requested 1e-{dps} relative; the reference value may have fewer correct digits.",
            QuadratureWarning,
            stacklevel=3,
        )


def pair_expectation_mp(f, h, Q, R, *, kinks_f=(), kinks_h=(), dps: int = 30) -> mpmath.mpf:
    r"""Compute :math:`\mathbb{E}[f(\lambda)\,h(\lambda^*)]` at one point with mpmath.

    High-precision reference for :func:`pair_expectation`, with the same
    convention: :math:`\lambda^* = y`, :math:`\lambda = R y + s\xi`,
    :math:`s = \sqrt{Q - R^2}`. The expectation is a nested
    :func:`mpmath.quad` over :math:`\xi` inside :math:`y`, both
    truncated where the normal density falls below :math:`10^{-(dps+10)}`
    and split into segments of length :math:`1/\max(1, |R|)` in y and
    :math:`1/\max(1, s)` in :math:`\xi`, integrated by Gauss-Legendre.
    The inner integral is also split at :math:`\xi = (c - R y)/s` for each
    kink ``c`` of ``f``. The outer one is split at the kinks of ``h`` and at
    :math:`c / R`, where the inner integral smooths the kinks of ``f``, and
    then uses tanh-sinh. For ``s = 0`` the expectation is the
    one-dimensional integral of :math:`f(R y) h(y)`.

    ``f`` and ``h`` take and return scalar mpmath numbers; ``Q``, ``R`` and
    the kinks may be floats, integers, numeric strings or mpmath numbers. The
    work is done with ``dps + 10`` digits. A nested quad is slow: the
    two-dimensional reference values in the tests took 1 to 5 minutes each
    at ``dps=20`` on one CPU core, the longest for :math:`\tanh(2\lambda)`
    at ``Q = 4``. One-dimensional cases (``s = 0``) take under a second.

    Warns
    -----
    QuadratureWarning
        When mpmath's error estimate is above :math:`10^{-dps}` relative.
    """
    dps = _validate_dps(dps)
    with mpmath.workdps(dps + 10):
        Q, R = mpmath.mpf(Q), mpmath.mpf(R)
        if not (mpmath.isfinite(Q) and mpmath.isfinite(R)) or Q < 0:
            raise ParameterError(f"Q must be finite and >= 0 and R finite, got Q = {Q}, R = {R}.")
        if R * R > Q * (1 + mpmath.mpf("1e-12")):
            raise ParameterError(
                f"R = {R} and Q = {Q} do not form a valid covariance: R^2 <= Q is needed."
            )
        kinks_f = _mp_kinks(kinks_f, "kinks_f")
        kinks_h = _mp_kinks(kinks_h, "kinks_h")
        s = mpmath.sqrt(max(Q - R * R, 0))
        quadrature = _MpQuadrature(dps)

        # The kinks of f sit at y = c / R when s = 0, and are smoothed around there otherwise.
        splits = list(kinks_h) + ([c / R for c in kinks_f] if R != 0 else [])
        if s == 0:
            value = quadrature.normal(lambda y: f(R * y) * h(y), splits, abs(R))
        else:
            def inner(y):
                return quadrature.normal(lambda xi: f(R * y + s * xi), [(c - R * y) / s for c in kinks_f], s)

            # The smoothed kinks of f make the outer integrand steep, but analytic, near c / R.
            # Tanh-sinh clusters its nodes at segment ends and resolves that.
            method = "tanh-sinh" if kinks_f else "gauss-legendre"
            value = quadrature.normal(lambda y: h(y) * inner(y), splits, abs(R), method)

        _warn_mp(quadrature, value, dps)
        return +value


def expectation_1d_mp(f, variance, *, kinks=(), dps: int = 30) -> mpmath.mpf:
    r"""Compute :math:`\mathbb{E}[f(\sqrt{v}\,z)]` at one variance with mpmath (see :func:`pair_expectation_mp`)."""
    dps = _validate_dps(dps)
    with mpmath.workdps(dps + 10):
        variance = mpmath.mpf(variance)
        if not mpmath.isfinite(variance) or variance < 0:
            raise ParameterError(f"variance must be finite and >= 0, got {variance}.")
        kinks = _mp_kinks(kinks, "kinks")
        if variance == 0:
            return +mpmath.mpf(f(mpmath.mpf(0)))

        root = mpmath.sqrt(variance)
        quadrature = _MpQuadrature(dps)
        value = quadrature.normal(lambda z: f(root * z), [c / root for c in kinks], root)
        _warn_mp(quadrature, value, dps)
        return +value
