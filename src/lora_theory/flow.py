"""Generated NumPy callables of the population loss and the summary-statistic flow.

Convention: aligned rank-1 model, state ``(u, m)``, parameters ``mu``
(pre-training strength) and ``kappa = eta d / B`` (noise ratio), time
``t = eta * steps``. Every callable broadcasts its arguments (arrays of
``u``, ``m``, ``mu``, ``kappa`` of compatible shapes) and returns float
arrays of the broadcast shape.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .activations import parse_activation
from .codegen import generate
from .derivation import Derivation, derive
from .model import kappa, m, mu, u

__all__ = ["FlowFunctions", "flow_functions"]


@dataclass(frozen=True)
class FlowFunctions:
    """Callables generated from a :class:`~lora_theory.derivation.Derivation`.

    ``loss(u, m, mu)``, ``gradient_second_moment(u, m, mu)`` (E[g^2]),
    ``du_dt(u, m, mu, kappa)``, ``dm_dt(u, m, mu, kappa)``.
    """

    derivation: Derivation
    loss: Callable[..., np.ndarray]
    gradient_second_moment: Callable[..., np.ndarray]
    du_dt: Callable[..., np.ndarray]
    dm_dt: Callable[..., np.ndarray]

    def velocity(self, u_value, m_value, mu_value, kappa_value=0.0) -> tuple[np.ndarray, np.ndarray]:
        """``(du/dt, dm/dt)`` at the given state and parameters."""
        return self.du_dt(u_value, m_value, mu_value, kappa_value), self.dm_dt(u_value, m_value, mu_value, kappa_value)


@functools.lru_cache(maxsize=128)
def _flow_functions(student_canonical: str, teacher_canonical: str, student, teacher) -> FlowFunctions:
    derivation = derive(student, teacher)
    from .model import ALIGNED_RANK_ONE

    return FlowFunctions(
        derivation=derivation,
        loss=generate(derivation.loss_state, [u, m, mu], "loss"),
        gradient_second_moment=generate(
            ALIGNED_RANK_ONE.substitute(derivation.gradient_second_moment), [u, m, mu], "gradient_second_moment"
        ),
        du_dt=generate(derivation.flow[u], [u, m, mu, kappa], "du_dt"),
        dm_dt=generate(derivation.flow[m], [u, m, mu, kappa], "dm_dt"),
    )


def flow_functions(student, teacher=None) -> FlowFunctions:
    """Derive (or load from the cache) and generate the flow callables of a student/teacher pair."""
    student = parse_activation(student)
    teacher = student if teacher is None else parse_activation(teacher)
    return _flow_functions(student.canonical, teacher.canonical, student, teacher)
