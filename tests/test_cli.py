"""Tests of the lora-theory command line: usage errors, output formats, files."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import load_json, run, split_csv

import lora_theory
from lora_theory import outputs
from lora_theory.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- usage errors -------------------------------------------------------------

# (arguments, text the one-line message must contain)
USAGE_ERRORS = [
    # unknown activation
    (["tau", "--student", "softmaxx", "--mu", "0.5"], "softmaxx"),
    (["tau", "--student", "x", "--teacher", "nope", "--mu", "0.5"], "nope"),
    (["tau", "--student", "He3 +", "--mu", "0.5"], "He3 +"),
    # Hermite degree above 30
    (["tau", "--student", "He31", "--mu", "0.5"], "He31"),
    (["tau", "--student", "x", "--teacher", "He45", "--mu", "0.5"], "He45"),
    # mu outside [0, 1]
    (["tau", "--student", "x", "--mu", "1.5"], "1.5"),
    (["tau", "--student", "x", "--mu", "0.2,-0.25"], "-0.25"),
    (["tau", "--student", "x", "--mu", "-0.1:0.5:3"], "-0.1"),
    (["tau", "--student", "x", "--mu", "0.5:1.75:3"], "1.75"),
    # malformed grid
    (["tau", "--student", "x", "--mu", "abc"], "abc"),
    (["tau", "--student", "x", "--mu", "0:1"], "0:1"),
    (["tau", "--student", "x", "--mu", "0:1:0"], "0:1:0"),
    (["tau", "--student", "x", "--mu", "0.1,,0.2"], "0.1,,0.2"),
    (["tau", "--student", "x", "--mu", "nan"], "nan"),
    # hermite time unit for a student that is not a single He_k
    (["tau", "--student", "erf", "--mu", "0.5", "--time-unit", "hermite"], "erf"),
    (["tau", "--student", "He2+He3", "--mu", "0.5", "--time-unit", "hermite"], "He2+He3"),
    # argparse errors
    (["tau", "--student", "x", "--mu", "0.5", "--format", "xml"], "xml"),
    (["tau", "--student", "x", "--mu", "0.5", "--time-unit", "days"], "days"),
    (["tau", "--student", "x"], "--mu"),
    (["tau", "--mu", "0.5"], "--student"),
    (["tau", "--student", "x", "--mu", "0.5", "--bogus"], "--bogus"),
    (["fit", "--student", "x"], "fit"),
    ([], "COMMAND"),
    (["report", "--output"], "--output"),
]


@pytest.mark.parametrize("arguments, offending", USAGE_ERRORS, ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_usage_error_exits_2(capsys, arguments, offending):
    status, out, err = run(capsys, *arguments)
    assert status == 2
    assert out == ""
    assert offending in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("lora-theory")
    assert "Traceback" not in err


def test_hermite_unit_error_names_unit(capsys):
    status, _, err = run(capsys, "tau", "--student", "relu", "--mu", "0.5", "--time-unit", "hermite")
    assert status == 2
    assert "hermite" in err


def test_hermite_degree_error_names_limit(capsys):
    status, _, err = run(capsys, "tau", "--student", "He31", "--mu", "0.5")
    assert status == 2
    assert "30" in err


def test_same_output_and_plot_path(capsys, tmp_path):
    target = str(tmp_path / "same")
    status, _, err = run(capsys, "tau", "--student", "x", "--mu", "0.5", "--output", target, "--plot", target)
    assert status == 2
    assert target in err
    assert not Path(target).exists()


def test_console_script_usage_error():
    # The installed entry point, in a fresh process, with its real exit status.
    script = Path(sys.executable).with_name("lora-theory")
    if not script.exists():
        script = shutil.which("lora-theory")
    assert script, "console script lora-theory is not installed; run pip install -e '.[test]'"

    result = subprocess.run(
        [str(script), "tau", "--student", "He99", "--mu", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "He99" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_version():
    script = Path(sys.executable).with_name("lora-theory")
    if not script.exists():
        script = shutil.which("lora-theory")
    assert script, "console script lora-theory is not installed"

    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert lora_theory.__version__ in result.stdout


def test_help_exits_0(capsys):
    status, out, _ = run(capsys, "tau", "--help")
    assert status == 0
    assert "--time-unit" in out
    assert "start:stop:num" in out


# --- tau: JSON ----------------------------------------------------------------


def test_json_schema(capsys):
    status, out, err = run(capsys, "tau", "--student", "x", "--mu", "0.5,1", "--format", "json")
    assert status == 0, err
    document = load_json(out)

    # The first five keys keep their order; later keys are additions documented in the README.
    assert list(document)[:5] == ["student", "teacher", "time_unit", "rows", "singular_mu"]
    assert list(document)[5:] == ["time_unit_description", "method", "singular_points"]
    assert document["student"] == "x"
    assert document["teacher"] == "x"
    assert document["time_unit"] == "plain"
    assert isinstance(document["singular_mu"], list)
    assert all(isinstance(value, float) for value in document["singular_mu"])
    assert len(document["rows"]) == 2
    for row in document["rows"]:
        assert list(row) == ["mu", "A", "B", "lambda_plus", "tau"]
        assert all(value is None or isinstance(value, (int, float)) for value in row.values())


def test_json_linear_closed_form(capsys):
    # Linear student and teacher: A = 1 - mu, B = -1.
    status, out, _ = run(capsys, "tau", "--student", "x", "--mu", "0.25,0.5", "--format", "json")
    assert status == 0
    for row in load_json(out)["rows"]:
        mu = row["mu"]
        assert row["A"] == pytest.approx(1 - mu, rel=1e-12)
        assert row["B"] == pytest.approx(-1.0, rel=1e-12)
        expected_lambda = (-1 + math.sqrt(1 + 4 * (1 - mu) ** 2)) / 2
        assert row["lambda_plus"] == pytest.approx(expected_lambda, rel=1e-10)
        assert row["tau"] == pytest.approx(1 / expected_lambda, rel=1e-10)


def test_json_null_where_undefined(capsys):
    # Student equal to teacher: A(1) = 0, so tau is undefined at mu = 1.
    status, out, _ = run(capsys, "tau", "--student", "x", "--mu", "0.5,1", "--format", "json")
    assert status == 0
    assert "NaN" not in out
    assert "Infinity" not in out
    last = load_json(out)["rows"][-1]
    assert last["mu"] == 1.0
    assert last["tau"] is None
    assert last["lambda_plus"] is None


def test_json_singular_mu_of_he3(capsys):
    # He3 learning He3 has a zero of A(mu) strictly inside (0, 1).
    status, out, _ = run(capsys, "tau", "--student", "He3", "--mu", "0.02:0.99:40", "--format", "json")
    assert status == 0
    singular = load_json(out)["singular_mu"]
    assert len(singular) >= 1
    assert all(0.02 <= value <= 0.99 for value in singular)


def test_json_hermite_unit_scales_tau(capsys):
    # hermite divides the rates of He3 by 3! * 3 = 18, so tau grows by 18.
    _, plain, _ = run(capsys, "tau", "--student", "He3", "--mu", "0.2", "--format", "json")
    status, hermite, _ = run(capsys, "tau", "--student", "He3", "--mu", "0.2", "--format", "json", "--time-unit", "hermite")
    assert status == 0
    plain_tau = load_json(plain)["rows"][0]["tau"]
    document = load_json(hermite)
    assert document["time_unit"] == "hermite"
    assert document["rows"][0]["tau"] == pytest.approx(18 * plain_tau, rel=1e-10)


def test_json_teacher_differs(capsys):
    status, out, _ = run(capsys, "tau", "--student", "He2", "--teacher", "He2^2", "--mu", "0.5", "--format", "json")
    assert status == 0
    document = load_json(out)
    assert document["student"] == "He2"
    assert document["teacher"] == "He2^2"


# --- tau: table and CSV ---------------------------------------------------------


def test_table_marks_undefined(capsys):
    status, out, _ = run(capsys, "tau", "--student", "x", "--mu", "0.5,1")
    assert status == 0
    assert "undefined" in out
    assert "time unit: plain" in out
    for token in out.replace(",", " ").split():
        assert token.lower() not in {"nan", "inf", "-inf"}, out


def test_table_lists_singular_mu(capsys):
    status, out, _ = run(capsys, "tau", "--student", "He3", "--mu", "0.02:0.99:20", "--time-unit", "hermite")
    assert status == 0
    assert "singular mu" in out
    assert "hermite" in out


def test_csv_empty_cells_where_undefined(capsys):
    status, out, _ = run(capsys, "tau", "--student", "x", "--mu", "0.5,1", "--format", "csv")
    assert status == 0
    _, rows = split_csv(out)
    assert list(rows[0]) == ["mu", "A", "B", "lambda_plus", "tau", "note"]
    assert float(rows[0]["tau"]) > 0
    assert rows[1]["tau"] == ""
    assert rows[1]["note"] != ""


def test_csv_comments_state_unit_and_command(capsys):
    status, out, _ = run(capsys, "tau", "--student", "He3", "--mu", "0.1,0.9", "--time-unit", "hermite", "--format", "csv")
    assert status == 0
    comments, rows = split_csv(out)
    assert out.startswith("# ")
    assert comments[0] == "escape rates: student He3, teacher He3"
    time_unit = next(line for line in comments if line.startswith("time unit: "))
    assert "hermite" in time_unit
    assert "3! * 3 = 18" in time_unit
    assert any(line.startswith("method: linear theory") for line in comments)
    assert comments[-1] == f"made by: lora-theory tau --student He3 --mu 0.1,0.9 --time-unit hermite --format csv (lora-theory {lora_theory.__version__})"
    assert [row["mu"] for row in rows] == ["0.1", "0.9"]


def test_csv_lists_singular_mu_between_points(capsys):
    # He3 learning itself has a zero of A(mu) near 0.32, between the grid points 0.1 and 0.9,
    # so no row carries it. The comment lines must.
    _, table, _ = run(capsys, "tau", "--student", "He3", "--mu", "0.1,0.9")
    singular_line = next(line for line in table.splitlines() if line.strip().startswith("mu_s = "))
    status, out, _ = run(capsys, "tau", "--student", "He3", "--mu", "0.1,0.9", "--format", "csv")
    assert status == 0
    comments, rows = split_csv(out)
    assert all("mu_s" not in row["note"] for row in rows)
    assert any(line.startswith("singular mu (A(mu) = 0, tau diverges) in [0.1, 0.9]: ") for line in comments)
    point = next(line for line in comments if line.startswith("singular point: "))
    assert point == "singular point: " + singular_line.strip()
    assert "tau ~ " in point
    assert "m_c = " in point


def test_tau_nonexistent_expectation_exits_2(capsys):
    # E[sigma'(lam) sigma(lam*)] with sigma = exp(z^2) is infinite, so no A(mu) exists.
    status, out, err = run(capsys, "tau", "--student", "expr:exp(z^2)", "--mu", "0.5", "--format", "json")
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("lora-theory tau: error: computing A(mu) and B(mu) for student expr:exp(z^2)")
    assert "E[f(lam) h(lam*)] with f = " in err
    assert "Q = 0.25, R = 0.5" in err
    assert "estimated error" in err
    assert "does not exist under the Gaussian" in err
    assert "Warning" not in err


def test_tau_warning_is_one_line(capsys, monkeypatch):
    # The command line prints a warning as one line, not in Python's format with file and source line.
    from lora_theory._numeric import QuadratureWarning
    from lora_theory.cli import _rates

    def escape_rates_with_warning(*arguments, **keywords):
        warnings.warn("estimated quadrature error is above tolerance\nat 1 of 1 points", QuadratureWarning, stacklevel=2)
        return escape_rates(*arguments, **keywords)

    escape_rates = _rates.escape_rates
    monkeypatch.setattr(_rates, "escape_rates", escape_rates_with_warning)
    status, out, err = run(capsys, "tau", "--student", "x", "--mu", "0.5", "--format", "json")
    assert status == 0
    load_json(out)
    assert err == "lora-theory tau: warning: estimated quadrature error is above tolerance at 1 of 1 points\n"


# --- tau: files -----------------------------------------------------------------


def test_output_file_matches_stdout(capsys, tmp_path):
    _, printed, _ = run(capsys, "tau", "--student", "erf", "--mu", "0.3,0.6", "--format", "json")
    target = tmp_path / "tau.json"
    status, out, err = run(capsys, "tau", "--student", "erf", "--mu", "0.3,0.6", "--format", "json", "--output", str(target))
    assert status == 0
    assert out == ""
    assert str(target) in err
    assert target.read_text() == printed


def test_plot_keeps_stdout_pure(capsys, tmp_path):
    figure = tmp_path / "tau.png"
    status, out, _ = run(capsys, "tau", "--student", "He3", "--mu", "0.1:0.9:9", "--format", "json", "--plot", str(figure))
    assert status == 0
    load_json(out)
    assert figure.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_failure_writes_nothing(capsys, tmp_path):
    table = tmp_path / "tau.txt"
    figure = tmp_path / "missing-folder" / "tau.png"
    status, out, err = run(capsys, "tau", "--student", "x", "--mu", "0.5", "--output", str(table), "--plot", str(figure))
    assert status == 1
    assert str(figure) in err
    assert len(err.strip().splitlines()) == 1
    assert not table.exists()
    assert list(tmp_path.iterdir()) == []


def test_output_to_folder_fails(capsys, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    status, out, err = run(capsys, "tau", "--student", "x", "--mu", "0.5", "--output", str(folder))
    assert status == 1
    assert out == ""
    assert f"cannot write {folder}" in err
    assert list(folder.iterdir()) == []
    assert [path.name for path in tmp_path.iterdir()] == ["folder"]


def test_output_replaces_existing_file(capsys, tmp_path):
    target = tmp_path / "tau.csv"
    target.write_text("old content\n")
    status, _, _ = run(capsys, "tau", "--student", "x", "--mu", "0.5", "--format", "csv", "--output", str(target))
    assert status == 0
    comments, rows = split_csv(target.read_text())
    assert comments[0] == "escape rates: student x, teacher x"
    assert [row["mu"] for row in rows] == ["0.5"]
    assert [path.name for path in tmp_path.iterdir()] == ["tau.csv"]


# --- atomic writing ---------------------------------------------------------------


def test_atomic_write_text(tmp_path):
    target = tmp_path / "out.txt"
    outputs.atomic_write_text(target, "first\n")
    outputs.atomic_write_text(target, "second\n")
    assert target.read_text() == "second\n"
    assert [path.name for path in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_uses_umask_mode(tmp_path):
    target = outputs.atomic_write_text(tmp_path / "out.txt", "text")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old\n")

    def fail_fsync(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail_fsync)
    with pytest.raises(OSError) as caught:
        outputs.atomic_write_text(target, "new\n")
    assert caught.value.filename == str(target)
    assert target.read_text() == "old\n"
    assert [path.name for path in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_files_all_or_nothing(tmp_path):
    first = tmp_path / "first.txt"
    first.write_text("old\n")
    missing = tmp_path / "no-such-folder" / "second.txt"
    with pytest.raises(OSError) as caught:
        outputs.atomic_write_files({first: b"new\n", missing: b"data"})
    assert caught.value.filename == str(missing)
    assert first.read_text() == "old\n"
    assert [path.name for path in tmp_path.iterdir()] == ["first.txt"]


# --- report -------------------------------------------------------------------------


@pytest.fixture
def small_report_grid(monkeypatch):
    monkeypatch.setattr(outputs, "REPORT_MU_GRID", "0.1:0.9:5")


def test_report_writes_files(capsys, tmp_path, small_report_grid):
    folder = tmp_path / "report"
    status, out, err = run(capsys, "report", "--output", str(folder))
    assert status == 0, err
    assert sorted(path.name for path in folder.iterdir()) == ["summary.md", "tau.csv", "tau.png"]
    for name in ("summary.md", "tau.csv", "tau.png"):
        assert str(folder / name) in out


def test_report_csv_long_format(capsys, tmp_path, small_report_grid):
    folder = tmp_path / "report"
    assert run(capsys, "report", "--output", str(folder))[0] == 0
    comments, rows = split_csv((folder / "tau.csv").read_text())

    assert any(line.startswith("time unit: per row, plain = plain (t = eta * steps); hermite = ") for line in comments)
    assert any(line.startswith("singular mu (A(mu) = 0) of He3 in [0.1, 0.9]: 0.3") for line in comments)
    assert comments[-1] == f"made by: lora-theory report --output {folder} (lora-theory {lora_theory.__version__})"
    assert list(rows[0]) == ["activation", "time_unit", "mu", "A", "B", "lambda_plus", "tau"]
    assert len(rows) == 8 * 5
    units = {row["activation"]: row["time_unit"] for row in rows}
    assert units == {
        "x": "plain", "erf": "plain", "relu": "plain", "sigmoid": "plain",
        "He2": "hermite", "He3": "hermite", "He5": "hermite", "He6": "hermite",
    }
    for row in rows:
        for column in ("mu", "A", "B", "lambda_plus", "tau"):
            assert row[column] == "" or math.isfinite(float(row[column]))
    np.testing.assert_allclose(sorted({float(row["mu"]) for row in rows}), np.linspace(0.1, 0.9, 5))


def test_report_figure_and_summary(capsys, tmp_path, small_report_grid):
    folder = tmp_path / "report"
    assert run(capsys, "report", "--output", str(folder))[0] == 0

    assert (folder / "tau.png").read_bytes().startswith(PNG_SIGNATURE)
    summary = (folder / "summary.md").read_text()
    for spec in ("x", "erf", "relu", "sigmoid", "He2", "He3", "He5", "He6"):
        assert f"| {spec} |" in summary
    assert f"lora-theory report --output {folder}" in summary
    assert lora_theory.__version__ in summary
    assert "singular mu" in summary


def test_report_render_failure_writes_nothing(capsys, tmp_path, small_report_grid, monkeypatch):
    def fail(*arguments, **keywords):
        raise RuntimeError("figure rendering failed")

    monkeypatch.setattr(outputs, "_report_figure", fail)
    folder = tmp_path / "report"
    with pytest.raises(RuntimeError):
        main(["report", "--output", str(folder)])
    assert not folder.exists()


def test_report_into_file_path_fails(capsys, tmp_path, small_report_grid):
    blocker = tmp_path / "occupied"
    blocker.write_text("a file, not a folder\n")
    status, _, err = run(capsys, "report", "--output", str(blocker))
    assert status == 1
    assert str(blocker) in err
    assert blocker.read_text() == "a file, not a folder\n"


def test_report_default_run(capsys, tmp_path, monkeypatch):
    # The built-in default, end to end: 8 activations x 200 values of mu in
    # [0.02, 0.99], written to ./lora-theory-report/ (about 6 s with a cold
    # derivation cache on a 2-core machine).
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "report")
    assert status == 0, err

    folder = tmp_path / "lora-theory-report"
    assert str(folder) in out
    _, rows = split_csv((folder / "tau.csv").read_text())
    assert len(rows) == 8 * 200
    mu = sorted({float(row["mu"]) for row in rows})
    assert len(mu) == 200
    assert mu[0] == pytest.approx(0.02, abs=1e-15)
    assert mu[-1] == pytest.approx(0.99, abs=1e-15)

    # He3 and He5 learning themselves have a zero of A(mu) inside the range.
    summary = (folder / "summary.md").read_text()
    for spec in ("He3", "He5"):
        line = next(line for line in summary.splitlines() if line.startswith(f"| {spec} |"))
        singular = line.split("|")[3].strip()
        assert singular != "none", line
        assert all(0.02 < float(value) < 0.99 for value in singular.split(","))


def test_rollback_restores_old_file(tmp_path, monkeypatch):
    first = tmp_path / "first.txt"
    second = tmp_path / "second.txt"
    first.write_text("old first\n")
    real_replace = os.replace

    def fail_on_second(source, target):
        if Path(target) == second:
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", fail_on_second)
    with pytest.raises(OSError) as caught:
        outputs.atomic_write_files({first: b"new first\n", second: b"new second\n"})
    assert caught.value.filename == str(second)
    # The first target was replaced, then restored: the call changed nothing.
    assert first.read_text() == "old first\n"
    assert not second.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["first.txt"]


def test_rollback_removes_new_file(tmp_path, monkeypatch):
    first = tmp_path / "first.txt"
    second = tmp_path / "second.txt"
    real_replace = os.replace

    def fail_on_second(source, target):
        if Path(target) == second:
            raise OSError(5, "Input/output error")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", fail_on_second)
    with pytest.raises(OSError):
        outputs.atomic_write_files({first: b"first\n", second: b"second\n"})
    assert list(tmp_path.iterdir()) == []


def test_plot_path_that_is_a_folder_writes_nothing(capsys, tmp_path):
    table = tmp_path / "tau.csv"
    folder = tmp_path / "figure.png"
    folder.mkdir()
    status, _, err = run(capsys, "tau", "--student", "x", "--mu", "0.5", "--output", str(table), "--plot", str(folder))
    assert status == 1
    assert "is a folder" in err
    assert not table.exists()


@pytest.mark.parametrize("option", ["--output", "--plot"])
def test_empty_path_is_usage_error(capsys, option):
    status, out, err = run(capsys, "tau", "--student", "x", "--mu", "0.5", option, "")
    assert status == 2
    assert out == ""
    assert f"{option} is empty" in err


def test_tau_plot_when_a_vanishes_everywhere(capsys, tmp_path):
    # He0 is constant, so A(mu) = 0 at every mu and no tau is defined: the figure still renders.
    figure = tmp_path / "he0.png"
    status, out, err = run(capsys, "tau", "--student", "He0", "--mu", "0.1:0.9:5", "--plot", str(figure))
    assert status == 0, err
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert "A(mu) = 0 at every mu" in out
