"""Wall times of the phase diagram and of the scaling sweeps (flow and reduced SGD, per teacher).

Measured:

1. ``lora_theory.pretraining.phase_diagram(k_max=10)`` on its default grid of
   200 values of mu, in a fresh process with an empty derivation cache
   (cold: includes the symbolic derivations) and again in the same process
   (warm: the generated callables are cached in memory).
2. ``lora_theory.scaling.scaling_law`` for the teachers He1 ... He4
   (student = teacher, no pre-training, fraction 0.5, B = 1) with the flow
   on d = 1e2 ... 1e8 and with reduced SGD on the grids of the slow tests,
   with the numba kernel and, with ``--numpy``, with the NumPy kernel; and
   the pre-training sweep at mu = 0.5 for He1 and He2.
3. Throughput of the two kernels of the reduced baseline sampler (He3,
   d = 1000, B = 1, 20000 steps) for 1, 8, 32 and 128 runs per call, in
   run-steps per second, best of 3 calls after an untimed warm-up.

Each timing is one call, so it includes the flow integrations and the
bisection for kappa_max. BLAS and OpenMP are limited to one thread.

Usage::

    python benchmarks/bench_analysis.py [--numpy] [--append docs/benchmarks-analysis.md]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from lora_theory import __version__  # noqa: E402
from lora_theory._sgd_baseline import numba_available  # noqa: E402
from lora_theory.baseline import simulate_baseline  # noqa: E402
from lora_theory.scaling import scaling_law  # noqa: E402

#: Reduced-SGD grids of d per teacher: the grids of tests/test_scaling.py.
REDUCED_GRIDS = {
    "He1": [1e2, 1e3, 1e4, 1e5],
    "He2": [1e2, 1e3, 1e4],
    "He3": [32, 64, 128, 256],
    "He4": [24, 32],
}
PRETRAINING_GRID = [1e3, 1e4, 1e5]
FLOW_GRID = list(np.logspace(2, 8, 7))
N_RUNS = 64

_PHASE_DIAGRAM_SNIPPET = (
    "import time; from lora_theory.pretraining import phase_diagram; "
    "s = time.perf_counter(); phase_diagram(k_max=10); c = time.perf_counter() - s; "
    "s = time.perf_counter(); phase_diagram(k_max=10); w = time.perf_counter() - s; print(c, w)"
)


def phase_diagram_times() -> tuple[float, float]:
    """Cold and warm wall time of phase_diagram(k_max=10), in a fresh process with an empty cache."""
    with tempfile.TemporaryDirectory() as cache:
        environment = dict(os.environ, LORA_THEORY_CACHE_DIR=cache)
        output = subprocess.run([sys.executable, "-c", _PHASE_DIAGRAM_SNIPPET], env=environment, check=True,
                                capture_output=True, text=True).stdout
    cold, warm = (float(value) for value in output.split())
    return cold, warm


def kernel_throughput(backend: str, n_runs: int, steps: int = 20_000) -> float:
    """Run-steps per second of the reduced baseline sampler with one kernel, best of 3 calls."""
    arguments = dict(student="He3", d=1000, eta=1e-4, batch=1, n_runs=n_runs, seed=3, record=None, backend=backend)
    simulate_baseline(steps=10, **arguments)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        simulate_baseline(steps=steps, **arguments)
        times.append(time.perf_counter() - start)
    return n_runs * steps / min(times)


def timed_sweep(**arguments):
    """Call scaling_law once and return its result and wall time in seconds."""
    start = time.perf_counter()
    result = scaling_law(**arguments)
    return result, time.perf_counter() - start


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _grid_text(grid) -> str:
    return ", ".join(f"{value:g}" for value in grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numpy", action="store_true", help="also time the reduced sweeps with the NumPy kernel (minutes for He3 and He4)")
    parser.add_argument("--append", metavar="FILE", help="append the Markdown section to FILE")
    options = parser.parse_args()
    load_before = os.getloadavg()[0]

    cold, warm = phase_diagram_times()
    kernels = {}
    for n_runs in (1, 8, 32, 128):
        for backend in ("numpy", "numba") if numba_available() else ("numpy",):
            kernels[backend, n_runs] = kernel_throughput(backend, n_runs)
    rows = []
    for teacher in ("He1", "He2", "He3", "He4"):
        result, seconds = timed_sweep(student=teacher, d=FLOW_GRID, method="flow")
        rows.append((teacher, "none", "flow", "-", _grid_text(FLOW_GRID), result, seconds))
        backends = ["numba", "numpy"] if options.numpy else ["numba"]
        if not numba_available():
            backends = ["numpy"]
        for backend in backends:
            result, seconds = timed_sweep(student=teacher, d=REDUCED_GRIDS[teacher], method="reduced", n_runs=N_RUNS,
                                          seed=1, horizon=4.0, backend=backend)
            rows.append((teacher, "none", "reduced", backend, _grid_text(REDUCED_GRIDS[teacher]), result, seconds))
    for teacher in ("He1", "He2"):
        result, seconds = timed_sweep(student=teacher, d=PRETRAINING_GRID, mu=0.5, method="flow")
        rows.append((teacher, "0.5", "flow", "-", _grid_text(PRETRAINING_GRID), result, seconds))
        result, seconds = timed_sweep(student=teacher, d=PRETRAINING_GRID, mu=0.5, method="reduced", n_runs=N_RUNS, seed=1)
        rows.append((teacher, "0.5", "reduced", "simulate", _grid_text(PRETRAINING_GRID), result, seconds))
    load_after = os.getloadavg()[0]

    # -- Markdown section ----------------------------------------------------
    command = "python " + " ".join(sys.argv)
    numba_text = "numba " + __import__("numba").__version__ if numba_available() else "numba not installed"
    lines = [
        f"## Analysis timings, {datetime.date.today().isoformat()}",
        "",
        f"Command: `{command}` (lora-theory {__version__}).",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, {cpu_model()}, Python {platform.python_version()}, NumPy "
        f"{np.__version__}, {numba_text}, one BLAS thread. Load average (1 min) {load_before:.2f} before and "
        f"{load_after:.2f} after; other processes shared the machine, so the times are upper bounds.",
        "",
        f"Phase diagram, `phase_diagram(k_max=10)` (k = 1 ... 10, 200 values of mu): {cold:.1f} s in a fresh process "
        f"with an empty derivation cache, {warm:.3f} s for a second call in the same process.",
        "",
        "Reduced baseline sampler, He3, d = 1000, B = 1, 20000 steps, run-steps per second (best of 3):",
        "",
        "| runs per call | NumPy kernel | numba kernel | numba / NumPy |",
        "|---|---|---|---|",
    ]
    for n_runs in (1, 8, 32, 128):
        numpy_rate = kernels["numpy", n_runs]
        numba_rate = kernels.get(("numba", n_runs))
        numba_text = f"{numba_rate:,.0f} | {numba_rate / numpy_rate:.0f}x" if numba_rate else "- | -"
        lines.append(f"| {n_runs} | {numpy_rate:,.0f} | {numba_text} |")
    lines += [
        "",
        f"Scaling sweeps, `scaling_law(...)`, student = teacher, fraction 0.5, B = 1, {N_RUNS} runs per d for reduced "
        "SGD (horizon 4 times the flow's escape steps without pre-training, 10 with it). Slope: the exponent of d "
        "(of d / log d for He2) without pre-training, the slope of t against (1/2) log d with it (expected tau(mu)).",
        "",
        "| teacher | mu | method | kernel | d | slope | 95% CI | expected | wall time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for teacher, mu, method, kernel, grid, result, seconds in rows:
        interval = f"[{result.slope_ci[0]:.3f}, {result.slope_ci[1]:.3f}]" if result.slope_ci else "-"
        lines.append(f"| {teacher} | {mu} | {method} | {kernel} | {grid} | {result.slope:.3f} | {interval} | "
                     f"{result.expected:.3f} | {seconds:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if options.append:
        with open(options.append, "a") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
