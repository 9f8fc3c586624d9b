"""Tables, CSV, JSON, figures and the default report of the command line.

Most of this module renders :class:`lora_theory.rates.EscapeRates` results, which
hold for each ``mu`` of a grid the search-phase rates of the aligned rank-1
LoRA model: ``A(mu)``, ``B(mu)``, the unstable eigenvalue
``lambda_plus = (B + sqrt(B^2 + 4 A^2)) / 2`` and the escape time
``tau = 1 / lambda_plus``. Entries are ``nan`` where a rate is undefined (for
example ``A(mu) = 0``), and every format shows them as an explicit gap: the
word ``undefined`` in tables, an empty cell in CSV, ``null`` in JSON, a break
in a plotted curve. None of them prints a bare ``inf`` or ``nan``.

The ``simulate`` and ``escape`` commands render their own containers,
:class:`TrajectoryTable` and :class:`EscapeTable`, with the same rules for
undefined values.

Files are written atomically: the bytes go to a temporary file in the target
folder, which then replaces the target with :func:`os.replace`. A failure
leaves the previous file, or no file, but never a partial one.

Figures use Matplotlib's Agg backend through :class:`matplotlib.figure.Figure`
and never touch :mod:`matplotlib.pyplot` state.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from math import factorial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import numpy as np

from . import __version__
from .activations import parse_activation
from .grids import parse_grid
from .rates import SINGULAR_TOLERANCE, EscapeRates, escape_rates

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .singular import SingularPoint

__all__ = [
    "atomic_write_bytes",
    "atomic_write_files",
    "atomic_write_text",
    "describe_tau_method",
    "describe_time_unit",
    "format_csv",
    "format_json",
    "format_table",
    "render_tau_figure",
    "REPORT_ACTIVATIONS",
    "REPORT_MU_GRID",
    "ReportEntry",
    "compute_report",
    "write_report",
    "ESCAPE_COLUMNS",
    "EscapeRow",
    "EscapeTable",
    "format_escape_csv",
    "format_escape_json",
    "format_escape_table",
    "TRAJECTORY_QUANTILES",
    "TrajectoryTable",
    "format_trajectory_csv",
    "quantile_column",
    "render_trajectory_figure",
]

#: Columns of every per-mu row, in output order.
RATE_COLUMNS = ("mu", "A", "B", "lambda_plus", "tau")

#: Activations of the default report: (spec, time unit, figure panel).
#: The student equals the teacher in each.
REPORT_ACTIVATIONS: tuple[tuple[str, str, str], ...] = (
    ("x", "plain", "standard"),
    ("erf", "plain", "standard"),
    ("relu", "plain", "standard"),
    ("sigmoid", "plain", "standard"),
    ("He2", "hermite", "hermite"),
    ("He3", "hermite", "hermite"),
    ("He5", "hermite", "hermite"),
    ("He6", "hermite", "hermite"),
)

#: The mu grid of the default report, in the syntax of :func:`parse_grid`.
REPORT_MU_GRID = "0.02:0.99:200"

#: File names that :func:`write_report` creates inside its folder.
REPORT_CSV = "tau.csv"
REPORT_FIGURE = "tau.png"
REPORT_SUMMARY = "summary.md"


# ---------------------------------------------------------------------------
# Atomic file writing
# ---------------------------------------------------------------------------


def _default_file_mode() -> int:
    # mkstemp creates files readable by the owner only; give the output the
    # mode a plain open() would have given it under the current umask.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_files(contents: Mapping[str | os.PathLike, bytes]) -> list[Path]:
    """Write several files so that each is either complete or untouched.

    Every file is first written in full to a temporary file in its target
    folder. Only when all of them are written do they replace their targets,
    one :func:`os.replace` each. If writing any temporary file fails, all
    temporary files are removed and no target changes. If a rename fails,
    the targets replaced before it are restored from hard links of their
    old contents (or removed where they did not exist), so the call changes
    all targets or none.

    Parent folders must exist. Returns the target paths in the order given.

    Raises
    ------
    OSError
        When a target is a folder, a temporary file cannot be created or
        written, or a rename fails. ``filename`` is the target path.
    """
    targets = [Path(path) for path in contents]
    for target in targets:
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", str(target))
    temporary: list[Path] = []
    backups: dict[Path, Path | None] = {}
    mode = _default_file_mode()

    try:
        # Phase 1: write every temporary file completely, synced to disk.
        for target, data in zip(targets, contents.values()):
            try:
                handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
                temporary.append(Path(name))
                with os.fdopen(handle, "wb") as stream:
                    stream.write(data)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.chmod(name, mode)
            except OSError as error:
                # Report the target, not the temporary name the caller never chose.
                raise OSError(error.errno, error.strerror, str(target)) from error

        # Phase 2: keep a hard link to each old target, then move the new files into place.
        for target, name in zip(targets, list(temporary)):
            backups[target] = _link_backup(target)
            try:
                os.replace(name, target)
            except OSError as error:
                _restore(backups, failed=target)
                raise OSError(error.errno, error.strerror, str(target)) from error
            temporary.remove(name)
    finally:
        for leftover in temporary:
            leftover.unlink(missing_ok=True)
        for backup in backups.values():
            if backup is not None:
                backup.unlink(missing_ok=True)

    return targets


def _link_backup(target: Path) -> Path | None:
    """Return a hard link to the current ``target`` beside it, or None when there is no file."""
    if not target.is_file():
        return None
    backup = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.old"
    try:
        os.link(target, backup)
    except OSError:
        # No hard links on this file system: copy, keeping the old contents.
        shutil.copy2(target, backup)
    return backup


def _restore(backups: dict[Path, Path | None], failed: Path) -> None:
    """Put back the old contents of every target replaced before ``failed``."""
    for target, backup in backups.items():
        if target == failed:
            # The failed rename left this target as it was.
            if backup is not None:
                backup.unlink(missing_ok=True)
            continue
        if backup is None:
            target.unlink(missing_ok=True)
        else:
            os.replace(backup, target)
    backups.clear()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and :func:`os.replace`."""
    return atomic_write_files({path: data})[0]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------
# Values and labels
# ---------------------------------------------------------------------------


def _finite_or_none(value) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _hermite_degree(spec: str) -> int | None:
    return parse_activation(spec).hermite_degree


def describe_time_unit(time_unit: str, student: str) -> str:
    """Describe a time unit in words, for table headers, figures and summaries.

    ``plain`` is t = eta * steps. ``hermite`` divides every rate by k! * k for
    a student that is exactly He_k, so tau is k! * k times its plain value.
    """
    if time_unit == "plain":
        return "plain (t = eta * steps)"
    if time_unit == "hermite":
        degree = _hermite_degree(student)
        if degree is None:
            return "hermite (rates divided by k! * k for a student He_k)"
        return f"hermite (rates divided by {degree}! * {degree} = {factorial(degree) * degree}, so tau is that many times its plain value)"
    return time_unit


def _format_number(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.6g}"


def _format_singular(values: Iterable[float]) -> str:
    return ", ".join(f"{value:.10g}" for value in values)


def _grid_span(mu: np.ndarray) -> str:
    return f"[{float(np.min(mu)):.6g}, {float(np.max(mu)):.6g}]"


def _rows(rates: EscapeRates) -> list[dict[str, float | None]]:
    # Python floats, and None for any value that is not finite.
    return [{column: _finite_or_none(row.get(column)) for column in RATE_COLUMNS} for row in rates.rows()]


def describe_tau_method(rates: EscapeRates) -> str:
    """Describe how the tau command obtained its rates, for table headers and JSON."""
    source = "closed forms" if rates.exact else "numerical Gaussian quadrature"
    return (
        f"linear theory at (u, m) = (0, 0): A(mu) and B(mu) from {source}, lambda_plus = (B + sqrt(B^2 + 4 A^2)) / 2, "
        "tau = 1 / lambda_plus; zeros of A(mu) located to 1e-10"
    )


def _singular_fields(point: "SingularPoint") -> dict[str, float | str | None]:
    # The keys of one entry of "singular_points" in the JSON output of the tau command.
    return {
        "mu": float(point.mu),
        "tau_prefactor": _finite_or_none(point.tau_prefactor),
        "critical_alignment": _finite_or_none(point.critical_alignment),
        "A_slope": _finite_or_none(point.A_slope),
        "B": _finite_or_none(point.B),
        "growth_curvature": _finite_or_none(point.growth_curvature),
        "description": point.describe(),
    }


def _singular_law(point: "SingularPoint") -> str:
    """Describe the divergence law and m_c of a singular point, short enough for a note cell."""
    if point.tau_prefactor is not None:
        law = f"tau ~ {point.tau_prefactor:.6g} (mu - mu_s)^-2"
    elif point.B > 0:
        law = "B(mu_s) > 0, so tau stays finite but m does not move at linear order"
    else:
        law = "no divergence law (B(mu_s) or dA/dmu(mu_s) is zero or undefined)"
    if point.critical_alignment is not None:
        alignment = f"m_c = {point.critical_alignment:.6g}"
    elif not math.isfinite(point.growth_curvature):
        alignment = "m_c unknown (growth curvature undefined at a kink)"
    else:
        alignment = "no m_c in (0, 1]"
    return f"{law}, {alignment}"


def _notes_with_singular(rates: EscapeRates, singular_points: Sequence["SingularPoint"]) -> list[str]:
    # A row that sits on a singular mu gets the divergence law and m_c after its reason.
    notes = []
    for value, note in zip(rates.mu, rates.notes):
        text = note or ""
        for point in singular_points:
            if abs(float(value) - point.mu) <= SINGULAR_TOLERANCE:
                text = f"{text}; {_singular_law(point)}" if text else _singular_law(point)
        notes.append(text)
    return notes


# ---------------------------------------------------------------------------
# Text formats
# ---------------------------------------------------------------------------


def format_table(rates: EscapeRates, singular_points: Sequence["SingularPoint"] = ()) -> str:
    """Render a fixed-width text table with a header naming specs, time unit and method.

    Undefined entries read ``undefined`` and the last column gives the reason.
    A closing line lists the singular mu (zeros of A) inside the grid's range,
    followed by one line per entry of ``singular_points`` with the divergence
    law of tau and the critical alignment m_c.
    """
    header = RATE_COLUMNS
    body = []
    for row, note in zip(_rows(rates), _notes_with_singular(rates, singular_points)):
        cells = [_format_number(row[column]) for column in RATE_COLUMNS]
        body.append((cells, note))

    widths = [max([len(name)] + [len(cells[index]) for cells, _ in body]) for index, name in enumerate(header)]
    lines = [
        f"escape rates: student {rates.student}, teacher {rates.teacher}",
        f"time unit: {describe_time_unit(rates.time_unit, rates.student)}",
        f"method: {describe_tau_method(rates)}",
        "",
        "  ".join(name.rjust(width) for name, width in zip(header, widths)) + "  note",
    ]
    for cells, note in body:
        lines.append(("  ".join(cell.rjust(width) for cell, width in zip(cells, widths)) + "  " + note).rstrip())

    span = _grid_span(rates.mu)
    if rates.singular_mu:
        lines.append("")
        lines.append(f"singular mu (A(mu) = 0, tau diverges) in {span}: {_format_singular(rates.singular_mu)}")
        for point in singular_points:
            lines.append(f"  {point.describe()} (time unit {point.time_unit})")
    else:
        lines.append("")
        lines.append(f"singular mu (A(mu) = 0) in {span}: none")
    return "\n".join(lines) + "\n"


def _comment_block(lines: Iterable[str]) -> str:
    # Each line becomes a "# " comment, the convention of every CSV of the command line.
    return "".join(f"# {line}\n" for line in lines)


def _provenance_line(command: str | None) -> str:
    if command is None:
        return f"made by: lora-theory {__version__}"
    return f"made by: {command} (lora-theory {__version__})"


def _tau_comment_lines(rates: EscapeRates, singular_points: Sequence["SingularPoint"]) -> list[str]:
    # The header lines of the table, with the singular mu moved before the rows.
    lines = [
        f"escape rates: student {rates.student}, teacher {rates.teacher}",
        f"time unit: {describe_time_unit(rates.time_unit, rates.student)}; A, B and lambda_plus are rates per unit of time, tau = 1 / lambda_plus is in that unit",
        f"method: {describe_tau_method(rates)}",
    ]
    span = _grid_span(rates.mu)
    if rates.singular_mu:
        lines.append(f"singular mu (A(mu) = 0, tau diverges) in {span}: {_format_singular(rates.singular_mu)}")
        for point in singular_points:
            lines.append(f"singular point: {point.describe()} (time unit {point.time_unit})")
    else:
        lines.append(f"singular mu (A(mu) = 0) in {span}: none")
    lines.append("columns: undefined values are empty cells and note gives the reason")
    return lines


def format_csv(rates: EscapeRates, singular_points: Sequence["SingularPoint"] = (), command: str | None = None) -> str:
    """Render CSV with columns ``mu, A, B, lambda_plus, tau, note`` after ``#`` comment lines.

    The comment lines state the student and teacher, the time unit and its
    meaning, the method, every singular mu of the grid's range (also those
    between grid points) with the divergence law ``tau ~ prefactor (mu -
    mu_s)^-2`` and m_c of each entry of ``singular_points``, and the
    ``command`` and version that made the file. Read the file with, for
    example, ``pandas.read_csv(path, comment="#")``.

    Undefined values are empty cells and ``note`` gives the reason. At a row
    whose mu is one of ``singular_points`` the note adds the divergence law
    and m_c. Numbers use Python's shortest round-trip representation.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RATE_COLUMNS + ("note",))
    for row, note in zip(_rows(rates), _notes_with_singular(rates, singular_points)):
        writer.writerow(["" if row[column] is None else repr(row[column]) for column in RATE_COLUMNS] + [note])
    comments = _tau_comment_lines(rates, singular_points) + [_provenance_line(command)]
    return _comment_block(comments) + buffer.getvalue()


def format_json(rates: EscapeRates, singular_points: Sequence["SingularPoint"] = ()) -> str:
    """Render the JSON object of the ``tau`` command.

    The object is ``{"student", "teacher", "time_unit", "rows", "singular_mu",
    "time_unit_description", "method", "singular_points"}`` where each row is
    ``{"mu", "A", "B", "lambda_plus", "tau"}``, each singular point is
    ``{"mu", "tau_prefactor", "critical_alignment", "A_slope", "B",
    "growth_curvature", "description"}`` and undefined values are ``null``.
    The last three keys were added after the first five, which keep their
    order and meaning. ``allow_nan=False`` guarantees that no ``NaN`` or
    ``Infinity`` token reaches the output.
    """
    document = {
        "student": str(rates.student),
        "teacher": str(rates.teacher),
        "time_unit": str(rates.time_unit),
        "rows": _rows(rates),
        "singular_mu": [float(value) for value in rates.singular_mu],
        "time_unit_description": describe_time_unit(rates.time_unit, rates.student),
        "method": describe_tau_method(rates),
        "singular_points": [_singular_fields(point) for point in singular_points],
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def _plottable_tau(rates: EscapeRates) -> np.ndarray:
    # nan breaks the line, so an undefined tau shows as a gap, not a jump.
    tau = np.asarray(rates.tau, dtype=float)
    return np.where(np.isfinite(tau) & (tau > 0), tau, np.nan)


def _draw_tau(axes: "Axes", rates: EscapeRates, label: str, color=None) -> None:
    mu = np.asarray(rates.mu, dtype=float)
    tau = _plottable_tau(rates)
    marker = "o" if mu.size <= 25 else None
    (line,) = axes.plot(mu, tau, marker=marker, markersize=3, color=color, label=label)
    for value in rates.singular_mu:
        axes.axvline(value, color=line.get_color(), linestyle=":", linewidth=1.0)


def _has_plotted_values(axes: "Axes") -> bool:
    return any(np.any(np.isfinite(np.asarray(line.get_ydata(), dtype=float))) for line in axes.get_lines())


def _figure_bytes(figure, provenance: str) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(
        buffer,
        format="png",
        dpi=150,
        metadata={"Software": f"lora-theory {__version__}", "Description": provenance},
    )
    return buffer.getvalue()


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)

    # Keep the bottom strip free for the provenance footer.
    figure.get_layout_engine().set(rect=(0.0, 0.04, 1.0, 0.96))
    return figure


def _label_log_axes(axes: "Axes", ylabel: str) -> None:
    axes.set_xlabel(r"pre-training strength $\mu$")
    axes.set_ylabel(ylabel)
    if _has_plotted_values(axes):
        axes.set_yscale("log")
    else:
        axes.text(0.5, 0.5, "tau undefined at every mu", transform=axes.transAxes, ha="center", va="center")
        # Nothing finite was drawn, so show the requested mu range rather than matplotlib's default.
        mu_values = np.concatenate([np.asarray(line.get_xdata(), dtype=float) for line in axes.get_lines()] or [np.zeros(0)])
        mu_values = mu_values[np.isfinite(mu_values)]
        if mu_values.size and mu_values.min() < mu_values.max():
            axes.set_xlim(mu_values.min(), mu_values.max())
    axes.grid(True, which="major", alpha=0.3)


def _annotate_singular(axes: "Axes", singular_points: Sequence["SingularPoint"]) -> None:
    # The label sits at the foot of the dotted line of each singular mu (y in axes coordinates),
    # away from the legend, and extends towards the middle of the plot.
    transform = axes.get_xaxis_transform()
    left, right = axes.get_xlim()
    for index, point in enumerate(singular_points):
        if point.tau_prefactor is not None:
            law = rf"$\tau \approx {point.tau_prefactor:.4g}\,(\mu - \mu_s)^{{-2}}$"
        elif point.B > 0:
            law = r"$B(\mu_s) > 0$"
        else:
            law = "no divergence law"
        alignment = "" if point.critical_alignment is None else rf", $m_c$ = {point.critical_alignment:.4g}"
        axes.text(
            point.mu, 0.03 + 0.07 * (index % 3), rf"$\mu_s$ = {point.mu:.6g}: {law}{alignment}",
            transform=transform, fontsize=7, ha="left" if point.mu < (left + right) / 2 else "right", va="bottom",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1.0},
        )


def render_tau_figure(rates: EscapeRates, command: str, singular_points: Sequence["SingularPoint"] = ()) -> bytes:
    """Render tau(mu) on a log scale as PNG bytes, with singular mu as dotted vertical lines.

    Each entry of ``singular_points`` labels its line with the divergence law
    of tau and the critical alignment m_c. ``command`` is the command line
    that made the figure. It is printed in the figure's footer and stored in
    the PNG metadata with the package version.
    """
    figure = _new_figure(7.0, 4.5)
    axes = figure.add_subplot()
    _draw_tau(axes, rates, label=rf"$\tau(\mu)$, student {rates.student}, teacher {rates.teacher}")
    if rates.singular_mu:
        axes.plot([], [], color="gray", linestyle=":", label=r"singular $\mu$: $A(\mu) = 0$")

    _label_log_axes(axes, rf"escape time $\tau$, time unit {rates.time_unit}")
    _annotate_singular(axes, singular_points)
    axes.set_title(describe_time_unit(rates.time_unit, rates.student), fontsize=9)
    axes.legend(fontsize=8)

    provenance = f"made by: {command} (lora-theory {__version__})"
    figure.text(0.01, 0.005, provenance, fontsize=6, color="gray", ha="left", va="bottom")
    return _figure_bytes(figure, provenance)


# ---------------------------------------------------------------------------
# The default report
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportEntry:
    """One activation of the report: its spec, time unit, figure panel and rates."""

    spec: str
    time_unit: str
    panel: str
    rates: EscapeRates


def compute_report(
    mu: np.ndarray | None = None,
    activations: Sequence[tuple[str, str, str]] = REPORT_ACTIVATIONS,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[ReportEntry]:
    """Compute the escape rates of every report activation (student = teacher).

    Parameters
    ----------
    mu:
        Grid of shape ``(n,)``; defaults to :data:`REPORT_MU_GRID`.
    activations:
        ``(spec, time_unit, panel)`` triples; ``panel`` is ``"standard"`` or
        ``"hermite"``.
    progress:
        Called as ``progress(index, total, spec)`` before each activation.
    """
    grid = parse_grid(REPORT_MU_GRID) if mu is None else np.asarray(mu, dtype=float)
    entries = []
    for index, (spec, time_unit, panel) in enumerate(activations):
        if progress is not None:
            progress(index, len(activations), spec)
        rates = escape_rates(spec, None, mu=grid, time_unit=time_unit)
        entries.append(ReportEntry(spec, time_unit, panel, rates))
    return entries


def _report_csv(entries: Sequence[ReportEntry], command: str) -> str:
    comments = [
        "escape rates of the default report: student = teacher in every activation",
        f"time unit: per row, plain = {describe_time_unit('plain', 'x')}; hermite = rates divided by k! * k for the student He_k, so tau is k! * k times its plain value",
        "columns: A, B and lambda_plus are rates per time unit, tau = 1 / lambda_plus in that unit; undefined values are empty cells",
    ]
    if entries:
        comments.append(f"method: {describe_tau_method(entries[0].rates)}")
    for entry in entries:
        span = _grid_span(entry.rates.mu)
        found = _format_singular(entry.rates.singular_mu) if entry.rates.singular_mu else "none"
        comments.append(f"singular mu (A(mu) = 0) of {entry.spec} in {span}: {found}")
    comments.append(_provenance_line(command))

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("activation",) + ("time_unit",) + RATE_COLUMNS)
    for entry in entries:
        for row in _rows(entry.rates):
            cells = ["" if row[column] is None else repr(row[column]) for column in RATE_COLUMNS]
            writer.writerow([entry.spec, entry.time_unit] + cells)
    return _comment_block(comments) + buffer.getvalue()


_PANEL_TITLES = {
    "standard": "standard activations, time unit plain (t = eta * steps)",
    "hermite": "Hermite activations He_k, time unit hermite (rates / (k! * k))",
}


def _report_figure(entries: Sequence[ReportEntry], command: str) -> bytes:
    figure = _new_figure(12.0, 4.8)
    panels = {name: figure.add_subplot(1, 2, index + 1) for index, name in enumerate(_PANEL_TITLES)}

    for entry in entries:
        _draw_tau(panels[entry.panel], entry.rates, label=entry.spec)

    for name, axes in panels.items():
        _label_log_axes(axes, rf"escape time $\tau(\mu)$, time unit {'plain' if name == 'standard' else 'hermite'}")
        axes.set_title(_PANEL_TITLES[name], fontsize=9)
        if any(entry.rates.singular_mu for entry in entries if entry.panel == name):
            axes.plot([], [], color="gray", linestyle=":", label=r"singular $\mu$ ($A = 0$)")
        if axes.get_lines():
            axes.legend(fontsize=8)

    provenance = f"made by: {command} (lora-theory {__version__}); student = teacher in every curve"
    figure.text(0.01, 0.003, provenance, fontsize=6, color="gray", ha="left", va="bottom")
    return _figure_bytes(figure, provenance)


def _tau_extremes(rates: EscapeRates) -> tuple[str, str]:
    tau = np.asarray(rates.tau, dtype=float)
    mu = np.asarray(rates.mu, dtype=float)
    finite = np.isfinite(tau)
    if not finite.any():
        return "undefined", "undefined"
    low = int(np.nanargmin(np.where(finite, tau, np.nan)))
    high = int(np.nanargmax(np.where(finite, tau, np.nan)))
    return f"{tau[low]:.4g} (mu = {mu[low]:.4g})", f"{tau[high]:.4g} (mu = {mu[high]:.4g})"


def _report_summary(entries: Sequence[ReportEntry], command: str) -> str:
    mu = np.asarray(entries[0].rates.mu, dtype=float) if entries else np.array([np.nan])
    lines = [
        "# lora-theory report",
        "",
        "Search-phase escape time tau(mu) = 1 / lambda_plus(mu) of the aligned rank-1 LoRA model,",
        f"student equal to teacher, at {mu.size} values of mu in {_grid_span(mu)}.",
        "Singular mu are the zeros of A(mu) in that range: there the linear escape rate vanishes",
        "and tau diverges like (mu - mu_s)^-2.",
        "",
        "| activation | time unit | singular mu (A(mu) = 0) | rows undefined | min tau | max tau |",
        "|---|---|---|---|---|---|",
    ]
    for entry in entries:
        singular = _format_singular(entry.rates.singular_mu) or "none"
        undefined = int(np.sum(~np.isfinite(np.asarray(entry.rates.tau, dtype=float))))
        lowest, highest = _tau_extremes(entry.rates)
        lines.append(f"| {entry.spec} | {entry.time_unit} | {singular} | {undefined} | {lowest} | {highest} |")

    lines += [
        "",
        "Time units: plain is t = eta * steps. hermite divides the rates of a student He_k by",
        "k! * k, so tau is k! * k times its plain value.",
        "",
        "## Files",
        "",
        "| file | contents | made by | lora-theory version |",
        "|---|---|---|---|",
        f"| {REPORT_CSV} | long format: activation, time_unit, mu, A, B, lambda_plus, tau (empty where undefined) | `{command}` | {__version__} |",
        f"| {REPORT_FIGURE} | tau(mu) on a log scale, standard activations left, Hermite right, singular mu dotted | `{command}` | {__version__} |",
        f"| {REPORT_SUMMARY} | this summary | `{command}` | {__version__} |",
    ]
    return "\n".join(lines) + "\n"


def write_report(directory: str | os.PathLike, entries: Sequence[ReportEntry], command: str) -> list[Path]:
    """Write the report CSV, figure and Markdown summary into ``directory``.

    The folder is created if missing. All three files are rendered in memory
    first and then written with :func:`atomic_write_files`, so a failure while
    rendering leaves the folder unchanged. ``command`` is the command line
    recorded as the provenance of each file.

    Returns the paths written: CSV, figure, summary.
    """
    folder = Path(directory)
    contents = {
        folder / REPORT_CSV: _report_csv(entries, command).encode("utf-8"),
        folder / REPORT_FIGURE: _report_figure(entries, command),
        folder / REPORT_SUMMARY: _report_summary(entries, command).encode("utf-8"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_files(contents)


# ---------------------------------------------------------------------------
# Trajectories of the simulate command
# ---------------------------------------------------------------------------

#: Quantile levels over runs written for every simulated quantity.
TRAJECTORY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def quantile_column(quantity: str, level: float) -> str:
    """Column name of a quantile over runs, for example ``m_q05`` for the 5% quantile of m."""
    return f"{quantity}_q{round(100 * level):02d}"


@dataclass(frozen=True)
class TrajectoryTable:
    """Trajectories ready to render, on a grid of SGD steps.

    ``steps`` has shape ``(n,)`` and every entry of ``columns`` (name to
    values, in output order) has the same shape. For SGD the columns are the
    mean and the :data:`TRAJECTORY_QUANTILES` over runs of ``m``, ``abs_m``
    and ``u``, and ``runs`` counts the runs with a finite state at each step.
    For the flow the columns are ``u``, ``m``, ``abs_m`` and ``loss`` and
    ``runs`` is ``None``. ``description`` contains the header lines that
    state the setting, without the leading ``#``.
    """

    method: str
    student: str
    teacher: str
    mu: float
    eta: float
    batch: int
    steps: np.ndarray
    runs: np.ndarray | None
    columns: Mapping[str, np.ndarray]
    description: tuple[str, ...]
    log_grid: bool


def _csv_number(value) -> str:
    number = _finite_or_none(value)
    return "" if number is None else repr(number)


def format_trajectory_csv(table: TrajectoryTable, command: str) -> str:
    """Render trajectories as CSV preceded by ``#`` comment lines.

    The comment lines state the setting, the time units (``t = eta * step``,
    ``samples = B * step``), the meaning of the columns and the command that
    made the file. The columns are ``step, samples, t``, then ``runs`` for
    SGD, then the quantity columns. Undefined values are empty cells.
    Readers skip the comments with, for example, ``pandas.read_csv(path,
    comment="#")``.
    """
    lines = [f"# {line}" for line in table.description]
    lines.append(f"# time: step counts SGD steps from the initial state, samples = B * step with B = {table.batch}, t = eta * step with eta = {table.eta:g}")
    if table.runs is not None:
        levels = ", ".join(f"{level:g}" for level in TRAJECTORY_QUANTILES)
        lines.append(f"# columns: runs = runs with a finite state at that step; <quantity>_mean and <quantity>_qNN = mean and NN% quantile over those runs (levels {levels})")
        lines.append("# quantities: m = signed overlap <v, w*>, abs_m = |m|, u = LoRA scale")
    else:
        lines.append("# columns: u = LoRA scale, m = signed overlap <v, w*>, abs_m = |m|, loss = population loss L(u, m)")
    lines.append(f"# made by: {command} (lora-theory {__version__})")

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["step", "samples", "t"] + (["runs"] if table.runs is not None else []) + list(table.columns)
    writer.writerow(header)
    for index, step in enumerate(table.steps):
        # 15 significant digits print eta * step without binary round-off such as 0.6000000000000001.
        cells = [str(int(step)), str(int(step) * table.batch), f"{step * table.eta:.15g}"]
        if table.runs is not None:
            cells.append(str(int(table.runs[index])))
        cells += [_csv_number(values[index]) for values in table.columns.values()]
        writer.writerow(cells)
    return "\n".join(lines) + "\n" + buffer.getvalue()


def _draw_trajectory(axes: "Axes", table: TrajectoryTable, quantity: str, time: np.ndarray, label: str) -> None:
    if table.runs is None:
        axes.plot(time, table.columns[quantity], label="flow")
    else:
        (line,) = axes.plot(time, table.columns[f"{quantity}_mean"], label="mean over runs")
        low = table.columns[quantile_column(quantity, TRAJECTORY_QUANTILES[0])]
        high = table.columns[quantile_column(quantity, TRAJECTORY_QUANTILES[-1])]
        axes.fill_between(time, low, high, color=line.get_color(), alpha=0.2, linewidth=0, label="5% to 95% of runs")
        axes.plot(time, table.columns[quantile_column(quantity, 0.5)], color=line.get_color(), linestyle="--", linewidth=0.8, label="median")
    axes.set_ylabel(label)
    axes.set_xlabel(r"$t = \eta \cdot$ steps")
    if table.log_grid:
        axes.set_xscale("log")
    axes.grid(True, alpha=0.3)


def render_trajectory_figure(table: TrajectoryTable, command: str) -> bytes:
    """Render |m|, m, u (and the loss for the flow) against ``t = eta * steps`` as PNG bytes.

    SGD panels show the mean over runs, the median and the band between the
    5% and 95% quantiles. On a logarithmic step grid the time axis is
    logarithmic and the initial state (t = 0) is left out.
    """
    panels = [("abs_m", r"$|m|$"), ("m", r"$m = \langle v, w^* \rangle$"), ("u", r"LoRA scale $u$")]
    if table.runs is None:
        panels.append(("loss", "population loss"))
    figure = _new_figure(4.0 * len(panels), 4.0)

    # Log axes cannot show t = 0.
    time = table.steps * table.eta
    plotted = time > 0 if table.log_grid else np.ones(time.shape, dtype=bool)
    plotted_table = TrajectoryTable(
        table.method, table.student, table.teacher, table.mu, table.eta, table.batch, table.steps[plotted],
        None if table.runs is None else table.runs[plotted],
        {name: values[plotted] for name, values in table.columns.items()},
        table.description, table.log_grid,
    )
    for index, (quantity, label) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        _draw_trajectory(axes, plotted_table, quantity, time[plotted], label)
        if index == 0:
            axes.legend(fontsize=8)

    figure.suptitle("; ".join(table.description[:2]), fontsize=8)
    provenance = f"made by: {command} (lora-theory {__version__})"
    figure.text(0.01, 0.005, provenance, fontsize=6, color="gray", ha="left", va="bottom")
    return _figure_bytes(figure, provenance)


# ---------------------------------------------------------------------------
# Escape times of the escape command
# ---------------------------------------------------------------------------

#: Keys of every row of the escape command, in output order.
ESCAPE_COLUMNS = ("mu", "method", "escape_time", "escape_steps", "escape_samples", "ci_low", "ci_high", "censored_fraction")


@dataclass(frozen=True)
class EscapeRow:
    """Escape time at one mu, in t = eta * steps, steps and samples = B * steps.

    ``None`` marks an undefined value: no escape, or no interval (linear
    estimate, flow, or fewer than two escaped runs). ``note`` gives the reason
    or reports censored and diverged runs. It is empty when there is nothing
    to add.
    """

    mu: float
    method: str
    escape_time: float | None
    escape_steps: float | None
    escape_samples: float | None
    ci_low: float | None
    ci_high: float | None
    censored_fraction: float
    note: str = ""

    def values(self) -> dict[str, float | str | None]:
        """Return the row as the JSON object of :data:`ESCAPE_COLUMNS`, with None for non-finite numbers."""
        row: dict[str, float | str | None] = {}
        for column in ESCAPE_COLUMNS:
            value = getattr(self, column)
            row[column] = value if isinstance(value, str) else _finite_or_none(value)
        return row


@dataclass(frozen=True)
class EscapeTable:
    """Rows of the escape command and the setting they share.

    ``settings`` maps a name (``student``, ``d``, ``eta`` and so on) to its
    value, in output order. ``description`` contains the header lines of the
    text table.
    """

    rows: tuple[EscapeRow, ...]
    settings: Mapping[str, object]
    description: tuple[str, ...]


def _escape_cell(value) -> str:
    if isinstance(value, str):
        return value
    return "undefined" if value is None else f"{value:.6g}"


def format_escape_table(table: EscapeTable) -> str:
    """Render a fixed-width text table of escape times; undefined values read ``undefined``."""
    body = []
    for row in table.rows:
        values = row.values()
        body.append(([_escape_cell(values[column]) for column in ESCAPE_COLUMNS], row.note))
    widths = [max([len(name)] + [len(cells[index]) for cells, _ in body]) for index, name in enumerate(ESCAPE_COLUMNS)]

    lines = list(table.description) + ["", "  ".join(name.rjust(width) for name, width in zip(ESCAPE_COLUMNS, widths)) + "  note"]
    for cells, note in body:
        lines.append(("  ".join(cell.rjust(width) for cell, width in zip(cells, widths)) + "  " + note).rstrip())
    return "\n".join(lines) + "\n"


def format_escape_csv(table: EscapeTable, command: str | None = None) -> str:
    """Render CSV with the columns of :data:`ESCAPE_COLUMNS` and ``note`` after ``#`` comment lines.

    The comment lines are the header lines of the text table (student,
    teacher, method, d, eta, B, kappa, the initial state, the time unit and
    the statistic), then every setting as ``name = value`` and the
    ``command`` and version that made the file. Undefined values are empty
    cells. Read the file with, for example, ``pandas.read_csv(path,
    comment="#")``.
    """
    settings = ", ".join(f"{name} = {value}" for name, value in table.settings.items() if value is not None)
    comments = list(table.description) + [f"settings: {settings}", _provenance_line(command)]

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ESCAPE_COLUMNS + ("note",))
    for row in table.rows:
        values = row.values()
        cells = [values[column] if isinstance(values[column], str) else _csv_number(values[column]) for column in ESCAPE_COLUMNS]
        writer.writerow(cells + [row.note])
    return _comment_block(comments) + buffer.getvalue()


def format_escape_json(table: EscapeTable) -> str:
    """Render the JSON object of the ``escape`` command.

    The object contains the settings, ``"rows"`` (one object per mu with the
    keys of :data:`ESCAPE_COLUMNS`, ``null`` where undefined) and ``"notes"``
    (``{"mu", "note"}`` for each row that has a note). ``allow_nan=False``
    guarantees that no ``NaN`` or ``Infinity`` token reaches the output.
    """
    document = dict(table.settings)
    document["rows"] = [row.values() for row in table.rows]
    document["notes"] = [{"mu": float(row.mu), "note": row.note} for row in table.rows if row.note]
    return json.dumps(document, indent=2, allow_nan=False) + "\n"
