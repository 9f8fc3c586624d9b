"""Activation functions parsed from spec strings.

An activation is a function of one real variable ``z``. It carries a SymPy
expression (the source of every symbolic derivation), a vectorised NumPy
callable and its derivatives.

Spec grammar
------------
Named activations: ``linear`` (alias ``x``), ``erf``, ``relu``, ``sigmoid``,
``tanh`` and ``He<k>`` for the probabilists' Hermite polynomial of degree
``0 <= k <= 30`` (``He_k(z)``, orthogonal under the standard Gaussian with
``E[He_j He_k] = k! delta_jk``). They combine with numbers through
``+ - * /``, powers ``^`` or ``**`` and parentheses: ``He3^2``,
``0.5*He2+He4``, ``relu^2``. A named activation may also be applied to an
expression of ``z``: ``relu(z - 0.1)``, ``tanh(2*z)``.

``expr:<expression>`` takes any expression in ``z`` built from numbers, the
names above, and the functions ``exp``, ``log``, ``sqrt``, ``sin``, ``cos``,
``abs``, ``heaviside``, ``max``, ``min``, constants ``pi`` and ``e``:
``expr:tanh(2*z)``. Strings are parsed with :mod:`ast` and translated node by
node, so no Python code is ever evaluated.

Decimal literals are read exactly (``0.1`` becomes ``1/10``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import mpmath
import numpy as np
import sympy as sp

from ._errors import ActivationError

__all__ = ["Activation", "parse_activation", "Z", "MAX_HERMITE_DEGREE"]

#: The variable of every activation expression.
Z = sp.Symbol("z", real=True)

#: Largest Hermite degree accepted in ``He<k>``.
MAX_HERMITE_DEGREE = 30

_HERMITE_NAME = re.compile(r"He(\d+)\Z")


def _relu(arg: sp.Expr) -> sp.Expr:
    return sp.Max(0, arg)


def _sigmoid(arg: sp.Expr) -> sp.Expr:
    return 1 / (1 + sp.exp(-arg))


def _hermite(degree: int) -> Callable[[sp.Expr], sp.Expr]:
    polynomial = sp.hermite_prob(degree, Z)
    return lambda arg: sp.expand(polynomial.subs(Z, arg))


# Named activations: usable bare (applied to z) or called on an expression.
_NAMED: dict[str, Callable[[sp.Expr], sp.Expr]] = {
    "linear": lambda arg: arg,
    "x": lambda arg: arg,
    "erf": sp.erf,
    "relu": _relu,
    "sigmoid": _sigmoid,
    "tanh": sp.tanh,
}

# Functions that only exist in called form.
_FUNCTIONS: dict[str, Callable[..., sp.Expr]] = {
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "sin": sp.sin,
    "cos": sp.cos,
    "abs": sp.Abs,
    "heaviside": lambda arg: sp.Heaviside(arg, sp.Rational(1, 2)),
    "max": sp.Max,
    "min": sp.Min,
}

_CONSTANTS = {"pi": sp.pi, "e": sp.E}

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}

_KNOWN_NAMES = "linear, x, erf, relu, sigmoid, tanh, He0 ... He30"


def _lookup_named(name: str, spec: str) -> Callable[[sp.Expr], sp.Expr] | None:
    if name in _NAMED:
        return _NAMED[name]
    match = _HERMITE_NAME.match(name)
    if match is None:
        return None
    degree = int(match.group(1))
    if degree > MAX_HERMITE_DEGREE:
        raise ActivationError(
            f"Hermite degree {degree} in activation {spec!r} is above the "
            f"supported maximum {MAX_HERMITE_DEGREE}; use He0 ... He{MAX_HERMITE_DEGREE}."
        )
    return _hermite(degree)


class _Translator:
    """Translate a Python AST of an activation spec into a SymPy expression."""

    def __init__(self, spec: str, expression_mode: bool):
        self.spec = spec
        self.expression_mode = expression_mode

    def fail(self, what: str) -> ActivationError:
        return ActivationError(
            f"invalid activation {self.spec!r}: {what}. Known names: {_KNOWN_NAMES}; "
            "combine them with numbers using + - * / ^ and parentheses, or write "
            "'expr:<expression in z>'."
        )

    def visit(self, node: ast.AST) -> sp.Expr:
        if isinstance(node, ast.Expression):
            return self.visit(node.body)

        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise self.fail(f"unsupported literal {node.value!r}")
            # Exact decimal: 0.1 becomes 1/10, not the binary double nearest 0.1.
            return sp.Rational(repr(node.value)) if isinstance(node.value, float) else sp.Integer(node.value)

        if isinstance(node, ast.BinOp):
            operator = _BINARY.get(type(node.op))
            if operator is None:
                raise self.fail(f"unsupported operator {type(node.op).__name__}")
            return operator(self.visit(node.left), self.visit(node.right))

        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return -self.visit(node.operand)
            if isinstance(node.op, ast.UAdd):
                return self.visit(node.operand)
            raise self.fail(f"unsupported operator {type(node.op).__name__}")

        if isinstance(node, ast.Name):
            return self.visit_name(node.id)

        if isinstance(node, ast.Call):
            return self.visit_call(node)

        raise self.fail(f"unsupported syntax {type(node).__name__}")

    def visit_name(self, name: str) -> sp.Expr:
        if name == "z":
            return Z
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        named = _lookup_named(name, self.spec)
        if named is not None:
            return named(Z)
        if name in _FUNCTIONS:
            raise self.fail(f"function {name!r} needs an argument, for example {name}(z)")
        raise self.fail(f"unknown name {name!r}")

    def visit_call(self, node: ast.Call) -> sp.Expr:
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise self.fail("only calls of the form name(argument) are allowed")
        name = node.func.id
        arguments = [self.visit(argument) for argument in node.args]
        named = _lookup_named(name, self.spec)
        if named is not None:
            if len(arguments) != 1:
                raise self.fail(f"{name} takes one argument, got {len(arguments)}")
            return named(arguments[0])
        if name in _FUNCTIONS:
            try:
                return _FUNCTIONS[name](*arguments)
            except TypeError as error:
                raise self.fail(f"wrong number of arguments for {name}") from error
        raise self.fail(f"unknown function {name!r}")


def _translate(spec: str) -> sp.Expr:
    text = spec.strip()
    expression_mode = text.startswith("expr:")
    if expression_mode:
        text = text[len("expr:"):].strip()
    if not text:
        raise ActivationError(f"invalid activation {spec!r}: empty expression.")
    # '^' means power, with the precedence of '**'; Python would parse it as a looser XOR.
    text = text.replace("^", "**")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        # Python reports offset 0 when the text ends too early (for example 'He3^').
        where = f"at character {error.offset}" if error.offset else "at the end of the text"
        raise ActivationError(
            f"invalid activation {spec!r}: {error.msg} {where}. "
            "Write for example 'He3^2', '0.5*He2+He4' or 'expr:tanh(2*z)'."
        ) from error
    expression = _Translator(spec, expression_mode).visit(tree)
    if not isinstance(expression, sp.Expr):
        raise ActivationError(f"invalid activation {spec!r}: not an expression.")
    extra = expression.free_symbols - {Z}
    if extra:
        raise ActivationError(f"invalid activation {spec!r}: unknown symbols {sorted(map(str, extra))}.")
    if expression.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise ActivationError(f"invalid activation {spec!r}: the expression is not finite ({expression}).")
    return expression


def _numpy_callable(expression: sp.Expr) -> Callable[[np.ndarray], np.ndarray]:
    function = sp.lambdify(Z, expression, modules=["scipy", "numpy"])

    def evaluate(values):
        values = np.asarray(values, dtype=float)
        with np.errstate(over="ignore"):
            result = function(values)
        return np.broadcast_to(np.asarray(result, dtype=float), values.shape).copy()

    evaluate.__doc__ = f"Vectorised f(z) = {expression}"
    return evaluate


@dataclass(frozen=True)
class Activation:
    """A real activation function of one variable ``z``.

    Attributes
    ----------
    spec:
        The spec string with surrounding white space removed.
    expr:
        SymPy expression in :data:`Z`.
    """

    spec: str
    expr: sp.Expr = field(compare=False)

    @cached_property
    def canonical(self) -> str:
        """Canonical serialisation (``sympy.srepr`` of the expression), used in cache keys."""
        return sp.srepr(self.expr)

    def derivative_expr(self, order: int = 1) -> sp.Expr:
        """Differentiate ``order`` times; kinks give Heaviside and DiracDelta terms."""
        return sp.diff(self.expr, Z, order) if order else self.expr

    def numpy(self, order: int = 0) -> Callable[[np.ndarray], np.ndarray]:
        """Vectorised NumPy callable of the ``order``-th derivative."""
        return _numpy_callable(self.derivative_expr(order))

    def mpmath(self, order: int = 0) -> Callable:
        """Scalar mpmath callable of the ``order``-th derivative (Heaviside takes 1/2 at its kink).

        Raises
        ------
        ActivationError
            When the derivative contains a Dirac delta, which has no pointwise value.
        """
        expression = self.derivative_expr(order)
        if expression.has(sp.DiracDelta):
            raise ActivationError(
                f"derivative {order} of activation {self.spec!r} contains a Dirac delta at the "
                f"kinks {self.kinks} and has no pointwise value; use a lower order or handle the "
                "delta analytically (Gaussian integration by parts)."
            )
        function = sp.lambdify(Z, expression, modules="mpmath")

        def evaluate(value):
            return mpmath.mpf(function(mpmath.mpf(value)))

        evaluate.__doc__ = f"mpmath f(z) = {expression}"
        return evaluate

    @cached_property
    def kinks(self) -> tuple[float, ...]:
        """Sorted real points where the expression is not smooth.

        They are the zeros of the arguments of ``Abs``, ``Heaviside`` and
        ``sign``, and the points where two arguments of ``Max`` or ``Min``
        are equal. With three or more arguments some of those points can be
        smooth, which costs a quadrature split but no accuracy.

        Raises
        ------
        ActivationError
            When such an argument is not linear in ``z``.
        """
        arguments: list[sp.Expr] = []
        for node in sp.preorder_traversal(self.expr):
            if isinstance(node, (sp.Max, sp.Min)):
                arguments.extend(a - b for i, a in enumerate(node.args) for b in node.args[i + 1:])
            elif isinstance(node, (sp.Abs, sp.Heaviside, sp.sign)):
                arguments.append(node.args[0])

        points = set()
        for argument in arguments:
            argument = sp.expand(argument)
            if not argument.is_polynomial(Z) or sp.degree(argument, Z) > 1:
                raise ActivationError(
                    f"cannot determine the kink location of {argument} in activation "
                    f"{self.spec!r}: only arguments linear in z are supported."
                )
            if sp.degree(argument, Z) == 1:
                points.add(float(sp.solve(argument, Z)[0]))
        return tuple(sorted(points))

    def __call__(self, values) -> np.ndarray:
        return self.numpy(0)(values)

    @cached_property
    def is_polynomial(self) -> bool:
        """True when the expression is a polynomial in ``z``."""
        return bool(self.expr.is_polynomial(Z))

    @cached_property
    def hermite_degree(self) -> int | None:
        """``k`` when the activation is exactly ``He_k`` (probabilists'), else ``None``."""
        if not self.is_polynomial:
            return None
        polynomial = sp.Poly(self.expr, Z)
        degree = polynomial.degree()
        if degree < 0:
            return None
        if sp.expand(self.expr - sp.hermite_prob(degree, Z)) == 0:
            return degree
        return None

    def __str__(self) -> str:
        return self.spec


def parse_activation(spec: "str | Activation") -> Activation:
    """Parse a spec string (see the module docstring for the grammar).

    Raises
    ------
    ActivationError
        For an unknown name, a Hermite degree above :data:`MAX_HERMITE_DEGREE`,
        a syntax error or a non-finite expression.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise ActivationError(f"activation spec must be a string, got {type(spec).__name__} {spec!r}")
    expression = _translate(spec)
    return Activation(spec=spec.strip(), expr=expression)
