"""Full SGD: the d-dimensional protocol in plain NumPy.

The teacher direction is ``w* = e_1`` without loss of generality (the input
law is rotation invariant), so ``lam* = x_1`` and ``m = v_1``.

Random stream of one run, in the order it is consumed from the run's
:class:`numpy.random.Generator`:

1. ``d`` standard normals ``n`` for the initial direction: ``v = n / |n|``
   when ``m0`` is not given, otherwise ``v = m0 e_1 + sqrt(1 - m0^2) n' / |n'|``
   with ``n'`` equal to ``n`` with its first entry set to zero;
2. then, per step, the ``B x d`` standard normal inputs of the batch (C order).
"""

from __future__ import annotations

import numpy as np

from ._sgd_common import SGDProblem


def bytes_per_run(batch: int, d: int) -> int:
    """Working memory of one run in a chunk: its batch of inputs, v, the gradient and step temporaries."""
    return 8 * (batch * d + 3 * d + 8 * batch)


def initial_direction(generator: np.random.Generator, d: int, m0: float | None) -> np.ndarray:
    """Draw v uniform on the sphere of R^d, or uniform among the unit vectors with ``v_1 = m0``."""
    normals = generator.standard_normal(d)
    if m0 is None:
        return normals / np.linalg.norm(normals)
    normals[0] = 0.0
    direction = normals * (np.sqrt(1.0 - m0 * m0) / np.linalg.norm(normals))
    direction[0] = m0
    return direction


class FullSampler:
    """Advance a chunk of independent runs in lock-step.

    State arrays ``u`` and ``m`` have shape ``(n_runs,)`` and ``v`` has shape
    ``(n_runs, d)``; run ``r`` draws all its randomness from ``generators[r]``.
    """

    def __init__(self, problem: SGDProblem, generators: list[np.random.Generator], u0: float, m0: float | None):
        self.problem = problem
        self.generators = generators
        self.v = np.stack([initial_direction(generator, problem.d, m0) for generator in generators])
        self.u = np.full(len(generators), float(u0))
        self.m = self.v[:, 0].copy()
        self._inputs = np.empty((len(generators), problem.batch, problem.d))

    def step(self) -> None:
        """Advance every run by one SGD step."""
        problem = self.problem
        eta, batch = problem.eta, problem.batch
        inputs = self._inputs
        for run, generator in enumerate(self.generators):
            generator.standard_normal(out=inputs[run])

        # Pre-activations of each sample; lam* = <e_1, x> is the first coordinate.
        lam_star = inputs[:, :, 0]
        nu = np.matmul(inputs, self.v[:, :, None])[:, :, 0]
        lam = self.u[:, None] * nu
        lam += problem.mu * lam_star
        g = problem.gradient_factor(lam, lam_star)

        # Gradients of the batch mean of (yhat - y)^2 / 2: g nu for u, u g x for v.
        gradient_u = np.einsum("rb,rb->r", g, nu) / batch
        summed_inputs = np.matmul(g[:, None, :], inputs)[:, 0, :]

        # Both updates use the state before the step; then v goes back to the sphere.
        self.v -= (eta * self.u / batch)[:, None] * summed_inputs
        self.v /= np.linalg.norm(self.v, axis=1)[:, None]
        self.u = self.u - eta * gradient_u
        self.m = self.v[:, 0].copy()

    def mark_diverged(self, runs: np.ndarray) -> None:
        """Set the state of the given runs to nan, so it stays non-finite."""
        self.u[runs] = np.nan
        self.m[runs] = np.nan
        self.v[runs] = np.nan
