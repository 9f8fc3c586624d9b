"""Escape statistics of simulated SGD runs, with censoring kept explicit.

A run *escapes* at the first step ``n`` (counting from the initial state,
``n = 0``) at which ``|m_n| >= m_exit``. A run that reaches the end of the
simulation without escaping is *censored*: it has no escape step, and it is
never counted as escaping at the last step. A run whose state became
non-finite before it escaped is *diverged*.

Every summary is given in three time units: SGD steps, samples
(``batch * steps``) and the flow time ``t = eta * steps``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ._errors import ParameterError

__all__ = ["EscapeSummary", "TimeSummary", "summarize_escape", "NOT_ESCAPED"]

#: Fill value of escape steps of runs that did not escape.
NOT_ESCAPED = -1

# Largest number of resampled values held at once by the bootstrap.
_BOOTSTRAP_BLOCK_VALUES = 4_000_000


@dataclass(frozen=True)
class TimeSummary:
    """Escape-time statistics over the escaped runs, in one time unit.

    ``None`` marks a statistic that is undefined: every statistic when no run
    escaped, and the confidence intervals when fewer than two runs escaped.
    """

    unit: str
    median: float | None
    mean: float | None
    median_ci: tuple[float, float] | None
    mean_ci: tuple[float, float] | None


@dataclass(frozen=True)
class EscapeSummary:
    """Escape statistics of a set of runs.

    The medians and means are conditional on escaping within ``max_steps``:
    when ``censored_fraction`` is not zero they underestimate the escape time
    of the unconditioned process. Confidence intervals are percentile
    bootstrap intervals at level ``confidence`` over the escaped runs.
    """

    n_runs: int
    n_escaped: int
    n_censored: int
    n_diverged: int
    censored_fraction: float
    diverged_fraction: float
    max_steps: int | None
    confidence: float
    steps: TimeSummary
    samples: TimeSummary
    t: TimeSummary

    def as_dict(self) -> dict:
        """Nested plain-Python dictionary (tuples become lists in JSON)."""
        return asdict(self)


def _run_mask(values, name: str, n_runs: int) -> np.ndarray:
    """Boolean mask of the runs that have a value: unmasked and non-negative."""
    data = np.ma.getdata(values)
    mask = np.ma.getmaskarray(values)
    if data.shape != (n_runs,):
        raise ParameterError(f"{name} must have shape ({n_runs},) like escape_step, got shape {data.shape}.")
    return ~mask & (data >= 0)


def _percentile_bootstrap(values: np.ndarray, confidence: float, n_bootstrap: int, rng: np.random.Generator):
    """Percentile bootstrap intervals of the median and of the mean of ``values``."""
    n = values.size
    medians = np.empty(n_bootstrap)
    means = np.empty(n_bootstrap)

    # Resample in blocks so that large run counts do not hold n_bootstrap * n indices at once.
    block = max(1, _BOOTSTRAP_BLOCK_VALUES // n)
    for start in range(0, n_bootstrap, block):
        stop = min(start + block, n_bootstrap)
        resampled = values[rng.integers(0, n, size=(stop - start, n))]
        medians[start:stop] = np.median(resampled, axis=1)
        means[start:stop] = resampled.mean(axis=1)

    tail = (1.0 - confidence) / 2.0
    levels = [tail, 1.0 - tail]
    median_ci = tuple(float(value) for value in np.quantile(medians, levels))
    mean_ci = tuple(float(value) for value in np.quantile(means, levels))
    return median_ci, mean_ci


def _scaled(summary: TimeSummary, unit: str, factor: float) -> TimeSummary:
    # Median, mean and percentile intervals all commute with a positive scale factor.
    def scale(value):
        return None if value is None else float(value) * factor

    def scale_pair(pair):
        return None if pair is None else (pair[0] * factor, pair[1] * factor)

    return TimeSummary(
        unit=unit,
        median=scale(summary.median),
        mean=scale(summary.mean),
        median_ci=scale_pair(summary.median_ci),
        mean_ci=scale_pair(summary.mean_ci),
    )


def summarize_escape(
    escape_step,
    *,
    batch: int,
    eta: float,
    max_steps: int | None = None,
    diverged_step=None,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> EscapeSummary:
    """Summarise per-run escape steps into medians, means, intervals and fractions.

    Parameters
    ----------
    escape_step : array_like of int, shape (n_runs,)
        First step with ``|m| >= m_exit`` for each run. Runs without an escape
        are masked (a :class:`numpy.ma.MaskedArray`) or hold a negative value
        such as :data:`NOT_ESCAPED`.
    batch, eta : int, float
        Mini-batch size ``B`` and learning rate ``eta``, for the units
        samples ``= B * steps`` and ``t = eta * steps``.
    max_steps : int, optional
        Length of the simulation, stored in the summary as the censoring horizon.
    diverged_step : array_like of int, shape (n_runs,), optional
        Step at which each run became non-finite, masked or negative for runs
        that stayed finite. A run counts as diverged only if it did not escape
        first, so the escaped, censored and diverged runs partition all runs.
    confidence : float
        Level of the bootstrap intervals, in (0, 1).
    n_bootstrap : int
        Number of bootstrap resamples.
    seed : int
        Seed of the bootstrap resampling, so summaries are reproducible.

    Returns
    -------
    EscapeSummary
        Statistics over the escaped runs in steps, samples and ``t``; ``None``
        for what is undefined (no escaped run, or an interval from one run).
    """
    steps_data = np.ma.getdata(escape_step)
    if steps_data.ndim != 1 or steps_data.size == 0:
        raise ParameterError(f"escape_step must be a non-empty 1-d array of steps, got shape {steps_data.shape}.")
    n_runs = steps_data.size
    if not (isinstance(batch, (int, np.integer)) and batch >= 1):
        raise ParameterError(f"batch must be an integer >= 1, got {batch!r}.")
    if not (np.isfinite(eta) and eta > 0):
        raise ParameterError(f"eta must be a finite number > 0, got {eta!r}.")
    if not 0.0 < confidence < 1.0:
        raise ParameterError(f"confidence must lie in (0, 1), got {confidence!r}; use for example 0.95.")
    if not (isinstance(n_bootstrap, (int, np.integer)) and n_bootstrap >= 1):
        raise ParameterError(f"n_bootstrap must be an integer >= 1, got {n_bootstrap!r}.")

    escaped = _run_mask(escape_step, "escape_step", n_runs)
    if diverged_step is None:
        diverged = np.zeros(n_runs, dtype=bool)
    else:
        diverged = _run_mask(diverged_step, "diverged_step", n_runs) & ~escaped
    censored = ~escaped & ~diverged
    values = steps_data[escaped].astype(float)

    # Statistics in steps first, then the other units by scaling.
    median = mean = median_ci = mean_ci = None
    if values.size >= 1:
        median = float(np.median(values))
        mean = float(values.mean())
    if values.size >= 2:
        rng = np.random.default_rng(seed)
        median_ci, mean_ci = _percentile_bootstrap(values, confidence, int(n_bootstrap), rng)
    in_steps = TimeSummary("steps", median, mean, median_ci, mean_ci)

    return EscapeSummary(
        n_runs=n_runs,
        n_escaped=int(escaped.sum()),
        n_censored=int(censored.sum()),
        n_diverged=int(diverged.sum()),
        censored_fraction=float(censored.mean()),
        diverged_fraction=float(diverged.mean()),
        max_steps=None if max_steps is None else int(max_steps),
        confidence=float(confidence),
        steps=in_steps,
        samples=_scaled(in_steps, "samples", float(batch)),
        t=_scaled(in_steps, "t", float(eta)),
    )
