"""The scaling command: outputs, units, files and usage errors."""

import csv
import io
import json

import pytest

from lora_theory.cli import main


def run(capsys, *arguments):
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_scaling_table_states_units_and_method(capsys):
    status, out, err = run(capsys, "scaling", "--teacher", "He1", "--d", "100,1000,10000")
    assert status == 0, err
    assert "units: steps = SGD steps, samples = B * steps, t = eta * steps" in out
    assert "method: flow" in out
    assert "eta ∝ 1/d" in out
    assert "fit: steps = exp(intercept) * d^slope" in out
    assert err == ""


def test_scaling_json_schema_flow(capsys):
    status, out, _ = run(capsys, "scaling", "--teacher", "He2", "--d", "1e2:1e4:3", "--format", "json")
    assert status == 0
    document = json.loads(out)
    assert document["method"] == "flow"
    assert document["n_runs"] is None
    assert document["mu"] is None
    assert document["information_exponent"] == 2
    assert document["units"] == {"steps": "SGD steps", "samples": "B * steps", "t": "eta * steps"}
    assert [row["d"] for row in document["rows"]] == [100, 1000, 10000]
    first = document["rows"][0]
    assert first["steps_ci_low"] is None
    assert first["censored_fraction"] is None
    assert first["t"] == pytest.approx(first["eta"] * first["steps"], rel=1e-12)
    fit = document["fit"]
    assert fit["law"] == "steps / log d = exp(intercept) * d^slope"
    assert fit["slope_ci_low"] is None
    assert fit["expected"] == 1.0


def test_scaling_json_reduced_with_pretraining(capsys):
    status, out, err = run(capsys, "scaling", "--teacher", "He2", "--mu", "0.5", "--method", "reduced",
                           "--seeds", "4", "--d", "100,300", "--format", "json")
    assert status == 0, err
    document = json.loads(out)
    assert document["mu"] == 0.5
    assert document["n_runs"] == 4
    assert "4 runs per d" in document["method_description"]
    for row in document["rows"]:
        assert row["steps_ci_low"] <= row["steps"] <= row["steps_ci_high"]
        assert 0.0 <= row["censored_fraction"] <= 1.0
        assert row["max_steps"] >= row["steps"]
    assert document["fit"]["law"] == "t = slope * (1/2) log d + intercept"
    assert document["fit"]["expected"] == pytest.approx(0.3977967969450576, rel=1e-9)


def test_scaling_csv_and_plot_files(capsys, tmp_path):
    output = tmp_path / "scaling.csv"
    plot = tmp_path / "scaling.png"
    status, out, err = run(capsys, "scaling", "--teacher", "He3", "--d", "1e2:1e6:3", "--format", "csv",
                           "--output", str(output), "--plot", str(plot))
    assert status == 0, err
    assert out == ""
    text = output.read_text()
    assert text.startswith("# scaling: student He3, teacher He3")
    rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
    assert [row["d"] for row in rows] == ["100", "10000", "1000000"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scaling_write_failure_exits_1(capsys, tmp_path):
    status, _, err = run(capsys, "scaling", "--teacher", "He1", "--d", "100,1000",
                         "--output", str(tmp_path / "missing" / "out.json"))
    assert status == 1
    assert "cannot write" in err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--d", "100"], "fewer than two"),
        (["--d", ""], "empty grid"),
        (["--d", "2,100"], "integer >= 3"),
        (["--d", "1e2:1e4"], "invalid grid"),
        (["--d", "abc"], "invalid grid"),
        (["--mu", "1.5"], "outside [0, 1]"),
        (["--mu", "abc"], "invalid value"),
        (["--fraction", "0"], "outside (0, 1)"),
        (["--method", "reduced", "--seeds", "1"], "at least 2"),
        (["--teacher", "He0"], "no finite information exponent"),
        (["--teacher", "foo"], "--teacher"),
    ],
)
def test_scaling_usage_errors_exit_2(capsys, arguments, message):
    base = ["scaling", "--teacher", "He2", "--d", "100,1000"]
    status, out, err = run(capsys, *base, *arguments)
    assert status == 2
    assert message in err
    assert out == ""
