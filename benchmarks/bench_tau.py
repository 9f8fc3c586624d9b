"""Time the tau table: 12 activations x 200 values of mu, cold and warm cache.

Usage::

    python benchmarks/bench_tau.py [--points 200] [--warm-runs 3] [--json PATH] [--check]

The table is ``escape_rates(spec, mu=grid)`` (student = teacher, plain time
unit) for x, erf, relu, sigmoid, He2, He3, He5, He6, He7, He9, He10, He14 on
``numpy.linspace(0.02, 0.99, points)``.

Each run is a new Python process whose derivation cache folder is set by
``LORA_THEORY_CACHE_DIR``:

- cold: a fresh, empty temporary cache folder, so the symbolic derivation
  and code generation are part of the time;
- warm: new processes on the same folder after the cold run, so only loading
  from the cache and the numerical evaluation remain.

The time reported for a run is the wall-clock time of the table loop inside
the process, measured with :func:`time.perf_counter`. Interpreter start-up and
``import lora_theory.rates`` are measured separately and not included.

Targets: <= 20 s cold and <= 0.5 s warm. ``--check`` makes the exit status 1
when a target is missed; without it the script only reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ACTIVATIONS = ("x", "erf", "relu", "sigmoid", "He2", "He3", "He5", "He6", "He7", "He9", "He10", "He14")
MU_START, MU_STOP = 0.02, 0.99
COLD_TARGET_SECONDS = 20.0
WARM_TARGET_SECONDS = 0.5


def run_table(points: int) -> dict:
    """Compute the table in this process and return the timings and results."""
    start = time.perf_counter()
    import numpy as np

    from lora_theory.rates import escape_rates

    imported = time.perf_counter()
    grid = np.linspace(MU_START, MU_STOP, points)
    results = {}
    for spec in ACTIVATIONS:
        rates = escape_rates(spec, mu=grid)
        results[spec] = rates
    finished = time.perf_counter()

    return {
        "import_seconds": imported - start,
        "table_seconds": finished - imported,
        "tau": {spec: [None if not np.isfinite(value) else float(value) for value in rates.tau] for spec, rates in results.items()},
        "singular_mu": {spec: list(rates.singular_mu) for spec, rates in results.items()},
    }


def run_child(points: int, cache_dir: str) -> dict:
    """Run :func:`run_table` in a new Python process with the given cache folder."""
    environment = dict(os.environ, LORA_THEORY_CACHE_DIR=cache_dir)
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, __file__, "--child", "--points", str(points)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    process_seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark process failed with exit status {completed.returncode}:\n{completed.stderr}")
    result = json.loads(completed.stdout)
    result["process_seconds"] = process_seconds
    return result


def machine_description() -> dict:
    """Describe the machine and the software versions behind the numbers."""
    import numpy
    import sympy

    from lora_theory import __version__

    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "processor": _processor_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "lora_theory": __version__,
        "numpy": numpy.__version__,
        "sympy": sympy.__version__,
    }


def _processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def compare_results(cold: dict, warm: dict) -> list[str]:
    """List the activations whose warm tau or singular mu differ from the cold run."""
    import numpy as np

    differences = []
    for spec in ACTIVATIONS:
        cold_tau = np.array([np.nan if value is None else value for value in cold["tau"][spec]])
        warm_tau = np.array([np.nan if value is None else value for value in warm["tau"][spec]])
        same_tau = np.allclose(cold_tau, warm_tau, rtol=1e-12, atol=0.0, equal_nan=True)
        same_singular = np.allclose(cold["singular_mu"][spec], warm["singular_mu"][spec], rtol=0.0, atol=1e-12)
        if not (same_tau and same_singular):
            differences.append(spec)
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time the tau table of 12 activations, cold and warm cache.")
    parser.add_argument("--points", type=int, default=200, help="number of mu values in [0.02, 0.99] (default: 200)")
    parser.add_argument("--warm-runs", type=int, default=3, help="number of warm processes; the median is reported (default: 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the measurements as JSON to PATH")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)

    if options.child:
        print(json.dumps(run_table(options.points)))
        return 0

    # Other processes on the machine distort the times, so record the load.
    load_before = os.getloadavg()[0]

    # --- cold, then warm on the same cache folder -------------------------
    with tempfile.TemporaryDirectory(prefix="lora-theory-bench-") as cache_dir:
        cold = run_child(options.points, cache_dir)
        warm_runs = [run_child(options.points, cache_dir) for _ in range(options.warm_runs)]

    load_after = os.getloadavg()[0]
    warm_seconds = [run["table_seconds"] for run in warm_runs]
    warm_median = statistics.median(warm_seconds)
    differences = sorted({spec for run in warm_runs for spec in compare_results(cold, run)})
    undefined = sum(value is None for values in cold["tau"].values() for value in values)

    # --- report -----------------------------------------------------------
    machine = machine_description()
    command = " ".join(["python", "benchmarks/bench_tau.py"] + (argv if argv is not None else sys.argv[1:]))
    cold_ok = cold["table_seconds"] <= COLD_TARGET_SECONDS
    warm_ok = warm_median <= WARM_TARGET_SECONDS

    print(f"command: {command}")
    print(f"machine: nproc {machine['nproc']}, {machine['processor']}, Python {machine['python']}, {machine['platform']}")
    print(f"1-minute load average: {load_before:.2f} before, {load_after:.2f} after")
    print(f"versions: lora-theory {machine['lora_theory']}, numpy {machine['numpy']}, sympy {machine['sympy']}")
    print(f"table: {len(ACTIVATIONS)} activations x {options.points} values of mu in [{MU_START}, {MU_STOP}]")
    print()
    print("| run | table time (s) | target (s) | met | import time (s) | process time (s) |")
    print("|---|---|---|---|---|---|")
    print(
        f"| cold | {cold['table_seconds']:.3f} | {COLD_TARGET_SECONDS} | {'yes' if cold_ok else 'no'} "
        f"| {cold['import_seconds']:.3f} | {cold['process_seconds']:.3f} |"
    )
    for index, run in enumerate(warm_runs, start=1):
        print(
            f"| warm {index} | {run['table_seconds']:.3f} | {WARM_TARGET_SECONDS} | "
            f"{'yes' if run['table_seconds'] <= WARM_TARGET_SECONDS else 'no'} "
            f"| {run['import_seconds']:.3f} | {run['process_seconds']:.3f} |"
        )
    print()
    print(f"warm median: {warm_median:.3f} s ({'meets' if warm_ok else 'misses'} the {WARM_TARGET_SECONDS} s target)")
    print(f"undefined tau entries in the cold table: {undefined}")
    print(f"warm results equal to cold: {'yes' if not differences else 'no, for ' + ', '.join(differences)}")

    if options.json:
        record = {
            "command": command,
            "machine": machine,
            "points": options.points,
            "activations": list(ACTIVATIONS),
            "cold_table_seconds": cold["table_seconds"],
            "warm_table_seconds": warm_seconds,
            "import_seconds": [cold["import_seconds"]] + [run["import_seconds"] for run in warm_runs],
            "process_seconds": [cold["process_seconds"]] + [run["process_seconds"] for run in warm_runs],
            "load_average_1min": {"before": load_before, "after": load_after},
            "targets_seconds": {"cold": COLD_TARGET_SECONDS, "warm": WARM_TARGET_SECONDS},
            "warm_differs_from_cold": differences,
        }
        Path(options.json).write_text(json.dumps(record, indent=2) + "\n")

    if differences:
        return 1
    if options.check and not (cold_ok and warm_ok):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
