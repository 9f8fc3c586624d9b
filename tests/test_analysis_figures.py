"""Layout of the fixed-points and phase-diagram figures: legends clear of the data, labelled keys."""

from __future__ import annotations

import pytest

from lora_theory import analysis_outputs
from lora_theory.cli import main


@pytest.fixture
def figures(monkeypatch):
    """Record each figure that a command finishes."""
    recorded = []
    finish = analysis_outputs._finish_figure

    def record(figure, command):
        recorded.append(figure)
        return finish(figure, command)

    monkeypatch.setattr(analysis_outputs, "_finish_figure", record)
    return recorded


def legend_below_axes(figure) -> bool:
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    legend = axes.get_legend().get_window_extent(renderer)
    return legend.y1 <= axes.get_window_extent(renderer).y0


def test_phase_portrait_keys_explained(figures, tmp_path):
    status = main(["fixed-points", "--student", "He3", "--mu", "0.6", "--plot", str(tmp_path / "p.png"),
                   "--output", str(tmp_path / "p.txt")])
    figure = figures[0]
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]

    assert status == 0
    assert any("loss level sets" in label for label in labels)
    assert "per unit t" in figure.axes[1].get_ylabel()
    assert legend_below_axes(figure)


def test_phase_diagram_legend_outside(figures, tmp_path):
    status = main(["phase-diagram", "--plot", str(tmp_path / "pd.png"), "--output", str(tmp_path / "pd.txt")])

    assert status == 0
    assert legend_below_axes(figures[0])
