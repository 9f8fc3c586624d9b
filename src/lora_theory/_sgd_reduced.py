"""Exact reduced SGD: the law of the (u, m) trajectory at O(B) cost per step.

Write ``v = m w* + c e`` with ``c = sqrt(1 - m^2)`` and a unit vector
``e`` orthogonal to ``w*``. For each sample of a batch, ``lam* = <w*, x>``
and ``zeta = <e, x>`` are independent standard normals, and the part of
``x`` orthogonal to ``span(w*, e)`` is independent of both. The update
``v' = v - eta u mean_b g_b x_b`` therefore has

    <v', w*>             = m - eta u a,          a    = mean_b g_b lam*_b
    <v', e>              = c - eta u b,          b    = mean_b g_b zeta_b
    |rest of v'|^2       = (eta u)^2 s^2,        s^2  = (sum_b g_b^2) chi^2_{d-2} / B^2

and ``m_new = <v', w*> / |v'|``, ``u_new = u - eta mean_b g_b nu_b`` with
``nu_b = m lam*_b + c zeta_b``. After the step, the new ``e`` is again a
uniformly oriented unit vector orthogonal to ``w*`` given ``(u, m)``, so the
chain of ``(u, m)`` has exactly the law of the d-dimensional SGD.

Random stream of one run, in the order it is consumed from the run's
:class:`numpy.random.Generator`:

1. the initial overlap, only when ``m0`` is not given: one standard normal
   ``z`` and one ``chi^2_{d-1}`` value ``q``, and ``m0 = z / sqrt(z^2 + q)``,
   which is exactly the law of ``<v, w*>`` for ``v`` uniform on the sphere;
2. then, per block of :data:`BLOCK_STEPS` steps, ``BLOCK_STEPS * 2 * B``
   standard normals (step, then ``(lam*, zeta)``, then sample, in C order)
   followed by ``BLOCK_STEPS`` values of ``chi^2_{d-2}``.

Whole blocks are always drawn, so the first ``n`` steps of a run do not
depend on the total number of steps, on the other runs or on memory limits.

For an erf student and an erf teacher, and when numba is installed, the
per-sample work of a step runs in the compiled loop of
:mod:`lora_theory._sgd_compiled`. It consumes the same random numbers and
agrees with the NumPy step to rounding.

An erf trajectory of a given seed therefore differs in its last bits with
and without numba installed, and between CPUs with and without fused
multiply-add. ``ReducedSampler(..., compiled=False)`` and
``simulate(..., backend="numpy")`` force the NumPy step, which gives the
same bits wherever NumPy does.
"""

from __future__ import annotations

import numpy as np

from . import _sgd_compiled
from ._sgd_common import SGDProblem

#: Steps whose random numbers are drawn together; part of the stream layout.
BLOCK_STEPS = 16


def bytes_per_run(batch: int) -> int:
    """Working memory of one run in a chunk: the normals of one block plus step temporaries."""
    return 8 * (BLOCK_STEPS * (2 * batch + 1) + 8 * batch)


def uniform_overlap(generator: np.random.Generator, d: int) -> float:
    """Draw ``<v, w*>`` for ``v`` uniform on the unit sphere of R^d, exactly."""
    z = generator.standard_normal()
    rest = generator.chisquare(d - 1)
    return z / np.sqrt(z * z + rest)


class ReducedSampler:
    """Advance a chunk of independent runs in lock-step.

    State arrays ``u`` and ``m`` have shape ``(n_runs,)``; run ``r`` draws all
    its randomness from ``generators[r]``. ``compiled`` selects the step:
    ``None`` uses the compiled one when numba is installed and it supports the
    problem, ``False`` always uses NumPy, and ``True`` requires the compiled
    one and raises :class:`RuntimeError` when it cannot be used.
    """

    def __init__(
        self,
        problem: SGDProblem,
        generators: list[np.random.Generator],
        u0: float,
        m0: float | None,
        compiled: bool | None = None,
    ):
        usable = _sgd_compiled.available() and _sgd_compiled.supports(problem)
        if compiled and not usable:
            raise RuntimeError(
                "the compiled reduced step needs numba (pip install lora-theory[fast]) and an erf student "
                f"and teacher, got numba installed: {_sgd_compiled.available()}, student "
                f"{problem.student_expression}, teacher {problem.teacher_expression}; pass compiled=None or False."
            )
        self.compiled = usable if compiled is None else compiled
        self.problem = problem
        self.generators = generators
        n_runs = len(generators)

        if m0 is None:
            self.m = np.array([uniform_overlap(generator, problem.d) for generator in generators])
        else:
            self.m = np.full(n_runs, float(m0))
        self.u = np.full(n_runs, float(u0))

        self._normals = np.empty((n_runs, BLOCK_STEPS, 2, problem.batch))
        self._chi_square = np.empty((n_runs, BLOCK_STEPS))
        self._position = BLOCK_STEPS
        if self.compiled:
            _sgd_compiled.erf_taylor_table()
            self._sums = np.empty((n_runs, 3))

    def _draw_block(self) -> None:
        orthogonal_dimensions = self.problem.d - 2
        for run, generator in enumerate(self.generators):
            generator.standard_normal(out=self._normals[run])
            self._chi_square[run] = generator.chisquare(orthogonal_dimensions, size=BLOCK_STEPS)
        self._position = 0

    def step(self) -> None:
        """Advance every run by one SGD step."""
        if self._position == BLOCK_STEPS:
            self._draw_block()
        k = self._position
        self._position += 1

        problem = self.problem
        eta, batch = problem.eta, problem.batch
        u, m = self.u, self.m

        # Coordinates of v in the orthonormal pair (w*, e); clip rounding above |m| = 1.
        c = np.sqrt(np.maximum(1.0 - m * m, 0.0))

        if self.compiled:
            # The same sums as below, in one compiled loop over the samples.
            sums = self._sums
            _sgd_compiled.erf_batch_sums(self._normals, k, m, c, u, problem.mu, sums)
            along_teacher = sums[:, 0] / batch
            along_e = sums[:, 1] / batch
            rest_squared = sums[:, 2] * self._chi_square[:, k] / batch**2
        else:
            lam_star = self._normals[:, k, 0, :]
            zeta = self._normals[:, k, 1, :]

            # Pre-activations nu = <v, x> and lam = <w0 + u v, x> of each sample.
            nu = m[:, None] * lam_star
            nu += c[:, None] * zeta
            lam = u[:, None] * nu
            lam += problem.mu * lam_star
            g = problem.gradient_factor(lam, lam_star)

            # Batch means along w* and e, and the squared norm of the orthogonal rest.
            along_teacher = np.einsum("rb,rb->r", g, lam_star) / batch
            along_e = np.einsum("rb,rb->r", g, zeta) / batch
            rest_squared = np.einsum("rb,rb->r", g, g) * self._chi_square[:, k] / batch**2

        # v' = v - eta u mean_b g_b x_b, then renormalise; mean_b g_b nu_b = m a + c b.
        step_size = eta * u
        new_along_teacher = m - step_size * along_teacher
        new_along_e = c - step_size * along_e
        norm = np.sqrt(new_along_teacher**2 + new_along_e**2 + step_size**2 * rest_squared)
        self.u = u - eta * (m * along_teacher + c * along_e)
        self.m = new_along_teacher / norm

    def mark_diverged(self, runs: np.ndarray) -> None:
        """Set the state of the given runs to nan, so it stays non-finite."""
        self.u[runs] = np.nan
        self.m[runs] = np.nan
