"""lora-theory: rank-1 LoRA fine-tuning on single-index models.

A pre-trained weight ``w0 = mu w*`` is fine-tuned by a rank-1 adapter
``u v`` with one-pass SGD towards the teacher ``y = sigma_star(<w*, x>)``
(G. Nwemadji, B. Loureiro, J. Barbier, "When pre-training hurts LoRA
fine-tuning: a dynamical analysis via single-index models",
arXiv:2602.02855, 2026). The package derives the population loss and the
summary-statistic flow symbolically, generates NumPy code from them and
computes the escape rates of the search phase.

Conventions: probabilists' Hermite polynomials ``He_k``
(``E[He_j He_k] = k! delta_jk``); ``Var lam = Q``, ``Cov(lam, lam*) = R``,
``Var lam* = 1``; time ``t = eta * steps``, samples ``= B * steps``.

=======================  ==========================  ====================================
Symbol                   Identifier                  Meaning
=======================  ==========================  ====================================
sigma, sigma*            ``student``, ``teacher``    activations (spec strings)
mu                       ``mu``                      pre-training strength, w0 = mu w*
u, m                     ``u``, ``m``                LoRA scale, overlap <v, w*>
kappa                    ``kappa``                   noise ratio eta d / B
Q, R                     ``Q``, ``R``                Var lam, Cov(lam, lam*)
L(Q, R), L(u, m; mu)     ``loss``, ``loss_state``    population loss
E[g^2]                   ``gradient_second_moment``  g = (sigma - sigma*) sigma'
A, B                     ``A``, ``B``                linearisation [[B, A], [A, 0]]
lambda_+                 ``lambda_plus``             unstable eigenvalue
tau                      ``tau``                     1 / lambda_plus
t_exit                   ``exit_time``               linear estimate of the escape time
=======================  ==========================  ====================================
"""

from ._errors import (
    ActivationError,
    GridError,
    LoraTheoryError,
    LoraTheoryWarning,
    ParameterError,
    QuadratureError,
    SingularPointError,
    TimeUnitError,
)
from ._version import __version__  # before the modules that read it
from .activations import Activation, parse_activation
from .analysis import (
    SearchPhaseFit,
    hermite_coefficient,
    information_exponent,
    search_phase,
)
from .baseline import largest_noise_ratio, scaling_sweep, simulate_baseline
from .derivation import Derivation, derive
from .dynamics import FlowTrajectory, integrate_flow
from .expectations import expectation_1d, pair_expectation
from .fixed_points import ContinuumOfFixedPointsError, FixedPoint, fixed_points
from .flow import FlowFunctions, flow_functions
from .latex import latex_document
from .pretraining import (
    PhaseDiagram,
    PretrainingVerdict,
    assess_pretraining,
    phase_diagram,
)
from .rates import EscapeRates, escape_rates, exit_time
from .scaling import ScalingResult, largest_lora_noise_ratio, scaling_law
from .simulation import SimulationResult, simulate
from .singular import SingularPoint, singular_points

__all__ = [
    "Activation",
    "ActivationError",
    "ContinuumOfFixedPointsError",
    "Derivation",
    "EscapeRates",
    "FixedPoint",
    "FlowFunctions",
    "FlowTrajectory",
    "GridError",
    "LoraTheoryError",
    "LoraTheoryWarning",
    "ParameterError",
    "PhaseDiagram",
    "PretrainingVerdict",
    "QuadratureError",
    "ScalingResult",
    "SearchPhaseFit",
    "SimulationResult",
    "SingularPoint",
    "SingularPointError",
    "TimeUnitError",
    "__version__",
    "assess_pretraining",
    "derive",
    "escape_rates",
    "exit_time",
    "expectation_1d",
    "fixed_points",
    "flow_functions",
    "hermite_coefficient",
    "information_exponent",
    "integrate_flow",
    "largest_lora_noise_ratio",
    "largest_noise_ratio",
    "latex_document",
    "pair_expectation",
    "parse_activation",
    "phase_diagram",
    "scaling_law",
    "scaling_sweep",
    "search_phase",
    "simulate",
    "simulate_baseline",
    "singular_points",
]
