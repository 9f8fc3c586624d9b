"""Figures of the analysis notebooks, and the folder that ``lora-theory report --full`` writes.

Each figure rebuilds one part of the analysis of G. Nwemadji, B. Loureiro,
J. Barbier, "When pre-training hurts LoRA fine-tuning: a dynamical analysis
via single-index models", arXiv:2602.02855 (2026), from the public functions
of this package:

========================  ====================  ==================================================
name                      notebook              contents
========================  ====================  ==================================================
``escape_rates``          ``01_escape_rates``   tau(mu) of x, erf, relu, sigmoid, tanh (plain
                                                unit) and He2 ... He6 (hermite unit), singular
                                                mu marked with the critical alignment m_c
``trajectories``          ``02_trajectories``   |m| and u * sign(m) of the flow against reduced
                                                and full SGD for erf at mu = 0.5
``collapse``              ``02_trajectories``   |m| against t / log d for several d, and the
                                                flow's escape time against tau * (1/2) log d
``information_exponent``  ``03_scaling``        Hermite coefficients and information exponent
                                                k* of several teachers
``scaling``               ``03_scaling``        escape steps of the no-pre-training baseline
                                                against d, flow and reduced SGD, fitted exponents
``label_change``          ``04_label_change``   student He3, teacher He3^2: tau(mu), fixed
                                                points and a flow trajectory
========================  ====================  ==================================================

Conventions: probabilists' Hermite polynomials He_k; time ``t = eta * steps``
(flow and SGD), samples ``= B * steps``. The ``hermite`` time unit divides the
rates of a student He_k by ``k! * k``.

Every figure exists at two sizes: ``"small"`` (seconds, used by the tests and
the notebooks by default) and ``"full"`` (the grids, dimensions and run counts
of the report). :data:`FIGURE_SETTINGS` lists both. The notebooks and
``lora-theory report --full`` call :func:`make_figure`, so a notebook figure
and the report file of the same name come from the same code.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from . import __version__
from ._errors import ParameterError
from .analysis import hermite_coefficient, information_exponent
from .dynamics import integrate_flow
from .fixed_points import fixed_points
from .grids import parse_grid
from .outputs import atomic_write_files
from .rates import escape_rates, exit_time
from .scaling import scaling_law
from .simulation import simulate
from .singular import singular_points

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "FIGURE_NAMES",
    "FIGURE_SETTINGS",
    "SIZES",
    "SIZE_VARIABLE",
    "SUMMARY_FILE",
    "ReportFigure",
    "make_figure",
    "make_figures",
    "size_from_environment",
    "write_full_report",
]

#: Sizes of every figure: ``small`` runs in seconds, ``full`` is the report's size.
SIZES = ("small", "full")

#: Environment variable that the notebooks read to choose their size.
SIZE_VARIABLE = "LORA_THEORY_NOTEBOOK_SIZE"

#: Name of the Markdown summary written next to the figures.
SUMMARY_FILE = "summary.md"

#: Settings of each figure at each size. Grids use the syntax of
#: :func:`lora_theory.grids.parse_grid` (``start:stop:num``).
FIGURE_SETTINGS: Mapping[str, Mapping[str, Mapping[str, object]]] = {
    "escape_rates": {
        "small": {"mu": "0.02:0.99:40", "standard": ["x", "erf", "relu", "sigmoid", "tanh"], "hermite": ["He2", "He3", "He4", "He5", "He6"]},
        "full": {"mu": "0.02:0.99:400", "standard": ["x", "erf", "relu", "sigmoid", "tanh"], "hermite": ["He2", "He3", "He4", "He5", "He6"]},
    },
    "trajectories": {
        "small": {"student": "erf", "mu": 0.5, "d": 200, "eta": 0.2, "batch": 100, "steps": 1000, "reduced_runs": 16, "full_runs": 2, "seed": 0},
        "full": {"student": "erf", "mu": 0.5, "d": 1000, "eta": 0.2, "batch": 500, "steps": 1500, "reduced_runs": 64, "full_runs": 8, "seed": 0},
    },
    "collapse": {
        "small": {"student": "erf", "mu": 0.5, "kappa": 0.4, "eta": 0.2, "flow_d": [1e2, 1e4, 1e6], "sgd_d": [1e3], "sgd_runs": 8, "seed": 0},
        "full": {
            "student": "erf", "mu": 0.5, "kappa": 0.4, "eta": 0.2,
            "flow_d": [1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e10, 1e12], "sgd_d": [1e3, 1e4], "sgd_runs": 32, "seed": 0,
        },
    },
    "information_exponent": {
        "small": {"teachers": ["x", "erf", "relu", "tanh", "He2", "He3", "He4", "relu^2", "He3^2"], "max_degree": 8},
        "full": {"teachers": ["x", "erf", "relu", "sigmoid", "tanh", "He2", "He3", "He4", "He5", "x^2", "relu^2", "He3^2"], "max_degree": 12},
    },
    "scaling": {
        "small": {
            "teachers": ["x", "He2", "He3", "He4"], "d_min": 1e2, "d_max": 1e4, "d_points": 4, "fraction": 0.5, "batch": 1,
            "sgd_d": {"x": [100, 1000], "He2": [100, 1000], "He3": [30, 100]}, "sgd_runs": 8, "seed": 0,
        },
        "full": {
            "teachers": ["x", "He2", "He3", "He4"], "d_min": 30, "d_max": 1e6, "d_points": 13, "fraction": 0.5, "batch": 1,
            "sgd_d": {"x": [100, 316, 1000, 3162, 10000], "He2": [100, 316, 1000, 3162, 10000], "He3": [30, 60, 120, 240]},
            "sgd_runs": 32, "seed": 0,
        },
    },
    "label_change": {
        "small": {"student": "He3", "teacher": "He3^2", "mu": "0.02:0.99:40", "flow_mu": 0.5, "d": 1000, "kappa": 0.0},
        "full": {"student": "He3", "teacher": "He3^2", "mu": "0.02:0.99:400", "flow_mu": 0.5, "d": 1000, "kappa": 0.0},
    },
}

#: Figure names in the order of the notebooks.
FIGURE_NAMES = tuple(FIGURE_SETTINGS)

#: The notebook that shows each figure.
_NOTEBOOKS = {
    "escape_rates": "01_escape_rates.ipynb",
    "trajectories": "02_trajectories.ipynb",
    "collapse": "02_trajectories.ipynb",
    "information_exponent": "03_scaling.ipynb",
    "scaling": "03_scaling.ipynb",
    "label_change": "04_label_change.ipynb",
}


@dataclass(frozen=True, eq=False)
class ReportFigure:
    """One computed and rendered figure.

    ``data`` contains the computed results (``EscapeRates``, ``FlowTrajectory``,
    ``SimulationResult`` and so on, keyed by name) so that a notebook can
    inspect the numbers behind the figure. ``result`` is a one-line statement
    of the main numbers, and ``figure`` a Matplotlib figure drawn on the Agg
    canvas, outside :mod:`matplotlib.pyplot`. ``png`` contains the PNG bytes with
    the command, the package version and the size in the footer and the PNG
    metadata. In a notebook the object displays as that PNG.
    """

    name: str
    size: str
    settings: Mapping[str, object]
    description: str
    notebook: str
    result: str
    data: Mapping[str, object] = field(repr=False)
    figure: "Figure" = field(repr=False)
    png: bytes = field(repr=False)

    @property
    def file_name(self) -> str:
        """File name in the report folder, ``<name>.png``."""
        return f"{self.name}.png"

    def _repr_png_(self) -> bytes:
        return self.png


def size_from_environment(default: str = "small") -> str:
    """Return the size named by ``$LORA_THEORY_NOTEBOOK_SIZE``, or ``default`` when it is unset or empty."""
    value = os.environ.get(SIZE_VARIABLE, "") or default
    if value not in SIZES:
        raise ParameterError(f"{SIZE_VARIABLE} must be one of {', '.join(SIZES)}, got {value!r}; unset it for the small size.")
    return value


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise ParameterError(f"size must be one of {', '.join(SIZES)}, got {size!r}.")


# ---------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)

    # Keep the bottom strip free for the provenance footer.
    figure.get_layout_engine().set(rect=(0.0, 0.05, 1.0, 0.95))
    return figure


def _png(figure: "Figure", provenance: str) -> bytes:
    figure.text(0.01, 0.005, provenance, fontsize=6, color="gray", ha="left", va="bottom")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150, metadata={"Software": f"lora-theory {__version__}", "Description": provenance})
    return buffer.getvalue()


def _plottable(values) -> np.ndarray:
    # nan breaks a line, so an undefined value shows as a gap.
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values) & (values > 0), values, np.nan)


def _mark_singular(axes: "Axes", points, color) -> None:
    for point in points:
        axes.axvline(point.mu, color=color, linestyle=":", linewidth=1.0)


def _singular_label(spec: str, points) -> str:
    if not points:
        return spec
    parts = []
    for point in points:
        alignment = "none" if point.critical_alignment is None else f"{point.critical_alignment:.3f}"
        parts.append(rf"$\mu_s$ = {point.mu:.4f}, $m_c$ = {alignment}")
    return f"{spec} ({'; '.join(parts)})"


def _draw_rates(axes: "Axes", rates_by_spec: Mapping[str, object], singular_by_spec: Mapping[str, tuple]) -> None:
    for spec, rates in rates_by_spec.items():
        (line,) = axes.plot(rates.mu, _plottable(rates.tau), label=_singular_label(spec, singular_by_spec[spec]))
        _mark_singular(axes, singular_by_spec[spec], line.get_color())
    axes.set_yscale("log")
    axes.set_xlabel(r"pre-training strength $\mu$")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=7)


# ---------------------------------------------------------------------------
# Escape rates
# ---------------------------------------------------------------------------


def _compute_escape_rates(settings: Mapping[str, object]) -> tuple[dict, str]:
    mu = parse_grid(settings["mu"])
    mu_range = (float(mu.min()), float(mu.max()))
    data: dict = {"standard": {}, "hermite": {}, "singular": {}}
    for spec in settings["standard"]:
        data["standard"][spec] = escape_rates(spec, mu=mu, time_unit="plain")
        data["singular"][spec] = singular_points(spec, mu_range=mu_range)
    for spec in settings["hermite"]:
        data["hermite"][spec] = escape_rates(spec, mu=mu, time_unit="hermite")
        data["singular"][spec] = singular_points(spec, mu_range=mu_range)

    found = [f"{spec}: mu_s = {point.mu:.6g}" for spec, points in data["singular"].items() for point in points]
    result = "singular mu (A(mu) = 0): " + ("; ".join(found) if found else "none")
    return data, result


def _render_escape_rates(data: Mapping[str, object], settings: Mapping[str, object]) -> "Figure":
    figure = _new_figure(12.0, 4.8)
    standard = figure.add_subplot(1, 2, 1)
    hermite = figure.add_subplot(1, 2, 2)
    _draw_rates(standard, data["standard"], data["singular"])
    _draw_rates(hermite, data["hermite"], data["singular"])
    standard.set_ylabel(r"escape time $\tau(\mu)$, plain unit ($t = \eta \cdot$ steps)")
    hermite.set_ylabel(r"escape time $\tau(\mu)$, hermite unit ($\times k!\,k$)")
    standard.set_title("standard activations, student = teacher", fontsize=9)
    hermite.set_title(r"Hermite activations He$_k$, student = teacher; dotted: singular $\mu$ ($A = 0$)", fontsize=9)
    return figure


# ---------------------------------------------------------------------------
# Trajectories: flow against reduced and full SGD
# ---------------------------------------------------------------------------


def _record_grid(steps: int, points: int = 200) -> np.ndarray:
    return np.unique(np.linspace(0, steps, points).astype(np.int64))


def _compute_trajectories(settings: Mapping[str, object]) -> tuple[dict, str]:
    student, mu, d = settings["student"], float(settings["mu"]), int(settings["d"])
    eta, batch, steps, seed = float(settings["eta"]), int(settings["batch"]), int(settings["steps"]), int(settings["seed"])
    kappa = eta * d / batch
    record = _record_grid(steps)

    # The flow starts where the CLI starts it: m0 = 1/sqrt(d), u0 = 1/d^2.
    flow = integrate_flow(student, mu=mu, u0=1.0 / d**2, m0=1.0 / np.sqrt(d), kappa=kappa, t_max=eta * steps, t_eval=record * eta)
    sgd = {}
    for method, runs in (("reduced", settings["reduced_runs"]), ("full", settings["full_runs"])):
        sgd[method] = simulate(student, mu=mu, d=d, eta=eta, batch=batch, steps=steps, n_runs=int(runs), seed=seed, method=method, record=record, progress=False)

    parts = [f"flow escape t = {flow.escape_time:.4g}" if flow.escaped else f"flow: {flow.status}"]
    for method, result in sgd.items():
        summary = result.escape_summary()
        median = summary.t.median
        parts.append(f"{method} SGD median escape t = {median:.4g} ({summary.n_escaped}/{summary.n_runs} runs escaped)" if median is not None else f"{method} SGD: no run escaped")
    return {"flow": flow, "kappa": kappa, **sgd}, "; ".join(parts) + f" (|m| >= 0.5, kappa = {kappa:g})"


def _sgd_values(result, quantity: str) -> np.ndarray:
    # u * sign(m) is invariant under the symmetry (u, v) -> (-u, -v), so runs that align
    # with -w* and +w* average to the same curve instead of cancelling.
    if quantity == "abs_m":
        return np.abs(result.m)
    return result.u * np.sign(result.m)


def _draw_sgd(axes: "Axes", result, quantity: str, label: str, linestyle: str) -> None:
    values = _sgd_values(result, quantity)
    with warnings.catch_warnings():
        # Steps at which every run is nan (diverged) give nan, shown as a gap.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        low, high = np.nanquantile(values, [0.05, 0.95], axis=0)
    t = result.record_t
    (line,) = axes.plot(t, mean, linestyle=linestyle, label=f"{label}: mean of {result.parameters.n_runs} runs")
    axes.fill_between(t, low, high, color=line.get_color(), alpha=0.15, linewidth=0, label=f"{label}: 5% to 95%")


def _render_trajectories(data: Mapping[str, object], settings: Mapping[str, object]) -> "Figure":
    figure = _new_figure(12.0, 4.6)
    flow = data["flow"]
    panels = (
        ("abs_m", np.abs(flow.m), r"$|m| = |\langle v, w^* \rangle|$"),
        ("signed_u", flow.u * np.sign(flow.m), r"LoRA scale times the sign of the overlap, $u \cdot \mathrm{sign}(m)$"),
    )
    for index, (quantity, flow_values, label) in enumerate(panels):
        axes = figure.add_subplot(1, 2, index + 1)
        axes.plot(flow.t, flow_values, color="black", linewidth=1.5, label=rf"flow ($d \to \infty$, $\kappa$ = {data['kappa']:g})")
        _draw_sgd(axes, data["reduced"], quantity, "reduced SGD", "-")
        _draw_sgd(axes, data["full"], quantity, "full SGD", "--")
        axes.set_xlabel(r"$t = \eta \cdot$ steps")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        if index == 0:
            axes.legend(fontsize=7)
    figure.suptitle(
        f"student = teacher = {settings['student']}, mu = {settings['mu']}, d = {settings['d']}, "
        f"eta = {settings['eta']}, B = {settings['batch']}; SGD from a uniform v, u0 = 1/d^2; flow from m0 = 1/sqrt(d)",
        fontsize=9,
    )
    return figure


# ---------------------------------------------------------------------------
# Collapse of m(t) on t / log d
# ---------------------------------------------------------------------------


def _compute_collapse(settings: Mapping[str, object]) -> tuple[dict, str]:
    student, mu, kappa, eta = settings["student"], float(settings["mu"]), float(settings["kappa"]), float(settings["eta"])
    rates = escape_rates(student, mu=[mu])
    tau = float(rates.tau[0])

    def horizon(d: float) -> float:
        # Twice the linear estimate of the escape time leaves room for the approach to the optimum.
        (estimate,), _ = exit_time(student, mu=[mu], d=d)
        return 2.0 * float(estimate)

    flows = {}
    for d in settings["flow_d"]:
        t_max = horizon(d)
        flows[d] = integrate_flow(student, mu=mu, u0=1.0 / d**2, m0=1.0 / np.sqrt(d), kappa=kappa, t_max=t_max, t_eval=np.linspace(0.0, t_max, 400))

    sgd = {}
    for d in settings["sgd_d"]:
        # Keep kappa = eta d / B fixed, so that every d has the same flow limit.
        batch = max(1, int(round(eta * d / kappa)))
        steps = int(np.ceil(horizon(d) / eta))
        sgd[d] = simulate(
            student, mu=mu, d=int(d), eta=eta, batch=batch, steps=steps, n_runs=int(settings["sgd_runs"]),
            seed=int(settings["seed"]), method="reduced", record=_record_grid(steps), progress=False,
        )

    ratios = [flow.escape_time / (0.5 * np.log(d)) for d, flow in flows.items() if flow.escaped]
    result = (
        f"tau({mu:g}) = {tau:.4g}; flow escape time / ((1/2) log d) from {ratios[0]:.4g} at d = {min(flows):.0e} "
        f"to {ratios[-1]:.4g} at d = {max(flows):.0e}"
        if ratios
        else f"tau({mu:g}) = {tau:.4g}; no flow escaped"
    )
    return {"tau": tau, "flows": flows, "sgd": sgd}, result


def _render_collapse(data: Mapping[str, object], settings: Mapping[str, object]) -> "Figure":
    from matplotlib import colormaps

    figure = _new_figure(12.0, 4.6)
    curves = figure.add_subplot(1, 2, 1)
    ratio = figure.add_subplot(1, 2, 2)
    tau = data["tau"]
    flows = data["flows"]
    colours = colormaps["viridis"](np.linspace(0.0, 0.9, len(flows)))

    for colour, (d, flow) in zip(colours, flows.items()):
        curves.plot(flow.t / np.log(d), np.abs(flow.m), color=colour, label=f"flow, d = {d:.0e}")
    for d, result in data["sgd"].items():
        curves.plot(result.record_t / np.log(d), result.mean("abs_m"), color="gray", linestyle="--", label=f"reduced SGD, d = {d:.0e}: mean |m| of {result.parameters.n_runs} runs")
    curves.axvline(tau / 2, color="red", linestyle=":", label=r"$\tau/2$: escape at $t \approx \tau \cdot \frac{1}{2}\log d$")
    curves.set_xlabel(r"$t / \log d$, $t = \eta \cdot$ steps")
    curves.set_ylabel(r"$|m|$")
    curves.grid(True, alpha=0.3)
    curves.legend(fontsize=7)

    escaped = [(d, flow.escape_time) for d, flow in flows.items() if flow.escaped]
    if escaped:
        d_values = np.array([d for d, _ in escaped])
        times = np.array([time for _, time in escaped])
        ratio.plot(d_values, times / (0.5 * np.log(d_values)), marker="o", label=r"flow escape time / ($\frac{1}{2}\log d$)")
    ratio.axhline(tau, color="red", linestyle=":", label=rf"$\tau(\mu)$ = {tau:.4g}")
    ratio.set_xscale("log")
    ratio.set_xlabel("dimension d (m0 = 1/sqrt(d), u0 = 1/d^2)")
    ratio.set_ylabel(r"escape time / ($\frac{1}{2}\log d$), plain unit")
    ratio.grid(True, alpha=0.3)
    ratio.legend(fontsize=7)
    figure.suptitle(f"student = teacher = {settings['student']}, mu = {settings['mu']}, kappa = eta d / B = {settings['kappa']}, escape at |m| = 0.5", fontsize=9)
    return figure


# ---------------------------------------------------------------------------
# Information exponent and scaling with d
# ---------------------------------------------------------------------------


def _compute_information_exponent(settings: Mapping[str, object]) -> tuple[dict, str]:
    from math import factorial, sqrt

    degrees = np.arange(1, int(settings["max_degree"]) + 1)
    exponents = {}
    coefficients = {}
    for teacher in settings["teachers"]:
        exponents[teacher] = information_exponent(teacher, max_degree=int(settings["max_degree"]))
        # Normalised coefficients E[sigma* He_k] / sqrt(k!), the coordinates in the orthonormal basis He_k / sqrt(k!).
        coefficients[teacher] = np.array([hermite_coefficient(teacher, int(k)) * sqrt(factorial(int(k))) for k in degrees])
    result = "information exponent k*: " + ", ".join(f"{teacher} {exponent}" for teacher, exponent in exponents.items())
    return {"degrees": degrees, "exponents": exponents, "coefficients": coefficients}, result


def _render_information_exponent(data: Mapping[str, object], settings: Mapping[str, object]) -> "Figure":
    figure = _new_figure(12.0, 4.6)
    bars = figure.add_subplot(1, 2, 1)
    lines = figure.add_subplot(1, 2, 2)
    teachers = list(data["exponents"])
    values = [0 if data["exponents"][teacher] is None else data["exponents"][teacher] for teacher in teachers]
    bars.bar(range(len(teachers)), values, color="tab:blue")
    # Horizontal labels: a rotated "x" would read as "+".
    bars.set_xticks(range(len(teachers)), teachers, fontsize=7)
    bars.set_ylabel(r"information exponent $k^*$ (0: none up to max degree)")
    bars.set_title(r"$k^*$ = smallest $k \geq 1$ with $E[\sigma^*(z)\,He_k(z)] \neq 0$", fontsize=9)
    bars.grid(True, axis="y", alpha=0.3)

    from matplotlib import colormaps

    degrees = data["degrees"]
    # tab20 gives up to 20 distinct colours, where the default cycle repeats after 10.
    colours = colormaps["tab20"](np.arange(len(teachers)) % 20)
    for colour, teacher in zip(colours, teachers):
        magnitude = np.abs(data["coefficients"][teacher])
        # Coefficients below 1e-12 are zeros of the expansion, so they show as gaps.
        lines.plot(degrees, np.where(magnitude > 1e-12, magnitude, np.nan), color=colour, marker="o", markersize=3, label=teacher)
    lines.set_yscale("log")
    lines.set_xlabel("Hermite degree k")
    lines.set_ylabel(r"$|E[\sigma^*(z)\,He_k(z)]| / \sqrt{k!}$")
    lines.set_title("normalised Hermite coefficients of the teacher (zeros left out)", fontsize=9)
    lines.grid(True, alpha=0.3)
    lines.legend(fontsize=7, ncol=2)
    return figure


def _compute_scaling(settings: Mapping[str, object]) -> tuple[dict, str]:
    # scaling_law needs integer dimensions.
    d_values = np.unique(np.round(np.geomspace(float(settings["d_min"]), float(settings["d_max"]), int(settings["d_points"]))))
    common = {"fraction": float(settings["fraction"]), "batch": int(settings["batch"])}
    flows = {teacher: scaling_law(teacher, d=d_values, method="flow", **common) for teacher in settings["teachers"]}
    sgd = {}
    for teacher, dimensions in settings["sgd_d"].items():
        sgd[teacher] = scaling_law(
            teacher, d=dimensions, method="reduced", n_runs=int(settings["sgd_runs"]), seed=int(settings["seed"]), progress=False, **common
        )

    parts = []
    for teacher, flow in flows.items():
        response = "steps / log d" if flow.divide_log else "steps"
        text = f"{teacher} (k* = {flow.information_exponent}): {response} ~ d^{flow.slope:.3f} (flow)"
        if teacher in sgd:
            low, high = sgd[teacher].slope_ci if sgd[teacher].slope_ci is not None else (np.nan, np.nan)
            text += f", d^{sgd[teacher].slope:.3f} [{low:.3f}, {high:.3f}] (reduced SGD)"
        parts.append(text + f", predicted d^{flow.expected:g}")
    return {"d": d_values, "flows": flows, "sgd": sgd}, "; ".join(parts)


def _render_scaling(data: Mapping[str, object], settings: Mapping[str, object]) -> "Figure":
    figure = _new_figure(8.0, 5.4)
    axes = figure.add_subplot()
    for teacher, flow in data["flows"].items():
        response = "steps / log d" if flow.divide_log else "steps"
        label = f"{teacher}, k* = {flow.information_exponent}: flow {response} ~ d^{flow.slope:.2f} (theory {flow.expected:g})"
        (line,) = axes.plot(flow.d, flow.steps, marker="o", markersize=3, label=label)

        # Reference law through the first point: d, d log d, d^(k*-1).
        reference = (flow.d / flow.d[0]) ** flow.expected
        if flow.divide_log:
            reference = reference * np.log(flow.d) / np.log(flow.d[0])
        axes.plot(flow.d, flow.steps[0] * reference, color=line.get_color(), linestyle=":", linewidth=1.0)

        if teacher in data["sgd"]:
            sgd = data["sgd"][teacher]
            errors = np.abs(sgd.steps_ci.T - sgd.steps)
            axes.errorbar(
                sgd.d, sgd.steps, yerr=errors, color=line.get_color(), marker="s", markersize=4, linestyle="none", capsize=2,
                label=f"{teacher}: reduced SGD, median of {sgd.n_runs} runs, slope {sgd.slope:.2f}",
            )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("dimension d")
    axes.set_ylabel(f"SGD steps to |m| = 0.5 (B = {settings['batch']}, so samples = steps)")
    axes.set_title(
        f"no pre-training: spherical SGD from m0 = 1/sqrt(d), eta = {settings['fraction']} x eta_max(d)\n"
        "lines: flow, squares: reduced SGD with 95% interval, dotted: d, d log d, d^(k*-1)",
        fontsize=8,
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=6)
    return figure


# ---------------------------------------------------------------------------
# Label change
# ---------------------------------------------------------------------------


def _compute_label_change(settings: Mapping[str, object]) -> tuple[dict, str]:
    student, teacher = settings["student"], settings["teacher"]
    mu = parse_grid(settings["mu"])
    mu_range = (float(mu.min()), float(mu.max()))
    flow_mu, d, kappa = float(settings["flow_mu"]), int(settings["d"]), float(settings["kappa"])

    rates = {teacher: escape_rates(student, teacher, mu=mu), student: escape_rates(student, student, mu=mu)}
    singular = {teacher: singular_points(student, teacher, mu_range=mu_range), student: singular_points(student, student, mu_range=mu_range)}
    points = fixed_points(student, teacher, mu=flow_mu, kappa=kappa)
    flow = integrate_flow(student, teacher, mu=flow_mu, u0=1.0 / d**2, m0=1.0 / np.sqrt(d), kappa=kappa)
    # Follow the flow past the escape to the state it settles on.
    t_max = 3.0 * flow.escape_time if flow.escaped else flow.t_max
    settled = integrate_flow(student, teacher, mu=flow_mu, u0=1.0 / d**2, m0=1.0 / np.sqrt(d), kappa=kappa, t_max=t_max, t_eval=np.linspace(0.0, t_max, 600))

    final = f"state at t = {settled.t[-1]:.4g}: u = {settled.u[-1]:.4g}, m = {settled.m[-1]:.4g}, loss {settled.loss[0]:.6g} -> {settled.loss[-1]:.6g}"
    result = (
        f"teacher {teacher}: {len(singular[teacher])} singular mu; {len(points)} fixed points at mu = {flow_mu:g}; "
        f"flow {flow.status}; {final}"
    )
    return {"rates": rates, "singular": singular, "fixed_points": points, "flow": settled}, result


_STABILITY_MARKERS = {"stable": "o", "unstable": "s", "saddle": "X", "non-hyperbolic": "D"}


def _render_label_change(data: Mapping[str, object], settings: Mapping[str, object]) -> "Figure":
    figure = _new_figure(15.0, 4.6)
    rates_axes = figure.add_subplot(1, 3, 1)
    phase = figure.add_subplot(1, 3, 2)
    time_axes = figure.add_subplot(1, 3, 3)
    student = settings["student"]

    labelled = {f"teacher {teacher}": rates for teacher, rates in data["rates"].items()}
    singular = {f"teacher {teacher}": points for teacher, points in data["singular"].items()}
    _draw_rates(rates_axes, labelled, singular)
    rates_axes.set_ylabel(r"escape time $\tau(\mu)$, plain unit ($t = \eta \cdot$ steps)")
    rates_axes.set_title(f"student {student}; dotted: singular mu", fontsize=9)

    flow = data["flow"]
    phase.plot(flow.u, flow.m, color="black", label="flow trajectory")
    for point in data["fixed_points"]:
        phase.plot(point.u, point.m, linestyle="none", marker=_STABILITY_MARKERS.get(point.stability, "o"), markersize=8, label=f"{point.role}, {point.stability} (loss {point.loss:.5g})")
    phase.set_xlabel("LoRA scale u")
    phase.set_ylabel(r"overlap $m$")
    phase.set_title(f"fixed points and flow at mu = {settings['flow_mu']}, kappa = {settings['kappa']}", fontsize=9)
    phase.grid(True, alpha=0.3)
    phase.legend(fontsize=7)

    time_axes.plot(flow.t, flow.m, label=r"overlap $m$")
    time_axes.plot(flow.t, flow.u, label="LoRA scale u")
    time_axes.plot(flow.t, flow.u + settings["flow_mu"] * flow.m, label=r"$R = \mu + u m$ (student-teacher covariance)")
    time_axes.set_xlabel(r"$t = \eta \cdot$ steps")
    time_axes.set_title(f"flow from m0 = 1/sqrt({settings['d']}), u0 = 1/d^2", fontsize=9)
    time_axes.grid(True, alpha=0.3)
    time_axes.legend(fontsize=7)
    figure.suptitle(f"label change: student {student}, teacher {settings['teacher']}", fontsize=10)
    return figure


# ---------------------------------------------------------------------------
# Registry and public functions
# ---------------------------------------------------------------------------

_Compute = Callable[[Mapping[str, object]], tuple]
_Render = Callable[[Mapping[str, object], Mapping[str, object]], "Figure"]

_FIGURES: dict[str, tuple[str, _Compute, _Render]] = {
    "escape_rates": (
        "tau(mu) on a log scale; standard activations in the plain unit, He2 ... He6 in the hermite unit; singular mu dotted with m_c",
        _compute_escape_rates,
        _render_escape_rates,
    ),
    "trajectories": ("|m| and u * sign(m) against t: flow, reduced SGD and full SGD (mean and 5% to 95% band)", _compute_trajectories, _render_trajectories),
    "collapse": ("|m| against t / log d for several d, and flow escape time / ((1/2) log d) against tau", _compute_collapse, _render_collapse),
    "information_exponent": ("information exponent k* and normalised Hermite coefficients of several teachers", _compute_information_exponent, _render_information_exponent),
    "scaling": (
        "escape steps of the no-pre-training baseline against d, flow and reduced SGD, with fitted and predicted exponents",
        _compute_scaling,
        _render_scaling,
    ),
    "label_change": ("student He3, teacher He3^2: tau(mu), fixed points in the (u, m) plane, a flow trajectory", _compute_label_change, _render_label_change),
}


def make_figure(name: str, size: str = "full", command: str | None = None) -> ReportFigure:
    """Compute and render one figure of the full report.

    Parameters
    ----------
    name:
        One of :data:`FIGURE_NAMES`.
    size:
        ``"small"`` or ``"full"``; :data:`FIGURE_SETTINGS` gives the settings of each.
    command:
        What made the figure, printed in its footer and PNG metadata with the
        package version (default: ``lora_theory.full_report.make_figure(name, size)``).
    """
    if name not in _FIGURES:
        raise ParameterError(f"unknown figure {name!r}; use one of {', '.join(FIGURE_NAMES)}.")
    _check_size(size)
    description, compute, render = _FIGURES[name]
    settings = FIGURE_SETTINGS[name][size]
    command = command if command is not None else f"lora_theory.full_report.make_figure({name!r}, {size!r})"

    data, result = compute(settings)
    figure = render(data, settings)
    provenance = f"made by: {command} (lora-theory {__version__}), size {size}"
    png = _png(figure, provenance)
    return ReportFigure(name, size, settings, description, _NOTEBOOKS[name], result, data, figure, png)


def make_figures(
    size: str = "full",
    names: Sequence[str] = FIGURE_NAMES,
    command: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[ReportFigure]:
    """Compute every figure in ``names``, calling ``progress(index, total, name)`` before each."""
    _check_size(size)
    figures = []
    for index, name in enumerate(names):
        if progress is not None:
            progress(index, len(names), name)
        figures.append(make_figure(name, size, command))
    return figures


def _settings_text(settings: Mapping[str, object]) -> str:
    return ", ".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())


def _cell(text: str) -> str:
    # A bare "|" would end a Markdown table cell.
    return text.replace("|", "\\|")


def _summary(figures: Sequence[ReportFigure], command: str) -> str:
    sizes = sorted({figure.size for figure in figures})
    lines = [
        "# lora-theory full report",
        "",
        "Figures of the analysis notebooks (notebooks/ in the source tree), computed with",
        f"`{command}` (lora-theory {__version__}) at size {', '.join(sizes) or 'none'}.",
        "Time is t = eta * steps and samples = B * steps. The hermite unit divides the rates of a",
        "student He_k by k! * k. Hermite polynomials are the probabilists' He_k.",
        "",
        "## Results",
        "",
    ]
    lines += [f"- {figure.file_name}: {figure.result}" for figure in figures]
    lines += [
        "",
        "## Files",
        "",
        "| file | contents | notebook | made by | lora-theory version | size | settings |",
        "|---|---|---|---|---|---|---|",
    ]
    for figure in figures:
        lines.append(
            f"| {figure.file_name} | {_cell(figure.description)} | {figure.notebook} | `{command}` | {__version__} | {figure.size} | {_cell(_settings_text(figure.settings))} |"
        )
    lines.append(f"| {SUMMARY_FILE} | this summary | | `{command}` | {__version__} | {', '.join(sizes)} | |")
    return "\n".join(lines) + "\n"


def write_full_report(directory: str | os.PathLike, figures: Sequence[ReportFigure], command: str) -> list[Path]:
    """Write the PNG of every figure and ``summary.md`` into ``directory``.

    The folder is created if missing. Every file is rendered in memory first
    and written with :func:`lora_theory.outputs.atomic_write_files`, so a
    failure leaves no partly written file. ``command`` is recorded in the
    summary as the provenance of each file. Returns the paths written, the
    figures in order and the summary last.
    """
    folder = Path(directory)
    contents = {folder / figure.file_name: figure.png for figure in figures}
    contents[folder / SUMMARY_FILE] = _summary(figures, command).encode("utf-8")
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_files(contents)
