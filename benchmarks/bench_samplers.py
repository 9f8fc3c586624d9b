"""Throughput of the reduced and the full SGD samplers, in run-steps per second.

A run-step is one SGD step of one run. Each sampler is timed on ``steps``
steps and on zero steps (same runs, same set-up), best of ``--repeats``
timings each, and the throughput is ``n_runs * steps / (T(steps) - T(0))``,
so parsing the activations and seeding the generators are not counted.

The script also measures the NumPy floor: how many standard normals one
PCG64 generator draws per second. Dividing it by the normals of one
run-step (2B for the reduced sampler, B d for the full one) gives the
throughput each sampler would reach if drawing normals were its only work.

For an erf student and teacher the reduced sampler runs its compiled step
when numba is installed (the extra ``fast``); the script then also times
the NumPy step of the same sampler, so both can be compared.

The machine is often shared, so ``--rounds`` repeats the whole measurement
and the tables give the median over rounds of each throughput and ratio,
with the 1-minute load average before every round.

BLAS and OpenMP are limited to one thread before NumPy is imported, so
every number is per core.

Usage::

    python benchmarks/bench_samplers.py [--rounds 3] [--append docs/benchmarks-samplers.md]
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from lora_theory import __version__, _sgd_compiled, _sgd_reduced  # noqa: E402
from lora_theory.simulation import simulate  # noqa: E402

BATCH = 500
N_RUNS = 256
REDUCED_DIMENSIONS = (10**3, 10**4, 10**6, 10**9)
TARGETS = {10**3: 300, 10**4: 2000}


def best_time(repeats: int, **arguments) -> float:
    """Shortest wall time of ``repeats`` calls of :func:`simulate`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        simulate(**arguments)
        times.append(time.perf_counter() - start)
    return min(times)


@contextlib.contextmanager
def numpy_reduced_step():
    """Make :func:`simulate` build reduced samplers that use the NumPy step."""
    original = _sgd_reduced.ReducedSampler

    class NumPyStepSampler(original):
        def __init__(self, *arguments, **keywords):
            super().__init__(*arguments, **keywords, compiled=False)

    _sgd_reduced.ReducedSampler = NumPyStepSampler
    try:
        yield
    finally:
        _sgd_reduced.ReducedSampler = original


def sampler_throughput(method: str, student: str, d: int, steps: int, repeats: int, numpy_step: bool = False) -> float:
    """Run-steps per second of one sampler, set-up excluded."""
    arguments = dict(student=student, mu=0.5, d=d, eta=0.2, batch=BATCH, n_runs=N_RUNS, seed=0, method=method, record=None)
    with numpy_reduced_step() if numpy_step else contextlib.nullcontext():
        if method == "reduced":
            # Untimed warm-up: loads the compiled step and builds the erf table once.
            simulate(steps=1, **arguments)
        with_steps = best_time(repeats, steps=steps, **arguments)
        without_steps = best_time(repeats, steps=0, **arguments)
    return N_RUNS * steps / (with_steps - without_steps)


def uses_compiled_step(student: str) -> bool:
    """True when the reduced sampler runs its compiled step for this student (= teacher)."""
    from lora_theory._sgd_common import SGDProblem
    from lora_theory.activations import parse_activation

    activation = parse_activation(student)
    problem = SGDProblem.build(activation, activation, mu=0.5, d=10, eta=0.2, batch=BATCH)
    return _sgd_compiled.available() and _sgd_compiled.supports(problem)


def measure(students: list[str], options) -> dict:
    """Measure one round of throughputs, keyed by (student, sampler, d) with sampler "reduced", "reduced-numpy" or "full"."""
    throughput = {}
    for student in students:
        for d in REDUCED_DIMENSIONS:
            throughput[student, "reduced", d] = sampler_throughput("reduced", student, d, options.reduced_steps, options.repeats)
            if uses_compiled_step(student):
                throughput[student, "reduced-numpy", d] = sampler_throughput(
                    "reduced", student, d, options.reduced_steps, options.repeats, numpy_step=True
                )
        throughput[student, "full", 10**3] = sampler_throughput("full", student, 10**3, options.full_steps_d1000, options.repeats)
        throughput[student, "full", 10**4] = sampler_throughput("full", student, 10**4, options.full_steps_d10000, options.repeats)
    return throughput


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
    parser.add_argument("--rounds", type=int, default=1, help="number of times the whole measurement runs; the tables give the medians")
    parser.add_argument("--append", metavar="FILE", help="append the Markdown section to FILE")
    options = parser.parse_args()

    loads = []
    rounds = []
    floors = []
    for _ in range(options.rounds):
        loads.append(os.getloadavg()[0])
        floors.append(normal_floor(options.repeats))
        rounds.append(measure(options.students, options))
    load_after = os.getloadavg()[0]
    floor = float(np.median(floors))

    def median(student: str, sampler: str, d: int) -> float:
        return float(np.median([values[student, sampler, d] for values in rounds]))

    def median_ratio(student: str, sampler: str, d: int) -> float:
        return float(np.median([values[student, sampler, d] / values[student, "full", d] for values in rounds]))

    # -- Markdown section ----------------------------------------------------
    command = "python " + " ".join(sys.argv)
    numba_text = f"numba {_sgd_compiled.numba.__version__}" if _sgd_compiled.available() else "numba not installed"
    lines = [
        f"## Sampler throughput, {datetime.date.today().isoformat()}",
        "",
        f"Command: `{command}` (lora-theory {__version__}).",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, {cpu_model()}, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, {numba_text}, one BLAS thread. Load average (1 min) before each of the "
        f"{options.rounds} rounds: {', '.join(f'{load:.2f}' for load in loads)}; {load_after:.2f} after the last. "
        "Other processes shared the machine, so the numbers are lower bounds.",
        "",
        f"Setting: B = {BATCH}, {N_RUNS} runs per call, mu = 0.5, eta = 0.2, student = teacher. Throughput in "
        f"run-steps per second: in each round the best of {options.repeats} timings, set-up excluded; the tables "
        f"give the median over the {options.rounds} rounds (ratios are medians of the per-round ratios). Reduced "
        f"sampler timed on {options.reduced_steps} steps, full sampler on {options.full_steps_d1000} steps at "
        f"d = 10^3 and {options.full_steps_d10000} at d = 10^4. Reduced step: compiled for "
        f"{', '.join(s for s in options.students if uses_compiled_step(s)) or 'no student'}, NumPy for the others; "
        "the `reduced (NumPy step)` column times the NumPy step of the same sampler.",
        "",
        f"NumPy floor: {floor / 1e6:.0f} million standard normals per second (PCG64, 10^7 at a time). "
        f"Drawing normals alone caps the reduced sampler (2B normals per run-step) at {floor / (2 * BATCH):,.0f} "
        f"run-steps/s, and the full one at {floor / (BATCH * 10**3):,.0f} for d = 10^3 and "
        f"{floor / (BATCH * 10**4):,.1f} for d = 10^4.",
        "",
        "| student | d | reduced | reduced (NumPy step) | full | reduced / full | NumPy step / full | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for student in options.students:
        compiled = uses_compiled_step(student)
        for d in (10**3, 10**4):
            numpy_step = f"{median(student, 'reduced-numpy', d):,.0f}" if compiled else "same"
            numpy_ratio = f"{median_ratio(student, 'reduced-numpy', d):,.0f}x" if compiled else "same"
            lines.append(
                f"| {student} | 10^{int(np.log10(d))} | {median(student, 'reduced', d):,.0f} | {numpy_step} | "
                f"{median(student, 'full', d):,.1f} | {median_ratio(student, 'reduced', d):,.0f}x | {numpy_ratio} | "
                f">= {TARGETS[d]}x |"
            )
    lines += ["", "| student | reduced at d = 10^3 | 10^4 | 10^6 | 10^9 | spread (max - min) / max | target |", "|---|---|---|---|---|---|---|"]
    for student in options.students:
        values = [median(student, "reduced", d) for d in REDUCED_DIMENSIONS]
        spread = (max(values) - min(values)) / max(values)
        lines.append(f"| {student} | " + " | ".join(f"{value:,.0f}" for value in values) + f" | {spread:.0%} | <= 20% |")
    section = "\n".join(lines) + "\n"

    print(section)
    if options.append:
        with open(options.append, "a") as output:
            output.write("\n" + section)


if __name__ == "__main__":
    main()
