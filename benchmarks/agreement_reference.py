"""Reproduce the reference SGD step counts to reach an overlap, with the reduced sampler.

The reference runs (d = 1000, eta = 0.2, B = 500, student = teacher in
{x, erf, sigmoid}, mu = 0.1 ... 0.9) report, for each mu, the mean index of
the SGD steps at which the seed-averaged |m| lies within 0.05 of mu. They
used 3 seeds that shared one initialisation of v. This script makes the same
measurement on ``--runs`` independent runs of the exact reduced sampler, each
from its own uniformly random v and u0 = 1/d^2, and prints the ratio of its
step count to the reference one as a Markdown table. For comparison it makes
the measurement on the single trajectory of the flow (kappa = eta d / B)
from m0 = 1/sqrt(d), u0 = 1/d^2, which is what a seed average over one shared
initialisation follows at large d. With ``--mixture-starts N`` it also makes
the measurement on the average of |m| over N flows from random starts, which
separates the effect of independent starts from the SGD noise.

Step indices count from the initial state (step 0). The simulation records
every step and stops once the seed-averaged |m| has passed mu + 0.05. Its
length is first set to twice the steps the flow (kappa = eta d / B, from
m0 = 1/sqrt(d), u0 = 1/d^2) needs to reach |m| = mu + 0.05, and grown by half
while the seed average has not passed that level. Run r's first n steps do
not depend on the total number of steps, so a longer rerun extends the
shorter one exactly.

Usage::

    python benchmarks/agreement_reference.py [--reference CSV] [--activations x erf sigmoid]
        [--mu 0.1 0.5 0.9] [--runs 64] [--seed 0] [--mixture-starts N]
"""

from __future__ import annotations

import os

# One BLAS thread when run as a script, so timings are per core. Importing the
# module (as the slow tests do) leaves the environment alone.
if __name__ == "__main__":
    for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_variable] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from lora_theory import __version__  # noqa: E402
from lora_theory.dynamics import integrate_flow  # noqa: E402
from lora_theory.simulation import simulate  # noqa: E402

#: Setting of the reference runs.
D = 1000
ETA = 0.2
BATCH = 500
TOLERANCE = 0.05

#: Default location of the reference table, relative to the repository root.
DEFAULT_REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "sgd_steps_to_overlap.csv"

# Maximum length of a simulation, in steps, before the measurement gives up
# (about 17 times the largest reference count, sigmoid at mu = 0.9).
_MAX_STEPS = 2_000_000


@dataclass(frozen=True)
class OverlapSteps:
    """Result of one measurement. ``steps`` is the mean step index, or None when the window is empty or unfinished."""

    activation: str
    mu: float
    steps: float | None
    window_size: int
    simulated_steps: int
    seconds: float


def _window_mean(abs_m: np.ndarray, mu: float) -> tuple[float | None, int, bool]:
    """Compute the mean index of the steps with ||m| - mu| <= 0.05 before |m| first exceeds mu + 0.05.

    Returns the mean (None for an empty window), the window size, and whether
    |m| exceeded mu + 0.05 at all. Without that passage the window may still
    grow, and the mean is not final.
    """
    passed = np.flatnonzero(abs_m > mu + TOLERANCE)
    end = passed[0] if passed.size else abs_m.size
    window = np.flatnonzero(np.abs(abs_m[:end] - mu) <= TOLERANCE)
    mean = float(window.mean()) if window.size else None
    return mean, int(window.size), bool(passed.size)


def flow_steps_to_overlap(activation: str, mu: float) -> float | None:
    """Make the measurement of :func:`steps_to_overlap` on the flow from m0 = 1/sqrt(d), u0 = 1/d^2.

    The flow is evaluated at every step, t = eta * step. Returns None when it
    does not reach |m| = mu + 0.05 by t = 10^6.
    """
    arguments = dict(mu=mu, u0=1.0 / D**2, m0=1.0 / math.sqrt(D), kappa=ETA * D / BATCH)
    passage = integrate_flow(activation, m_exit=mu + TOLERANCE, t_max=1e6, **arguments)
    if not passage.escaped:
        return None
    last_step = int(math.ceil(passage.escape_time / ETA)) + 1
    steps = np.arange(last_step + 1)
    trajectory = integrate_flow(activation, m_exit=1.0, t_max=last_step * ETA, t_eval=steps * ETA, **arguments)
    mean, _, _ = _window_mean(np.abs(trajectory.m), mu)
    return mean


def mixture_steps_to_overlap(activation: str, mu: float, n_starts: int, last_step: int) -> float | None:
    """Make the measurement of :func:`steps_to_overlap` on the average of |m| over flows from random starts.

    The flows start from u0 = 1/d^2 and the ``n_starts`` quantiles
    ``(i + 1/2) / n_starts`` of the law of |m0| for v uniform on the sphere,
    approximated by |N(0, 1/d)|. Their average is the seed average over
    independent SGD runs with the SGD noise left out. Returns None when the
    average has not passed mu + 0.05 by ``last_step``.
    """
    from scipy.stats import norm

    steps = np.arange(last_step + 1)
    levels = 0.5 + 0.5 * (np.arange(n_starts) + 0.5) / n_starts
    average = np.zeros(steps.size)
    for m0 in norm.ppf(levels) / math.sqrt(D):
        trajectory = integrate_flow(
            activation, mu=mu, u0=1.0 / D**2, m0=m0, kappa=ETA * D / BATCH, m_exit=1.0, t_max=last_step * ETA, t_eval=steps * ETA
        )
        average += np.abs(trajectory.m) / n_starts
    mean, _, passed = _window_mean(average, mu)
    return mean if passed else None


def steps_to_overlap(activation: str, mu: float, *, n_runs: int = 64, seed: int = 0, progress: bool | None = False) -> OverlapSteps:
    """Measure the mean index of the steps at which the seed-averaged |m| lies within 0.05 of ``mu``.

    Student and teacher are both ``activation``; d, eta and B are those of
    the reference runs.
    """
    started = time.perf_counter()
    level = mu + TOLERANCE
    trajectory = integrate_flow(activation, mu=mu, u0=1.0 / D**2, m0=1.0 / math.sqrt(D), kappa=ETA * D / BATCH, m_exit=level)
    # The seed average of |m| over independent starts lags the flow from
    # 1/sqrt(d) by about a third (see docs/agreement.md), so twice the flow's
    # steps usually suffice.
    budget = int(math.ceil(2.0 * trajectory.escape_time / ETA)) + 100 if trajectory.escaped else 10_000

    while True:
        result = simulate(
            activation,
            mu=mu,
            d=D,
            eta=ETA,
            batch=BATCH,
            steps=budget,
            n_runs=n_runs,
            seed=seed,
            method="reduced",
            record="all",
            progress=progress,
        )
        steps, window_size, passed = _window_mean(result.mean("abs_m"), mu)
        if passed or budget >= _MAX_STEPS:
            break
        budget = min(budget + budget // 2, _MAX_STEPS)

    # Without a passage the window may still be growing, so no count is given.
    if not passed:
        steps, window_size = None, 0
    return OverlapSteps(activation, mu, steps, window_size, budget, time.perf_counter() - started)


def read_reference(path: Path) -> list[tuple[str, float, float]]:
    """Rows ``(activation, mu, steps_mean)`` of the reference table."""
    with open(path, newline="") as handle:
        return [(row["activation"], float(row["mu"]), float(row["steps_mean"])) for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="CSV with columns activation, mu, steps_mean, steps_std")
    parser.add_argument("--activations", nargs="+", help="only these activations (default: every one in the reference)")
    parser.add_argument("--mu", nargs="+", type=float, help="only these mu (default: every one in the reference)")
    parser.add_argument("--runs", type=int, default=64, help="independent runs per measurement (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="root seed of the runs (default: 0)")
    parser.add_argument(
        "--mixture-starts",
        type=int,
        default=0,
        metavar="N",
        help="also average |m| over N flows from random starts (default: 0, skipped; each flow takes up to seconds)",
    )
    options = parser.parse_args()

    if not options.reference.is_file():
        parser.error(f"reference table {options.reference} not found; pass its path with --reference")
    rows = read_reference(options.reference)
    if options.activations:
        rows = [row for row in rows if row[0] in options.activations]
    if options.mu:
        rows = [row for row in rows if any(math.isclose(row[1], value) for value in options.mu)]

    started = time.perf_counter()
    lines = [
        "| activation | mu | reference steps | SGD steps | SGD / reference | flow steps | flow / reference "
        + ("| flow average steps | flow average / SGD " if options.mixture_starts else "")
        + "| simulated steps | SGD seconds |",
        "|---" * (11 if options.mixture_starts else 9) + "|",
    ]
    for activation, mu, reference_steps in rows:
        measured = steps_to_overlap(activation, mu, n_runs=options.runs, seed=options.seed, progress=None)
        flow = flow_steps_to_overlap(activation, mu)
        cells = [activation, f"{mu:g}", f"{reference_steps:g}"]
        for steps in (measured.steps, flow):
            cells += ["undefined", "undefined"] if steps is None else [f"{steps:.1f}", f"{steps / reference_steps:.3f}"]
        if options.mixture_starts:
            average = mixture_steps_to_overlap(activation, mu, options.mixture_starts, measured.simulated_steps)
            if average is None or measured.steps is None:
                cells += ["undefined", "undefined"]
            else:
                cells += [f"{average:.1f}", f"{average / measured.steps:.3f}"]
        cells += [str(measured.simulated_steps), f"{measured.seconds:.0f}"]
        line = "| " + " | ".join(cells) + " |"
        lines.append(line)
        print(line, file=sys.stderr, flush=True)

    print(f"Command: `python {' '.join(sys.argv)}` (lora-theory {__version__}, {options.runs} runs, seed {options.seed}).")
    print(
        f"Machine: `nproc` = {os.cpu_count()}, Python {platform.python_version()}, NumPy {np.__version__}, "
        f"one BLAS thread; total {time.perf_counter() - started:.0f} s."
    )
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
