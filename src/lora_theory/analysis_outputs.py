"""Tables, CSV, JSON and figures of the fixed-points, search and phase-diagram commands.

Each command's result is held in a small container (:class:`FixedPointResult`,
:class:`SearchResult`, :class:`PhaseDiagramResult`) that carries the setting,
the time unit and the method in words. Every format states them: the text
table in its header lines, CSV in ``#`` comment lines before the column names,
and JSON in metadata keys next to ``"rows"``. Undefined values read
``undefined`` in tables, are empty CSV cells and ``null`` in JSON; no format
prints a bare ``inf`` or ``nan``. Figures are PNG bytes that carry the command
line and the package version in their footer and metadata.

Time is t = eta * steps (plain unit) unless a result states the hermite unit,
which divides the rates of a student He_k by k! * k.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from . import __version__
from .fixed_points import FixedPoint
from .outputs import _figure_bytes, _finite_or_none, _new_figure
from .pretraining import PhaseDiagram

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "FixedPointResult",
    "PhaseDiagramResult",
    "SearchResult",
    "format_fixed_points",
    "format_phase_diagram",
    "format_search",
    "render_phase_diagram_figure",
    "render_phase_portrait",
    "render_search_figure",
]

FORMATS = ("table", "csv", "json")


# ---------------------------------------------------------------------------
# Shared rendering
# ---------------------------------------------------------------------------


def _cell(value) -> str:
    if isinstance(value, str):
        return value
    number = _finite_or_none(value)
    # Adding 0.0 turns -0.0 into 0.0, so that the search point does not print as "-0".
    return "undefined" if number is None else f"{number + 0.0:.6g}"


def _csv_cell(value) -> str:
    if isinstance(value, str):
        return value
    number = _finite_or_none(value)
    return "" if number is None else repr(number)


def _json_value(value):
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, Mapping):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(item) for item in value]
    return _finite_or_none(value)


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max([len(name)] + [len(row[index]) for row in rows]) for index, name in enumerate(header)]
    lines = ["  ".join(name.rjust(width) for name, width in zip(header, widths))]
    for row in rows:
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths)).rstrip())
    return lines


def _csv_text(comments: Sequence[str], header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return "".join(f"# {line}\n" for line in comments) + buffer.getvalue()


def _json_text(document: Mapping) -> str:
    # allow_nan=False guarantees that no NaN or Infinity token reaches the output.
    return json.dumps(_json_value(document), indent=2, allow_nan=False) + "\n"


def _provenance(command: str) -> str:
    return f"made by: {command} (lora-theory {__version__})"


def _finish_figure(figure, command: str) -> bytes:
    provenance = _provenance(command)
    figure.text(0.01, 0.005, provenance, fontsize=6, color="gray", ha="left", va="bottom")
    return _figure_bytes(figure, provenance)


# ---------------------------------------------------------------------------
# fixed-points
# ---------------------------------------------------------------------------

FIXED_POINT_COLUMNS = (
    "u", "m", "loss",
    "eigenvalue_1_real", "eigenvalue_1_imag", "eigenvalue_2_real", "eigenvalue_2_imag",
    "stability", "role", "jacobian_method",
)

# Marker, colour and fill of each stability class in the phase portrait.
_STABILITY_STYLES = {
    "stable": ("o", "tab:blue", True),
    "saddle": ("X", "tab:orange", True),
    "unstable": ("o", "tab:red", False),
    "non-hyperbolic": ("D", "tab:purple", False),
}


@dataclass(frozen=True)
class FixedPointResult:
    """Fixed points of the (u, m) flow with the setting and the method that found them.

    ``settings`` maps ``student``, ``teacher``, ``mu``, ``kappa`` and
    ``u_max`` to their values; ``method`` describes the search in one line.
    Eigenvalues are rates in the plain time unit t = eta * steps.
    """

    points: tuple[FixedPoint, ...]
    settings: Mapping[str, object]
    method: str
    search: Mapping[str, object]


def _sorted_eigenvalues(point: FixedPoint) -> list[complex]:
    return sorted((complex(value) for value in point.eigenvalues), key=lambda value: (value.real, value.imag))


def _format_eigenvalue(value: complex) -> str:
    if value.imag == 0:
        return f"{value.real:.6g}"
    sign = "+" if value.imag > 0 else "-"
    return f"{value.real:.6g}{sign}{abs(value.imag):.6g}i"


def _fixed_point_header(result: FixedPointResult) -> list[str]:
    settings = result.settings
    return [
        f"fixed points of the (u, m) flow: student {settings['student']}, teacher {settings['teacher']}, "
        f"mu = {settings['mu']:g}, kappa = {settings['kappa']:g}, |u| <= {settings['u_max']:g}, m in [-1, 1]",
        "time unit: plain (t = eta * steps); eigenvalues of the Jacobian of (du/dt, dm/dt) are rates in 1/t",
        f"method: {result.method}",
        "stability: stable (all real parts < 0), saddle, unstable (all > 0), non-hyperbolic (a real part near 0); "
        "role: search point (u = m = 0), global minimum (loss 0), spurious attractor (stable, loss > 0), other",
    ]


def _fixed_point_notes(result: FixedPointResult) -> list[str]:
    # A vanishing eigenvalue often means a curve of fixed points (for example u = 0 at a zero of A),
    # which the search returns as separate samples.
    if any(point.stability == "non-hyperbolic" for point in result.points):
        return ["note: non-hyperbolic points may lie on a curve of fixed points, which this list samples"]
    return []


def _fixed_points_table(result: FixedPointResult) -> str:
    header = ("u", "m", "loss", "eigenvalues", "stability", "role")
    rows = []
    for point in result.points:
        eigenvalues = ", ".join(_format_eigenvalue(value) for value in _sorted_eigenvalues(point))
        if point.jacobian_method != "symbolic":
            eigenvalues += f" ({point.jacobian_method})"
        rows.append((_cell(point.u), _cell(point.m), _cell(point.loss), eigenvalues, point.stability, point.role))
    lines = _fixed_point_header(result) + [""] + _text_table(header, rows)
    if not result.points:
        lines.append("no fixed point found")
    lines += _fixed_point_notes(result)
    return "\n".join(lines) + "\n"


def _fixed_points_csv(result: FixedPointResult, command: str) -> str:
    rows = []
    for point in result.points:
        eigenvalues = _sorted_eigenvalues(point)
        numbers = [point.u, point.m, point.loss, eigenvalues[0].real, eigenvalues[0].imag, eigenvalues[1].real, eigenvalues[1].imag]
        rows.append([_csv_cell(value) for value in numbers] + [point.stability, point.role, point.jacobian_method])
    comments = _fixed_point_header(result) + _fixed_point_notes(result) + [_provenance(command)]
    return _csv_text(comments, FIXED_POINT_COLUMNS, rows)


def _fixed_points_json(result: FixedPointResult, command: str) -> str:
    document = dict(result.settings)
    document.update(
        time_unit="plain",
        time_unit_description="plain (t = eta * steps); eigenvalues are rates in 1/t",
        method=result.method,
        search=dict(result.search),
        rows=[
            {
                "u": point.u,
                "m": point.m,
                "loss": point.loss,
                "eigenvalues": [{"real": value.real, "imag": value.imag} for value in _sorted_eigenvalues(point)],
                "stability": point.stability,
                "role": point.role,
                "jacobian_method": point.jacobian_method,
            }
            for point in result.points
        ],
        made_by=command,
        version=__version__,
    )
    return _json_text(document)


def format_fixed_points(result: FixedPointResult, output_format: str, command: str) -> str:
    """Render fixed points as ``table``, ``csv`` or ``json`` text."""
    if output_format == "table":
        return _fixed_points_table(result)
    if output_format == "csv":
        return _fixed_points_csv(result, command)
    return _fixed_points_json(result, command)


def render_phase_portrait(result: FixedPointResult, velocity, loss, command: str) -> bytes:
    """Render the (u, m) phase portrait as PNG bytes: streamlines, loss contours, fixed points by stability.

    ``velocity(u, m)`` returns ``(du/dt, dm/dt)`` and ``loss(u, m)`` the
    population loss, both broadcasting over arrays.
    """
    u_max = float(result.settings["u_max"])
    u_values = np.linspace(-u_max, u_max, 161)
    m_values = np.linspace(-1.0, 1.0, 121)
    uu, mm = np.meshgrid(u_values, m_values)
    with np.errstate(all="ignore"):
        du, dm = (np.broadcast_to(np.asarray(component, dtype=float), uu.shape) for component in velocity(uu, mm))
        surface = np.broadcast_to(np.asarray(loss(uu, mm), dtype=float), uu.shape)

    figure = _new_figure(7.5, 5.0)
    axes = figure.add_subplot()

    # Loss contours on a log scale, because the loss spans decades between minima and the search point.
    finite = np.isfinite(surface) & (surface > 0)
    if np.count_nonzero(finite) > 1 and np.nanmax(surface[finite]) > np.nanmin(surface[finite]):
        levels = np.geomspace(np.nanmin(surface[finite]), np.nanmax(surface[finite]), 12)
        axes.contour(uu, mm, np.where(finite, surface, np.nan), levels=levels, colors="0.8", linewidths=0.6)
        axes.plot([], [], color="0.8", linewidth=0.6, label="loss level sets (12, log-spaced)")

    # Streamlines coloured by log10 of the speed, which varies by orders of magnitude.
    speed = np.hypot(du, dm)
    valid = np.isfinite(du) & np.isfinite(dm)
    if np.any(valid & (speed > 0)):
        colour = np.log10(np.where(valid & (speed > 0), speed, np.nan))
        # Clip the colour range to the 2% and 98% quantiles: the speed vanishes at every fixed point.
        low, high = np.nanquantile(colour, [0.02, 0.98])
        stream = axes.streamplot(
            uu, mm, np.where(valid, du, 0.0), np.where(valid, dm, 0.0),
            color=np.clip(np.where(np.isfinite(colour), colour, low), low, high), cmap="viridis",
            density=1.2, linewidth=0.7, arrowsize=0.8,
        )
        figure.colorbar(
            stream.lines, ax=axes,
            label=r"$\log_{10}$ speed $\|(du/dt, dm/dt)\|$ (per unit t = eta * steps)",
        )

    for stability, (marker, colour, filled) in _STABILITY_STYLES.items():
        chosen = [point for point in result.points if point.stability == stability]
        if not chosen:
            continue
        axes.scatter(
            [point.u for point in chosen], [point.m for point in chosen], marker=marker, s=70, zorder=3,
            facecolors=colour if filled else "white", edgecolors=colour, linewidths=1.5, label=f"{stability} fixed point",
            clip_on=False,
        )
    # Labels point away from u = 0 and into the square, so that neighbouring points keep theirs apart.
    for point in result.points:
        if point.role != "other":
            offset = (-6 if point.u < 0 else 6, -12 if point.m > 0 else 6)
            axes.annotate(
                point.role, (point.u, point.m), textcoords="offset points", xytext=offset, fontsize=7,
                ha="right" if point.u < 0 else "left",
            )

    settings = result.settings
    axes.set_xlim(-u_max, u_max)
    axes.set_ylim(-1.0, 1.0)
    axes.set_xlabel("LoRA scale $u$")
    axes.set_ylabel(r"overlap $m = \langle v, w^* \rangle$")
    axes.set_title(
        f"student {settings['student']}, teacher {settings['teacher']}, "
        rf"$\mu$ = {settings['mu']:g}, $\kappa$ = {settings['kappa']:g}; time unit plain (t = eta * steps)",
        fontsize=9,
    )
    # Below the axes, because every corner of the square can hold a fixed point or its label.
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, frameon=False)
    return _finish_figure(figure, command)


# ---------------------------------------------------------------------------
# search
# ---------------------------------------------------------------------------

SEARCH_COLUMNS = ("m0", "log_m_exit_over_m0", "t_search", "t_fit", "t_linear")


@dataclass(frozen=True)
class SearchResult:
    """Search-phase lengths from the flow, their fit and the linear theory.

    Times are in the plain unit t = eta * steps. Arrays have the shape
    ``(n,)`` of ``m0``; ``t_search`` is nan where the flow did not escape.
    ``t_fit = slope * log(m_exit / m0) + offset`` is the least-squares fit over
    the escaped runs and ``t_linear = tau * log(m_exit / m0) + offset_linear``
    the linear theory, with ``offset_linear = tau * log(1 + (lambda_plus / A)^2)``.
    """

    settings: Mapping[str, object]
    method: str
    tolerances: Mapping[str, object]
    m0: np.ndarray
    t_search: np.ndarray
    slope: float
    offset: float
    tau: float
    offset_linear: float
    A: float
    lambda_plus: float

    @property
    def log_ratio(self) -> np.ndarray:
        """``log(m_exit / m0)``."""
        return np.log(float(self.settings["m_exit"]) / self.m0)

    @property
    def t_fit(self) -> np.ndarray:
        return self.slope * self.log_ratio + self.offset

    @property
    def t_linear(self) -> np.ndarray:
        return self.tau * self.log_ratio + self.offset_linear

    @property
    def slope_relative_error(self) -> float:
        """``|slope / tau - 1|``, the relative agreement of the fitted slope with the linear theory."""
        return abs(self.slope / self.tau - 1)

    @property
    def escaped(self) -> int:
        return int(np.count_nonzero(np.isfinite(self.t_search)))


def _search_header(result: SearchResult) -> list[str]:
    settings = result.settings
    return [
        f"search phase: student {settings['student']}, teacher {settings['teacher']}, mu = {settings['mu']:g}, "
        f"kappa = {settings['kappa']:g}, start (u, m) = (0, m0), escape when |m| reaches m_exit = {settings['m_exit']:g}",
        "time unit: plain (t = eta * steps)",
        f"method: {result.method}",
        "columns: t_search from the flow; t_fit = slope * log(m_exit / m0) + offset (least squares over the escaped m0); "
        "t_linear = tau * log(m_exit / m0) + tau * log(1 + (lambda_plus / A)^2) (linear theory)",
    ]


def _search_summary(result: SearchResult) -> list[str]:
    return [
        f"fit: slope = {result.slope:.10g}, offset = {result.offset:.6g} (over {result.escaped} of {result.m0.size} m0)",
        f"linear theory: tau = {result.tau:.10g}, offset = {result.offset_linear:.6g} "
        f"(A = {result.A:.6g}, lambda_plus = {result.lambda_plus:.6g})",
        f"agreement: |slope / tau - 1| = {result.slope_relative_error:.3g}",
    ]


def _search_rows(result: SearchResult) -> list[tuple[float, ...]]:
    return list(zip(result.m0, result.log_ratio, result.t_search, result.t_fit, result.t_linear))


def _search_table(result: SearchResult) -> str:
    rows = [tuple(_cell(value) for value in row) for row in _search_rows(result)]
    lines = _search_header(result) + [""] + _text_table(SEARCH_COLUMNS, rows) + [""] + _search_summary(result)
    return "\n".join(lines) + "\n"


def _search_csv(result: SearchResult, command: str) -> str:
    rows = [[_csv_cell(value) for value in row] for row in _search_rows(result)]
    comments = _search_header(result) + _search_summary(result) + [_provenance(command)]
    return _csv_text(comments, SEARCH_COLUMNS, rows)


def _search_json(result: SearchResult, command: str) -> str:
    document = dict(result.settings)
    document.update(
        time_unit="plain",
        time_unit_description="plain (t = eta * steps)",
        method=result.method,
        tolerances=dict(result.tolerances),
        rows=[dict(zip(SEARCH_COLUMNS, row)) for row in _search_rows(result)],
        fit={"slope": result.slope, "offset": result.offset, "escaped": result.escaped},
        linear_theory={"tau": result.tau, "offset": result.offset_linear, "A": result.A, "lambda_plus": result.lambda_plus},
        slope_relative_error=result.slope_relative_error,
        made_by=command,
        version=__version__,
    )
    return _json_text(document)


def format_search(result: SearchResult, output_format: str, command: str) -> str:
    """Render a search-phase result as ``table``, ``csv`` or ``json`` text."""
    if output_format == "table":
        return _search_table(result)
    if output_format == "csv":
        return _search_csv(result, command)
    return _search_json(result, command)


def render_search_figure(result: SearchResult, command: str) -> bytes:
    """Render t_search against log(1/m0) with the linear theory and the fitted line, as PNG bytes."""
    figure = _new_figure(7.0, 4.5)
    axes = figure.add_subplot()
    x = np.log(1 / result.m0)
    order = np.argsort(x)
    escaped = np.isfinite(result.t_search)

    axes.plot(x[escaped], result.t_search[escaped], "o", label="flow: $t_{search}$")
    axes.plot(
        x[order], result.t_linear[order], "-", color="black", linewidth=1.0,
        label=rf"linear theory: $\tau \log(m_{{exit}}/m_0) + C$, $\tau$ = {result.tau:.6g}, C = {result.offset_linear:.4g}",
    )
    axes.plot(
        x[order], result.t_fit[order], "--", color="tab:red", linewidth=1.0,
        label=f"fit: slope {result.slope:.6g}, offset {result.offset:.4g}",
    )
    settings = result.settings
    axes.set_xlabel(r"$\log(1 / m_0)$")
    axes.set_ylabel(r"search-phase length $t$ (t = $\eta \cdot$ steps)")
    axes.set_title(
        f"student {settings['student']}, teacher {settings['teacher']}, " rf"$\mu$ = {settings['mu']:g}, "
        rf"$\kappa$ = {settings['kappa']:g}, $m_{{exit}}$ = {settings['m_exit']:g}; "
        f"|slope / tau - 1| = {result.slope_relative_error:.2g}",
        fontsize=9,
    )
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _finish_figure(figure, command)


# ---------------------------------------------------------------------------
# phase-diagram
# ---------------------------------------------------------------------------

PHASE_DIAGRAM_COLUMNS = ("k", "mu", "tau", "t_exit", "baseline_time", "verdict")


@dataclass(frozen=True)
class PhaseDiagramResult:
    """tau over (k, mu) for He_k learning He_k, with the comparison against no pre-training."""

    diagram: PhaseDiagram
    time_unit_description: str
    method: str


def _phase_header(result: PhaseDiagramResult) -> list[str]:
    diagram = result.diagram
    comparison = diagram.comparison
    lines = [
        f"phase diagram: student = teacher = He_k for k = 1 ... {int(diagram.k[-1])}, "
        f"{diagram.mu.size} values of mu in [{diagram.mu.min():.6g}, {diagram.mu.max():.6g}]",
        f"time unit: {result.time_unit_description}; tau, t_exit and baseline_time share it",
        f"method: {result.method}",
    ]
    if comparison is not None:
        lines.append(
            f"comparison: d = {comparison.d:g} (m0 = 1/sqrt(d) = {1 / np.sqrt(comparison.d):.6g}), "
            f"kappa = {comparison.kappa:g} for the baseline, m_exit = {comparison.m_exit:g}; "
            "verdict helps where t_exit < baseline_time, hurts where t_exit >= baseline_time or A(mu) = 0"
        )
    return lines


def _phase_degree_lines(result: PhaseDiagramResult) -> list[str]:
    diagram = result.diagram
    comparison = diagram.comparison
    lines = []
    for row, degree in enumerate(diagram.k):
        singular = ", ".join(f"{value:.10g}" for value in diagram.singular[int(degree)]) or "none"
        text = f"k = {int(degree)}: singular mu (A = 0) {singular}"
        if comparison is not None:
            boundary = ", ".join(f"{value:.10g}" for value in comparison.boundary[int(degree)]) or "none"
            text += f"; baseline_time {_cell(comparison.baseline_time[row])}; helps/hurts boundary mu {boundary}"
        lines.append(text)
    return lines


def _phase_rows(result: PhaseDiagramResult) -> list[tuple]:
    diagram = result.diagram
    comparison = diagram.comparison
    rows = []
    for row, degree in enumerate(diagram.k):
        for column, mu in enumerate(diagram.mu):
            if comparison is None:
                extra = (np.nan, np.nan, "undefined")
            else:
                extra = (comparison.exit_time[row, column], comparison.baseline_time[row], str(comparison.verdict[row, column]))
            rows.append((int(degree), float(mu), diagram.tau[row, column]) + extra)
    return rows


def _phase_table(result: PhaseDiagramResult) -> str:
    rows = [tuple(str(value) if isinstance(value, int) else _cell(value) for value in row) for row in _phase_rows(result)]
    lines = _phase_header(result) + [""] + _text_table(PHASE_DIAGRAM_COLUMNS, rows) + [""] + _phase_degree_lines(result)
    return "\n".join(lines) + "\n"


def _phase_csv(result: PhaseDiagramResult, command: str) -> str:
    rows = [[str(value) if isinstance(value, int) else _csv_cell(value) for value in row] for row in _phase_rows(result)]
    comments = _phase_header(result) + _phase_degree_lines(result) + [_provenance(command)]
    return _csv_text(comments, PHASE_DIAGRAM_COLUMNS, rows)


def _phase_json(result: PhaseDiagramResult, command: str) -> str:
    diagram = result.diagram
    comparison = diagram.comparison
    degrees = []
    for row, degree in enumerate(diagram.k):
        entry = {"k": int(degree), "singular_mu": [float(value) for value in diagram.singular[int(degree)]]}
        if comparison is not None:
            entry["baseline_time"] = comparison.baseline_time[row]
            entry["boundary_mu"] = list(comparison.boundary[int(degree)])
        degrees.append(entry)
    document = {
        "k_max": int(diagram.k[-1]),
        "time_unit": diagram.time_unit,
        "time_unit_description": result.time_unit_description,
        "method": result.method,
        "comparison": None if comparison is None else {
            "d": comparison.d,
            "m0": 1 / np.sqrt(comparison.d),
            "kappa": comparison.kappa,
            "m_exit": comparison.m_exit,
        },
        "rows": [dict(zip(PHASE_DIAGRAM_COLUMNS, row)) for row in _phase_rows(result)],
        "degrees": degrees,
        "made_by": command,
        "version": __version__,
    }
    return _json_text(document)


def format_phase_diagram(result: PhaseDiagramResult, output_format: str, command: str) -> str:
    """Render a phase diagram as ``table``, ``csv`` (one row per (k, mu)) or ``json`` text."""
    if output_format == "table":
        return _phase_table(result)
    if output_format == "csv":
        return _phase_csv(result, command)
    return _phase_json(result, command)


def _draw_hurting_intervals(axes: "Axes", diagram: PhaseDiagram) -> None:
    from matplotlib import patheffects

    # A white bar with a black outline stays visible on both ends of the colour map.
    outline = [patheffects.withStroke(linewidth=3.0, foreground="black")]
    comparison = diagram.comparison
    labelled = False
    for row, degree in enumerate(diagram.k):
        hurts = comparison.verdict[row] == "hurts"
        # One horizontal bar per run of consecutive hurting grid points, just above the row centre.
        start = None
        for column in range(diagram.mu.size + 1):
            inside = column < diagram.mu.size and hurts[column]
            if inside and start is None:
                start = column
            if not inside and start is not None:
                axes.plot(
                    [diagram.mu[start], diagram.mu[column - 1]], [degree + 0.3, degree + 0.3], color="white",
                    linewidth=1.5, solid_capstyle="butt", label=None if labelled else "pre-training hurts",
                    path_effects=outline,
                )
                labelled = True
                start = None


def render_phase_diagram_figure(result: PhaseDiagramResult, command: str) -> bytes:
    """Render tau over (mu, k) as a heat map on a log colour scale, as PNG bytes.

    Singular mu_s(k) are white circles; the helps/hurts boundaries are black
    vertical bars and the grid points where pre-training hurts are underlined
    by a black bar above each row. Undefined cells are left blank.
    """
    from matplotlib.colors import LogNorm

    diagram = result.diagram
    figure = _new_figure(8.0, 5.5)
    axes = figure.add_subplot()

    tau = np.where(np.isfinite(diagram.tau) & (diagram.tau > 0), diagram.tau, np.nan)
    if np.any(np.isfinite(tau)):
        norm = LogNorm(vmin=np.nanmin(tau), vmax=np.nanmax(tau)) if np.nanmax(tau) > np.nanmin(tau) else None
        mesh = axes.pcolormesh(diagram.mu, diagram.k, np.ma.masked_invalid(tau), shading="nearest", cmap="magma", norm=norm)
        figure.colorbar(mesh, ax=axes, label=rf"escape time $\tau$ ({diagram.time_unit} time unit, log scale)")

    singular_mu = [value for degree in diagram.k for value in diagram.singular[int(degree)]]
    singular_k = [int(degree) for degree in diagram.k for _ in diagram.singular[int(degree)]]
    if singular_mu:
        axes.plot(singular_mu, singular_k, "o", markerfacecolor="white", markeredgecolor="black", markersize=6,
                  linestyle="none", label=r"singular $\mu_s(k)$: $A = 0$")

    comparison = diagram.comparison
    if comparison is not None:
        boundary_mu = [value for degree in diagram.k for value in comparison.boundary[int(degree)]]
        boundary_k = [int(degree) for degree in diagram.k for _ in comparison.boundary[int(degree)]]
        if boundary_mu:
            axes.plot(boundary_mu, boundary_k, "|", color="cyan", markersize=14, markeredgewidth=2.0,
                      linestyle="none", label="helps/hurts boundary")
        _draw_hurting_intervals(axes, diagram)

    axes.set_xlabel(r"pre-training strength $\mu$")
    axes.set_ylabel(r"Hermite degree $k$ (student = teacher = He$_k$)")
    axes.set_yticks(diagram.k)
    axes.set_ylim(diagram.k[0] - 0.5, diagram.k[-1] + 0.5)
    title = f"tau(mu, k), {result.time_unit_description}"
    if comparison is not None:
        title += f"\nversus no pre-training at d = {comparison.d:g}, kappa = {comparison.kappa:g}, m_exit = {comparison.m_exit:g}"
    axes.set_title(title, fontsize=8)
    # Below the axes, because the heat map fills the whole square.
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    return _finish_figure(figure, command)
