"""Exact reduced and full SGD of the no-pre-training baseline: a unit vector ``v``, ``w = v``.

Reduced sampler. Write ``v = m w* + c e`` with ``c = sqrt(1 - m^2)`` and a
unit vector ``e`` orthogonal to ``w*``. For each sample of a batch,
``lam* = <w*, x>`` and ``zeta = <e, x>`` are independent standard normals,
the student pre-activation is ``nu = <v, x> = m lam* + c zeta`` and the
part of ``x`` orthogonal to ``span(w*, e)`` is independent of both. With
``g = (sigma(nu) - sigma*(lam*)) sigma'(nu)`` the step
``v' = v - eta mean_b g_b x_b`` has

    <v', w*>         = m - eta a,      a   = mean_b g_b lam*_b
    <v', e>          = c - eta b,      b   = mean_b g_b zeta_b
    |rest of v'|^2   = eta^2 s^2,      s^2 = (sum_b g_b^2) chi^2_{d-2} / B^2

and ``m_new = <v', w*> / |v'|``. This is the LoRA reduced step of
:mod:`lora_theory._sgd_reduced` with ``mu = 0`` and ``u = 1`` held fixed.

Random stream of one run, in the order it is consumed from the run's
:class:`numpy.random.Generator`:

1. the initial overlap, only when ``m0`` is not given, drawn as in
   :func:`lora_theory._sgd_reduced.uniform_overlap`;
2. then, per block of :func:`block_steps` steps, ``2 * B`` standard normals
   per step (step, then ``(lam*, zeta)``, then sample, in C order) followed
   by one ``chi^2_{d-2}`` value per step.

Whole blocks are always drawn, so the first ``n`` steps of a run do not
depend on the total number of steps, on the other runs or on the backend.

Backends. The NumPy kernel advances all runs of a chunk one step at a time.
The numba kernel, used when numba is installed and both activations are
polynomials, advances each run through a whole block in compiled code. Both
evaluate polynomials by Horner's rule and sum over the batch in sample order
(``numpy.add.accumulate`` is sequential by definition), and neither fuses a
multiply and an add, so the two backends return bit-identical trajectories.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ._sgd_common import _compile
from ._sgd_reduced import uniform_overlap
from .activations import Activation, Z

#: Fill value of step arrays for events that did not happen.
NO_STEP = -1

BACKENDS = ("auto", "numpy", "numba")


def block_steps(batch: int) -> int:
    """Steps whose random numbers are drawn together; part of the stream layout.

    About 4096 random values per block: long blocks keep the per-block
    Python work small at B = 1, short ones bound the memory at large B.
    """
    return max(16, 4096 // (2 * batch + 1))


def bytes_per_run(batch: int) -> int:
    """Working memory of one reduced run in a chunk: one block of random values plus step temporaries."""
    return 8 * (block_steps(batch) * (2 * batch + 1) + 12 * batch)


# ---------------------------------------------------------------------------
# Activations: Horner coefficients for polynomials, NumPy callables otherwise
# ---------------------------------------------------------------------------


def polynomial_coefficients(expression: sp.Expr) -> np.ndarray | None:
    """Coefficients of a polynomial in z, highest degree first, or ``None`` for other expressions."""
    if not expression.free_symbols <= {Z}:
        return None
    if not expression.is_polynomial(Z):
        return None
    coefficients = sp.Poly(expression, Z).all_coeffs()
    return np.array([float(coefficient) for coefficient in coefficients], dtype=float)


def horner(coefficients: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Evaluate a polynomial (coefficients highest degree first) by Horner's rule, a new array."""
    result = np.full(values.shape, coefficients[0])
    for coefficient in coefficients[1:]:
        result *= values
        result += coefficient
    return result


class BaselineActivations:
    """sigma, sigma' and sigma* of the baseline, as Horner coefficients where they are polynomials."""

    def __init__(self, student: Activation, teacher: Activation):
        self.student_coefficients = polynomial_coefficients(student.expr)
        self.derivative_coefficients = polynomial_coefficients(student.derivative_expr(1))
        self.teacher_coefficients = polynomial_coefficients(teacher.expr)
        self.polynomial = all(
            coefficients is not None
            for coefficients in (self.student_coefficients, self.derivative_coefficients, self.teacher_coefficients)
        )
        self._student = _compile(student.expr)
        self._derivative = _compile(student.derivative_expr(1))
        self._teacher = _compile(teacher.expr)

    def gradient_factor(self, nu: np.ndarray, lam_star: np.ndarray) -> np.ndarray:
        """Per-sample factor ``g = (sigma(nu) - sigma*(lam*)) sigma'(nu)``, a new array."""
        if self.polynomial:
            error = horner(self.student_coefficients, nu)
            error -= horner(self.teacher_coefficients, lam_star)
            error *= horner(self.derivative_coefficients, nu)
            return error
        student = self._student if isinstance(self._student, float) else self._student(nu)
        teacher = self._teacher if isinstance(self._teacher, float) else self._teacher(lam_star)
        derivative = self._derivative if isinstance(self._derivative, float) else self._derivative(nu)
        return np.broadcast_to(np.multiply(np.subtract(student, teacher), derivative), nu.shape).copy()


# ---------------------------------------------------------------------------
# Event bookkeeping shared by the kernels
# ---------------------------------------------------------------------------


class RunState:
    """Overlaps and per-run events of one chunk of runs.

    ``m`` has shape ``(n_runs,)``. ``escape_step``, ``diverged_step`` and
    ``last_step`` contain step numbers, :data:`NO_STEP` where the event did
    not happen. ``records`` has shape ``(n_runs, n_records)`` and contains
    ``m`` at ``record_steps``, nan after a run stopped. ``record_position[r]`` is the
    index of the next record of run ``r``.
    """

    def __init__(self, m0: np.ndarray, record_steps: np.ndarray, m_exit: float, stop_when_escaped: bool):
        n_runs = m0.size
        self.m = m0.astype(float).copy()
        self.initial_m = self.m.copy()
        self.record_steps = record_steps
        self.records = np.full((n_runs, record_steps.size), np.nan)
        self.record_position = np.zeros(n_runs, dtype=np.int64)
        self.escape_step = np.full(n_runs, NO_STEP, dtype=np.int64)
        self.diverged_step = np.full(n_runs, NO_STEP, dtype=np.int64)
        self.last_step = np.full(n_runs, NO_STEP, dtype=np.int64)
        self.active = np.ones(n_runs, dtype=bool)
        self.m_exit = float(m_exit)
        self.stop_when_escaped = bool(stop_when_escaped)

    def observe(self, step: int) -> None:
        """Record divergence, escape and the scheduled record of every active run at ``step``."""
        active = self.active
        m = self.m

        # Divergence: a non-finite overlap ends the run.
        diverged = active & ~np.isfinite(m)
        if diverged.any():
            self.diverged_step[diverged] = step
            self.last_step[diverged] = step
            active &= ~diverged

        # Escape: the first step with |m| >= m_exit.
        escaped = active & (self.escape_step == NO_STEP) & (np.abs(m) >= self.m_exit)
        self.escape_step[escaped] = step

        # Records: all runs share the schedule, so the next position is the same for every active run.
        position = self.record_position
        due = active & (position < self.record_steps.size)
        if due.any():
            index = int(position[due][0])
            if self.record_steps[index] == step:
                self.records[due, index] = m[due]
                position[due] += 1

        if self.stop_when_escaped and escaped.any():
            self.last_step[escaped] = step
            active &= ~escaped

    def finish(self, steps: int) -> None:
        """Close the runs still active after ``steps`` steps."""
        self.last_step[self.active] = steps


# ---------------------------------------------------------------------------
# Reduced sampler
# ---------------------------------------------------------------------------


def _numpy_block(state: RunState, activations: BaselineActivations, eta: float, batch: int,
                 normals: np.ndarray, chi_square: np.ndarray, first_step: int, n_steps: int) -> None:
    """Advance the active runs of ``state`` by ``n_steps`` steps of one block, one step at a time."""
    runs = np.flatnonzero(state.active)
    for k in range(n_steps):
        if runs.size == 0:
            return
        m = state.m[runs]
        lam_star = normals[runs, k, 0, :]
        zeta = normals[runs, k, 1, :]

        # Coordinates of v in the orthonormal pair (w*, e). Clip rounding above |m| = 1.
        c = np.sqrt(np.maximum(1.0 - m * m, 0.0))

        # Student pre-activation nu = <v, x> and gradient factor of each sample.
        nu = m[:, None] * lam_star
        nu += c[:, None] * zeta
        g = activations.gradient_factor(nu, lam_star)

        # Batch sums in sample order, so that the numba kernel can repeat them exactly.
        along_teacher = np.add.accumulate(g * lam_star, axis=1)[:, -1] / batch
        along_e = np.add.accumulate(g * zeta, axis=1)[:, -1] / batch
        rest_squared = np.add.accumulate(g * g, axis=1)[:, -1] * chi_square[runs, k] / (batch * batch)

        # v' = v - eta mean_b g_b x_b, then back to the sphere.
        new_along_teacher = m - eta * along_teacher
        new_along_e = c - eta * along_e
        norm = np.sqrt(new_along_teacher * new_along_teacher + new_along_e * new_along_e + (eta * eta) * rest_squared)
        state.m[runs] = new_along_teacher / norm

        state.observe(first_step + k + 1)
        runs = np.flatnonzero(state.active)


_numba_kernel = None


def numba_available() -> bool:
    """True when numba can be imported."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _compiled_kernel():
    """Compile (once) and return the numba block kernel."""
    global _numba_kernel
    if _numba_kernel is not None:
        return _numba_kernel
    import numba

    @numba.njit(cache=True)
    def evaluate(coefficients, value):
        result = coefficients[0]
        for index in range(1, coefficients.size):
            result = result * value + coefficients[index]
        return result

    @numba.njit(cache=True)
    def kernel(m, active, escape_step, diverged_step, last_step, records, record_position, record_steps,
               student, derivative, teacher, eta, batch, m_exit, stop_when_escaped,
               normals, chi_square, first_step, n_steps):
        n_records = record_steps.size
        products = np.empty(3)
        for run in range(m.size):
            if not active[run]:
                continue
            overlap = m[run]
            for k in range(n_steps):
                c = np.sqrt(max(1.0 - overlap * overlap, 0.0))

                # Batch sums in sample order, exactly as the NumPy kernel accumulates them.
                for b in range(batch):
                    lam_star = normals[run, k, 0, b]
                    zeta = normals[run, k, 1, b]
                    nu = overlap * lam_star + c * zeta
                    error = evaluate(student, nu) - evaluate(teacher, lam_star)
                    g = error * evaluate(derivative, nu)
                    if b == 0:
                        products[0] = g * lam_star
                        products[1] = g * zeta
                        products[2] = g * g
                    else:
                        products[0] = products[0] + g * lam_star
                        products[1] = products[1] + g * zeta
                        products[2] = products[2] + g * g
                along_teacher = products[0] / batch
                along_e = products[1] / batch
                rest_squared = products[2] * chi_square[run, k] / (batch * batch)

                new_along_teacher = overlap - eta * along_teacher
                new_along_e = c - eta * along_e
                norm = np.sqrt(new_along_teacher * new_along_teacher + new_along_e * new_along_e + (eta * eta) * rest_squared)
                overlap = new_along_teacher / norm
                step = first_step + k + 1

                # Events at this step, in the order of RunState.observe.
                if not np.isfinite(overlap):
                    diverged_step[run] = step
                    last_step[run] = step
                    active[run] = False
                    break
                escaped = escape_step[run] == -1 and abs(overlap) >= m_exit
                if escaped:
                    escape_step[run] = step
                position = record_position[run]
                if position < n_records and record_steps[position] == step:
                    records[run, position] = overlap
                    record_position[run] = position + 1
                if escaped and stop_when_escaped:
                    last_step[run] = step
                    active[run] = False
                    break
            m[run] = overlap

    _numba_kernel = kernel
    return kernel


class ReducedBaselineSampler:
    """Exact reduced sampler of one chunk of runs (see the module docstring)."""

    def __init__(self, activations: BaselineActivations, generators, *, d: int, eta: float, batch: int,
                 m0: float | None, backend: str):
        self.activations = activations
        self.generators = generators
        self.d = d
        self.eta = eta
        self.batch = batch
        self.backend = backend
        if m0 is None:
            self.m0 = np.array([uniform_overlap(generator, d) for generator in generators])
        else:
            self.m0 = np.full(len(generators), float(m0))
        self.block = block_steps(batch)
        self._normals = np.empty((len(generators), self.block, 2, batch))
        self._chi_square = np.empty((len(generators), self.block))

    def _draw_block(self, active: np.ndarray) -> None:
        # A stopped run never reads its stream again, so only active runs draw.
        for run in np.flatnonzero(active):
            generator = self.generators[run]
            generator.standard_normal(out=self._normals[run])
            self._chi_square[run] = generator.chisquare(self.d - 2, size=self.block)

    def advance(self, state: RunState, first_step: int, n_steps: int) -> None:
        """Advance the active runs from ``first_step`` by ``n_steps <= block`` steps, drawing one block."""
        self._draw_block(state.active)
        if self.backend == "numba":
            activations = self.activations
            _compiled_kernel()(
                state.m, state.active, state.escape_step, state.diverged_step, state.last_step, state.records,
                state.record_position, state.record_steps, activations.student_coefficients,
                activations.derivative_coefficients, activations.teacher_coefficients, float(self.eta),
                int(self.batch), state.m_exit, state.stop_when_escaped, self._normals, self._chi_square,
                int(first_step), int(n_steps),
            )
        else:
            _numpy_block(state, self.activations, self.eta, self.batch, self._normals, self._chi_square, first_step, n_steps)


# ---------------------------------------------------------------------------
# Full sampler
# ---------------------------------------------------------------------------


def full_bytes_per_run(batch: int, d: int) -> int:
    """Working memory of one full run: its batch of inputs, v, the gradient and step temporaries."""
    return 8 * (batch * d + 3 * d + 8 * batch)


class FullBaselineSampler:
    """The d-dimensional baseline SGD in plain NumPy, with ``w* = e_1``.

    Random stream of one run: ``d`` standard normals for the initial
    direction (as :func:`lora_theory._sgd_full.initial_direction`), then per
    step the ``B x d`` standard normal inputs of the batch (C order).
    """

    block = 64

    def __init__(self, activations: BaselineActivations, generators, *, d: int, eta: float, batch: int,
                 m0: float | None):
        from ._sgd_full import initial_direction

        self.activations = activations
        self.generators = generators
        self.eta = eta
        self.batch = batch
        self.v = np.stack([initial_direction(generator, d, m0) for generator in generators])
        self.m0 = self.v[:, 0].copy()
        self._inputs = np.empty((len(generators), batch, d))

    def advance(self, state: RunState, first_step: int, n_steps: int) -> None:
        """Advance every active run by ``n_steps`` steps."""
        for k in range(n_steps):
            for run in np.flatnonzero(state.active):
                self.generators[run].standard_normal(out=self._inputs[run])
            inputs = self._inputs
            lam_star = inputs[:, :, 0]
            nu = np.matmul(inputs, self.v[:, :, None])[:, :, 0]
            g = self.activations.gradient_factor(nu, lam_star)

            # Gradient of the batch mean of (sigma(<v, x>) - y)^2 / 2 in v, then back to the sphere.
            summed_inputs = np.matmul(g[:, None, :], inputs)[:, 0, :]
            self.v -= (self.eta / self.batch) * summed_inputs
            self.v /= np.linalg.norm(self.v, axis=1)[:, None]

            runs = state.active
            state.m[runs] = self.v[runs, 0]
            state.observe(first_step + k + 1)
