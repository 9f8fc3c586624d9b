"""The analysis notebooks: stripped of outputs in git, and runnable headless at the small size.

Each notebook runs in a fresh python3 kernel through ``notebooks/run.py``
(nbclient), with ``LORA_THEORY_NOTEBOOK_SIZE=small`` and ``MPLBACKEND=Agg``.
At the small size a notebook takes 3 to 4 s on an idle 2-core machine,
kernel start included, and up to 11 s under load.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_FOLDER = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_FOLDER.glob("*.ipynb"))

# Limit on one cell at the small size. The slowest small cell takes about 3 s,
# and the margin covers a machine shared with other jobs.
CELL_TIMEOUT = 120


def _load_runner():
    specification = importlib.util.spec_from_file_location("notebook_runner", NOTEBOOK_FOLDER / "run.py")
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


runner = _load_runner()


def _write_notebook(path: Path, sources: list[str]) -> Path:
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in sources],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbformat.write(notebook, path)
    return path


def test_four_notebooks_present():
    names = [path.name for path in NOTEBOOKS]
    assert names == ["01_escape_rates.ipynb", "02_trajectories.ipynb", "03_scaling.ipynb", "04_label_change.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_stripped(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)

    assert "widgets" not in notebook.metadata
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"cell {index} has outputs"
        assert cell.execution_count is None, f"cell {index} has an execution count"
        assert "execution" not in cell.metadata, f"cell {index} has execution timing metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_reads_size_setting(path):
    notebook = nbformat.read(path, as_version=4)
    code_cells = [cell.source for cell in notebook.cells if cell.cell_type == "code"]

    # The first code cell is the single settings cell, and no other cell reads the variable.
    assert 'os.environ.get("LORA_THEORY_NOTEBOOK_SIZE", "small") == "full"' in code_cells[0]
    assert all("LORA_THEORY_NOTEBOOK_SIZE" not in source for source in code_cells[1:])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_small(path):
    notebook = runner.execute_notebook(path, "small", CELL_TIMEOUT)

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    # Every notebook shows at least one figure, as PNG.
    assert any("image/png" in output.get("data", {}) for output in outputs)
    # The settings cell reports the size it read.
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert first_code.outputs[0].data["text/plain"] == "'small'"


def test_run_script_writes_executed_copy(tmp_path, capsys):
    source = _write_notebook(tmp_path / "tiny.ipynb", ["import os\nprint(os.environ['LORA_THEORY_NOTEBOOK_SIZE'], os.environ['MPLBACKEND'])"])
    output = tmp_path / "executed"

    status = runner.main(["--size", "small", "--output", str(output), str(source)])
    assert status == 0

    executed = nbformat.read(output / "tiny.ipynb", as_version=4)
    assert executed.cells[0].outputs[0].text == "small Agg\n"
    # The source notebook keeps no outputs.
    assert nbformat.read(source, as_version=4).cells[0].outputs == []
    assert "tiny.ipynb ran in" in capsys.readouterr().out


def test_run_script_names_failing_cell(tmp_path, capsys):
    source = _write_notebook(tmp_path / "broken.ipynb", ["x = 1", "raise ValueError('cell failure for the test')", "y = 2"])

    status = runner.main(["--size", "small", "--output", str(tmp_path / "executed"), str(source)])
    assert status == 1

    error = capsys.readouterr().err
    assert "broken.ipynb: cell 1 failed" in error
    assert "cell failure for the test" in error
    assert not (tmp_path / "executed" / "broken.ipynb").exists()


def test_run_script_rejects_output_in_notebooks(capsys):
    with pytest.raises(SystemExit) as exit_request:
        runner.main(["--size", "small", "--output", str(NOTEBOOK_FOLDER / "executed")])
    assert exit_request.value.code == 2
    assert "is inside" in capsys.readouterr().err
    assert not (NOTEBOOK_FOLDER / "executed").exists()
