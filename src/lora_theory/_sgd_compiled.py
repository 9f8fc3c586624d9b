"""Compiled step of the reduced sampler for an erf student and an erf teacher.

Optional: it needs numba (``pip install lora-theory[fast]``). Without numba,
or for any other pair of activations, the reduced sampler runs its NumPy
step, which evaluates ``scipy.special.erf``.

The compiled step fuses the whole per-sample work of one SGD step (the
pre-activations, sigma, sigma*, sigma' and the three batch sums) into one
loop, so it allocates no temporaries. Most of its speed comes from the way
it evaluates erf: a table of Taylor polynomials of erf about the points
``z0 = j / CELLS_PER_UNIT``, ``j = 0 .. CELLS_PER_UNIT * TABLE_END``. For
``|z| <= TABLE_END`` with nearest point ``z0`` and ``h = |z| - z0``
(``|h| <= 1 / (2 CELLS_PER_UNIT)``, exact in floating point)

    erf(|z|)  = sum_{n=0}^{N} a_n h^n,       erf'(|z|) = sum_{n=1}^{N} n a_n h^(n-1),

with ``a_n = erf^(n)(z0) / n!``, ``N = TAYLOR_DEGREE``, and the derivatives
``erf^(n)(z) = 2 / sqrt(pi) (-1)^(n-1) H_{n-1}(z) exp(-z^2)`` (physicists'
Hermite polynomials). The coefficients are computed with mpmath at 40 digits
and rounded once to float64. One polynomial therefore gives erf and its
derivative together, which is where the work of sigma and sigma' is shared.
For ``|z| > TABLE_END`` (where erf rounds to +-1) and for non-finite ``z``
the step falls back to the C library's ``erf`` and ``exp``.

Accuracy inside the table, checked against mpmath in the tests: at most
4 ulp for erf and for its derivative (2 ulp measured, about 4e-16
relative; ``scipy.special.erf`` measured the same on those points).
Outside the table the derivative ``2 / sqrt(pi) exp(-z^2)`` carries the
rounding of ``z^2``, a relative error up to about ``z^2 * 1.1e-16``, as in
the NumPy step. The two steps still round differently, and the batch sums
are added in a different order, so a compiled trajectory equals the NumPy
one only to rounding: the tests bound the difference over 48 to 200 steps.
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import sympy as sp

from ._sgd_common import SGDProblem
from .activations import Z

try:
    import numba
except ImportError:  # the optional extra "fast" is not installed
    numba = None

#: Table points per unit of ``|z|``; the Taylor step ``h`` is at most half their spacing.
CELLS_PER_UNIT = 128

#: Largest ``|z|`` covered by the table; erf(z) rounds to +-1 in float64 from about 5.93 on.
TABLE_END = 6.0

#: Degree of the Taylor polynomial of erf in each cell.
TAYLOR_DEGREE = 9

_TABLE_SIZE = int(TABLE_END * CELLS_PER_UNIT) + 1
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def available() -> bool:
    """True when numba is installed, so compiled steps can be used."""
    return numba is not None


def supports(problem: SGDProblem) -> bool:
    """True when the compiled step implements this problem: student and teacher both exactly erf(z)."""
    erf = sp.erf(Z)
    return problem.student_expression == erf and problem.teacher_expression == erf


@functools.lru_cache(maxsize=1)
def erf_taylor_table() -> np.ndarray:
    """Taylor coefficients ``a_n`` of erf about ``z0 = j / CELLS_PER_UNIT``, shape (table size, TAYLOR_DEGREE + 1).

    Row ``j`` contains ``a_0 .. a_N`` for the point ``z0 = j / CELLS_PER_UNIT``,
    each computed with mpmath at 40 digits and rounded once to float64.
    """
    table = np.empty((_TABLE_SIZE, TAYLOR_DEGREE + 1))
    with mpmath.workdps(40):
        two_over_sqrt_pi = 2 / mpmath.sqrt(mpmath.pi)
        for j in range(_TABLE_SIZE):
            z0 = mpmath.mpf(j) / CELLS_PER_UNIT

            # Physicists' Hermite polynomials H_0 .. H_{N-1} at z0 by their recurrence.
            hermite = [mpmath.mpf(1), 2 * z0]
            for k in range(2, TAYLOR_DEGREE):
                hermite.append(2 * z0 * hermite[-1] - 2 * (k - 1) * hermite[-2])

            gaussian = two_over_sqrt_pi * mpmath.exp(-z0 * z0)
            table[j, 0] = float(mpmath.erf(z0))
            factorial = mpmath.mpf(1)
            for n in range(1, TAYLOR_DEGREE + 1):
                factorial *= n
                table[j, n] = float((-1) ** (n - 1) * hermite[n - 1] * gaussian / factorial)
    return table


if numba is not None:
    # Fused multiply-add is allowed, so every Horner step rounds once instead
    # of twice. It made the loop about 1.5 times faster on a Xeon with FMA.
    _JIT_OPTIONS = dict(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})

    @numba.njit(**_JIT_OPTIONS)
    def _erf_with_derivative(z: float, table: np.ndarray) -> tuple[float, float]:
        """erf(z) and erf'(z) from one Taylor polynomial of the table."""
        magnitude = abs(z)

        # Outside the table, and for nan, the C library's erf and exp.
        if not magnitude <= TABLE_END:
            return math.erf(z), _TWO_OVER_SQRT_PI * math.exp(-z * z)

        # Nearest table point z0 = j / CELLS_PER_UNIT; h = |z| - z0 is exact (Sterbenz).
        j = int(magnitude * CELLS_PER_UNIT + 0.5)
        h = magnitude - j * (1.0 / CELLS_PER_UNIT)

        # Horner's scheme for the polynomial and, alongside, for its derivative.
        value = table[j, TAYLOR_DEGREE]
        derivative = 0.0
        for n in range(TAYLOR_DEGREE - 1, -1, -1):
            derivative = derivative * h + value
            value = value * h + table[j, n]
        return math.copysign(value, z), derivative

    @numba.njit(**_JIT_OPTIONS)
    def _erf_value(z: float, table: np.ndarray) -> float:
        """erf(z) from the Taylor polynomial of the table, without the derivative."""
        magnitude = abs(z)
        if not magnitude <= TABLE_END:
            return math.erf(z)
        j = int(magnitude * CELLS_PER_UNIT + 0.5)
        h = magnitude - j * (1.0 / CELLS_PER_UNIT)
        value = table[j, TAYLOR_DEGREE]
        for n in range(TAYLOR_DEGREE - 1, -1, -1):
            value = value * h + table[j, n]
        return math.copysign(value, z)

    @numba.njit(**_JIT_OPTIONS)
    def _erf_arrays(values: np.ndarray, table: np.ndarray, erf_out: np.ndarray, derivative_out: np.ndarray) -> None:
        for i in range(values.size):
            erf_out[i], derivative_out[i] = _erf_with_derivative(values[i], table)

    @numba.njit(**_JIT_OPTIONS)
    def _erf_batch_sums(normals, k, m, c, u, mu, table, sums) -> None:
        """Batch sums of g lam*, g zeta and g^2 of step ``k`` of the block, for every run.

        The pre-activations are ``nu = m lam* + c zeta`` and ``lam = u nu + mu lam*``
        as in the NumPy step, possibly rounded once instead of twice (fused multiply-add).
        """
        for run in range(normals.shape[0]):
            m_run, c_run, u_run = m[run], c[run], u[run]
            along_teacher = 0.0
            along_e = 0.0
            squared = 0.0
            for sample in range(normals.shape[3]):
                lam_star = normals[run, k, 0, sample]
                zeta = normals[run, k, 1, sample]
                nu = m_run * lam_star + c_run * zeta
                lam = u_run * nu + mu * lam_star

                student, student_derivative = _erf_with_derivative(lam, table)
                g = (student - _erf_value(lam_star, table)) * student_derivative

                along_teacher += g * lam_star
                along_e += g * zeta
                squared += g * g
            sums[run, 0] = along_teacher
            sums[run, 1] = along_e
            sums[run, 2] = squared


def erf_with_derivative(values) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate erf and its derivative by the compiled table method, for tests and checks.

    ``values`` is any array of floats; both results have its shape. Raises
    :class:`RuntimeError` when numba is not installed.
    """
    _require_numba()
    flat = np.ascontiguousarray(values, dtype=float).ravel()
    erf_values = np.empty_like(flat)
    derivatives = np.empty_like(flat)
    _erf_arrays(flat, erf_taylor_table(), erf_values, derivatives)
    shape = np.shape(values)
    return erf_values.reshape(shape), derivatives.reshape(shape)


def erf_batch_sums(normals: np.ndarray, k: int, m, c, u, mu: float, sums: np.ndarray) -> None:
    """Write the batch sums of g lam*, g zeta and g^2 of step ``k`` into ``sums``, shape (n_runs, 3).

    ``normals`` is the reduced sampler's block, shape (n_runs, steps, 2, B),
    C-contiguous; ``m``, ``c`` and ``u`` have shape (n_runs,).
    """
    _erf_batch_sums(normals, k, m, c, u, mu, erf_taylor_table(), sums)


def _require_numba() -> None:
    if numba is None:
        raise RuntimeError("the compiled erf step needs numba; install it with `pip install lora-theory[fast]`.")
