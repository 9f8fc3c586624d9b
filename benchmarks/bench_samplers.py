"""Throughput of the reduced and the full SGD samplers, in run-steps per second.

A run-step is one SGD step of one run. Each sampler is timed on ``steps``
steps and on zero steps (same runs, same set-up), best of ``--repeats``
timings each, and the throughput is ``n_runs * steps / (T(steps) - T(0))``,
so parsing the activations and seeding the generators are not counted.

The script also measures the NumPy floor: how many standard normals one
PCG64 generator draws per second. Dividing it by the normals of one
run-step (2B for the reduced sampler, B d for the full one) gives the
throughput each sampler would reach if drawing normals were its only work.

BLAS and OpenMP are limited to one thread before NumPy is imported, so
every number is per core.

Usage::

    python benchmarks/bench_samplers.py [--append docs/benchmarks-samplers.md]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from lora_theory import __version__  # noqa: E402
from lora_theory.simulation import simulate  # noqa: E402

BATCH = 500
N_RUNS = 256


def best_time(repeats: int, **arguments) -> float:
    """Shortest wall time of ``repeats`` calls of :func:`simulate`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        simulate(**arguments)
        times.append(time.perf_counter() - start)
    return min(times)


def sampler_throughput(method: str, student: str, d: int, steps: int, repeats: int) -> float:
    """Run-steps per second of one sampler, set-up excluded."""
    arguments = dict(student=student, mu=0.5, d=d, eta=0.2, batch=BATCH, n_runs=N_RUNS, seed=0, method=method, record=None)
    with_steps = best_time(repeats, steps=steps, **arguments)
    without_steps = best_time(repeats, steps=0, **arguments)
    return N_RUNS * steps / (with_steps - without_steps)


def normal_floor(repeats: int) -> float:
    """Standard normals per second drawn into a preallocated array by one PCG64 generator."""
    generator = np.random.default_rng(0)
    buffer = np.empty(10_000_000)
    generator.standard_normal(out=buffer)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        generator.standard_normal(out=buffer)
        times.append(time.perf_counter() - start)
    return buffer.size / min(times)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", nargs="+", default=["erf", "linear"], help="activation specs (student = teacher)")
    parser.add_argument("--reduced-steps", type=int, default=200, help="steps timed for the reduced sampler")
    parser.add_argument("--full-steps-d1000", type=int, default=8, help="steps timed for the full sampler at d = 1000")
    parser.add_argument("--full-steps-d10000", type=int, default=2, help="steps timed for the full sampler at d = 10^4")
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement; the shortest counts")
    parser.add_argument("--append", metavar="FILE", help="append the Markdown section to FILE")
    options = parser.parse_args()

    load_before = os.getloadavg()
    floor = normal_floor(options.repeats)
    rows = []
    for student in options.students:
        reduced = {d: sampler_throughput("reduced", student, d, options.reduced_steps, options.repeats) for d in (10**3, 10**4, 10**6, 10**9)}
        full = {
            10**3: sampler_throughput("full", student, 10**3, options.full_steps_d1000, options.repeats),
            10**4: sampler_throughput("full", student, 10**4, options.full_steps_d10000, options.repeats),
        }
        rows.append((student, reduced, full))
    load_after = os.getloadavg()

    # -- Markdown section ----------------------------------------------------
    command = "python " + " ".join(sys.argv)
    lines = [
        f"## Sampler throughput, {datetime.date.today().isoformat()}",
        "",
        f"Command: `{command}` (lora-theory {__version__}).",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, {cpu_model()}, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, one BLAS thread. Load average (1 min) {load_before[0]:.2f} before and "
        f"{load_after[0]:.2f} after the run; other processes shared the machine, so the numbers are lower bounds.",
        "",
        f"Setting: B = {BATCH}, {N_RUNS} runs per call, mu = 0.5, eta = 0.2, student = teacher. Throughput in "
        "run-steps per second, best of "
        f"{options.repeats} timings, set-up excluded. Reduced sampler timed on {options.reduced_steps} steps, "
        f"full sampler on {options.full_steps_d1000} steps at d = 10^3 and {options.full_steps_d10000} at d = 10^4.",
        "",
        f"NumPy floor: {floor / 1e6:.0f} million standard normals per second (PCG64, 10^7 at a time). "
        f"Drawing normals alone caps the reduced sampler (2B normals per run-step) at {floor / (2 * BATCH):,.0f} "
        f"run-steps/s, and the full one at {floor / (BATCH * 10**3):,.0f} for d = 10^3 and "
        f"{floor / (BATCH * 10**4):,.1f} for d = 10^4.",
        "",
        "| student | d | reduced | full | reduced / full | target |",
        "|---|---|---|---|---|---|",
    ]
    targets = {10**3: 300, 10**4: 2000}
    for student, reduced, full in rows:
        for d in (10**3, 10**4):
            ratio = reduced[d] / full[d]
            lines.append(
                f"| {student} | 10^{int(np.log10(d))} | {reduced[d]:,.0f} | {full[d]:,.1f} | {ratio:,.0f}x | >= {targets[d]}x |"
            )
    lines += ["", "| student | reduced at d = 10^3 | 10^4 | 10^6 | 10^9 | spread (max - min) / max | target |", "|---|---|---|---|---|---|---|"]
    for student, reduced, _ in rows:
        values = list(reduced.values())
        spread = (max(values) - min(values)) / max(values)
        lines.append(f"| {student} | " + " | ".join(f"{value:,.0f}" for value in values) + f" | {spread:.0%} | <= 20% |")
    section = "\n".join(lines) + "\n"

    print(section)
    if options.append:
        with open(options.append, "a") as output:
            output.write("\n" + section)


if __name__ == "__main__":
    main()
