"""The latex command: the derivation of a student/teacher pair as a LaTeX document."""

from __future__ import annotations

from ..latex import latex_document
from ._common import EXIT_OK, parse_spec, write_outputs


def add_parsers(commands) -> None:
    """Add the latex command."""
    parser = commands.add_parser(
        "latex",
        help="write the loss, flow, rates and fixed points of a student/teacher pair as LaTeX",
        description=(
            "Write a standalone LaTeX document (amsmath) with the definitions, the population loss L(Q, R) and "
            "L(u, m), the flow du/dt and dm/dt with its noise term in kappa = eta d / B, the rates A(mu), B(mu), "
            "lambda_plus(mu) and tau(mu) in the time unit t = eta * steps, and the fixed points with closed "
            "forms. Every equation is numbered and labelled. Hermite polynomials are the probabilists' He_k."
        ),
    )
    parser.add_argument("--student", required=True, metavar="SPEC", help="student activation, same syntax as for the tau command")
    parser.add_argument("--teacher", metavar="SPEC", help="teacher activation (default: the student)")
    parser.add_argument("--output", metavar="FILE", help="write the LaTeX to FILE, atomically (default: standard output)")
    parser.add_argument(
        "--fragment",
        action="store_true",
        help="write only the labelled equations, without preamble, for pasting into another document",
    )
    parser.set_defaults(handler=_run_latex)


def _run_latex(options, command: str) -> int:
    student = parse_spec("--student", options.student)
    teacher = student if options.teacher is None else parse_spec("--teacher", options.teacher)
    text = latex_document(student, teacher, fragment=options.fragment)
    write_outputs(text, options.output, None, None)
    return EXIT_OK
