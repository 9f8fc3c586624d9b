"""Execute the analysis notebooks headless and write executed copies to a folder.

Usage::

    python notebooks/run.py [--size small|full] [--output DIR] [--timeout SECONDS] [NOTEBOOK ...]

Every notebook of this folder (or the ones named) runs in a fresh ``python3``
Jupyter kernel through nbclient, with ``LORA_THEORY_NOTEBOOK_SIZE`` set to the
size and ``MPLBACKEND=Agg``. The executed copies, with their outputs, go to
``--output`` (default ``./notebook-runs/``), never into this folder, so the
notebooks under version control stay without outputs.

Exit status: 0 when every notebook ran, 1 when a cell failed or timed out
(the message names the notebook and the cell), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOK_FOLDER = Path(__file__).resolve().parent
SIZES = ("small", "full")
SIZE_VARIABLE = "LORA_THEORY_NOTEBOOK_SIZE"

#: Default limit on the run time of one cell, in seconds. Full-size cells take minutes.
DEFAULT_TIMEOUT = {"small": 300, "full": 3600}


class NotebookCellError(RuntimeError):
    """A cell of a notebook raised an error, timed out or lost its kernel."""

    def __init__(self, notebook: Path, index: int, source: str, reason: str):
        first_line = source.strip().splitlines()[0] if source.strip() else "(empty cell)"
        super().__init__(f"{notebook.name}: cell {index} failed (first line: {first_line!r}):\n{reason}")
        self.notebook = notebook
        self.index = index


def notebook_paths() -> list[Path]:
    """Return the notebooks of this folder in name order."""
    return sorted(NOTEBOOK_FOLDER.glob("*.ipynb"))


def execute_notebook(path: Path, size: str, timeout: float):
    """Run every cell of ``path`` in a new python3 kernel and return the executed notebook.

    ``timeout`` limits each cell, in seconds. Raises :class:`NotebookCellError`
    at the first cell that fails, naming the notebook and the cell index
    (counted from 0 over all cells, Markdown included).
    """
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    notebook = nbformat.read(path, as_version=4)
    environment = dict(os.environ, **{SIZE_VARIABLE: size, "MPLBACKEND": "Agg"})

    # Talk to the kernel over Unix domain sockets in a private folder, not over TCP.
    with tempfile.TemporaryDirectory(prefix="lora-theory-kernel-") as folder:
        manager = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(folder, "kernel"))
        client = NotebookClient(notebook, km=manager, timeout=timeout, resources={"metadata": {"path": str(path.parent)}})
        try:
            with client.setup_kernel(env=environment):
                for index, cell in enumerate(notebook.cells):
                    try:
                        client.execute_cell(cell, index)
                    except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
                        raise NotebookCellError(path, index, cell.source, str(error)) from error
        finally:
            # nbclient does not stop the kernel of a manager that it was given, so stop it here.
            if manager.has_kernel:
                manager.shutdown_kernel(now=True)
    return notebook


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _parse(arguments: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Execute the analysis notebooks headless and write executed copies to a folder.")
    parser.add_argument("--size", choices=SIZES, default="full", help="size of every computation (default: full; small runs in seconds)")
    parser.add_argument("--output", metavar="DIR", default="notebook-runs", help="folder for the executed copies, created if missing (default: ./notebook-runs/)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="limit on the run time of one cell (default: 300 s small, 3600 s full)")
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="notebooks to run (default: every .ipynb file of the notebooks folder)")
    options = parser.parse_args(arguments)

    options.output = Path(options.output).resolve()
    if _inside(options.output, NOTEBOOK_FOLDER):
        parser.error(f"--output {options.output} is inside {NOTEBOOK_FOLDER}; write executed copies elsewhere so the notebooks stay without outputs")
    if options.timeout is not None and not options.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds, got {options.timeout}")
    options.paths = [Path(name).resolve() for name in options.notebooks] or notebook_paths()
    for path in options.paths:
        if not path.is_file():
            parser.error(f"notebook not found: {path}")
    return options


def main(arguments: list[str] | None = None) -> int:
    """Run the notebooks and return the exit status."""
    import nbformat

    options = _parse(sys.argv[1:] if arguments is None else arguments)
    timeout = options.timeout if options.timeout is not None else DEFAULT_TIMEOUT[options.size]
    options.output.mkdir(parents=True, exist_ok=True)

    total_start = time.perf_counter()
    for number, path in enumerate(options.paths, start=1):
        print(f"[{number}/{len(options.paths)}] {path.name} (size {options.size}) ...", flush=True)
        start = time.perf_counter()
        try:
            notebook = execute_notebook(path, options.size, timeout)
        except NotebookCellError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        target = options.output / path.name
        nbformat.write(notebook, target)
        print(f"[{number}/{len(options.paths)}] {path.name} ran in {time.perf_counter() - start:.1f} s, written to {target}", flush=True)
    print(f"{len(options.paths)} notebooks ran in {time.perf_counter() - total_start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
