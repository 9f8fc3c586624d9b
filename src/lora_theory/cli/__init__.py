"""The ``lora-theory`` command line.

Commands::

    lora-theory tau --student SPEC [--teacher SPEC] --mu GRID
                    [--time-unit plain|hermite] [--format table|csv|json]
                    [--output PATH] [--plot PATH]
    lora-theory report [--full] [--output DIR]
    lora-theory simulate --student SPEC [--teacher SPEC] --mu M --d D --lr ETA --batch B
                         --steps N [--seeds K] --method flow|reduced|full [--record log|all]
                         [--m0 X] [--u0 X] [--kappa X] [--seed S] [--output CSV] [--plot PNG]
    lora-theory escape --student SPEC [--teacher SPEC] --mu GRID --d D --lr ETA --batch B
                       --method linear|flow|reduced|full [--m-exit X] [--seeds K]
                       [--max-steps N] [--statistic median|mean] [--m0 X] [--u0 X]
                       [--kappa X] [--seed S] [--format table|csv|json] [--output PATH]
    lora-theory fixed-points --student SPEC [--teacher SPEC] --mu M [--kappa K] [--u-max X]
                             [--format table|csv|json] [--output PATH] [--plot PNG]
    lora-theory search --student SPEC [--teacher SPEC] --mu M [--m0 GRID] [--kappa K] [--m-exit X]
                       [--format table|csv|json] [--output PATH] [--plot PNG]
    lora-theory phase-diagram [--k-max K] [--mu GRID] [--time-unit plain|hermite] [--d D] [--kappa K]
                              [--m-exit X] [--format table|csv|json] [--output PATH] [--plot PNG]
    lora-theory latex --student SPEC [--teacher SPEC] [--output FILE] [--fragment]
    lora-theory scaling --teacher SPEC [--student SPEC] [--mu M|none] [--d GRID] [--method flow|reduced]
                        [--seeds K] [--fraction F] [--seed S] [--format table|csv|json] [--output PATH] [--plot PNG]

Exit status: 0 on success, 1 when an output file cannot be written or a
flow integration fails, 2 for a usage error. Usage errors are a bad option,
an unknown activation, a malformed grid, mu outside [0, 1], a Hermite degree
above 30, and the hermite time unit for a student that is not a single He_k.
For simulate and escape they also include settings outside their domain and
simulations beyond the memory limit. A Gaussian expectation whose
quadrature does not converge (for example because the expectation does not
exist) also exits with 2. Errors and warnings are one line each on standard
error, without a traceback.
"""


from __future__ import annotations

import shlex
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from .._errors import LoraTheoryError
from . import _analysis, _latex, _rates, _scaling, _trajectories
from ._common import (
    EXIT_COMPUTATION_FAILED,
    EXIT_USAGE,
    EXIT_WRITE_FAILED,
    PROGRAM,
    ArgumentParser,
    ComputationError,
    UsageError,
    WriteError,
    attach_dash_values,
)

__all__ = ["main"]

#: The modules that add commands, in the order of the help text.
_COMMAND_MODULES = (_rates, _trajectories, _analysis, _latex, _scaling)


def _build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROGRAM,
        description=(
            "Escape rates of the search phase of rank-1 LoRA fine-tuning on single-index "
            "models (Nwemadji, Loureiro, Barbier, arXiv:2602.02855)."
        ),
        epilog=(
            "Exit status: 0 on success, 1 when an output file cannot be written or a flow integration fails, "
            "2 for a usage error."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for module in _COMMAND_MODULES:
        module.add_parsers(commands)
    return parser


#: Options that name a file or folder to write.
_PATH_OPTIONS = ("output", "plot")


def _reject_empty_paths(options) -> None:
    """Raise a usage error for an empty ``--output`` or ``--plot``, which names no file."""
    for name in _PATH_OPTIONS:
        if getattr(options, name, None) == "":
            raise UsageError(f"--{name} is empty; give a path, or leave the option out")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = " ".join([PROGRAM] + [shlex.quote(argument) for argument in arguments])
    parser = _build_parser()

    try:
        options = parser.parse_args(attach_dash_values(arguments))
    except SystemExit as exit_request:
        # argparse exits for --help, --version and usage errors. Return its status instead.
        code = exit_request.code
        return code if isinstance(code, int) else EXIT_USAGE

    prefix = f"{PROGRAM} {options.command}"

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        # One line per warning, like the error lines, without Python's file and source line.
        print(f"{prefix}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    try:
        _reject_empty_paths(options)
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return options.handler(options, command)
    except (UsageError, LoraTheoryError) as error:
        print(f"{prefix}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    except WriteError as error:
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except ComputationError as error:
        print(f"{prefix}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_COMPUTATION_FAILED
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
