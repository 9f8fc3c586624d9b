"""Tests of the simulate and escape commands: outputs against the library, units, errors, progress."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from cli_helpers import load_json, run, split_csv

from lora_theory.cli import _trajectories as trajectory_commands
from lora_theory.cli import main
from lora_theory.dynamics import integrate_flow
from lora_theory.rates import exit_time
from lora_theory.simulation import log_grid, simulate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A small reduced-SGD setting that runs in well under a second.
SMALL_SGD = ["--student", "x", "--mu", "0.5", "--d", "100", "--lr", "0.5", "--batch", "50"]


def column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    return np.array([float(row[name]) if row[name] != "" else np.nan for row in rows])


# --- simulate: SGD --------------------------------------------------------------


def test_simulate_reduced_matches_library(capsys):
    status, out, err = run(capsys, "simulate", *SMALL_SGD, "--steps", "30", "--seeds", "8", "--method", "reduced", "--record", "all", "--seed", "3")
    assert status == 0, err
    assert err == ""
    comments, rows = split_csv(out)

    expected = simulate("x", mu=0.5, d=100, eta=0.5, batch=50, steps=30, n_runs=8, seed=3, record="all")
    assert len(rows) == 31
    np.testing.assert_array_equal(column(rows, "step"), np.arange(31))
    np.testing.assert_allclose(column(rows, "m_mean"), expected.mean("m"), rtol=1e-15)
    np.testing.assert_allclose(column(rows, "abs_m_q50"), expected.quantiles(0.5, "abs_m"), rtol=1e-15)
    np.testing.assert_allclose(column(rows, "u_q95"), expected.quantiles(0.95, "u"), rtol=1e-15)
    assert set(column(rows, "runs")) == {8.0}


def test_simulate_time_columns_and_units(capsys):
    status, out, _ = run(capsys, "simulate", *SMALL_SGD, "--steps", "10", "--seeds", "2", "--method", "reduced", "--record", "all")
    assert status == 0
    comments, rows = split_csv(out)
    steps = column(rows, "step")
    np.testing.assert_array_equal(column(rows, "samples"), 50 * steps)
    np.testing.assert_allclose(column(rows, "t"), 0.5 * steps, rtol=1e-15)
    header = "\n".join(comments)
    assert "t = eta * step" in header
    assert "samples = B * step" in header
    assert any(line.startswith("made by: lora-theory simulate") for line in comments)


def test_simulate_columns_named(capsys):
    status, out, _ = run(capsys, "simulate", *SMALL_SGD, "--steps", "5", "--seeds", "2", "--method", "reduced")
    assert status == 0
    _, rows = split_csv(out)
    expected = ["step", "samples", "t", "runs"]
    for quantity in ("m", "abs_m", "u"):
        expected += [f"{quantity}_mean"] + [f"{quantity}_q{level:02d}" for level in (5, 25, 50, 75, 95)]
    assert list(rows[0]) == expected


def test_simulate_log_grid(capsys):
    status, out, _ = run(capsys, "simulate", *SMALL_SGD, "--steps", "5000", "--seeds", "2", "--method", "reduced")
    assert status == 0
    _, rows = split_csv(out)
    np.testing.assert_array_equal(column(rows, "step"), log_grid(5000))


def test_simulate_quantiles_ordered(capsys):
    status, out, _ = run(capsys, "simulate", *SMALL_SGD, "--steps", "40", "--seeds", "16", "--method", "reduced", "--record", "all")
    assert status == 0
    _, rows = split_csv(out)
    for quantity in ("m", "abs_m", "u"):
        levels = np.array([column(rows, f"{quantity}_q{level:02d}") for level in (5, 25, 50, 75, 95)])
        assert np.all(np.diff(levels, axis=0) >= 0), quantity


def test_simulate_given_start(capsys):
    status, out, _ = run(capsys, "simulate", *SMALL_SGD, "--steps", "3", "--seeds", "4", "--method", "reduced", "--m0", "-0.25", "--u0", "0.125")
    assert status == 0
    comments, rows = split_csv(out)
    assert float(rows[0]["m_q05"]) == -0.25
    assert float(rows[0]["m_q95"]) == -0.25
    assert float(rows[0]["u_mean"]) == 0.125
    assert any("m0 = -0.25" in line for line in comments)


def test_simulate_default_start_random(capsys):
    # Without --m0 every run draws its own v, so the initial overlaps differ.
    status, out, _ = run(capsys, "simulate", *SMALL_SGD, "--steps", "1", "--seeds", "8", "--method", "reduced")
    assert status == 0
    comments, rows = split_csv(out)
    assert float(rows[0]["m_q05"]) < float(rows[0]["m_q95"])
    assert float(rows[0]["u_mean"]) == pytest.approx(1e-4, rel=1e-12)
    assert any("uniform" in line for line in comments)


def test_simulate_full_method(capsys):
    arguments = ["--student", "erf", "--mu", "0.5", "--d", "20", "--lr", "0.1", "--batch", "10", "--steps", "5", "--seeds", "3"]
    status, out, err = run(capsys, "simulate", *arguments, "--method", "full", "--record", "all")
    assert status == 0, err
    _, rows = split_csv(out)
    expected = simulate("erf", mu=0.5, d=20, eta=0.1, batch=10, steps=5, n_runs=3, method="full", record="all")
    np.testing.assert_allclose(column(rows, "m_mean"), expected.mean("m"), rtol=1e-15)


def test_simulate_divergence_warns(capsys):
    status, out, err = run(capsys, "simulate", "--student", "He3", "--mu", "0.5", "--d", "10", "--lr", "1", "--batch", "1",
                           "--steps", "100", "--seeds", "4", "--method", "reduced", "--record", "all")
    assert status == 0
    assert "diverged" in err
    assert "--lr" in err
    _, rows = split_csv(out)
    assert column(rows, "runs")[-1] < 4
    assert "nan" not in out.lower()


# --- simulate: flow --------------------------------------------------------------


def test_simulate_flow_matches_integrate_flow(capsys):
    status, out, err = run(capsys, "simulate", "--student", "erf", "--mu", "0.5", "--d", "1000", "--lr", "0.2", "--batch", "500",
                           "--steps", "1000", "--method", "flow")
    assert status == 0, err
    comments, rows = split_csv(out)
    assert list(rows[0]) == ["step", "samples", "t", "u", "m", "abs_m", "loss"]

    # Defaults: m0 = 1/sqrt(d), u0 = 1/d^2, kappa = eta d / B = 0.4.
    steps = log_grid(1000)
    expected = integrate_flow("erf", mu=0.5, u0=1e-6, m0=1 / math.sqrt(1000), kappa=0.4, t_max=200.0, t_eval=0.2 * steps, m_exit=1.0)
    np.testing.assert_array_equal(column(rows, "step"), steps)
    np.testing.assert_allclose(column(rows, "m"), expected.m, rtol=1e-12)
    np.testing.assert_allclose(column(rows, "u"), expected.u, rtol=1e-12)
    np.testing.assert_allclose(column(rows, "loss"), expected.loss, rtol=1e-12)
    assert any("kappa = eta d / B = 0.4" in line for line in comments)


def test_simulate_flow_kappa_override(capsys):
    arguments = ["--student", "erf", "--mu", "0.5", "--d", "1000", "--lr", "0.2", "--batch", "500", "--steps", "1000", "--method", "flow"]
    _, default_out, _ = run(capsys, "simulate", *arguments)
    status, zero_out, _ = run(capsys, "simulate", *arguments, "--kappa", "0")
    assert status == 0
    _, default_rows = split_csv(default_out)
    _, zero_rows = split_csv(zero_out)

    expected = integrate_flow("erf", mu=0.5, u0=1e-6, m0=1 / math.sqrt(1000), kappa=0.0, t_max=200.0, t_eval=0.2 * log_grid(1000), m_exit=1.0)
    np.testing.assert_allclose(column(zero_rows, "m"), expected.m, rtol=1e-12)
    assert not np.allclose(column(zero_rows, "m"), column(default_rows, "m"))


def test_simulate_writes_csv_and_plot(capsys, tmp_path):
    target = tmp_path / "trajectories.csv"
    figure = tmp_path / "trajectories.png"
    status, out, err = run(capsys, "simulate", *SMALL_SGD, "--steps", "50", "--seeds", "4", "--method", "reduced",
                           "--output", str(target), "--plot", str(figure))
    assert status == 0, err
    assert out == ""
    assert str(target) in err
    assert target.read_text().startswith("# lora-theory simulate")
    assert figure.read_bytes().startswith(PNG_SIGNATURE)


def test_simulate_flow_plot(capsys, tmp_path):
    figure = tmp_path / "flow.png"
    status, _, err = run(capsys, "simulate", *SMALL_SGD, "--steps", "200", "--method", "flow", "--plot", str(figure))
    assert status == 0, err
    assert figure.read_bytes().startswith(PNG_SIGNATURE)


def test_simulate_unwritable_output_exits_1(capsys, tmp_path):
    target = tmp_path / "missing" / "out.csv"
    status, _, err = run(capsys, "simulate", *SMALL_SGD, "--steps", "5", "--seeds", "2", "--method", "reduced", "--output", str(target))
    assert status == 1
    assert str(target) in err


# --- escape ------------------------------------------------------------------------

ESCAPE_KEYS = ["mu", "method", "escape_time", "escape_steps", "escape_samples", "ci_low", "ci_high", "censored_fraction"]


def test_escape_json_rows_schema(capsys):
    status, out, err = run(capsys, "escape", *SMALL_SGD[:2], "--mu", "0.3,0.6", *SMALL_SGD[4:], "--method", "flow", "--format", "json")
    assert status == 0, err
    document = load_json(out)
    assert len(document["rows"]) == 2
    for row in document["rows"]:
        assert list(row) == ESCAPE_KEYS
        assert row["method"] == "flow"
    assert document["time_unit"] == "t = eta * steps"


def test_escape_flow_matches_integrate_flow(capsys):
    status, out, _ = run(capsys, "escape", "--student", "erf", "--mu", "0.5", "--d", "1000", "--lr", "0.2", "--batch", "500",
                         "--method", "flow", "--format", "json")
    assert status == 0
    row = load_json(out)["rows"][0]
    expected = integrate_flow("erf", mu=0.5, u0=1e-6, m0=1 / math.sqrt(1000), kappa=0.4)
    assert row["escape_time"] == pytest.approx(expected.escape_time, rel=1e-9)
    assert row["escape_steps"] == pytest.approx(expected.escape_time / 0.2, rel=1e-12)
    assert row["escape_samples"] == pytest.approx(500 * expected.escape_time / 0.2, rel=1e-12)
    assert row["ci_low"] is None
    assert row["ci_high"] is None
    assert row["censored_fraction"] == 0.0


def test_escape_linear_matches_exit_time(capsys):
    # With u0 = 0 the estimate is the one of rates.exit_time.
    status, out, _ = run(capsys, "escape", "--student", "erf", "--mu", "0.2,0.5,0.8", "--d", "1000", "--lr", "0.2", "--batch", "500",
                         "--method", "linear", "--u0", "0", "--format", "json")
    assert status == 0
    expected, _ = exit_time("erf", mu=[0.2, 0.5, 0.8], d=1000)
    for row, time in zip(load_json(out)["rows"], expected):
        assert row["escape_time"] == pytest.approx(time, rel=1e-12)
        assert row["censored_fraction"] == 0.0
        assert row["ci_low"] is None


def test_escape_linear_includes_u0(capsys):
    # Linear student, mu = 0.5: A = 0.5, B = -1, lambda_plus = (sqrt(2) - 1) / 2.
    # The unstable mode starts at c = (A lambda_plus u0 + A^2 m0) / (lambda_plus^2 + A^2).
    status, out, _ = run(capsys, "escape", "--student", "x", "--mu", "0.5", "--d", "100", "--lr", "0.1", "--batch", "10",
                         "--method", "linear", "--m0", "0.01", "--u0", "0.02", "--format", "json")
    assert status == 0
    A, lambda_plus = 0.5, (math.sqrt(2) - 1) / 2
    c = (A * lambda_plus * 0.02 + A * A * 0.01) / (lambda_plus**2 + A * A)
    assert load_json(out)["rows"][0]["escape_time"] == pytest.approx(math.log(0.5 / c) / lambda_plus, rel=1e-12)


def test_escape_linear_undefined_at_mu_one(capsys):
    status, out, _ = run(capsys, "escape", "--student", "x", "--mu", "0.5,1", "--d", "100", "--lr", "0.1", "--batch", "10",
                         "--method", "linear", "--format", "json")
    assert status == 0
    assert "NaN" not in out
    document = load_json(out)
    last = document["rows"][-1]
    assert last["escape_time"] is None
    assert last["escape_steps"] is None
    assert last["censored_fraction"] == 1.0
    assert document["notes"][0]["mu"] == 1.0


def test_escape_flow_censored_at_horizon(capsys):
    status, out, _ = run(capsys, "escape", "--student", "erf", "--mu", "0.5", "--d", "1000", "--lr", "0.2", "--batch", "500",
                         "--method", "flow", "--max-steps", "10", "--format", "json")
    assert status == 0
    document = load_json(out)
    row = document["rows"][0]
    assert row["escape_time"] is None
    assert row["censored_fraction"] == 1.0
    assert "did not escape" in document["notes"][0]["note"]


def test_escape_reduced_matches_library(capsys):
    status, out, err = run(capsys, "escape", *SMALL_SGD, "--method", "reduced", "--seeds", "16", "--max-steps", "400",
                           "--seed", "5", "--format", "json")
    assert status == 0, err
    row = load_json(out)["rows"][0]

    result = simulate("x", mu=0.5, d=100, eta=0.5, batch=50, steps=400, n_runs=16, seed=5, record=None, stop_when_escaped=True)
    summary = result.escape_summary()
    assert summary.n_escaped == 16
    assert row["escape_steps"] == summary.steps.median
    assert row["escape_time"] == pytest.approx(summary.t.median, rel=1e-15)
    assert row["escape_samples"] == summary.samples.median
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(summary.t.median_ci, rel=1e-15)
    assert row["ci_low"] <= row["escape_time"] <= row["ci_high"]
    assert row["censored_fraction"] == 0.0


def test_escape_mean_statistic(capsys):
    status, out, _ = run(capsys, "escape", *SMALL_SGD, "--method", "reduced", "--seeds", "16", "--max-steps", "400",
                         "--statistic", "mean", "--format", "json")
    assert status == 0
    row = load_json(out)["rows"][0]
    result = simulate("x", mu=0.5, d=100, eta=0.5, batch=50, steps=400, n_runs=16, seed=0, record=None, stop_when_escaped=True)
    assert row["escape_steps"] == pytest.approx(result.escape_summary().steps.mean, rel=1e-15)


def test_escape_reduced_all_censored(capsys):
    # One step is far too short to escape: every run is censored, none counted at the last step.
    status, out, _ = run(capsys, "escape", *SMALL_SGD, "--method", "reduced", "--seeds", "8", "--max-steps", "1", "--format", "json")
    assert status == 0
    document = load_json(out)
    row = document["rows"][0]
    assert row["escape_time"] is None
    assert row["ci_low"] is None
    assert row["censored_fraction"] == 1.0
    assert "8 of 8 runs censored" in document["notes"][0]["note"]


def test_escape_csv_and_table(capsys):
    arguments = ["escape", "--student", "x", "--mu", "0.5,1", "--d", "100", "--lr", "0.1", "--batch", "10", "--method", "linear"]
    status, out, _ = run(capsys, *arguments, "--format", "csv")
    assert status == 0
    comments, rows = split_csv(out)
    assert comments[0].startswith("escape times (first |m| >= ")
    assert "method linear" in comments[0]
    assert comments[1].startswith("d = 100, eta = 0.1, B = 10, ")
    assert "time unit: escape_time in t = eta * steps; escape_steps in steps; escape_samples in samples = B * steps" in comments
    settings = next(line for line in comments if line.startswith("settings: "))
    for field in ("d = 100", "eta = 0.1", "batch = 10", "kappa = 1.0", "m0 = ", "method = linear"):
        assert field in settings
    assert comments[-1].startswith("made by: lora-theory escape --student x --mu 0.5,1 ")
    assert list(rows[0]) == ESCAPE_KEYS + ["note"]
    assert rows[1]["escape_time"] == ""
    assert rows[1]["note"] != ""

    status, out, _ = run(capsys, *arguments)
    assert status == 0
    assert "t = eta * steps" in out
    assert "undefined" in out
    for token in out.replace(",", " ").split():
        assert token.lower() not in {"nan", "inf", "-inf"}, out


def test_escape_writes_output_file(capsys, tmp_path):
    target = tmp_path / "escape.json"
    status, out, err = run(capsys, "escape", *SMALL_SGD, "--method", "linear", "--format", "json", "--output", str(target))
    assert status == 0
    assert out == ""
    assert str(target) in err
    assert load_json(target.read_text())["rows"][0]["method"] == "linear"


# --- usage errors ------------------------------------------------------------------

SIMULATE = ["simulate", "--student", "x", "--mu", "0.5", "--d", "100", "--lr", "0.5", "--batch", "50", "--steps", "10", "--method", "reduced"]
ESCAPE = ["escape", "--student", "x", "--mu", "0.5", "--d", "100", "--lr", "0.5", "--batch", "50", "--method", "reduced"]


def replaced(arguments: list[str], option: str, value: str) -> list[str]:
    index = arguments.index(option)
    return arguments[: index + 1] + [value] + arguments[index + 2 :]


# (arguments, text the one-line message must contain)
USAGE_ERRORS = [
    (replaced(SIMULATE, "--d", "2"), "--d"),
    (replaced(ESCAPE, "--d", "2"), "--d"),
    (replaced(SIMULATE, "--d", "abc"), "abc"),
    (replaced(SIMULATE, "--batch", "0"), "--batch"),
    (replaced(ESCAPE, "--batch", "0"), "--batch"),
    (replaced(SIMULATE, "--lr", "0"), "--lr"),
    (replaced(SIMULATE, "--lr", "-0.1"), "-0.1"),
    (replaced(ESCAPE, "--lr", "nan"), "nan"),
    (SIMULATE + ["--m0", "1.5"], "1.5"),
    (ESCAPE + ["--m0", "-2"], "-2"),
    (replaced(SIMULATE, "--mu", "1.5"), "1.5"),
    (replaced(SIMULATE, "--mu", "0.1,0.2"), "0.1,0.2"),
    (replaced(ESCAPE, "--mu", "0.2,-0.25"), "-0.25"),
    (replaced(ESCAPE, "--mu", "0:1.5:4"), "1.5"),
    (replaced(ESCAPE, "--mu", "abc"), "abc"),
    (replaced(SIMULATE, "--steps", "0"), "--steps"),
    (replaced(SIMULATE, "--steps", "1e12") + ["--record", "all"], "--record log"),
    (SIMULATE + ["--seeds", "0"], "--seeds"),
    (SIMULATE + ["--kappa", "0.1"], "--kappa"),
    (replaced(SIMULATE, "--method", "flow") + ["--kappa", "-1"], "-1"),
    (ESCAPE + ["--kappa", "0"], "--kappa"),
    (ESCAPE + ["--m-exit", "0"], "--m-exit"),
    (ESCAPE + ["--m-exit", "1.5"], "1.5"),
    (ESCAPE + ["--max-steps", "0"], "--max-steps"),
    (replaced(replaced(ESCAPE, "--method", "full"), "--d", "1e7"), "--method reduced"),
    (replaced(SIMULATE, "--method", "linear"), "linear"),
    (replaced(ESCAPE, "--method", "exact"), "exact"),
    (SIMULATE[:-2], "--method"),
    (replaced(SIMULATE, "--student", "softmaxx"), "softmaxx"),
    (ESCAPE + ["--teacher", "He31"], "He31"),
    (replaced(ESCAPE, "--method", "linear") + ["--u0", "5"], "--method flow"),
]


@pytest.mark.parametrize("arguments, offending", USAGE_ERRORS, ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_usage_error_before_work(capsys, monkeypatch, arguments, offending):
    def forbidden(*args, **kwargs):
        raise AssertionError("computation started before the input was validated")

    monkeypatch.setattr(trajectory_commands, "simulate", forbidden)
    monkeypatch.setattr(trajectory_commands, "integrate_flow", forbidden)
    status, out, err = run(capsys, *arguments)
    assert status == 2
    assert out == ""
    assert offending in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("lora-theory")
    assert "Traceback" not in err


def test_negative_start_values_accepted(capsys):
    # Values such as -1e-3 start with "-" but are numbers, not options.
    status, out, err = run(capsys, "simulate", *SMALL_SGD, "--steps", "2", "--seeds", "2", "--method", "reduced", "--m0", "-1e-3", "--u0", "-1e-3")
    assert status == 0, err
    _, rows = split_csv(out)
    assert float(rows[0]["m_mean"]) == -1e-3
    assert float(rows[0]["u_mean"]) == -1e-3


def test_integral_float_dimension_accepted(capsys):
    status, _, err = run(capsys, "escape", *replaced(SMALL_SGD, "--d", "1e2"), "--method", "linear")
    assert status == 0, err


def test_help_states_units(capsys):
    status, out, _ = run(capsys, "escape", "--help")
    assert status == 0
    assert "t = eta * steps" in out
    assert "samples = B * steps" in out


# --- progress ----------------------------------------------------------------------


class TerminalStream(io.StringIO):
    """A text stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def test_quiet_without_terminal(capsys):
    status, _, err = run(capsys, "escape", *SMALL_SGD, "--method", "reduced", "--seeds", "4", "--max-steps", "200")
    assert status == 0
    assert err == ""


def test_progress_bar_on_terminal(capsys, monkeypatch):
    terminal = TerminalStream()
    monkeypatch.setattr("sys.stderr", terminal)
    status = main(["escape", *SMALL_SGD, "--method", "reduced", "--seeds", "4", "--max-steps", "200"])
    assert status == 0
    printed = terminal.getvalue()
    assert "escape (reduced)" in printed
    assert "run-step" in printed
