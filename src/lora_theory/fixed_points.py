"""Fixed points of the (u, m) flow, with stability and loss.

Convention: aligned rank-1 model, state ``(u, m)`` with ``u`` real and
``m`` in [-1, 1], parameters ``mu`` and ``kappa = eta d / B``, time
``t = eta * steps``.

Search: the vector field is sampled on a grid of ``(u, m)`` cells; every
cell in which both components change sign (or vanish at a corner) seeds a
root polish (:func:`scipy.optimize.root`, hybrid Powell method) from its
centre, together with the analytic candidates ``(0, 0)`` and
``(+-(1 - mu), +-1)``. Roots are kept when the residual is below
``RESIDUAL_TOLERANCE``, deduplicated within ``DEDUPLICATION_DISTANCE``, and
classified by the eigenvalues of the Jacobian, which is generated from the
symbolic flow.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import sympy as sp
from scipy.optimize import root

from ._errors import LoraTheoryError, ParameterError
from .activations import parse_activation
from .codegen import generate
from .flow import flow_functions
from .model import kappa, m, mu, u
from .rates import validate_mu

__all__ = ["ContinuumOfFixedPointsError", "FixedPoint", "fixed_points"]

#: Residual |velocity| below which a polished root counts as a fixed point.
RESIDUAL_TOLERANCE = 1e-10
#: Relative size of a real part below which an eigenvalue counts as zero.
HYPERBOLICITY_TOLERANCE = 1e-8
#: Step tolerance of the root polish (``xtol`` of the hybrid Powell method).
ROOT_STEP_TOLERANCE = 1e-13
#: Roots closer than this in both u and m count as one fixed point.
DEDUPLICATION_DISTANCE = 1e-7
#: Step of the one-sided differences used where the generated Jacobian is not finite.
ONE_SIDED_STEP = 1e-7
#: Sample points in u and m of the sign-change search.
DEFAULT_GRID = (121, 81)


class ContinuumOfFixedPointsError(ParameterError):
    """The flow vanishes on a set of positive area, or has more zeros than a curve through the grid gives.

    Fixed points are then not isolated, so there is no finite list to return
    (for example a constant student such as He0, whose flow is identically zero).
    """


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point ``(u, m)`` of the flow.

    ``eigenvalues`` (complex, shape ``(2,)``) are those of the Jacobian of
    ``(du/dt, dm/dt)``, sorted by real part, then by imaginary part; ``stability`` is "stable", "unstable", "saddle" or
    "non-hyperbolic"; ``role`` is "search point" (``u = m = 0``), "global
    minimum" (zero loss), "spurious attractor" (stable with positive loss) or
    "other". ``jacobian_method`` is "symbolic" (generated from the flow) or
    "one-sided differences" (where the generated Jacobian is not finite, at
    kinks). Eigenvalues are rates in the plain time unit t = eta * steps.
    """

    u: float
    m: float
    loss: float
    eigenvalues: np.ndarray
    stability: str
    role: str
    jacobian_method: str = "symbolic"


@functools.lru_cache(maxsize=64)
def _jacobian_functions(student_canonical: str, teacher_canonical: str, student, teacher):
    flow = flow_functions(student, teacher).derivation.flow
    entries = {}
    for row, component in enumerate((u, m)):
        for column, variable in enumerate((u, m)):
            entries[row, column] = generate(sp.diff(flow[component], variable), [u, m, mu, kappa], f"J{row}{column}")
    return entries


def _one_sided_jacobian(velocity, point: np.ndarray, step: float = ONE_SIDED_STEP) -> np.ndarray:
    matrix = np.empty((2, 2))
    for column in range(2):
        direction = np.zeros(2)
        # Step towards the interior of m in [-1, 1] (and towards positive u on the line u = 0).
        direction[column] = -step if (column == 1 and point[1] > 0) else step
        matrix[:, column] = (velocity(point + direction) - velocity(point)) / direction[column]
    return matrix


def _classify(eigenvalues: np.ndarray) -> str:
    real = eigenvalues.real
    scale = max(1.0, float(np.max(np.abs(eigenvalues))))
    if np.any(np.abs(real) <= HYPERBOLICITY_TOLERANCE * scale):
        return "non-hyperbolic"
    if np.all(real < 0):
        return "stable"
    if np.all(real > 0):
        return "unstable"
    return "saddle"


def fixed_points(
    student,
    teacher=None,
    *,
    mu: float,
    kappa: float = 0.0,
    u_max: float = 3.0,
    grid: tuple[int, int] = DEFAULT_GRID,
) -> tuple[FixedPoint, ...]:
    """Find all fixed points with ``|u| <= u_max`` and ``m`` in [-1, 1], sorted by loss then u.

    ``grid`` sets the number of sample points in u and m of the sign-change
    search; fixed points closer together than one grid cell may be missed.
    Each point's eigenvalues are sorted by real part, then imaginary part.

    Raises :class:`ContinuumOfFixedPointsError` when both components of the
    flow are zero (within ``RESIDUAL_TOLERANCE``) on all four corners of a
    grid cell, or when more than ``grid[0] + grid[1]`` points are found. A
    curve of fixed points is returned as separate samples along it.
    """
    for name, value in (("mu", mu), ("kappa", kappa), ("u_max", u_max)):
        if not np.isfinite(value):
            raise ParameterError(f"{name} must be finite, got {value!r}")
    validate_mu([mu])
    if kappa < 0 or u_max <= 0:
        raise ParameterError(f"kappa must be >= 0 and u_max > 0, got kappa = {kappa!r}, u_max = {u_max!r}")

    student = parse_activation(student)
    teacher = student if teacher is None else parse_activation(teacher)
    functions = flow_functions(student, teacher)
    jacobian = _jacobian_functions(student.canonical, teacher.canonical, student, teacher)

    def velocity(state):
        # The root finder may step outside m in [-1, 1], where no covariance exists: evaluate at the
        # clipped overlap and add the excursion, so the residual pushes it back.
        overlap = float(np.clip(state[1], -1.0, 1.0))
        du, dm = functions.velocity(state[0], overlap, mu, kappa)
        return np.array([float(du), float(dm) + (state[1] - overlap)])

    # Sign-change search on a grid of cells.
    u_values = np.linspace(-u_max, u_max, grid[0])
    m_values = np.linspace(-1.0, 1.0, grid[1])
    uu, mm = np.meshgrid(u_values, m_values, indexing="ij")
    du, dm = functions.velocity(uu, mm, mu, kappa)
    du = np.broadcast_to(du, uu.shape)
    dm = np.broadcast_to(dm, uu.shape)

    # A cell whose four corners are all zeros of the flow means the flow vanishes on an area, so the
    # zeros are not isolated. NOTE: a vanishing area smaller than one cell is not detected here.
    zero = (np.abs(du) <= RESIDUAL_TOLERANCE) & (np.abs(dm) <= RESIDUAL_TOLERANCE)
    zero_cells = zero[:-1, :-1] & zero[1:, :-1] & zero[:-1, 1:] & zero[1:, 1:]
    if np.any(zero_cells):
        raise ContinuumOfFixedPointsError(
            f"the flow of student {student.spec!r}, teacher {teacher.spec!r} vanishes on {int(zero_cells.sum())} of "
            f"{zero_cells.size} grid cells at mu = {mu:g}, kappa = {kappa:g}: it has a continuum of fixed points, "
            "not isolated ones; choose a student that is not constant"
        )

    seeds = [(0.0, 0.0), (1 - mu, 1.0), (mu - 1, -1.0)]
    sign_du = np.sign(du)
    sign_dm = np.sign(dm)

    def changes(signs):
        corners = np.stack([signs[:-1, :-1], signs[1:, :-1], signs[:-1, 1:], signs[1:, 1:]])
        return (corners.max(axis=0) >= 0) & (corners.min(axis=0) <= 0)

    cells = np.argwhere(changes(sign_du) & changes(sign_dm))
    for i, j in cells:
        seeds.append(((u_values[i] + u_values[i + 1]) / 2, (m_values[j] + m_values[j + 1]) / 2))

    # Polish each seed and keep genuine, distinct roots inside the domain.
    found: list[tuple[float, float]] = []
    for seed in seeds:
        solution = root(velocity, np.array(seed, dtype=float), method="hybr", options={"xtol": ROOT_STEP_TOLERANCE})
        point = solution.x
        if not np.all(np.isfinite(point)) or abs(point[1]) > 1 + 1e-9 or abs(point[0]) > u_max:
            continue
        point = np.array([point[0], float(np.clip(point[1], -1.0, 1.0))])
        if np.max(np.abs(velocity(point))) > RESIDUAL_TOLERANCE:
            continue
        if any(abs(point[0] - a) < DEDUPLICATION_DISTANCE and abs(point[1] - b) < DEDUPLICATION_DISTANCE for a, b in found):
            continue
        found.append((float(point[0]), float(point[1])))
    # A curve of fixed points (u = 0 for the linear model at mu = 1) gives about one sample per grid cell
    # that it crosses, so up to about grid[0] + grid[1]; more means the zeros are not on one curve.
    limit = grid[0] + grid[1]
    if len(found) > limit:
        raise ContinuumOfFixedPointsError(
            f"found {len(found)} fixed points of student {student.spec!r}, teacher {teacher.spec!r} at mu = {mu:g}, "
            f"kappa = {kappa:g}, more than {limit}: the zeros are not isolated (a continuum of fixed points)"
        )

    # Classify by the Jacobian and the loss.
    points = []
    for u_value, m_value in found:
        try:
            matrix = np.array(
                [[float(jacobian[row, column](u_value, m_value, mu, kappa)) for column in range(2)] for row in range(2)]
            )
        except LoraTheoryError:
            # The generated Jacobian needs second derivatives, which a kinked teacher turns into Dirac
            # deltas that the numerical kernels reject. A nan matrix sends it to one-sided differences below.
            matrix = np.full((2, 2), np.nan)
        jacobian_method = "symbolic"
        if not np.all(np.isfinite(matrix)):
            # Kinked activations make the flow non-differentiable at m = +-1 or u = 0 (terms
            # |u| sqrt(1 - m^2)); use one-sided differences pointing into the domain instead.
            matrix = _one_sided_jacobian(velocity, np.array([u_value, m_value]))
            jacobian_method = "one-sided differences"
        eigenvalues = np.sort_complex(np.linalg.eigvals(matrix).astype(complex))
        loss = float(functions.loss(u_value, m_value, mu))
        stability = _classify(eigenvalues)
        if abs(u_value) < 1e-9 and abs(m_value) < 1e-9:
            role = "search point"
        elif abs(loss) <= 1e-10:
            role = "global minimum"
        elif stability == "stable":
            role = "spurious attractor"
        else:
            role = "other"
        points.append(FixedPoint(u_value, m_value, loss, eigenvalues, stability, role, jacobian_method))
    return tuple(sorted(points, key=lambda point: (round(point.loss, 12), point.u)))
