"""Tests of the fixed-points, search and phase-diagram commands and of the singular-mu lines of tau."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cli_helpers import load_json, run, split_csv

from lora_theory.rates import escape_rates

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"

# He3 learning He3: A(mu) = 9 mu (-5 mu^4 + 4 mu^2 + 2 mu - 1) has the interior zero mu_s, where
# escape from u0 -> 0 needs |m0| > m_c (values computed independently to 7 and 5 digits).
HE3_MU_S = 0.3207243
HE3_M_C = 0.58193


def assert_valid_png(path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data.endswith(PNG_END)

    # Decoding checks the chunks and their CRCs; the figures are at least 5 x 4 inches at 150 dpi.
    from matplotlib.image import imread

    pixels = imread(path)
    assert pixels.shape[0] >= 600
    assert pixels.shape[1] >= 750


def linear_lambda_plus(mu: float) -> float:
    # Linear student and teacher: A = 1 - mu, B = -1.
    A = 1 - mu
    return (-1 + math.sqrt(1 + 4 * A**2)) / 2


# --- fixed-points -------------------------------------------------------------------


def test_fixed_points_json_linear_closed_forms(capsys):
    # L = ((mu + u m - 1)^2 + u^2 (1 - m^2)) / 2. Fixed points (0, 0) and (+-(1 - mu), +-1);
    # Jacobian eigenvalues (-1 +- sqrt(1 + 4 A^2)) / 2 at (0, 0) and -1, -2 A^2 at the minima.
    mu = 0.5
    A = 1 - mu
    status, out, err = run(capsys, "fixed-points", "--student", "x", "--mu", str(mu), "--format", "json")
    assert status == 0, err
    document = load_json(out)
    assert document["time_unit"] == "plain"
    assert "t = eta * steps" in document["time_unit_description"]
    assert "scipy.optimize.root" in document["method"]
    assert document["search"]["residual_tolerance"] == 1e-10

    points = {(round(row["u"], 9) + 0.0, round(row["m"], 9) + 0.0): row for row in document["rows"]}
    assert set(points) == {(0.0, 0.0), (A, 1.0), (-A, -1.0)}

    search = points[(0.0, 0.0)]
    expected = sorted([(-1 - math.sqrt(1 + 4 * A**2)) / 2, (-1 + math.sqrt(1 + 4 * A**2)) / 2])
    # 1e-10 relative: the Jacobian is generated from the exact symbolic flow.
    np.testing.assert_allclose([value["real"] for value in search["eigenvalues"]], expected, rtol=1e-10)
    assert [value["imag"] for value in search["eigenvalues"]] == [0.0, 0.0]
    assert search["stability"] == "saddle"
    assert search["role"] == "search point"
    assert search["loss"] == pytest.approx((mu - 1) ** 2 / 2, rel=1e-12)

    minimum = points[(A, 1.0)]
    np.testing.assert_allclose([value["real"] for value in minimum["eigenvalues"]], sorted([-1.0, -2 * A**2]), rtol=1e-9)
    assert minimum["stability"] == "stable"
    assert minimum["role"] == "global minimum"
    assert abs(minimum["loss"]) < 1e-12


def test_fixed_points_symmetry_he3(capsys):
    # (u, m) -> (-u, -m) leaves Q and R unchanged, so fixed points pair up with equal loss and eigenvalues.
    status, out, err = run(capsys, "fixed-points", "--student", "He3", "--mu", "0.6", "--format", "json")
    assert status == 0, err
    rows = load_json(out)["rows"]
    positions = {(round(row["u"], 7) + 0.0, round(row["m"], 7) + 0.0): row for row in rows}
    for (u_value, m_value), row in positions.items():
        mirror = positions.get((round(-u_value, 7) + 0.0, round(-m_value, 7) + 0.0))
        assert mirror is not None, (u_value, m_value)
        # 1e-9: both losses are polished roots evaluated to about 1e-12.
        assert abs(mirror["loss"] - row["loss"]) < 1e-9
        assert mirror["stability"] == row["stability"]
        np.testing.assert_allclose(
            [value["real"] for value in mirror["eigenvalues"]], [value["real"] for value in row["eigenvalues"]], rtol=1e-7
        )


def test_fixed_points_he3_spurious_attractor_table(capsys):
    # At (u, m) = (-mu, 1) the student weight vanishes: output He3(0) = 0, loss E[He3^2] / 2 = 3! / 2 = 3.
    status, out, err = run(capsys, "fixed-points", "--student", "He3", "--mu", "0.6")
    assert status == 0, err
    assert "time unit: plain (t = eta * steps)" in out
    assert out.splitlines()[2].startswith("method: ")
    spurious = [line for line in out.splitlines() if line.rstrip().endswith("spurious attractor")]
    assert len(spurious) == 2
    cells = spurious[0].split()
    assert float(cells[0]) == pytest.approx(-0.6, abs=1e-6)
    assert float(cells[1]) == pytest.approx(1.0, abs=1e-6)
    assert float(cells[2]) == pytest.approx(3.0, abs=1e-6)
    assert "-0 " not in out


def test_fixed_points_csv_relu_one_sided(capsys):
    # ReLU at mu = 0.5: search point eigenvalues (B +- sqrt(B^2 + 4 A^2)) / 2 with A = 1/4, B = -1/2.
    status, out, err = run(capsys, "fixed-points", "--student", "relu", "--mu", "0.5", "--format", "csv")
    assert status == 0, err
    comments, rows = split_csv(out)
    assert any("t = eta * steps" in line for line in comments)
    assert any(line.startswith("made by: lora-theory fixed-points") for line in comments)
    assert list(rows[0]) == [
        "u", "m", "loss", "eigenvalue_1_real", "eigenvalue_1_imag", "eigenvalue_2_real", "eigenvalue_2_imag",
        "stability", "role", "jacobian_method",
    ]
    search = next(row for row in rows if row["role"] == "search point")
    A, B = 0.25, -0.5
    expected = sorted([(B - math.sqrt(B**2 + 4 * A**2)) / 2, (B + math.sqrt(B**2 + 4 * A**2)) / 2])
    np.testing.assert_allclose([float(search["eigenvalue_1_real"]), float(search["eigenvalue_2_real"])], expected, rtol=1e-9)
    # The minima sit on the kink m = 1 of the flow, where the Jacobian comes from one-sided differences.
    minima = [row for row in rows if row["role"] == "global minimum"]
    assert {row["jacobian_method"] for row in minima} == {"one-sided differences"}


@pytest.mark.slow
def test_fixed_points_kinked_teacher(capsys):
    # tanh learning relu: the generated Jacobian needs second derivatives of the kink, so the
    # eigenvalues come from one-sided differences. At the search point the unstable one is
    # lambda_plus of the linear theory (agreement measured at 2e-13). The 1e-4 tolerance allows for
    # the first-order error of one-sided differences with step 1e-7 elsewhere in the flow.
    # Slow: the sign-change search evaluates the numerical flow on 121 x 81 points (minutes).
    status, out, err = run(capsys, "fixed-points", "--student", "tanh", "--teacher", "relu", "--mu", "0.5", "--format", "json")
    assert status == 0, err
    rows = load_json(out)["rows"]
    search = next(row for row in rows if row["role"] == "search point")
    assert search["jacobian_method"] == "one-sided differences"
    lambda_plus = float(escape_rates("tanh", "relu", mu=[0.5]).lambda_plus[0])
    assert search["eigenvalues"][1]["real"] == pytest.approx(lambda_plus, rel=1e-4)


def test_fixed_points_line_of_points_noted(capsys):
    # Linear model at mu = 1: w0 = w*, so every (0, m) is a global minimum with a zero eigenvalue.
    status, out, err = run(capsys, "fixed-points", "--student", "x", "--mu", "1")
    assert status == 0, err
    assert "non-hyperbolic" in out
    assert "curve of fixed points" in out


def test_fixed_points_plot_is_png(capsys, tmp_path):
    figure = tmp_path / "portrait.png"
    status, out, err = run(capsys, "fixed-points", "--student", "He3", "--mu", "0.6", "--format", "json", "--plot", str(figure))
    assert status == 0, err
    load_json(out)
    assert_valid_png(figure)
    assert str(figure) in err


# --- search ---------------------------------------------------------------------------


def test_search_json_linear_slope_is_tau(capsys):
    # tau of the linear model is 1 / lambda_plus with A = 1 - mu, B = -1 (closed form, not from the code).
    mu = 0.5
    status, out, err = run(capsys, "search", "--student", "x", "--mu", str(mu), "--m0", "1e-8:1e-4:5", "--format", "json")
    assert status == 0, err
    document = load_json(out)
    tau = 1 / linear_lambda_plus(mu)
    assert document["linear_theory"]["tau"] == pytest.approx(tau, rel=1e-12)
    # 1e-6 relative covers the integrator tolerance (rtol 1e-10) and corrections of order m0 <= 1e-4.
    assert document["fit"]["slope"] == pytest.approx(tau, rel=1e-6)
    assert document["slope_relative_error"] < 1e-6
    assert document["time_unit"] == "plain"
    assert document["tolerances"]["rtol"] == 1e-10

    # The range form of --m0 is spaced evenly in log(m0): 1e-8, 1e-7, ..., 1e-4.
    m0 = [row["m0"] for row in document["rows"]]
    np.testing.assert_allclose(m0, [1e-8, 1e-7, 1e-6, 1e-5, 1e-4], rtol=1e-12)
    for row in document["rows"]:
        assert row["log_m_exit_over_m0"] == pytest.approx(math.log(0.5 / row["m0"]), rel=1e-12)
        assert row["t_search"] > 0


def test_search_table_he3_slope_from_rates(capsys):
    # The slope of t_search against log(m_exit / m0) is tau(mu) from the rates.
    mu = 0.6
    tau = float(escape_rates("He3", mu=[mu]).tau[0])
    status, out, err = run(capsys, "search", "--student", "He3", "--mu", str(mu), "--m0", "1e-10,1e-7,1e-4")
    assert status == 0, err
    assert "time unit: plain (t = eta * steps)" in out
    assert "LSODA" in out
    slope_line = next(line for line in out.splitlines() if line.startswith("fit: slope = "))
    slope = float(slope_line.split("=")[1].split(",")[0])
    # 1e-6 relative, as for the library fit (integrator tolerance and m0 corrections).
    assert slope == pytest.approx(tau, rel=1e-6)
    assert "agreement: |slope / tau - 1|" in out


def test_search_csv_comment_lines(capsys):
    status, out, err = run(capsys, "search", "--student", "erf", "--mu", "0.5", "--m0", "1e-9,1e-6", "--format", "csv")
    assert status == 0, err
    comments, rows = split_csv(out)
    assert list(rows[0]) == ["m0", "log_m_exit_over_m0", "t_search", "t_fit", "t_linear"]
    assert len(rows) == 2
    assert any(line.startswith("time unit: plain") for line in comments)
    assert any(line.startswith("fit: slope") for line in comments)
    # Two points fit the line exactly.
    for row in rows:
        assert float(row["t_fit"]) == pytest.approx(float(row["t_search"]), rel=1e-9)


def test_search_formats_without_escape():
    # A run that did not escape is undefined: "undefined" in the table, an empty cell in CSV, null in JSON.
    from lora_theory import analysis_outputs

    result = analysis_outputs.SearchResult(
        settings={"student": "x", "teacher": "x", "mu": 0.5, "kappa": 1.0, "m_exit": 0.5, "u0": 0.0},
        method="flow", tolerances={"rtol": 1e-10}, m0=np.array([1e-6, 1e-4, 1e-2]),
        t_search=np.array([60.0, 40.0, np.nan]), slope=4.8, offset=1.0, tau=4.8, offset_linear=0.7,
        A=0.5, lambda_plus=0.2,
    )
    table = analysis_outputs.format_search(result, "table", "lora-theory search")
    assert "undefined" in table
    assert "over 2 of 3 m0" in table
    _, rows = split_csv(analysis_outputs.format_search(result, "csv", "lora-theory search"))
    assert rows[2]["t_search"] == ""
    document = load_json(analysis_outputs.format_search(result, "json", "lora-theory search"))
    assert document["rows"][2]["t_search"] is None
    assert document["fit"]["escaped"] == 2


def test_search_plot_is_png(capsys, tmp_path):
    figure = tmp_path / "search.png"
    status, _, err = run(capsys, "search", "--student", "x", "--mu", "0.5", "--m0", "1e-6,1e-4", "--plot", str(figure))
    assert status == 0, err
    assert_valid_png(figure)


# --- phase-diagram ------------------------------------------------------------------


def test_phase_diagram_json_closed_forms(capsys):
    # He1 = x: A = 1 - mu, B = -1 and k! * k = 1. He2: A = 6 mu (1 - mu^2), B = 2 - 6 mu^2
    # (from He2(mu z) = mu^2 He2(z) + mu^2 - 1), and the hermite unit multiplies tau by 2! * 2 = 4.
    mu_grid = [0.1, 0.5, 0.9]
    status, out, err = run(capsys, "phase-diagram", "--k-max", "3", "--mu", "0.1,0.5,0.9", "--format", "json")
    assert status == 0, err
    document = load_json(out)
    assert document["time_unit"] == "hermite"
    assert document["comparison"]["d"] == 1000
    assert document["comparison"]["kappa"] == 0
    assert len(document["rows"]) == 3 * 3

    rows = {(row["k"], row["mu"]): row for row in document["rows"]}
    for mu in mu_grid:
        assert rows[1, mu]["tau"] == pytest.approx(1 / linear_lambda_plus(mu), rel=1e-12)
        A, B = 6 * mu * (1 - mu**2), 2 - 6 * mu**2
        lambda_plus = (B + math.sqrt(B**2 + 4 * A**2)) / 2
        assert rows[2, mu]["tau"] == pytest.approx(4 / lambda_plus, rel=1e-12)

    degrees = {entry["k"]: entry for entry in document["degrees"]}
    assert degrees[1]["singular_mu"] == []
    assert degrees[2]["singular_mu"] == []
    assert degrees[3]["singular_mu"][0] == pytest.approx(HE3_MU_S, abs=1e-7)


def test_phase_diagram_baseline_linear_closed_form(capsys):
    # Linear teacher without pre-training: dm/dt = 1 - m^2 at kappa = 0, so the baseline reaches
    # m_exit = 0.5 from 1/sqrt(d) at t = atanh(0.5) - atanh(1/sqrt(d)); the linear LoRA estimate
    # t_exit = tau (log(m_exit sqrt(d)) + log(1 + (lambda_plus / A)^2)) exceeds it at every mu, so pre-training hurts.
    d = 1000
    status, out, err = run(capsys, "phase-diagram", "--k-max", "1", "--mu", "0.1,0.5", "--d", str(d), "--format", "json")
    assert status == 0, err
    document = load_json(out)
    baseline = math.atanh(0.5) - math.atanh(1 / math.sqrt(d))
    # 1e-8 relative: the baseline flow is integrated with rtol 1e-10.
    assert document["degrees"][0]["baseline_time"] == pytest.approx(baseline, rel=1e-8)
    for row in document["rows"]:
        mu = row["mu"]
        A, lambda_plus = 1 - mu, linear_lambda_plus(mu)
        t_exit = (math.log(0.5 * math.sqrt(d)) + math.log1p((lambda_plus / A) ** 2)) / lambda_plus
        assert row["t_exit"] == pytest.approx(t_exit, rel=1e-12)
        assert row["verdict"] == "hurts"
    assert document["degrees"][0]["boundary_mu"] == []


def test_phase_diagram_boundary_equal_times(capsys):
    # At a helps/hurts boundary the linear escape time equals the baseline's; both He3 boundaries at
    # d = 1000 lie inside (0.1, 0.99), and between them pre-training helps.
    status, out, err = run(capsys, "phase-diagram", "--k-max", "3", "--mu", "0.1:0.99:30", "--format", "json", "--time-unit", "plain")
    assert status == 0, err
    document = load_json(out)
    entry = document["degrees"][2]
    boundary = entry["boundary_mu"]
    assert len(boundary) == 2
    from lora_theory.rates import exit_time

    times, _ = exit_time("He3", mu=boundary, d=1000)
    # 1e-8 relative: Brent's method stops at 1e-10 in mu and t_exit has slope of order 1e2 there.
    np.testing.assert_allclose(times, entry["baseline_time"], rtol=1e-8)
    inside = [row for row in document["rows"] if row["k"] == 3 and boundary[0] < row["mu"] < boundary[1]]
    assert inside and all(row["verdict"] == "helps" for row in inside)


def test_phase_diagram_verdict_unit_free(capsys):
    # Both escape times scale by k! * k in the hermite unit, so the verdicts and boundaries agree.
    arguments = ["phase-diagram", "--k-max", "3", "--mu", "0.2,0.5,0.8", "--format", "json"]
    _, hermite, _ = run(capsys, *arguments)
    status, plain, err = run(capsys, *arguments, "--time-unit", "plain")
    assert status == 0, err
    hermite_document, plain_document = load_json(hermite), load_json(plain)
    assert plain_document["time_unit"] == "plain"
    for hermite_row, plain_row in zip(hermite_document["rows"], plain_document["rows"]):
        k = hermite_row["k"]
        assert hermite_row["verdict"] == plain_row["verdict"]
        assert hermite_row["tau"] == pytest.approx(math.factorial(k) * k * plain_row["tau"], rel=1e-12)
        assert hermite_row["baseline_time"] == pytest.approx(math.factorial(k) * k * plain_row["baseline_time"], rel=1e-12)
    for hermite_entry, plain_entry in zip(hermite_document["degrees"], plain_document["degrees"]):
        assert hermite_entry["boundary_mu"] == plain_entry["boundary_mu"]


def test_phase_diagram_noisy_baseline_never_escapes(capsys):
    # At kappa = 10 the renormalisation drift of the baseline beats its drive for He2 and He3 from
    # 1/sqrt(1000), so the baseline time is null and pre-training helps wherever t_exit is defined.
    status, out, err = run(capsys, "phase-diagram", "--k-max", "3", "--mu", "0.2,0.5", "--kappa", "10", "--format", "json")
    assert status == 0, err
    document = load_json(out)
    assert document["comparison"]["kappa"] == 10
    for entry in document["degrees"][1:]:
        assert entry["baseline_time"] is None
        assert entry["boundary_mu"] == []
    for row in document["rows"]:
        if row["k"] >= 2:
            assert row["baseline_time"] is None
            assert row["verdict"] == ("helps" if row["t_exit"] is not None else "undefined")


def test_phase_diagram_csv_one_row_per_cell(capsys):
    status, out, err = run(capsys, "phase-diagram", "--k-max", "4", "--mu", "0.2:0.8:7", "--format", "csv")
    assert status == 0, err
    comments, rows = split_csv(out)
    assert list(rows[0]) == ["k", "mu", "tau", "t_exit", "baseline_time", "verdict"]
    assert len(rows) == 4 * 7
    assert len({(row["k"], row["mu"]) for row in rows}) == 28
    assert any(line.startswith("time unit: hermite") for line in comments)
    assert any(line.startswith("comparison: d = 1000") for line in comments)
    assert {row["verdict"] for row in rows} <= {"helps", "hurts", "undefined"}


def test_phase_diagram_table_and_plot(capsys, tmp_path):
    figure = tmp_path / "phase.png"
    status, out, err = run(capsys, "phase-diagram", "--k-max", "5", "--mu", "0.05:0.95:19", "--plot", str(figure))
    assert status == 0, err
    assert "k = 3: singular mu (A = 0) 0.3207243473" in out
    assert "time unit: hermite" in out
    assert_valid_png(figure)


# --- tau: singular mu -----------------------------------------------------------------


def test_tau_json_singular_points_he3(capsys):
    status, out, err = run(capsys, "tau", "--student", "He3", "--mu", "0.02:0.99:40", "--format", "json")
    assert status == 0, err
    document = load_json(out)
    (point,) = document["singular_points"]
    assert point["mu"] == pytest.approx(HE3_MU_S, abs=1e-7)
    assert point["critical_alignment"] == pytest.approx(HE3_M_C, abs=1e-5)
    assert document["singular_mu"] == [point["mu"]]

    # The prefactor is the limit of tau (mu - mu_s)^2, computed here from tau itself; at distance
    # 1e-4 the relative correction is of order |A| / |B|, about 1e-4, so 1e-3 is safe.
    for offset in (-1e-4, 1e-4):
        tau = float(escape_rates("He3", mu=[point["mu"] + offset]).tau[0])
        assert tau * offset**2 == pytest.approx(point["tau_prefactor"], rel=1e-3)


def test_tau_json_hermite_prefactor_scales(capsys):
    # The hermite unit multiplies tau of He3 by 3! * 3 = 18, and so its prefactor; m_c has no unit.
    _, plain, _ = run(capsys, "tau", "--student", "He3", "--mu", "0.1:0.9:5", "--format", "json")
    status, hermite, err = run(capsys, "tau", "--student", "He3", "--mu", "0.1:0.9:5", "--format", "json", "--time-unit", "hermite")
    assert status == 0, err
    plain_point = load_json(plain)["singular_points"][0]
    hermite_document = load_json(hermite)
    hermite_point = hermite_document["singular_points"][0]
    assert hermite_point["tau_prefactor"] == pytest.approx(18 * plain_point["tau_prefactor"], rel=1e-12)
    assert hermite_point["critical_alignment"] == pytest.approx(plain_point["critical_alignment"], rel=1e-12)
    assert "18" in hermite_document["time_unit_description"]
    assert "closed forms" in hermite_document["method"]


def test_tau_json_no_singular_points(capsys):
    status, out, _ = run(capsys, "tau", "--student", "x", "--mu", "0.1,0.5", "--format", "json")
    assert status == 0
    document = load_json(out)
    assert document["singular_points"] == []
    assert document["singular_mu"] == []


def test_tau_table_lists_law_and_alignment(capsys):
    status, out, err = run(capsys, "tau", "--student", "He3", "--mu", "0.02:0.99:20")
    assert status == 0, err
    assert "method: linear theory" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("mu_s = 0.3207243"))
    assert "(mu - 0.3207243" in line
    assert "m_c = 0.5819" in line
    assert "time unit plain" in line


def test_tau_csv_note_at_singular_row(capsys):
    # Linear model at mu = 1: A = 1 - mu vanishes with slope -1 and B = -1, so tau ~ |B| / A'^2 (mu - 1)^-2
    # = (mu - 1)^-2; g(m) = -d^2 L / du^2 (0, m) = -1 for every m, so there is no critical alignment.
    status, out, err = run(capsys, "tau", "--student", "x", "--mu", "0.5,1", "--format", "csv")
    assert status == 0, err
    comments, rows = split_csv(out)
    assert "singular point: mu_s = 1: tau ~ 1 (mu - 1)^-2; no critical alignment in (0, 1] (time unit plain)" in comments
    assert list(rows[0]) == ["mu", "A", "B", "lambda_plus", "tau", "note"]
    assert rows[0]["note"] == ""
    assert rows[1]["tau"] == ""
    assert "tau ~ 1 (mu - mu_s)^-2" in rows[1]["note"]
    assert "no m_c in (0, 1]" in rows[1]["note"]


def test_tau_json_relu_kink_endpoint(capsys):
    # ReLU: A = (1 - mu) / 2, B = -1/2, so tau ~ 2 (mu - 1)^-2; the growth curvature contains delta
    # terms of the kink and is null rather than a failure.
    status, out, err = run(capsys, "tau", "--student", "relu", "--mu", "0.5,1", "--format", "json")
    assert status == 0, err
    (point,) = load_json(out)["singular_points"]
    assert point["mu"] == 1.0
    assert point["tau_prefactor"] == pytest.approx(2.0, rel=1e-12)
    assert point["growth_curvature"] is None
    assert point["critical_alignment"] is None


def test_tau_plot_with_singular_points(capsys, tmp_path):
    figure = tmp_path / "tau.png"
    status, _, err = run(capsys, "tau", "--student", "He3", "--mu", "0:1:21", "--plot", str(figure))
    assert status == 0, err
    assert_valid_png(figure)


# --- usage errors and files ---------------------------------------------------------

USAGE_ERRORS = [
    (["fixed-points", "--student", "x", "--mu", "1.5"], "1.5"),
    (["fixed-points", "--student", "x", "--mu", "0.2,0.4"], "0.2,0.4"),
    (["fixed-points", "--student", "x", "--mu", "abc"], "abc"),
    (["fixed-points", "--student", "softmaxx", "--mu", "0.5"], "softmaxx"),
    (["fixed-points", "--student", "x", "--mu", "0.5", "--kappa", "-1"], "-1"),
    (["fixed-points", "--student", "x", "--mu", "0.5", "--u-max", "0"], "--u-max must be a finite number > 0, got 0"),
    (["search", "--student", "x", "--mu", "-0.1"], "-0.1"),
    (["search", "--student", "nope", "--mu", "0.5"], "nope"),
    (["search", "--student", "x", "--mu", "0.5", "--m0", "1.5,1e-3"], "1.5"),
    (["search", "--student", "x", "--mu", "0.5", "--m0", "0,1e-3"], "--m0 value 0 is outside (0, 1)"),
    (["search", "--student", "x", "--mu", "0.5", "--m0", "-1e-3,1e-6"], "-0.001"),
    (["search", "--student", "x", "--mu", "0.5", "--m0", "0.7,1e-3"], "0.7"),
    (["search", "--student", "x", "--mu", "0.5", "--m0", "1e-3"], "1e-3"),
    (["search", "--student", "x", "--mu", "0.5", "--m-exit", "2"], "--m-exit must lie in (0, 1], got 2"),
    (["search", "--student", "x", "--mu", "1"], "mu = 1"),
    (["phase-diagram", "--k-max", "0"], "--k-max must be an integer in 1 ... 30, got 0"),
    (["phase-diagram", "--k-max", "31"], "31"),
    (["phase-diagram", "--mu", "0.5,1.25"], "1.25"),
    (["phase-diagram", "--d", "2"], "--d must be a dimension >= 3, got 2"),
    (["phase-diagram", "--d", "100", "--m-exit", "0.05"], "0.05"),
    (["phase-diagram", "--kappa", "nan"], "nan"),
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


@pytest.mark.parametrize(
    "arguments",
    [
        ["fixed-points", "--student", "x", "--mu", "0.5"],
        ["search", "--student", "x", "--mu", "0.5", "--m0", "1e-6,1e-4"],
        ["phase-diagram", "--k-max", "2", "--mu", "0.2,0.6"],
    ],
    ids=lambda value: value[0],
)
def test_unwritable_plot_writes_nothing(capsys, tmp_path, arguments):
    table = tmp_path / "result.txt"
    figure = tmp_path / "missing-folder" / "figure.png"
    status, out, err = run(capsys, *arguments, "--output", str(table), "--plot", str(figure))
    assert status == 1
    assert out == ""
    assert str(figure) in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_output_to_folder_fails(capsys, tmp_path):
    status, out, err = run(capsys, "fixed-points", "--student", "x", "--mu", "0.5", "--format", "json", "--output", str(tmp_path))
    assert status == 1
    assert out == ""
    assert f"cannot write {tmp_path}" in err
    assert list(tmp_path.iterdir()) == []


def test_same_output_and_plot_path(capsys, tmp_path):
    target = str(tmp_path / "same")
    status, _, err = run(capsys, "search", "--student", "x", "--mu", "0.5", "--output", target, "--plot", target)
    assert status == 2
    assert target in err
    assert list(tmp_path.iterdir()) == []


def test_output_file_matches_stdout(capsys, tmp_path):
    arguments = ["phase-diagram", "--k-max", "2", "--mu", "0.3,0.6", "--format", "csv"]
    _, printed, _ = run(capsys, *arguments)
    target = tmp_path / "phase.csv"
    status, out, err = run(capsys, *arguments, "--output", str(target))
    assert status == 0
    assert out == ""
    # The files differ only in the "made by" comment line, which names the command.
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("# made by")]
    assert strip(target.read_text()) == strip(printed)


@pytest.mark.slow
def test_phase_diagram_default_run(capsys, tmp_path):
    # The built-in default: k = 1 ... 10 over 200 values of mu (about 9 s on a 2-core machine).
    figure = tmp_path / "phase.png"
    status, out, err = run(capsys, "phase-diagram", "--format", "json", "--plot", str(figure))
    assert status == 0, err
    document = load_json(out)
    assert len(document["rows"]) == 10 * 200
    singular = {entry["k"]: entry["singular_mu"] for entry in document["degrees"]}
    # Odd He_k for k >= 3 have one interior zero of A(mu) in [0.02, 0.99]; even k up to 8 have none.
    for k in (3, 5, 7, 9):
        assert len(singular[k]) == 1, (k, singular[k])
    for k in (2, 4, 6, 8):
        assert singular[k] == []
    assert_valid_png(figure)
