"""Tests of what the search command shows while its flow runs are long."""

from __future__ import annotations

from lora_theory.cli import _analysis, main


def run(capsys, *arguments: str) -> tuple[int, str, str]:
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_search_warns_when_tau_is_large(capsys):
    # He3 at mu = 0.326 lies 0.0053 above the singular mu_s = 0.3207243, where tau is about 1,600.
    status, out, err = run(capsys, "search", "--student", "He3", "--mu", "0.326", "--m0", "1e-4,1e-3")

    assert status == 0
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "tau = " in warnings[0]
    assert "singular mu is 0.320724" in warnings[0]
    assert "--m0" in warnings[0]


def test_search_quiet_when_tau_is_small(capsys):
    status, out, err = run(capsys, "search", "--student", "He3", "--mu", "0.6", "--m0", "1e-4,1e-3")

    assert status == 0
    assert err == ""


def test_search_progress_bar_on_terminal(capsys, monkeypatch):
    monkeypatch.setattr(_analysis, "is_terminal", lambda: True)
    status, out, err = run(capsys, "search", "--student", "He3", "--mu", "0.6", "--m0", "1e-4,1e-3")

    assert status == 0
    assert "2/2" in err
    assert "m0" in err
