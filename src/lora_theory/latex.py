"""LaTeX export of a derivation: definitions, loss, flow, rates and fixed points.

Conventions of the exported document: probabilists' Hermite polynomials
``He_k`` (``E[He_j He_k] = k! delta_jk``); ``Var lam = Q``,
``Cov(lam, lam*) = R``, ``Var lam* = 1``; time ``t = eta * steps``
(the plain time unit); noise ratio ``kappa = eta d / B``. The setting is
that of G. Nwemadji, B. Loureiro, J. Barbier, "When pre-training hurts
LoRA fine-tuning: a dynamical analysis via single-index models",
arXiv:2602.02855 (2026).

:func:`latex_document` renders a standalone amsmath document (or, with
``fragment=True``, only the labelled equations) from
:func:`lora_theory.derivation.derive`. Every displayed right-hand side is a
SymPy expression printed by :func:`sympy.latex`, so it can be parsed back
and checked against the generated NumPy code. The output is deterministic:
it carries the package version and the command that regenerates it, but no
date.

Gaussian kernels without a closed form (sigmoid, tanh, ``expr:`` specs)
appear as named functions ``K_i(Q, R)`` with their defining integrands
listed, and the document states that they are evaluated numerically.

Running ``python -m lora_theory.latex --write-derivations FOLDER`` writes
the documents of :data:`DERIVATIONS` and an index ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import sympy as sp
from sympy.printing.latex import LatexPrinter

from . import __version__, outputs
from .activations import Activation, parse_activation
from .derivation import Derivation, derive
from .expectations import Q, R
from .kernels import DeltaKernel, GaussianKernel
from .model import ALIGNED_RANK_ONE, kappa, m, mu, u

__all__ = [
    "DERIVATIONS",
    "Equation",
    "derivation_files",
    "derivations_index",
    "document_equations",
    "latex_document",
    "write_derivations",
]

#: Student/teacher pairs of the checked-in documents under ``derivations/``, as
#: ``(file stem, student spec, teacher spec or None for the student)``.
DERIVATIONS = (
    ("linear", "x", None),
    ("erf", "erf", None),
    ("relu", "relu", None),
    ("He2", "He2", None),
    ("He3", "He3", None),
    ("He4", "He4", None),
    ("He3-teacher-He3sq", "He3", "He3^2"),
)

#: The command that regenerates ``derivations/`` from the repository root.
REGENERATE_COMMAND = "python -m lora_theory.latex --write-derivations derivations"

# Width of a displayed line, in rendered characters (see _width), before a sum is broken
# over lines. An A4 page with 2 cm margins fits roughly 80 digits of 11 pt mathematics, and
# operators with their spacing take more room than the estimate counts.
_LINE_WIDTH = 62

# Explicit forms of lambda_plus and tau are shown only below this length of LaTeX source.
# Longer ones would fill pages without adding anything to the formula in A and B.
_EXPLICIT_RATE_CHARACTERS = 400

# Symbols that stand for whole sub-expressions in the displayed equations.
# E[g^2]; the name sorts after every model symbol, so SymPy prints it last in a product.
_G = sp.Symbol("zz_second_moment")
_A = sp.Symbol("A")
_B = sp.Symbol("B")
_W = sp.Symbol("w", real=True)  # pre-activation scale on the lines m = +-1
_W_POSITIVE = sp.Symbol("w", positive=True)

_SYMBOL_NAMES = {_G: r"\mathbb{E}\left[g^{2}\right]"}


@dataclass(frozen=True)
class Equation:
    """One labelled display equation ``lhs = rhs``.

    ``lhs`` is LaTeX source. ``rhs`` is a SymPy expression (or a tuple of
    expressions, shown as a point ``(u, m)``) in the symbols ``u``, ``m``,
    ``mu``, ``kappa``, ``Q``, ``R``, ``w`` and the placeholders ``G``
    (``E[g^2]``), ``A`` and ``B``. ``label`` is unique within one document.
    """

    label: str
    lhs: str
    rhs: object
    text: str = ""


# ---------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------


class _Printer(LatexPrinter):
    """SymPy's LaTeX printer with plain bars for absolute values.

    ``\\left| ... \\right|`` is what SymPy prints, but
    :func:`sympy.parsing.latex.parse_latex` silently drops such a factor
    (SymPy 1.14), so the documents could not be checked by parsing them back.
    """

    def _print_Abs(self, expr, exp=None):
        printed = f"|{self._print(expr.args[0])}|"
        return printed if exp is None else f"{printed}^{{{exp}}}"


_PRINTER = _Printer({"inv_trig_style": "full", "symbol_names": _SYMBOL_NAMES})


def _print(expression: sp.Expr) -> str:
    return _PRINTER.doprint(expression)


def _print_rhs(rhs) -> str:
    if isinstance(rhs, tuple):
        return r"\left(" + ", ".join(_print(entry) for entry in rhs) + r"\right)"
    return _print(rhs)


def _width(printed: str) -> int:
    """Estimate the rendered width of LaTeX source in characters.

    Control words count as one character, braces and spaces as none, and an
    exponent as one character (it is set small).
    """
    rendered = re.sub(r"\\(left|right|Bigl|Bigr)", "", printed)
    rendered = re.sub(r"\^\{[^{}]*\}", "^", rendered)
    rendered = re.sub(r"\\[A-Za-z]+", "x", rendered)
    return len(re.sub(r"[{} ]", "", rendered))


def _signed(printed: str) -> str:
    return printed if printed.startswith("-") else "+ " + printed


def _tokens(expression: sp.Expr) -> list[str]:
    """LaTeX pieces of an expression between which a line may break.

    A sum breaks between its terms. A long product with a sum as a factor
    breaks inside that sum, which is then enclosed in ``\\Bigl( ... \\Bigr)``
    because ``\\left( ... \\right)`` cannot span lines.
    """
    # NOTE: fractions and square roots are never broken, so a single long one can still be wider
    # than the page. The tests check for overfull lines only in the documents of DERIVATIONS.
    printed = _print(expression)
    if _width(printed) <= _LINE_WIDTH:
        return [printed]
    if isinstance(expression, sp.Add):
        tokens: list[str] = []
        for position, term in enumerate(expression.as_ordered_terms()):
            pieces = _tokens(term)
            pieces[0] = pieces[0] if position == 0 else _signed(pieces[0])
            tokens.extend(pieces)
        return tokens
    if isinstance(expression, sp.Mul):
        sums = [factor for factor in expression.args if isinstance(factor, sp.Add)]
        if sums:
            longest = max(sums, key=lambda factor: len(_print(factor)))
            rest = expression / longest
            if rest == 1:
                prefix = ""
            elif rest == -1:
                prefix = "-"
            elif isinstance(rest, sp.Add):
                prefix = rf"\left({_print(rest)}\right)"
            else:
                prefix = _print(rest)
            inner = [_print(term) for term in longest.as_ordered_terms()]
            tokens = [rf"{prefix} \Bigl({inner[0]}".strip()]
            tokens.extend(_signed(term) for term in inner[1:])
            tokens[-1] += r"\Bigr)"
            return tokens
    return [printed]


def _lines(lhs: str, rhs) -> list[str]:
    """Group the pieces of the right-hand side into lines of about _LINE_WIDTH rendered characters."""
    if isinstance(rhs, tuple):
        return [_print_rhs(rhs)]
    lines: list[str] = []
    current = ""
    used = _width(lhs)  # the first line also contains the left-hand side
    for token in _tokens(rhs):
        if current and used + _width(current) + _width(token) > _LINE_WIDTH:
            used = 0
            lines.append(current)
            current = token
        else:
            current = f"{current} {token}".strip()
    lines.append(current)
    return lines


def _render_equation(equation: Equation, prefix: str) -> str:
    label = rf"\label{{{prefix}:{equation.label}}}"
    lines = _lines(equation.lhs, equation.rhs)
    if len(lines) == 1:
        return f"\\begin{{equation}}{label}\n  {equation.lhs} = {lines[0]}\n\\end{{equation}}\n"
    body = f"  {equation.lhs} = {lines[0]}"
    for line in lines[1:]:
        body += f" \\\\\n  {line}"
    return f"\\begin{{multline}}{label}\n{body}\n\\end{{multline}}\n"


def _escape_text(text: str) -> str:
    """Escape LaTeX special characters of plain text (spec strings, commands)."""
    replacements = {
        "\\": r"\textbackslash{}",
        "{": r"\{",
        "}": r"\}",
        "$": r"\$",
        "&": r"\&",
        "#": r"\#",
        "%": r"\%",
        "_": r"\_",
        "^": r"\^{}",
        "~": r"\~{}",
    }
    return "".join(replacements.get(character, character) for character in text)


def _label_prefix(student: Activation, teacher: Activation) -> str:
    def slug(spec: str) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "-", spec).strip("-") or "activation"

    if student.canonical == teacher.canonical:
        return slug(student.spec)
    return f"{slug(student.spec)}--{slug(teacher.spec)}"


def _activation_latex(activation: Activation, symbol: str) -> str:
    r"""``\sigma(z) = \mathrm{He}_{3}(z) = z^3 - 3z`` and similar."""
    z_latex = _print(activation.expr)
    degree = activation.hermite_degree
    if degree is not None and degree >= 2:
        return rf"{symbol}(z) = \mathrm{{He}}_{{{degree}}}(z) = {z_latex}"
    return rf"{symbol}(z) = {z_latex}"


# ---------------------------------------------------------------------------
# Kernels without a closed form
# ---------------------------------------------------------------------------


class _KernelNames:
    """Replace numerical kernels by named functions ``K_i(Q, R)`` and remember their integrands."""

    def __init__(self):
        self.definitions = []
        self._names: dict = {}

    def rename(self, expression: sp.Expr) -> sp.Expr:
        if not expression.has(GaussianKernel, DeltaKernel):
            return expression
        return expression.replace(lambda node: isinstance(node, (GaussianKernel, DeltaKernel)), self._name)

    def _name(self, node) -> sp.Expr:
        tag = node.args[0]
        key = (type(node).__name__, tag.name)
        if key not in self._names:
            index = len(self._names) + 1
            if isinstance(node, GaussianKernel):
                function = sp.Function(f"K_{{{index}}}")
                f, h = node.integrands
                self.definitions.append(("gaussian", function, f, h))
            else:
                function = sp.Function(f"D_{{{index}}}")
                h = sp.sympify(json.loads(tag.name)["h"])
                self.definitions.append(("delta", function, None, h))
            self._names[key] = function
        return self._names[key](*node.args[1:])


def _kernel_paragraph(definitions: list) -> str:
    if not definitions:
        return ""
    text = (
        "The following Gaussian kernels have no closed form. They are defined for a centred Gaussian pair "
        r"$(\lambda, \lambda^{*})$ with $\operatorname{Var}\lambda = Q$, $\operatorname{Cov}(\lambda, \lambda^{*}) = R$ "
        r"and $\operatorname{Var}\lambda^{*} = 1$, differentiate by Price's theorem "
        r"($\partial_R K[f, h] = K[f', h']$, $\partial_Q K[f, h] = \tfrac{1}{2} K[f'', h]$), "
        "and are evaluated by numerical quadrature in \\texttt{lora\\_theory}.\n"
        "\\begin{align*}\n"
    )
    rows = []
    for kind, function, f, h in definitions:
        if kind == "gaussian":
            rows.append(
                rf"  {_print(function(Q, R))} &= \mathbb{{E}}\left[f(\lambda)\, h(\lambda^{{*}})\right], "
                rf"& f(z) &= {_print(f)}, & h(z) &= {_print(h)}"
            )
        else:
            rows.append(
                rf"  {_print(function(sp.Symbol('c'), Q, R))} &= \mathbb{{E}}\left[\delta(\lambda - c)\, h(\lambda^{{*}})\right], "
                rf"& h(z) &= {_print(h)} &&"
            )
    text += " \\\\\n".join(rows) + "\n\\end{align*}\n"
    return text


# ---------------------------------------------------------------------------
# Simplification
# ---------------------------------------------------------------------------


def _drop_positive_abs(expression: sp.Expr) -> sp.Expr:
    """Replace |a| by a where a > 0 on the whole domain Q >= R^2 of the covariance."""
    if not expression.has(sp.Abs):
        return expression
    residual = sp.Symbol("s", nonnegative=True)
    real_R = sp.Symbol("r", real=True)

    def unwrap(node):
        argument = node.args[0]
        shifted = argument.subs({Q: real_R**2 + residual, R: real_R}, simultaneous=True)
        return argument if sp.simplify(shifted).is_positive else node

    return expression.replace(lambda node: isinstance(node, sp.Abs), unwrap)


def _simplify(expression: sp.Expr) -> sp.Expr:
    """Shortest of the expression and its simplified, factored or expanded forms."""
    if expression.has(GaussianKernel, DeltaKernel):
        return expression
    symbols = sorted(expression.free_symbols, key=str)
    if expression.is_polynomial(*symbols):
        # sympy.simplify only slows polynomials down; factor and expand cover them.
        candidates = [expression, sp.factor(expression), sp.expand(expression)]
    else:
        # Factored radicands let SymPy pull squared factors out of square roots (erf rates).
        factored_radicands = expression.replace(
            lambda node: node.is_Pow and node.exp.is_Rational and not node.exp.is_Integer,
            lambda node: sp.factor(node.base) ** node.exp,
        )
        candidates = [expression, sp.simplify(expression), sp.simplify(factored_radicands)]
    candidates = [_drop_positive_abs(candidate) for candidate in candidates]
    return min(candidates, key=lambda candidate: (len(_print(candidate)), sp.count_ops(candidate)))


# ---------------------------------------------------------------------------
# Fixed points
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _FixedPoint:
    label: str
    point: tuple
    description: str


def _vanishes(expression: sp.Expr) -> bool:
    # Expanding settles polynomials quickly; simplify is needed for radicals and inverse sines.
    return sp.expand(expression) == 0 or sp.simplify(expression) == 0


def _fixed_points(derivation: Derivation) -> tuple[list[_FixedPoint], list[str]]:
    """Fixed points of the (u, m) flow with closed forms, each checked symbolically.

    Candidates: the search point (0, 0); on the invariant lines m = +-1 the
    points (w - mu, 1) and (mu - w, -1), where w is a real critical point of
    L0(w) = L(w^2, w) with a closed form. The flow is substituted at every
    candidate and must vanish identically in mu (and kappa, or at kappa = 0).
    Returns the points and remarks on what has no closed form.
    """
    flow = derivation.flow
    points: list[_FixedPoint] = []
    remarks: list[str] = []

    def check(u_value, m_value) -> str | None:
        """'all' when the flow vanishes for every kappa, 'zero' for kappa = 0 only, else None."""
        at_point = {variable: expression.subs({u: u_value, m: m_value}, simultaneous=True) for variable, expression in flow.items()}
        if all(_vanishes(value) for value in at_point.values()):
            return "all"
        if all(_vanishes(value.subs(kappa, 0)) for value in at_point.values()):
            return "zero"
        return None

    if check(sp.Integer(0), sp.Integer(0)) == "all":
        points.append(
            _FixedPoint(
                "fixed-search",
                (sp.Integer(0), sp.Integer(0)),
                r"The search point, a fixed point for every $\mu$ and $\kappa$. On the line $u = 0$ the flow is "
                r"$\dot u = A(\mu)\, m$, $\dot m = 0$, so at a zero $\mu_s$ of $A$ the whole line $u = 0$ is fixed.",
            )
        )

    # Critical points of the pre-trained loss on the lines m = +-1, where lam = w lam*.
    critical: list[sp.Expr] = []
    derivative = sp.diff(derivation.loss.subs({Q: _W**2, R: _W}, simultaneous=True), _W)
    domain = "real"
    if not derivative.has(GaussianKernel, DeltaKernel) and not derivative.is_polynomial(_W):
        # Kinked activations give acos(w / |w|) and radicals of 0, which simplify only for a signed w.
        derivative = sp.diff(derivation.loss.subs({Q: _W_POSITIVE**2, R: _W_POSITIVE}, simultaneous=True), _W_POSITIVE)
        derivative = sp.simplify(derivative).subs(_W_POSITIVE, _W)
        domain = "positive"

    if derivative.has(GaussianKernel, DeltaKernel):
        remarks.append(
            r"The critical points of $L_0(w) = L(w^2, w)$ involve numerical kernels and have no closed form here."
        )
    elif derivative.is_polynomial(_W) and derivative.free_symbols <= {_W}:
        polynomial = sp.Poly(sp.expand(derivative), _W)
        if polynomial.is_zero:
            remarks.append(r"$L(w^2, w)$ does not depend on $w$, so every point of the lines $m = \pm 1$ is fixed at $\kappa = 0$.")
        else:
            for factor, _ in sp.factor_list(polynomial)[1]:
                if factor.degree() <= 2:
                    critical.extend(root for root in sp.roots(factor, filter="R") if domain == "real" or root > 0)
                else:
                    values = ", ".join(
                        f"{float(root):.10g}" for root in factor.real_roots() if domain == "real" or root > 0
                    )
                    if values:
                        remarks.append(
                            rf"The real roots $w \approx {values}$ of ${_print(factor.as_expr())} = 0$ give further "
                            r"fixed points on the lines $m = \pm 1$; they have no closed form in radicals of degree at most two here."
                        )
        if domain == "positive":
            remarks.append(r"Critical points of $L_0$ with $w \le 0$, if any, are not derived here.")
    else:
        # No polynomial form (erf): the only closed-form candidate is the teacher itself, w = 1.
        if _vanishes(derivative.subs(_W, 1)):
            critical.append(sp.Integer(1))
        remarks.append(r"Other critical points of $L_0(w) = L(w^2, w)$, if any, have no closed form here.")

    for index, w_value in enumerate(sorted(set(critical), key=lambda value: float(value))):
        for sign, name in ((1, "plus"), (-1, "minus")):
            point = (sp.simplify(sign * (w_value - mu)), sp.Integer(sign))
            kind = check(*point)
            if kind is None:
                continue
            loss_value = sp.simplify(derivation.loss_state.subs({u: point[0], m: point[1]}, simultaneous=True))
            role = "zero loss" if loss_value == 0 else rf"loss ${_print(loss_value)}$"
            validity = r"every $\kappa$" if kind == "all" else r"$\kappa = 0$ only"
            points.append(
                _FixedPoint(
                    f"fixed-w{index}-{name}",
                    point,
                    rf"On the line $m = {sign}$ with $w = {_print(w_value)}$ ({role}); a fixed point for every $\mu$ and {validity}.",
                )
            )
    remarks.append(
        r"Fixed points off the lines $u = 0$ and $m = \pm 1$ have no closed form here; "
        r"\texttt{lora\_theory.fixed\_points} locates them numerically."
    )
    return points, remarks


# ---------------------------------------------------------------------------
# The equations
# ---------------------------------------------------------------------------


def _state_form(expression: sp.Expr) -> sp.Expr:
    """Substitute Q(u, m), R(u, m), writing sqrt(Q - R^2) as |u| sqrt(1 - m^2)."""
    residual = sp.Abs(u) * sp.sqrt(1 - m**2)
    expression = expression.replace(
        lambda node: node.is_Pow and not node.exp.is_Integer and sp.expand(node.base - (Q - R**2)) == 0,
        lambda node: residual ** (2 * node.exp),
    )
    return expression.subs(ALIGNED_RANK_ONE.covariance, simultaneous=True)


def document_equations(student, teacher=None) -> tuple[list[tuple[str, list[Equation]]], dict]:
    """Build the sections of the document as ``[(section title, [Equation, ...]), ...]``.

    Also returns context for the prose: the activations, the kernel
    definitions, the fixed-point descriptions and remarks.
    """
    student = parse_activation(student)
    teacher = student if teacher is None else parse_activation(teacher)
    derivation = derive(student, teacher)
    kernels = _KernelNames()

    def tidy(expression):
        return kernels.rename(_simplify(expression))

    # Summary statistics, as the model defines them.
    definitions = [
        Equation("Q", "Q", ALIGNED_RANK_ONE.covariance[Q]),
        Equation("R", "R", ALIGNED_RANK_ONE.covariance[R]),
    ]

    # Population loss and its partials in (Q, R).
    loss = tidy(derivation.loss)
    loss_Q = tidy(derivation.loss_Q)
    loss_R = tidy(derivation.loss_R)
    second_moment = tidy(derivation.gradient_second_moment)
    loss_state = kernels.rename(_simplify(_state_form(derivation.loss)))
    loss_equations = [
        Equation("loss-QR", "L(Q, R)", loss),
        Equation("loss-Q", r"\frac{\partial L}{\partial Q}", loss_Q),
        Equation("loss-R", r"\frac{\partial L}{\partial R}", loss_R),
        Equation("gradient-second-moment", r"\mathbb{E}\left[g^{2}\right](Q, R)", second_moment),
        Equation("loss-um", "L(u, m)", loss_state),
    ]

    # The flow in the state, with Q and R standing for Q(u, m) and R(u, m). The model builds
    # the vector field from the partials, so the displayed form is the model's own.
    field = ALIGNED_RANK_ONE.vector_field({Q: loss_Q, R: loss_R}, _G)
    flow_equations = [
        Equation("flow-u", r"\frac{du}{dt}", field[u]),
        Equation("flow-m", r"\frac{dm}{dt}", field[m]),
    ]

    # Rates of the search phase.
    A = tidy(derivation.A)
    B = tidy(derivation.B)
    rate_equations = [
        Equation("A", r"A(\mu)", A),
        Equation("B", r"B(\mu)", B),
        Equation("lambda-plus", r"\lambda_{+}(\mu)", (_B + sp.sqrt(_B**2 + 4 * _A**2)) / 2),
        Equation("tau", r"\tau(\mu) = \frac{1}{\lambda_{+}(\mu)}", (-_B + sp.sqrt(_B**2 + 4 * _A**2)) / (2 * _A**2)),
    ]
    if not derivation.A.has(GaussianKernel, DeltaKernel) and not derivation.B.has(GaussianKernel, DeltaKernel):
        # Built from the simplified A and B, which is faster to simplify and ends shorter.
        explicit_lambda = _simplify((B + sp.sqrt(B**2 + 4 * A**2)) / 2)
        explicit_tau = _simplify((-B + sp.sqrt(B**2 + 4 * A**2)) / (2 * A**2))
        if len(_print(explicit_lambda)) <= _EXPLICIT_RATE_CHARACTERS:
            rate_equations.append(Equation("lambda-plus-explicit", r"\lambda_{+}(\mu)", explicit_lambda))
        if len(_print(explicit_tau)) <= _EXPLICIT_RATE_CHARACTERS:
            rate_equations.append(Equation("tau-explicit", r"\tau(\mu)", explicit_tau))

    fixed, remarks = _fixed_points(derivation)
    fixed_equations = [Equation(point.label, r"(u, m)", point.point, point.description) for point in fixed]

    sections = [
        ("Definitions", definitions),
        ("Population loss", loss_equations),
        ("Flow of the summary statistics", flow_equations),
        (r"Search phase: linearisation at $(u, m) = (0, 0)$", rate_equations),
        ("Fixed points with closed forms", fixed_equations),
    ]
    context = {
        "student": student,
        "teacher": teacher,
        "derivation": derivation,
        "kernels": kernels.definitions,
        "fixed_remarks": remarks,
    }
    return sections, context


# ---------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------


def _command(student: Activation, teacher: Activation) -> str:
    command = f"lora-theory latex --student {shlex.quote(student.spec)}"
    if teacher.canonical != student.canonical:
        command += f" --teacher {shlex.quote(teacher.spec)}"
    return command


_PROSE = {
    "Definitions": (
        "Inputs $x \\sim \\mathcal{{N}}(0, I_d)$. The teacher is $y = \\sigma^{{*}}(\\langle w^{{*}}, x\\rangle)$ with "
        "$\\lVert w^{{*}}\\rVert = 1$ and\n\\[\n  {teacher}\n\\]\n"
        "The pre-trained weight is $w_0 = \\mu w^{{*}}$ with pre-training strength $\\mu \\in [0, 1]$, and the rank-1 LoRA "
        "student is $\\hat y = \\sigma(\\langle w_0 + u v, x\\rangle)$ with a scalar $u$, a unit vector $v$ and\n"
        "\\[\n  {student}\n\\]\n"
        "Hermite polynomials are the probabilists' $\\mathrm{{He}}_k$, with "
        "$\\mathbb{{E}}[\\mathrm{{He}}_j(z)\\,\\mathrm{{He}}_k(z)] = k!\\,\\delta_{{jk}}$ for $z \\sim \\mathcal{{N}}(0, 1)$. "
        "The state is $(u, m)$ with the overlap $m = \\langle v, w^{{*}}\\rangle$. With "
        "$\\lambda^{{*}} = \\langle w^{{*}}, x\\rangle$ and $\\lambda = \\mu\\lambda^{{*}} + u\\langle v, x\\rangle$, "
        "the pair $(\\lambda, \\lambda^{{*}})$ is centred Gaussian with $\\operatorname{{Var}}\\lambda^{{*}} = 1$ and the "
        "summary statistics $Q = \\operatorname{{Var}}\\lambda$, $R = \\operatorname{{Cov}}(\\lambda, \\lambda^{{*}})$:\n"
    ),
    "Population loss": (
        "The population loss of one-pass SGD on $\\tfrac12(\\hat y - y)^2$ is "
        "$L = \\tfrac12\\,\\mathbb{{E}}[(\\sigma(\\lambda) - \\sigma^{{*}}(\\lambda^{{*}}))^2]$. The second moment of the "
        "per-sample gradient factor $g = (\\sigma(\\lambda) - \\sigma^{{*}}(\\lambda^{{*}}))\\,\\sigma'(\\lambda)$ "
        "enters the noise term of the flow. $L(u, m)$ is $L(Q, R)$ at $Q = Q(u, m)$, $R = R(u, m)$.\n"
    ),
    "Flow of the summary statistics": (
        "Time is $t = \\eta \\cdot \\text{{steps}}$ for learning rate $\\eta$; samples are $B_{{\\text{{batch}}}} \\cdot "
        "\\text{{steps}}$. In the limit $d \\to \\infty$ at fixed noise ratio $\\kappa = \\eta d / B_{{\\text{{batch}}}}$, "
        "with batch size $B_{{\\text{{batch}}}}$, the state follows the flow below, in which $Q$, $R$ stand for "
        "\\eqref{{{prefix}:Q}}, \\eqref{{{prefix}:R}} and $\\mathbb{{E}}[g^2]$ for \\eqref{{{prefix}:gradient-second-moment}} "
        "at $(Q, R)$. The factor $1 - m^2$ projects onto the tangent space of the sphere of $v$, and the "
        "$\\kappa$ term is the drift from renormalising $v$ after each noisy step; $\\kappa = 0$ gives gradient flow.\n"
    ),
    r"Search phase: linearisation at $(u, m) = (0, 0)$": (
        "Near the search point the flow is linear, $\\frac{{d}}{{dt}}(u, m)^{{\\top}} = "
        "\\begin{{pmatrix}} B & A \\\\ A & 0 \\end{{pmatrix}} (u, m)^{{\\top}}$, with the rates below in the time unit "
        "$t = \\eta\\cdot\\text{{steps}}$ (the $\\kappa$ term is of order $u^2$ and does not enter). In "
        "\\eqref{{{prefix}:lambda-plus}} and \\eqref{{{prefix}:tau}}, $A$ and $B$ stand for $A(\\mu)$ and $B(\\mu)$. "
        "At a zero $\\mu_s$ of $A$ the linear escape rate vanishes and $\\tau$ is undefined.\n"
    ),
    "Fixed points with closed forms": (
        "On the lines $m = \\pm 1$ the student pre-activation is $\\lambda = w\\lambda^{{*}}$ with $w = \\mu + u$ "
        "($m = 1$) or $w = \\mu - u$ ($m = -1$). There $\\dot m$ reduces to its $\\kappa$ term and "
        "$\\dot u = \\mp L_0'(w)$ with $L_0(w) = L(w^2, w)$, the loss of the pre-activation scale $w$. "
        "Each point below makes both components of the flow vanish identically in $\\mu$; this was checked "
        "symbolically when the document was generated.\n"
    ),
}


def latex_document(student, teacher=None, fragment: bool = False) -> str:
    """Render the derivation of a student/teacher pair as LaTeX.

    Parameters
    ----------
    student, teacher:
        Spec strings or :class:`~lora_theory.activations.Activation`; the
        teacher defaults to the student.
    fragment:
        When True, return only the labelled equations (amsmath ``equation``
        and ``multline`` environments, each preceded by a comment line) for
        pasting into another document. Otherwise return a standalone document.

    The document is deterministic: it states the package version and the
    command that regenerates it, and no date. Labels have the form
    ``<student>:<name>`` or ``<student>--<teacher>:<name>``.
    """
    sections, context = document_equations(student, teacher)
    student, teacher = context["student"], context["teacher"]
    prefix = _label_prefix(student, teacher)
    command = _command(student, teacher)
    # The printed form of an expression can change between SymPy releases, so the header names both.
    header = f"% Generated by lora-theory {__version__} (SymPy {sp.__version__}) with: {command}\n"

    if fragment:
        parts = [header]
        for title, equations in sections:
            if not equations:
                continue
            parts.append(f"% {title.replace('$', '')}\n")
            for equation in equations:
                parts.append(_render_equation(equation, prefix))
        if context["kernels"]:
            parts.append("% Numerical kernels (no closed form):\n")
            parts.append(_kernel_paragraph(context["kernels"]))
        return "".join(parts)

    teacher_line = _activation_latex(teacher, r"\sigma^{*}")
    student_line = _activation_latex(student, r"\sigma")
    title = (
        rf"Rank-1 LoRA on a single-index model: student \texttt{{{_escape_text(student.spec)}}}, "
        rf"teacher \texttt{{{_escape_text(teacher.spec)}}}"
    )
    parts = [
        header,
        "\\documentclass[11pt]{article}\n",
        "\\usepackage{amsmath,amssymb}\n",
        "\\usepackage[a4paper,margin=2cm]{geometry}\n",
        "\\allowdisplaybreaks\n",
        f"\\title{{{title}}}\n",
        f"\\author{{lora-theory {__version__}}}\n",
        "\\date{}\n",
        "\\begin{document}\n",
        "\\maketitle\n\n",
        "\\noindent Generated by\n\\begin{quote}\n  \\texttt{" + _escape_text(command) + "}\n\\end{quote}\n"
        "\\noindent The setting is that of G.~Nwemadji, "
        "B.~Loureiro, J.~Barbier, ``When pre-training hurts LoRA fine-tuning: a dynamical analysis via single-index "
        "models'', arXiv:2602.02855 (2026). Every expression below was derived with SymPy by \\texttt{lora\\_theory}.\n\n",
    ]
    for title_text, equations in sections:
        parts.append(f"\\section{{{title_text}}}\n")
        prose = _PROSE[title_text].format(prefix=prefix, teacher=teacher_line, student=student_line)
        parts.append(prose + "\n")
        if title_text == "Population loss" and context["kernels"]:
            parts.append(_kernel_paragraph(context["kernels"]) + "\n")
        for equation in equations:
            if equation.text:
                parts.append(equation.text + "\n")
            parts.append(_render_equation(equation, prefix))
        if title_text.startswith("Fixed points"):
            parts.extend(remark + "\n\n" for remark in context["fixed_remarks"])
        parts.append("\n")
    parts.append("\\end{document}\n")
    return "".join(parts)


# ---------------------------------------------------------------------------
# The checked-in documents
# ---------------------------------------------------------------------------


def derivations_index() -> str:
    """Return the ``README.md`` of ``derivations/``: what the documents contain and how to regenerate them."""
    rows = []
    for stem, student_spec, teacher_spec in DERIVATIONS:
        student = parse_activation(student_spec)
        teacher = student if teacher_spec is None else parse_activation(teacher_spec)
        rows.append(f"| [`{stem}.tex`]({stem}.tex) | `{student.spec}` | `{teacher.spec}` | `{_command(student, teacher)}` |")
    return (
        "# Derivations\n\n"
        f"Generated by lora-theory {__version__} with SymPy {sp.__version__}. Do not edit these files by\n"
        "hand: regenerate them from the repository root with\n\n"
        f"```sh\n{REGENERATE_COMMAND}\n```\n\n"
        "Each `.tex` file is a standalone amsmath document (build it with `pdflatex FILE.tex`) with the\n"
        "definitions, the population loss L(Q, R) and L(u, m), the flow du/dt and dm/dt with its noise\n"
        "term in kappa = eta d / B, the rates A(mu), B(mu), lambda_plus(mu) and tau(mu) of the search\n"
        "phase, and the fixed points that have closed forms. Conventions: probabilists' Hermite\n"
        "polynomials He_k, time t = eta * steps. See `docs/latex.md`.\n\n"
        "| file | student | teacher | command |\n"
        "|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def derivation_files() -> dict[str, str]:
    """Map file name to content for every document of :data:`DERIVATIONS` and the index ``README.md``."""
    files = {f"{stem}.tex": latex_document(student, teacher) for stem, student, teacher in DERIVATIONS}
    files["README.md"] = derivations_index()
    return files


def write_derivations(folder) -> list[Path]:
    """Write the documents of :data:`DERIVATIONS` and ``README.md`` into ``folder`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    contents = {folder / name: text.encode("utf-8") for name, text in derivation_files().items()}
    return outputs.atomic_write_files(contents)


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lora_theory.latex",
        description="Regenerate the LaTeX derivations checked in under derivations/.",
    )
    parser.add_argument("--write-derivations", required=True, metavar="FOLDER", help="folder to write the .tex files and README.md into")
    options = parser.parse_args(argv)
    try:
        written = write_derivations(options.write_derivations)
    except OSError as error:
        print(f"python -m lora_theory.latex: error: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
