"""The code blocks of docs/api.md run as they stand, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

API_PAGE = Path(__file__).resolve().parent.parent / "docs" / "api.md"
BLOCKS = re.findall(r"```python\n(.*?)```", API_PAGE.read_text(encoding="utf-8"), re.S)


def test_page_has_examples():
    # One example per section of the page; fewer means a block lost its fence.
    assert len(BLOCKS) >= 6


def test_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for index, block in enumerate(BLOCKS):
        try:
            exec(compile(block, f"docs/api.md block {index + 1}", "exec"), namespace)
        except Exception as error:  # report which block broke
            pytest.fail(f"docs/api.md block {index + 1} raised {type(error).__name__}: {error}")
    printed = capsys.readouterr().out
    # Values the page states in its comments, computed independently elsewhere:
    # He3's singular mu (tests/test_singular.py) and E[(sqrt(Q) z)^4] = 3 Q^2.
    assert "0.3207243473" in printed
    assert "3*Q**2" in printed
