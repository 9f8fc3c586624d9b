"""``lora-theory report --full`` and the figure module behind it, at the small size.

The small size computes every figure in about 6 s on an idle 2-core machine. The
full size is exercised by ``python notebooks/run.py --size full`` and
``lora-theory report --full``, not by the test suite.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lora_theory
from lora_theory import full_report
from lora_theory._errors import ParameterError
from lora_theory.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURE_FILES = [f"{name}.png" for name in full_report.FIGURE_NAMES]


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    """Run ``report --full`` at the small size in an empty folder, without --output.

    Returns the folder, the exit status, standard output and error, and the
    figures that the command computed (by name), so that the tests of the
    numbers reuse this one computation.
    """
    folder = tmp_path_factory.mktemp("full-report")
    computed = {}
    original = full_report.make_figures

    def record(*arguments, **keywords):
        figures = original(*arguments, **keywords)
        computed.update((figure.name, figure) for figure in figures)
        return figures

    previous = Path.cwd()
    os.chdir(folder)
    full_report.make_figures = record
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
            status = main(["report", "--full", "--full-size", "small"])
    finally:
        full_report.make_figures = original
        os.chdir(previous)
    return folder / "lora-theory-full-report", status, out.getvalue(), err.getvalue(), computed


def _summary_rows(summary: str) -> dict[str, list[str]]:
    rows = {}
    for line in summary.splitlines():
        # Split table rows on "|" that is not escaped as "\|".
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and cells[0].endswith((".png", ".md")):
            rows[cells[0]] = cells
    return rows


def test_full_report_files(small_report):
    folder, status, out, err, _ = small_report
    assert status == 0, err

    names = sorted(path.name for path in folder.iterdir())
    assert names == sorted(FIGURE_FILES + ["summary.md"])
    for name in FIGURE_FILES:
        assert (folder / name).read_bytes().startswith(PNG_SIGNATURE)
    # Standard output lists every file; standard error is no terminal, so no progress lines.
    for name in names:
        assert str(folder / name) in out
    assert err == ""


def test_full_report_summary_lists_every_file(small_report):
    folder = small_report[0]
    summary = (folder / "summary.md").read_text()
    rows = _summary_rows(summary)

    assert sorted(rows) == sorted(path.name for path in folder.iterdir())
    command = "`lora-theory report --full --full-size small`"
    for name, cells in rows.items():
        assert cells[3] == command, name
        assert cells[4] == lora_theory.__version__, name
        assert cells[5] == "small", name
    for name in FIGURE_FILES:
        assert rows[name][6] != "", f"{name} has no settings"


def test_full_report_png_provenance(small_report):
    folder = small_report[0]
    for name in FIGURE_FILES:
        text = Image.open(folder / name).text
        assert "lora-theory report --full --full-size small" in text["Description"]
        assert text["Software"] == f"lora-theory {lora_theory.__version__}"


def test_full_report_results(small_report):
    summary = (small_report[0] / "summary.md").read_text()

    # He3 learning He3: A(mu) = 0 at mu_s = 0.3207243 (an independent root of the
    # polynomial A, stated in docs/theory.md); He5 has one zero, the others none.
    assert "He3: mu_s = 0.320724" in summary
    assert "He5: mu_s = 0.425306" in summary
    # He3^2 = He6 + 9 He4 + 18 He2 + 6, so its information exponent is 2; relu has a
    # linear component E[relu(z) z] = 1/2, so its exponent is 1.
    assert "He3^2 2" in summary
    assert "relu 1" in summary


def test_scaling_exponents_near_theory(small_report):
    figure = small_report[4]["scaling"]
    flows = figure.data["flows"]
    sgd = figure.data["sgd"]

    # Predicted exponents of d: 1 (k* = 1), 1 after dividing by log d (k* = 2), k* - 1 (k* >= 3).
    # Flow: four dimensions in [1e2, 1e4] leave finite-d corrections of a few percent, so allow 0.1.
    for teacher, expected in (("x", 1.0), ("He2", 1.0), ("He3", 2.0), ("He4", 3.0)):
        assert flows[teacher].slope == pytest.approx(expected, abs=0.1), teacher
    # Reduced SGD: 8 runs at two dimensions give bootstrap 95% intervals of the slope
    # up to 1.3 wide (He3), so allow 0.5.
    for teacher, expected in (("x", 1.0), ("He2", 1.0), ("He3", 2.0)):
        assert sgd[teacher].slope == pytest.approx(expected, abs=0.5), teacher


def test_collapse_approaches_tau(small_report):
    figure = small_report[4]["collapse"]
    tau = figure.data["tau"]
    flows = figure.data["flows"]
    d_values = sorted(flows)
    ratios = [flows[d].escape_time / (0.5 * np.log(d)) for d in d_values]

    # t_exit / ((1/2) log d) = tau + O(1 / log d). The linear offset
    # tau (log m_exit + log(1 + (lambda_plus / A)^2)) is negative for erf at mu = 0.5,
    # so every ratio lies below tau and moves closer to it as d grows.
    assert all(ratio < tau for ratio in ratios)
    assert ratios == sorted(ratios)

    # The flow's escape time against the linear estimate from A and B alone. The
    # estimate leaves out u0 = 1/d^2, the kappa drift and the nonlinear end of the
    # search phase; 2% covers them (the largest gap seen is 0.6%).
    rates = lora_theory.escape_rates("erf", mu=[0.5])
    offset = np.log(0.5) + np.log1p((rates.lambda_plus[0] / rates.A[0]) ** 2)
    for d in d_values:
        estimate = tau * (0.5 * np.log(d) + offset)
        assert flows[d].escape_time == pytest.approx(estimate, rel=0.02), d


def test_label_change_settles_at_zero_weight(small_report):
    figure = small_report[4]["label_change"]
    flow = figure.data["flow"]
    mu = figure.settings["flow_mu"]

    # The odd student He3 cannot fit the even teacher He3^2; its best state is a zero
    # weight, where the loss is E[He3^4] / 2 = 3348 / 2 = 1674.
    assert flow.u[-1] * flow.m[-1] + mu == pytest.approx(0.0, abs=1e-6)
    assert flow.loss[-1] == pytest.approx(1674.0, rel=1e-9)


def test_make_figure_rejects_unknown_name():
    with pytest.raises(ParameterError, match="unknown figure 'tau'"):
        full_report.make_figure("tau", "small")


def test_make_figure_rejects_unknown_size():
    with pytest.raises(ParameterError, match="size must be one of small, full, got 'medium'"):
        full_report.make_figure("scaling", "medium")


def test_size_from_environment(monkeypatch):
    monkeypatch.delenv(full_report.SIZE_VARIABLE, raising=False)
    assert full_report.size_from_environment() == "small"
    monkeypatch.setenv(full_report.SIZE_VARIABLE, "full")
    assert full_report.size_from_environment() == "full"
    monkeypatch.setenv(full_report.SIZE_VARIABLE, "huge")
    with pytest.raises(ParameterError, match="LORA_THEORY_NOTEBOOK_SIZE must be one of small, full, got 'huge'"):
        full_report.size_from_environment()


def test_full_report_computation_failure_writes_nothing(tmp_path, monkeypatch, capsys):
    def fail(settings):
        raise ArithmeticError("flow integration failed for the test")

    description, _, render = full_report._FIGURES["escape_rates"]
    monkeypatch.setitem(full_report._FIGURES, "escape_rates", (description, fail, render))
    folder = tmp_path / "report"

    status = main(["report", "--full", "--full-size", "small", "--output", str(folder)])
    assert status == 1
    assert "computing the figure escape_rates failed: flow integration failed for the test" in capsys.readouterr().err
    assert not folder.exists()


def test_full_report_write_failure_keeps_folder(tmp_path, monkeypatch, capsys, small_report):
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "summary.md").write_text("earlier summary\n")

    figures = list(small_report[4].values())
    monkeypatch.setattr(full_report, "make_figures", lambda *arguments, **keywords: figures)
    monkeypatch.setattr(full_report, "_summary", lambda *arguments: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["report", "--full", "--full-size", "small", "--output", str(folder)])

    # Nothing of the new report was written: the old summary stays, no PNG, no temporary file.
    assert sorted(path.name for path in folder.iterdir()) == ["summary.md"]
    assert (folder / "summary.md").read_text() == "earlier summary\n"


def test_full_size_needs_full(capsys):
    status = main(["report", "--full-size", "small"])
    assert status == 2
    assert "--full-size applies only with --full" in capsys.readouterr().err


def test_full_option_in_help(capsys):
    assert main(["report", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--full" in help_text
    assert "--full-size" not in help_text
