"""Integration of the summary-statistic flow and its escape time.

Convention: aligned rank-1 model, state ``(u, m)``, time ``t = eta * steps``
(the flow is the limit d -> infinity at fixed ``kappa = eta d / B``; see
:mod:`lora_theory.model`). Escape is the first time ``|m| >= m_exit``.

The integrator is SciPy's ``solve_ivp`` (DOP853 unless ``method`` says
otherwise) with an absolute tolerance scaled to the initial state
(``atol = rtol * 1e-3 * max(|u0|, |m0|)``), so that initial overlaps as small
as 1e-12 are resolved to the requested relative tolerance. Near a singular mu
the flow is stiff (at He3/He3, mu = 0.33 the Jacobian at the origin has
eigenvalues -5.6 and 0.0021), so an explicit method takes steps bounded by
stability; ``method="LSODA"`` switches to an implicit method there. A run that starts at a fixed point, or that has not escaped by
``t_max``, is reported as not escaping, never with a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.integrate import solve_ivp

from ._errors import ParameterError
from .flow import flow_functions
from .rates import exit_time, validate_mu

__all__ = ["FlowTrajectory", "integrate", "integrate_flow"]

#: Relative rate |velocity| / |state| below which a run counts as settled on a fixed point.
STALL_RATE = 1e-9

#: A run whose state shrinks below this fraction of its initial size counts as decaying to the origin.
COLLAPSE_FACTOR = 1e-6

#: Absolute tolerance relative to the initial state scale, in units of rtol.
ABSOLUTE_TOLERANCE_FACTOR = 1e-3


@dataclass(frozen=True)
class FlowTrajectory:
    """A solution of the flow.

    ``t`` has shape ``(n,)``; ``state`` has shape ``(dimension, n)``
    (rows ``u``, ``m`` for the aligned model). ``escape_time`` is the first
    time ``|m| >= m_exit``, or ``None`` when the flow did not escape (it
    started at a fixed point, settled on one, decayed to the origin or reached
    ``t_max``). ``status`` describes the outcome in words.
    """

    t: np.ndarray
    state: np.ndarray
    escape_time: Optional[float]
    escape_state: Optional[np.ndarray]
    t_max: float
    m_exit: float
    status: str
    loss: Optional[np.ndarray] = None

    @property
    def u(self) -> np.ndarray:
        return self.state[0]

    @property
    def m(self) -> np.ndarray:
        return self.state[-1]

    @property
    def escaped(self) -> bool:
        return self.escape_time is not None


def integrate(
    velocity: Callable[[float, np.ndarray], np.ndarray],
    state0: Sequence[float],
    *,
    t_max: float,
    t_eval: Optional[np.ndarray] = None,
    m_exit: float = 0.5,
    overlap_index: int = -1,
    rtol: float = 1e-10,
    method: str = "DOP853",
) -> FlowTrajectory:
    """Integrate ``d state / dt = velocity(t, state)`` and locate the escape ``|state[overlap_index]| = m_exit``.

    Without ``t_eval`` the integration stops at the escape; with it, the
    trajectory covers the whole grid and the escape is the first crossing.
    ``method`` is a ``solve_ivp`` method name; use ``"LSODA"`` for stiff runs.
    """
    state0 = np.asarray(state0, dtype=float)
    if not np.all(np.isfinite(state0)):
        raise ParameterError(f"initial state must be finite, got {state0.tolist()}")
    if not (np.isfinite(t_max) and t_max > 0):
        raise ParameterError(f"t_max must be a positive finite time, got {t_max!r}")
    if not (0 < m_exit <= 1):
        raise ParameterError(f"m_exit must lie in (0, 1], got {m_exit!r}")
    if t_eval is not None:
        t_eval = np.asarray(t_eval, dtype=float)
        if t_eval.ndim != 1 or np.any(np.diff(t_eval) < 0) or t_eval[0] < 0 or t_eval[-1] > t_max:
            raise ParameterError("t_eval must be a non-decreasing 1-D grid inside [0, t_max]")

    if abs(state0[overlap_index]) >= m_exit:
        return FlowTrajectory(
            np.array([0.0]), state0[:, None], 0.0, state0, t_max, m_exit, "escaped: |m0| >= m_exit at t = 0"
        )

    # A fixed point never escapes: report it without integrating round-off.
    initial_velocity = np.asarray(velocity(0.0, state0), dtype=float)
    if np.all(initial_velocity == 0):
        times = np.array([0.0, t_max]) if t_eval is None else t_eval
        return FlowTrajectory(
            times, np.repeat(state0[:, None], times.size, axis=1), None, None, t_max, m_exit,
            "never escapes: the initial state is a fixed point of the flow",
        )

    def escape(t, state):
        return abs(state[overlap_index]) - m_exit

    escape.terminal = t_eval is None
    escape.direction = 1

    # A run that settles on a stable fixed point would make an explicit solver crawl to t_max with
    # steps bounded by stability; stop once the relative rate |velocity| / |state| is below 1e-9.
    def settled(t, state):
        rate = np.max(np.abs(velocity(t, state))) / max(float(np.max(np.abs(state))), 1e-300)
        return rate - STALL_RATE

    settled.terminal = t_eval is None
    settled.direction = -1

    # Decay towards the origin (a stable search point) never escapes either.
    initial_size = float(np.max(np.abs(state0)))

    def collapsed(t, state):
        return float(np.max(np.abs(state))) - COLLAPSE_FACTOR * initial_size

    collapsed.terminal = t_eval is None
    collapsed.direction = -1

    solution = solve_ivp(
        velocity,
        (0.0, t_max),
        state0,
        method=method,
        t_eval=t_eval,
        events=[escape, settled, collapsed],
        rtol=rtol,
        atol=max(rtol * ABSOLUTE_TOLERANCE_FACTOR * float(np.max(np.abs(state0))), 1e-300),
        dense_output=False,
    )
    if solution.status == -1:
        raise ArithmeticError(f"flow integration failed: {solution.message} (initial state {state0.tolist()})")
    if not np.all(np.isfinite(solution.y)):
        raise ArithmeticError(f"flow integration produced non-finite values from initial state {state0.tolist()}")

    if solution.t_events[0].size:
        escape_time = float(solution.t_events[0][0])
        return FlowTrajectory(
            solution.t, solution.y, escape_time, solution.y_events[0][0], t_max, m_exit,
            f"escaped at t = {escape_time:.6g}",
        )
    if t_eval is None and solution.t_events[2].size:
        return FlowTrajectory(
            solution.t, solution.y, None, None, t_max, m_exit,
            f"never escapes: decays towards the origin (|state| below {COLLAPSE_FACTOR:g} of its start "
            f"by t = {solution.t_events[2][0]:.6g})",
        )
    if t_eval is None and solution.t_events[1].size:
        state = solution.y_events[1][0]
        return FlowTrajectory(
            solution.t, solution.y, None, None, t_max, m_exit,
            f"never escapes: settled at state {np.array2string(state, precision=6)} by t = {solution.t_events[1][0]:.6g}",
        )
    return FlowTrajectory(
        solution.t, solution.y, None, None, t_max, m_exit, f"did not escape by t_max = {t_max:.6g}"
    )


def integrate_flow(
    student,
    teacher=None,
    *,
    mu: float,
    u0: float,
    m0: float,
    kappa: float = 0.0,
    t_max: Optional[float] = None,
    t_eval: Optional[np.ndarray] = None,
    m_exit: float = 0.5,
    rtol: float = 1e-10,
    method: str = "DOP853",
) -> FlowTrajectory:
    """Integrate the (u, m) flow of a student/teacher pair from ``(u0, m0)``.

    Time ``t = eta * steps``. ``kappa = eta d / B`` weights the
    renormalisation drift (0 gives pure gradient flow). Without ``t_max``
    the horizon is 20 times the linear estimate of the escape time (at least
    100), or 1e4 where the linear estimate is undefined. The returned
    trajectory carries the loss at each time point. ``method`` is passed to
    :func:`integrate`.
    """
    for name, value in (("mu", mu), ("u0", u0), ("m0", m0), ("kappa", kappa)):
        if not np.isfinite(value):
            raise ParameterError(f"{name} must be finite, got {value!r}")
    validate_mu([mu])
    if not -1 <= m0 <= 1:
        raise ParameterError(f"m0 = {m0!r} is outside [-1, 1]; the overlap of two unit vectors lies in [-1, 1]")
    if kappa < 0:
        raise ParameterError(f"kappa = eta d / B must be >= 0, got {kappa!r}")

    functions = flow_functions(student, teacher)
    if t_max is None:
        t_max = _default_horizon(student, teacher, mu, m0, m_exit)

    def velocity(t, state):
        du, dm = functions.velocity(state[0], state[1], mu, kappa)
        return np.array([float(du), float(dm)])

    trajectory = integrate(velocity, [u0, m0], t_max=t_max, t_eval=t_eval, m_exit=m_exit, rtol=rtol, method=method)
    loss = functions.loss(trajectory.u, trajectory.m, mu)
    return FlowTrajectory(
        trajectory.t, trajectory.state, trajectory.escape_time, trajectory.escape_state,
        trajectory.t_max, trajectory.m_exit, trajectory.status, loss,
    )


def _default_horizon(student, teacher, mu: float, m0: float, m_exit: float) -> float:
    if m0 == 0 or abs(m0) >= m_exit:
        return 1e4
    times, _ = exit_time(student, teacher, [mu], m0=abs(m0), m_exit=m_exit)
    estimate = float(times[0])
    if not np.isfinite(estimate) or estimate <= 0:
        return 1e4
    return max(20 * estimate, 100.0)
