"""Numerical Gaussian kernels as SymPy functions.

When no exact engine of :mod:`lora_theory.expectations` applies (sigmoid,
tanh, ``expr:`` activations), a kernel ``E[f(lam) h(lam_star)]`` enters the
symbolic derivation as ``GaussianKernel(tag, Q, R)``: an unevaluated SymPy
function that

* differentiates by Price's theorem,
  ``dK[f, h]/dR = K[f', h']`` and ``dK[f, h]/dQ = K[f'', h] / 2``;
* prints to NumPy code as a call of :func:`evaluate_kernel`, which
  integrates numerically (:mod:`lora_theory._numeric`);
* pickles and serialises canonically, because ``tag`` is a symbol whose
  name is the ``srepr`` of ``f`` and ``h``.

Convention as in :mod:`lora_theory.expectations`: ``Var lam = Q``,
``Cov(lam, lam_star) = R``, ``Var lam_star = 1``.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import sympy as sp

from ._errors import LoraTheoryError, QuadratureError
from .activations import Z

__all__ = ["GaussianKernel", "DeltaKernel", "kernel", "evaluate_kernel", "evaluate_delta_kernel"]


def _encode(f: sp.Expr, h: sp.Expr) -> str:
    return json.dumps({"f": sp.srepr(f), "h": sp.srepr(h)}, sort_keys=True)


@functools.lru_cache(maxsize=None)
def _decode(tag: str) -> tuple[sp.Expr, sp.Expr]:
    # The tag is produced by _encode from SymPy objects; sympify rebuilds them from srepr.
    content = json.loads(tag)
    return sp.sympify(content["f"]), sp.sympify(content["h"])


class GaussianKernel(sp.Function):
    """Unevaluated ``E[f(lam) h(lam_star)]``; arguments ``(tag, Q, R)``."""

    nargs = 3

    @property
    def integrands(self) -> tuple[sp.Expr, sp.Expr]:
        """``(f, h)`` as SymPy expressions in ``z``."""
        return _decode(self.args[0].name)

    def fdiff(self, argindex=1):
        f, h = self.integrands
        _, variance, covariance = self.args
        if argindex == 2:
            return kernel(sp.diff(f, Z, 2) / 2, h, variance, covariance)
        if argindex == 3:
            return kernel(sp.diff(f, Z), sp.diff(h, Z), variance, covariance)
        raise sp.ArgumentIndexError(self, argindex)

    def _numpycode(self, printer):
        tag, variance, covariance = self.args
        return f"evaluate_kernel({tag.name!r}, {printer._print(variance)}, {printer._print(covariance)})"

    _lambdacode = _numpycode
    _pythoncode = _numpycode

    def _latex(self, printer):
        f, h = self.integrands
        lam = sp.Symbol(r"\lambda")
        lam_star = sp.Symbol(r"\lambda^{*}")
        return (
            r"\mathbb{E}\left[" + printer._print(f.subs(Z, lam)) + r"\,"
            + printer._print(h.subs(Z, lam_star)) + r"\right]"
        )

    def _sympystr(self, printer):
        f, h = self.integrands
        return f"E[({printer._print(f)})(lam) * ({printer._print(h)})(lam*)]"


class DeltaKernel(sp.Function):
    """Unevaluated ``E[delta(lam - c) h(lam_star)]``; arguments ``(tag, c, Q, R)``.

    Equal to ``p(c) E[h(lam_star) | lam = c]`` with ``p`` the N(0, Q) density
    and ``lam_star | lam = c ~ N(R c / Q, 1 - R^2 / Q)``. It arises from the
    second derivative of an activation with a kink at ``c`` (Price's theorem
    for dK/dQ); its own derivatives are not implemented.
    """

    nargs = 4

    def _numpycode(self, printer):
        tag, point, variance, covariance = self.args
        return (
            f"evaluate_delta_kernel({tag.name!r}, {printer._print(point)}, "
            f"{printer._print(variance)}, {printer._print(covariance)})"
        )

    _lambdacode = _numpycode
    _pythoncode = _numpycode

    def _latex(self, printer):
        _, h = _decode(self.args[0].name)
        lam_star = sp.Symbol(r"\lambda^{*}")
        return (
            r"\mathbb{E}\left[\delta(\lambda - " + printer._print(self.args[1]) + r")\,"
            + printer._print(h.subs(Z, lam_star)) + r"\right]"
        )


def _delta_terms(f: sp.Expr):
    """Split f into (smooth part, [(weight, kink point)]) with f = smooth + sum weight delta(z - point)."""
    expanded = sp.expand(f)
    smooth = sp.Integer(0)
    deltas = []
    for term in sp.Add.make_args(expanded):
        factors = [factor for factor in sp.Mul.make_args(term) if isinstance(factor, sp.DiracDelta)]
        if not factors:
            smooth += term
            continue
        if len(factors) != 1 or len(factors[0].args) != 1:
            raise LoraTheoryError(f"cannot integrate {term}: only single Dirac deltas delta(a z - b) are supported")
        argument = sp.expand(factors[0].args[0])
        slope = argument.coeff(Z, 1)
        if slope == 0 or sp.expand(argument - slope * Z).has(Z):
            raise LoraTheoryError(f"cannot integrate {term}: the Dirac delta needs an argument linear in z")
        point = -sp.expand(argument - slope * Z) / slope
        # delta(a (z - c)) = delta(z - c) / |a|; the sifting property evaluates the rest at z = c.
        weight = (term / factors[0]).subs(Z, point) / sp.Abs(slope)
        if weight != 0:
            deltas.append((weight, point))
    return smooth, deltas


def kernel(f: sp.Expr, h: sp.Expr, variance: sp.Expr, covariance: sp.Expr) -> sp.Expr:
    """Numerical kernel ``E[f(lam) h(lam_star)]`` at ``(Q, R) = (variance, covariance)``.

    Dirac deltas in ``f`` (second derivatives at kinks) become :class:`DeltaKernel` terms.
    """
    f = sp.sympify(f)
    h = sp.sympify(h)
    if f == 0 or h == 0:
        return sp.Integer(0)
    if f.has(sp.DiracDelta):
        smooth, deltas = _delta_terms(f)
        total = kernel(smooth, h, variance, covariance)
        for weight, point in deltas:
            tag = sp.Symbol(_encode(sp.Integer(1), h))
            total += weight * DeltaKernel(tag, point, variance, covariance)
        return total

    # Pull constant factors out so that equal integrands share one numerical kernel.
    f_constant, f_rest = f.as_independent(Z, as_Add=False)
    h_constant, h_rest = h.as_independent(Z, as_Add=False)
    if f_rest == 1 and h_rest == 1:
        return f_constant * h_constant
    return f_constant * h_constant * GaussianKernel(sp.Symbol(_encode(f_rest, h_rest)), variance, covariance)


@functools.lru_cache(maxsize=None)
def _compiled(tag: str):
    from .activations import Activation

    f, h = _decode(tag)
    if f.has(sp.DiracDelta) or h.has(sp.DiracDelta):
        raise LoraTheoryError(
            f"the numerical kernel E[f(lam) h(lam*)] with f = {f}, h = {h} contains a Dirac delta "
            "(a second derivative at a kink); activations with kinks are supported numerically only "
            "where no second derivative is needed. Use relu-type kinks at 0, which have closed forms."
        )
    f_activation = Activation(spec=str(f), expr=f)
    h_activation = Activation(spec=str(h), expr=h)
    return f_activation.numpy(), h_activation.numpy(), _kinks(f), _kinks(h)


def _kinks(expression: sp.Expr) -> tuple[float, ...]:
    from .expectations import kink_points

    try:
        return tuple(float(point) for point in kink_points(expression))
    except Exception as error:
        raise LoraTheoryError(
            f"cannot locate the kinks of {expression}: arguments of Max, Min, Abs and Heaviside must be linear in z"
        ) from error


def evaluate_kernel(tag: str, variance, covariance) -> np.ndarray:
    """Evaluate ``E[f(lam) h(lam_star)]`` numerically for the integrands encoded in ``tag``."""
    from . import _numeric

    f, h, kinks_f, kinks_h = _compiled(tag)
    try:
        return _numeric.pair_expectation(f, h, variance, covariance, kinks_f=kinks_f, kinks_h=kinks_h)
    except QuadratureError as error:
        f_expression, h_expression = _decode(tag)
        raise QuadratureError(
            f"E[f(lam) h(lam*)] with f = {f_expression}, h = {h_expression}, Var lam = Q, Cov(lam, lam*) = R: {error}"
        ) from error


def evaluate_delta_kernel(tag: str, point, variance, covariance) -> np.ndarray:
    """Evaluate ``E[delta(lam - c) h(lam_star)]`` pointwise (one 1-D quadrature per point with s > 0)."""
    from . import _numeric
    from .activations import Activation

    _, h = _decode(tag)
    if h.has(sp.DiracDelta):
        raise LoraTheoryError(f"E[delta(lam - c) h(lam*)] with h = {h} needs a Dirac delta in h, which is not supported")
    h_function = Activation(spec=str(h), expr=h).numpy()
    h_kinks = _kinks(h)
    point, variance, covariance = np.broadcast_arrays(
        np.asarray(point, dtype=float), np.asarray(variance, dtype=float), np.asarray(covariance, dtype=float)
    )
    result = np.empty(variance.shape)
    for index in np.ndindex(variance.shape):
        c, q, r = point[index], variance[index], covariance[index]
        if q <= 0:
            # lam = 0 almost surely: delta(lam - c) vanishes for c != 0 and is infinite at c = 0.
            result[index] = 0.0 if c != 0 else np.nan
            continue
        density = np.exp(-c * c / (2 * q)) / np.sqrt(2 * np.pi * q)
        mean = r * c / q
        spread_squared = max(1.0 - r * r / q, 0.0)
        if spread_squared == 0.0:
            conditional = float(h_function(np.array(mean)))
        else:
            conditional = float(
                _numeric.expectation_1d(
                    lambda z, shift=mean: h_function(shift + z),
                    spread_squared,
                    kinks=tuple(kink - mean for kink in h_kinks),
                )
            )
        result[index] = density * conditional
    return result
